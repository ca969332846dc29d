"""The SM clock the calibration profile's protocol runs kernels at (needs torch and a GPU).

A profile sample is a time at whatever clock the GPU held while it was measured; the profile
does not store that clock. This re-runs the profile's protocol (``measure --heat-ms 60
--preheat-s 10``: 10 s of GEMM load, then 60 ms of GEMMs before every shape) on shapes that are
*on* the profile's grid (GEMMs ``fwd`` and causal flash attention, forward and backward) with
:class:`~moesim.calibrate.clock_timer.ClockedTimer`, so each shape gives its time and the SM
clock it ran at. Where the times agree with the profile's, the clocks are the profile's: the
reference clock per op kind that ``moesim.validate.clocks`` scales from.

``python3 -m lab.clock_reference --out clock_reference.json``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from moesim.calibrate import provenance
from moesim.calibrate.clock_timer import ClockedTimer
from moesim.calibrate.kernels import attention_op, gemm_op

PROFILE_HEAT_MS = 60.0
PROFILE_PRESHEAT_S = 10.0
from moesim.calibrate.clock_section import ATTENTION, GEMMS  # noqa: E402  (the same shapes as section clock)


def reference_pass(nvml: object = None) -> list[dict]:
    """Every shape in GEMMS and ATTENTION under the profile's protocol, with its clock."""
    timer = ClockedTimer("cuda", nvml, heat_ms=PROFILE_HEAT_MS)
    timer.preheat(PROFILE_PRESHEAT_S)
    out: list[dict] = []
    for m, n, k in GEMMS:
        st = timer.time(gemm_op("cuda", m, n, k))
        out.append({"op": "gemm", "layout": "fwd", "m": m, "n": n, "k": k, **st.fields(), "clock": timer.last_clock})
    for b, h, s, d in ATTENTION:
        for direction in ("fwd", "bwd"):
            st = timer.time(attention_op("cuda", direction, b, h, s, d))
            out.append({"op": "attention", "direction": direction, "batch": b, "heads": h, "seq": s, "head_dim": d,
                        **st.fields(), "clock": timer.last_clock})
    return out


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("clock_reference.json"))
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from moesim.calibrate.clock_timer import Nvml
    nvml = Nvml(torch.cuda.current_device())
    try:
        samples = reference_pass(nvml)
    finally:
        nvml.stop()
    doc = {**provenance.collect("cuda", 1), "protocol": f"preheat {PROFILE_PRESHEAT_S} s, heat {PROFILE_HEAT_MS} ms "
           "before each shape (the profile's measure --heat-ms 60 --preheat-s 10)", "samples": samples}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for s in samples:
        print(s["op"], s.get("direction", ""), {k: s[k] for k in ("m", "n", "k", "batch", "heads", "seq", "head_dim") if k in s},
              round(s["time_ns"] / 1e3, 1), "us", s["clock"]["sm_mhz"], "MHz", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
