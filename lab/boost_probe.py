"""How does a compute-bound kernel's time follow the SM clock above the profile's clock?

The validation predicts a kernel at its recorded clock by ``t = t_profile (1 - phi + phi f_ref /
f)``: the clock-bound share ``phi`` scales with the clock. ``f_ref`` (about 1500 MHz for GEMMs)
comes from grid shapes re-run at power-capped clocks (``clock_reference``), so the formula was
only ever tested near the profile's own clock. At boost clocks (about 1980 MHz, a GPU that had
idled) every long compute-bound validation case ran slower than it predicts (GEMMs of 1-2 ms -4
to -5%, SwiGLU FFNs -8%) while the same cases at capped clocks sit near zero. Three readings
fit that: (1) the spin-kernel probes around a kernel read a clock the kernel itself did not run
at (the power controller pulls the clock down *during* a power-hungry kernel); (2) tensor-core
throughput does not scale with the clock (something clock-independent, HBM or L2, limits it at
high clocks); (3) both.

This probe measures it on shapes of the profile's grid (no validation shape), one GPU:

* ``as_found`` and ``steady``: each shape timed with the validation's single-op protocol (L2
  flush, 500 us GPU lead, a clock probe around every repeat) from idle and after 5 s of GEMM load
  (60 ms before every shape), then from idle again after a rest;
* ``train``: at boost, one timed region of 1, 4 and 16 back-to-back GEMMs of one shape (time per
  GEMM), each after a rest, with NVML's SM clock polled every 2 ms: a clock pulled down by the
  kernel's own power shows as a per-GEMM time growing with the train;
* ``side``: the clock *during* a kernel: two spin kernels (``torch.cuda._sleep``, one block) on a
  second stream queued to start with the timed kernel; where they run beside it (their events
  fall inside its events), the difference of their cycle counts over the difference of their
  times is the SM clock while it ran.

``--shapes check`` times a second set of grid shapes instead (to test a rule fitted on the first),
``--hot`` adds the shapes after 60 ms of heat from idle, and ``--no-trains`` skips the trains and
reads the side clocks in the steady state as well (flash attention forward and backward beside
the GEMMs).

``python3 -m lab.boost_probe --out boost_probe.json`` (run 22);
``python3 -m lab.boost_probe --shapes check --hot --no-trains --out boost_check.json`` (run 23)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from moesim.calibrate import kernels, provenance
from moesim.calibrate.clock_timer import ClockedTimer, Nvml

LEAD_US = 500.0
HEAT_MS = 60.0
# (m, n, k) on the calibrated profile's grid (M in powers of two, N and K in 1024..18432), from
# about 40 us to 3 ms at capped clocks; none is a validation shape
GRID_SHAPES = ((512, 14336, 4096), (1024, 4096, 4096), (2048, 8192, 4096), (4096, 8192, 4096),
               (8192, 8192, 8192), (16384, 4096, 8192), (16384, 14336, 4096))
# a second set on the same grid, to test a rule fitted on the first
CHECK_SHAPES = ((128, 8192, 8192), (256, 18432, 7168), (1024, 14336, 7168), (2048, 2048, 2048), (4096, 18432, 2048),
                (8192, 7168, 4096), (4096, 4096, 14336), (32768, 4096, 4096))
SHAPE_SETS = {"fit": GRID_SHAPES, "check": CHECK_SHAPES}
TRAIN_SHAPES = ((8192, 8192, 8192), (2048, 8192, 4096))
TRAIN_LENGTHS = (1, 4, 16)
SIDE_SHAPES = ((2048, 8192, 4096), (8192, 8192, 8192), (16384, 14336, 4096))
SHORT_CYCLES = 20_000


def _name(shape: tuple[int, int, int]) -> str:
    return "gemm_{}x{}x{}".format(*shape)


def timed_shapes(phase: str, timer: ClockedTimer, shapes: tuple[tuple[int, int, int], ...] = GRID_SHAPES) -> list[dict]:
    rows = []
    for shape in shapes:
        fn = kernels.gemm_op("cuda", *shape)
        st = timer.time(fn)
        rows.append({"phase": phase, "shape": _name(shape), "m": shape[0], "n": shape[1], "k": shape[2], **st.fields(),
                     "clock": dict(timer.last_clock), "samples_ns": [round(x, 1) for x in timer.last_samples_ns],
                     "probe_mhz": [round(x, 1) for x in timer.last_probe_mhz], "t": round(time.monotonic(), 3)})
        print(f"{phase:<10} {_name(shape):<24} {st.median_ns / 1e3:9.1f} us at {timer.last_clock.get('sm_mhz')} MHz",
              flush=True)
        del fn
    return rows


def trains(nvml: Nvml, rest_s: float) -> list[dict]:
    """Per-GEMM time of trains of back-to-back GEMMs from idle, with NVML's clock over each."""
    rows = []
    flush = torch.empty(64 * 2**20, dtype=torch.float32, device="cuda")
    for shape in TRAIN_SHAPES:
        fn = kernels.gemm_op("cuda", *shape)
        fn()
        for length in TRAIN_LENGTHS:
            time.sleep(rest_s)
            flush.fill_(1.0)
            torch.cuda._sleep(int(LEAD_US * 2e3))
            events = [torch.cuda.Event(enable_timing=True) for _ in range(length + 1)]
            t0 = time.monotonic()
            events[0].record()
            for e in events[1:]:
                fn()
                e.record()
            torch.cuda.synchronize()
            t1 = time.monotonic()
            per = [events[i].elapsed_time(events[i + 1]) * 1e6 for i in range(length)]
            rows.append({"shape": _name(shape), "length": length, "per_gemm_ns": [round(x, 1) for x in per],
                         "nvml": nvml.window(t0 - 0.004, t1 + 0.004)})
            print(f"train {_name(shape):<24} x{length:<3} first {per[0] / 1e3:8.1f} us last {per[-1] / 1e3:8.1f} us "
                  f"nvml {rows[-1]['nvml']}", flush=True)
        del fn
    return rows


