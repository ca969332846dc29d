"""Run 9 probe: the cost of an event-timed region, and the clock-bound share of memory kernels
(needs torch and a GPU).

Two measurements, neither on a validation case's shape:

* ``chain``: every profile and validation sample times its kernels inside one CUDA-event region
  after an L2-evicting write (:class:`~moesim.calibrate.timing.Timer`). Here a region holds a
  chain of N = 1, 2, 4, 8, 16 back-to-back kernels of one kind, each on its own buffers (so every
  kernel of the chain starts from cold data, as one timed alone does): the slope over N is a
  kernel's in-stream time, the intercept the region's fixed cost beyond its kernels. Kinds: a
  one-element add (the floor of any kernel's in-stream time), three small GEMMs, ``silu``,
  ``mul``, ``rmsnorm`` and ``copy`` at a few MiB. Then two SwiGLU FFNs of grid shapes (not the
  validation's) timed whole and as their five kernels alone, which checks the chain rule on a
  mixed chain.
* ``memory``: every memory variant of ``moesim.calibrate.memops`` at sizes from 1 MiB to 1 GiB
  (cold; ``silu`` and ``mul`` warm too) with the per-repeat SM clock
  (:class:`~moesim.calibrate.clock_timer.ClockedTimer`), once at boost clocks (idle GPU, no heat)
  and once under the profile's protocol (10 s of GEMMs, then 60 ms before every shape), so the
  pair gives each variant's clock-bound share at each size and the clock the profile's memory
  curves ran at.

Both run in the two states (boost first, then the profile's protocol).

``python3 -m lab.chain_probe --out chain_probe.json``
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from moesim.calibrate import kernels, memops, provenance
from moesim.calibrate.clock_timer import ClockedTimer
from moesim.calibrate.regions import chain_kernels, chain_kinds

MIB = 2**20
CHAIN_LENGTHS = (1, 2, 4, 8, 16)
CHECK_FFNS = ((64, 4096, 2048), (1024, 4096, 1024))  # (tokens, hidden, ffn): grid shapes
MEMORY_SIZES = tuple(s * MIB for s in (1, 4, 16, 32, 64, 256, 1024))
WARM_SIZES = tuple(s * MIB for s in (1, 4, 16))
WARM_MEMORY = ("silu", "mul")
PROFILE_HEAT_MS = 60.0
PROFILE_PREHEAT_S = 10.0


def chain_pass(timer: ClockedTimer, state: str) -> list[dict]:
    """Every chain kind at every length: one event region around N back-to-back kernels."""
    out = []
    for kind in chain_kinds():
        ops = chain_kernels(kind, max(CHAIN_LENGTHS))
        for n in CHAIN_LENGTHS:
            chain = ops[:n]

            def run(chain: list = chain) -> None:
                for op in chain:
                    op()
            st = timer.time(run)
            out.append({"probe": "chain", "state": state, "kind": kind, "n": n, **st.fields(),
                        "clock": dict(timer.last_clock)})
        del ops
    return out


def ffn_pass(timer: ClockedTimer, state: str) -> list[dict]:
    """Two grid-shape SwiGLU FFNs: whole (one region) and each of their five kernels alone."""
    out = []
    for t, h, f in CHECK_FFNS:
        x = kernels.randn(t * h, "cuda", 3).view(t, h)
        wg, wu = (kernels.randn(f * h, "cuda", 4 + i).view(f, h) for i in range(2))
        wd = kernels.randn(f * h, "cuda", 6).view(h, f)
        g, u = torch.mm(x, wg.t()), torch.mm(x, wu.t())
        a = F.silu(g)
        p = a * u
        parts = [("ffn", lambda: kernels.swiglu_ffn(x, wg, wu, wd)), ("gate_mm", lambda: torch.mm(x, wg.t())),
                 ("silu", lambda: F.silu(g)), ("up_mm", lambda: torch.mm(x, wu.t())), ("mul", lambda: a * u),
                 ("down_mm", lambda: torch.mm(p, wd.t()))]
        for part, fn in parts:
            st = timer.time(fn)
            out.append({"probe": "ffn", "state": state, "tokens": t, "hidden": h, "ffn": f, "part": part,
                        **st.fields(), "clock": dict(timer.last_clock)})
    return out


def memory_pass(timer: ClockedTimer, warm: ClockedTimer, state: str) -> list[dict]:
    """Every memory variant at MEMORY_SIZES (cold) and WARM_MEMORY at WARM_SIZES (warm), with clocks."""
    plan = [(v, b, "cold", timer) for v in memops.VARIANTS for b in MEMORY_SIZES]
    plan += [(v, b, "warm", warm) for v in WARM_MEMORY for b in WARM_SIZES]
    max_numel = max(memops._numel_for(v, max(MEMORY_SIZES)) for v in memops.VARIANTS)
    bufs = [kernels.randn(max_numel, "cuda", 20 + i) for i in range(3)]
    out = []
    for variant, nbytes, cache, tm in plan:
        kind, per_elem = memops.VARIANTS[variant]
        numel = memops._numel_for(variant, nbytes)
        st = tm.time(memops._kernel(variant, bufs, numel, "cuda"))
        out.append({"probe": "memory", "state": state, "kind": kind, "variant": variant, "cache": cache,
                    "nbytes": int(numel * per_elem), **st.fields(), "clock": dict(tm.last_clock)})
    return out


def run(out: Path) -> dict:
    t0 = time.monotonic()
    kw = {"min_repeats": 30, "max_repeats": 60}
    boost = ClockedTimer("cuda", heat_ms=0.0, **kw)
    boost_warm = ClockedTimer("cuda", heat_ms=0.0, flush_l2=False, busy_us=memops.WARM_BUSY_US, **kw)
    time.sleep(1.0)  # idle: boost clocks
    samples = chain_pass(boost, "boost") + ffn_pass(boost, "boost") + memory_pass(boost, boost_warm, "boost")
    print(f"boost pass done at {time.monotonic() - t0:.1f} s", flush=True)
    hot = ClockedTimer("cuda", heat_ms=PROFILE_HEAT_MS, **kw)
    hot_warm = ClockedTimer("cuda", heat_ms=PROFILE_HEAT_MS, flush_l2=False, busy_us=memops.WARM_BUSY_US, **kw)
    hot.preheat(PROFILE_PREHEAT_S)
    samples += memory_pass(hot, hot_warm, "profile") + chain_pass(hot, "profile") + ffn_pass(hot, "profile")
    doc = {**provenance.collect("cuda", torch.cuda.device_count()), "command": " ".join(sys.argv),
           "protocol": {"chain_lengths": CHAIN_LENGTHS, "timer": "ClockedTimer, L2 flush before each repeat, "
                        "30-60 repeats", "boost": "idle GPU, no heat",
                        "profile": f"preheat {PROFILE_PREHEAT_S} s, {PROFILE_HEAT_MS} ms of GEMMs before each shape "
                                   "(measure --heat-ms 60 --preheat-s 10)", "warm": "no flush, "
                        f"{memops.WARM_BUSY_US} us GPU wait before each repeat (memops warm protocol)"},
           "elapsed_s": round(time.monotonic() - t0, 1), "samples": samples}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("chain_probe.json"))
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    doc = run(args.out)
    for s in doc["samples"]:
        what = {"chain": lambda s: f"{s['kind']} n={s['n']}", "ffn": lambda s: f"t{s['tokens']}_h{s['hidden']}_f{s['ffn']} "
                f"{s['part']}", "memory": lambda s: f"{s['variant']} {s['cache']} {s['nbytes']}"}[s["probe"]](s)
        print(f"{s['probe']:6s} {s['state']:7s} {what:32s} {s['time_ns'] / 1e3:9.2f} us "
              f"(p25 {s['p25_ns'] / 1e3:.2f} p75 {s['p75_ns'] / 1e3:.2f}) {s['clock'].get('sm_mhz', 0):7.1f} MHz")
    print(f"wrote {args.out} in {doc['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
