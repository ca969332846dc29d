"""Does a GPU-side lead before each repeat change what a power-capped kernel measures?

Protocol v2 of the validation (run 10) waits 500 us on the GPU (a ``torch.cuda._sleep`` spin)
after each repeat's L2 flush, so that the host is always ahead of the timed op. Under the
profile's power-capped protocol one long, power-hungry kernel of run 10
(``attention_bwd_b2_h40_s6144_d64@steady``) took 3.01 ms at a probed 1692 MHz, where runs 5 and 8
(no lead) measured 2.58 ms at 1803 MHz and 2.76 ms at 1675 MHz: slower than its probed clock
explains. A low-power spin lets the power controller raise the clock just before a kernel that
then draws more than the cap, which may throttle it below what the probes around it read.

This probe answers it by measurement: under the steady protocol (``--warm-s`` of GEMMs, then
60 ms before every timing), a few shapes are timed with lead 0 and lead 500 us, alternated, with
the SM clock probed before the first repeat and after every repeat; per repeat it stores the time
and the two probes around it. ``python3 -m lab.lead_probe --out lead_probe.json``
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from moesim.calibrate import kernels, provenance
from moesim.calibrate.clock_timer import ClockedTimer

LEADS_US = (0.0, 500.0)
HEAT_MS = 60.0


def _shapes(device: str) -> dict[str, Callable[[], Callable[[], object]]]:
    return {"attention_bwd_b2_h40_s6144_d64": lambda: kernels.attention_op(device, "bwd", 2, 40, 6144, 64),
            "attention_fwd_b2_h40_s6144_d64": lambda: kernels.attention_op(device, "fwd", 2, 40, 6144, 64),
            "gemm_20000x4608x9216": lambda: kernels.gemm_op(device, 20000, 4608, 9216)}


def run(device: str, warm_s: float, alternations: int) -> dict:
    timers = {lead: ClockedTimer(device, None, heat_ms=HEAT_MS, lead_us=lead) for lead in LEADS_US}
    timers[0.0].preheat(warm_s)
    rows = []
    for name, make in _shapes(device).items():
        fn = make()
        for alt in range(alternations):
            for lead, timer in timers.items():
                st = timer.time(fn)
                rows.append({"shape": name, "alternation": alt, "lead_us": lead, **st.fields(),
                             "clock": dict(timer.last_clock), "samples_ns": [round(x, 1) for x in timer.last_samples_ns],
                             "probe_mhz": [round(x, 1) for x in timer.last_probe_mhz], "t": round(time.monotonic(), 3)})
                print(f"{name:<34} alt {alt} lead {lead:5.0f} us: {st.median_ns / 1e3:9.1f} us "
                      f"(p25 {st.p25_ns / 1e3:.1f}, p75 {st.p75_ns / 1e3:.1f}) at {timer.last_clock.get('sm_mhz')} MHz",
                      flush=True)
        del fn
        torch.cuda.empty_cache()
    return {**provenance.collect(device, 1), "warm_s": warm_s, "heat_ms": HEAT_MS, "rows": rows}


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("lead_probe.json"))
    p.add_argument("--warm-s", type=float, default=5.0)
    p.add_argument("--alternations", type=int, default=3)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    doc = run("cuda", args.warm_s, args.alternations)
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}: {len(doc['rows'])} timings", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