def side_ops() -> dict[str, Callable[[], Callable[[], object]]]:
    ops: dict[str, Callable[[], Callable[[], object]]] = {_name(s): (lambda s=s: kernels.gemm_op("cuda", *s)) for s in SIDE_SHAPES}
    ops["attention_fwd_b1_h32_s8192_d128"] = lambda: kernels.attention_op("cuda", "fwd", 1, 32, 8192, 128)
    ops["attention_bwd_b1_h32_s8192_d128"] = lambda: kernels.attention_op("cuda", "bwd", 1, 32, 8192, 128)
    return ops


def side_clocks(state: str, repeats: int, rest_s: float, heater: ClockedTimer | None = None) -> list[dict]:
    """The SM clock read by spin kernels on a second stream while the timed op runs; ``heater``
    (steady state) queues its heat before every repeat, else the GPU rests before each op."""
    rows = []
    side = torch.cuda.Stream()
    flush = torch.empty(64 * 2**20, dtype=torch.float32, device="cuda")
    for name, make in side_ops().items():
        fn = make()
        for _ in range(2):
            fn()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        est_ns = s.elapsed_time(e) * 1e6
        long_cycles = max(4 * SHORT_CYCLES, int(0.6 * est_ns * 1.4))  # about 0.6 of the op at 1.4 GHz
        if heater is None:
            time.sleep(rest_s)
        for r in range(repeats):
            if heater is not None:
                heater._heat()
            flush.fill_(1.0)
            torch.cuda._sleep(int(LEAD_US * 2e3))
            ev = {k: torch.cuda.Event(enable_timing=True) for k in ("g0", "g1", "a0", "a1", "b0", "b1")}
            ev["g0"].record()
            with torch.cuda.stream(side):
                side.wait_event(ev["g0"])
                ev["a0"].record(side)
                torch.cuda._sleep(SHORT_CYCLES)
                ev["a1"].record(side)
                ev["b0"].record(side)
                torch.cuda._sleep(long_cycles)
                ev["b1"].record(side)
            fn()
            ev["g1"].record()
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            at = {k: ev["g0"].elapsed_time(v) * 1e6 for k, v in ev.items()}  # ns from the op's start event
            short_ns, long_ns = at["a1"] - at["a0"], at["b1"] - at["b0"]
            mhz = (long_cycles - SHORT_CYCLES) / max(long_ns - short_ns, 1e-3) * 1e3
            rows.append({"state": state, "shape": name, "repeat": r, "long_cycles": long_cycles,
                         "events_ns": {k: round(v, 1) for k, v in at.items()}, "side_mhz": round(mhz, 1),
                         "inside": bool(at["b1"] <= at["g1"])})
        inside = sorted(x["side_mhz"] for x in rows if x["shape"] == name and x["inside"])
        print(f"side {state:<9} {name:<34} op {est_ns / 1e3:8.1f} us  spins inside {len(inside)}/{repeats} "
              f"clock {inside[len(inside) // 2] if inside else None} MHz", flush=True)
        del fn
        torch.cuda.empty_cache()
    return rows


