"""Probes for the single-GPU validation misses of the clocked sessions (needs torch and a GPU).

Two questions, each answered by measurement on the validation machine type:

* ``swiglu``: is the spread of ``swiglu_t50_h7168_f2048`` (the same entry measured 55.5-85.2 us,
  quartiles up to 54-98 us within one entry) in the kernels or in the timing? The FFN is five
  short kernels issued from Python; the session timer keeps the GPU ahead of the host only by the
  L2-flush write (and the clock probe's spin kernels), so a slow host iteration can leave launch
  gaps inside the timed region. Per-repeat times of (a) the session's protocol, (b) the same with
  a 1 ms GPU spin before each repeat (the host is far ahead: no launch gap can be timed), (c) a
  CUDA graph of the FFN, and (d) each of its five kernels alone, at boost and after GEMM heat.
* ``memory``: do short memory-bound kernels follow the SM clock? rmsnorm (4096 wide) at row counts
  on and around the validation entry (1024 and 2048 rows are the profile grid's 16 and 32 MiB),
  ``silu`` at 5 MB and ``copy`` at 100 MB, timed with the session timer at boost clocks (idle GPU)
  and under the profile's protocol (GEMM preheat, then 60 ms of GEMMs before every shape), each
  with its measured SM clock.

``python3 -m lab.miss_probe --out miss_probe.json``
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from moesim.calibrate import kernels, memops, provenance
from moesim.calibrate.clock_timer import ClockedTimer, ClockProbe
from moesim.calibrate.timing import BUSY_CYCLES_PER_NS, L2_FLUSH_BYTES

FFN_SHAPE = (50, 7168, 2048)  # tokens, hidden, ffn of the missed entry
REPEATS = 200
LEAD_US = 1000.0  # GPU spin before a repeat: far longer than the host needs to issue the FFN
NORM_ROWS = (1024, 1600, 1831, 2048)
OTHER_MEMORY = (("silu", 5_000_000), ("copy", 100_000_000))
HEAT_MS = 60.0
PREHEAT_S = 5.0


def _summary(values_us: list[float]) -> dict:
    qs = statistics.quantiles(values_us, n=20)  # 5% steps
    return {"median_us": round(statistics.median(values_us), 2), "p5_us": round(qs[0], 2), "p25_us": round(qs[4], 2),
            "p75_us": round(qs[14], 2), "p95_us": round(qs[18], 2), "min_us": round(min(values_us), 2),
            "max_us": round(max(values_us), 2), "repeats": len(values_us)}


def per_repeat(fn, flush: torch.Tensor, lead_us: float, repeats: int = REPEATS) -> dict:
    """Per-repeat event times of ``fn`` after an L2 flush (and ``lead_us`` of GPU spin), with the
    SM clock of each repeat (mean of the spin-kernel probes around it)."""
    for _ in range(2):
        fn()
    pairs = []
    probes = [ClockProbe()]
    for _ in range(repeats):
        flush.fill_(1.0)
        if lead_us > 0:
            torch.cuda._sleep(int(lead_us * 1e3 * BUSY_CYCLES_PER_NS))
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        pairs.append((s, e))
        probes.append(ClockProbe())
    torch.cuda.synchronize()
    times = [s.elapsed_time(e) * 1e3 for s, e in pairs]
    mhz = [p.mhz() for p in probes]
    clocks = [0.5 * (a + b) for a, b in zip(mhz, mhz[1:])]
    return {**_summary(times), "sm_mhz": round(statistics.median(clocks), 1), "times_us": [round(t, 2) for t in times],
            "clock_mhz": [round(c, 1) for c in clocks]}


def swiglu_probe(heater: ClockedTimer, state: str) -> list[dict]:
    """The FFN and its kernels under the four timings above, in ``state`` (boost or hot)."""
    t, h, f = FFN_SHAPE
    x = kernels.randn(t * h, "cuda", 3).view(t, h)
    wg, wu = (kernels.randn(f * h, "cuda", 4 + i).view(f, h) for i in range(2))
    wd = kernels.randn(f * h, "cuda", 6).view(h, f)
    g, u = torch.mm(x, wg.t()), torch.mm(x, wu.t())
    a = torch.nn.functional.silu(g)
    p = a * u
    flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
    ffn = lambda: kernels.swiglu_ffn(x, wg, wu, wd)  # noqa: E731
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ffn()
        with torch.cuda.graph(graph, stream=stream):
            ffn()
    torch.cuda.current_stream().wait_stream(stream)
    plans = [("ffn", "session", ffn, 0.0), ("ffn", "lead", ffn, LEAD_US), ("ffn", "graph_lead", graph.replay, LEAD_US),
             ("gate_mm", "lead", lambda: torch.mm(x, wg.t()), LEAD_US), ("up_mm", "lead", lambda: torch.mm(x, wu.t()), LEAD_US),
             ("silu", "lead", lambda: torch.nn.functional.silu(g), LEAD_US), ("mul", "lead", lambda: a * u, LEAD_US),
             ("down_mm", "lead", lambda: torch.mm(p, wd.t()), LEAD_US)]
    out = []
    for part, timing, fn, lead in plans:
        heater._heat()
        out.append({"probe": "swiglu", "state": state, "part": part, "timing": timing, "lead_us": lead, **per_repeat(fn, flush, lead)})
    return out


def memory_probe(timer: ClockedTimer, state: str) -> list[dict]:
    """rmsnorm at NORM_ROWS and OTHER_MEMORY with the session timer in ``state``, with clocks."""
    plans = [("rmsnorm", rows * memops.ROW_HIDDEN) for rows in NORM_ROWS]
    plans += [(v, memops._numel_for(v, nbytes)) for v, nbytes in OTHER_MEMORY]
    bufs = [kernels.randn(max(n for _, n in plans), "cuda", 20 + i) for i in range(3)]
    out = []
    for variant, numel in plans:
        st = timer.time(memops._kernel(variant, bufs, numel, "cuda"))
        out.append({"probe": "memory", "state": state, "variant": variant, "numel": numel,
                    "rows": numel // memops.ROW_HIDDEN if variant == "rmsnorm" else None,
                    "nbytes": int(numel * memops.VARIANTS[variant][1]), **st.fields(), "clock": dict(timer.last_clock)})
    return out


def run(out: Path) -> dict:
    t0 = time.monotonic()
    boost = ClockedTimer("cuda", heat_ms=0.0)
    hot = ClockedTimer("cuda", heat_ms=HEAT_MS)
    time.sleep(1.0)  # idle: boost clocks
    samples = memory_probe(boost, "boost") + swiglu_probe(boost, "boost")
    hot.preheat(PREHEAT_S)
    samples += memory_probe(hot, "hot") + swiglu_probe(hot, "hot")
    doc = {**provenance.collect("cuda", torch.cuda.device_count()), "command": " ".join(sys.argv),
           "protocol": {"repeats": REPEATS, "lead_us": LEAD_US, "heat_ms": HEAT_MS, "preheat_s": PREHEAT_S,
                        "ffn_shape": FFN_SHAPE, "norm_rows": NORM_ROWS},
           "elapsed_s": round(time.monotonic() - t0, 1), "samples": samples}
    out.write_text(json.dumps(doc, indent=1))
    return doc


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("miss_probe.json"))
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    doc = run(args.out)
    for s in doc["samples"]:
        if s["probe"] == "memory":
            print(f"memory {s['state']:5s} {s['variant']:8s} rows={s['rows']} {s['time_ns'] / 1e3:7.2f} us "
                  f"{s['clock']['sm_mhz']:7.1f} MHz")
        else:
            print(f"swiglu {s['state']:5s} {s['part']:8s} {s['timing']:10s} median {s['median_us']:7.2f} "
                  f"p25 {s['p25_us']:7.2f} p75 {s['p75_us']:7.2f} p95 {s['p95_us']:7.2f} max {s['max_us']:7.2f} "
                  f"us {s['sm_mhz']:7.1f} MHz")
    print(f"wrote {args.out} in {doc['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