def run(rest_s: float, warm_s: float, side_repeats: int, shape_set: str = "fit", trains_too: bool = True,
        hot: bool = False) -> dict:
    """Side clocks from idle, trains (``trains_too``), the shape set from idle, pre-heated for
    60 ms (``hot``), after ``warm_s`` of load with side clocks in that state, and from idle again."""
    nvml = Nvml(0)
    shapes = SHAPE_SETS[shape_set]
    doc: dict = {**provenance.collect("cuda", 1), "lead_us": LEAD_US, "heat_ms": HEAT_MS, "warm_s": warm_s,
                 "rest_s": rest_s, "shape_set": shape_set, "grid_shapes": [list(s) for s in shapes]}
    time.sleep(rest_s)
    doc["side"] = side_clocks("as_found", side_repeats, rest_s)
    if trains_too:
        time.sleep(rest_s)
        doc["trains"] = trains(nvml, rest_s)
    time.sleep(rest_s)
    rows = timed_shapes("as_found", ClockedTimer("cuda", nvml, lead_us=LEAD_US), shapes)
    if hot:
        time.sleep(rest_s)
        rows += timed_shapes("hot", ClockedTimer("cuda", nvml, heat_ms=HEAT_MS, lead_us=LEAD_US), shapes)
    steady = ClockedTimer("cuda", nvml, heat_ms=HEAT_MS, lead_us=LEAD_US)
    steady.preheat(warm_s)
    rows += timed_shapes("steady", steady, shapes)
    if not trains_too:  # the second probe: the clock during each op when the GPU is power-capped
        doc["side"] += side_clocks("steady", side_repeats, rest_s, heater=steady)
    time.sleep(3 * rest_s)
    rows += timed_shapes("as_found_again", ClockedTimer("cuda", nvml, lead_us=LEAD_US), shapes)
    doc["rows"] = rows
    nvml.stop()
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("boost_probe.json"))
    p.add_argument("--rest-s", type=float, default=3.0, help="idle seconds before each boost measurement")
    p.add_argument("--warm-s", type=float, default=5.0, help="GEMM load before the steady phase")
    p.add_argument("--side-repeats", type=int, default=8)
    p.add_argument("--shapes", choices=sorted(SHAPE_SETS), default="fit", help="grid shape set")
    p.add_argument("--no-trains", action="store_true", help="skip the trains; time side clocks in the steady state too")
    p.add_argument("--hot", action="store_true", help="also time the shapes after 60 ms of heat from idle")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    doc = run(args.rest_s, args.warm_s, args.side_repeats, args.shapes, not args.no_trains, args.hot)
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}: {len(doc['rows'])} timings, {len(doc.get('trains', []))} trains, {len(doc['side'])} side probes",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
