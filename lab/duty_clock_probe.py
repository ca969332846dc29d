"""Does a GEMM's time depend on how much of the GPU's time GEMMs fill (power-limited clock vs duty)?

Superseded by the calibrate section ``duty`` (``moesim/calibrate/duty_section.py``), which makes
the same measurement into profile rows; kept as the record of the 2026-12-06 run.

The calibration grid times each shape right after ``--heat-ms`` of 8192^3 GEMMs, back to back with
L2 flushes: a GEMM duty near 100%, so its rows hold the clock of a GPU at its power cap. A layer
mixes GEMMs with memory-bound kernels (permutes, copies, scatter-adds, activations), which draw
less power; the same GEMM may then run at a higher clock. This probe runs, for several GEMM duty
fractions, a steady pattern of one GEMM and enough 64 MiB copies to fill the rest, for a few
seconds (power and temperature settle), then times the GEMM alone between CUDA events inside the
pattern and samples the SM clock and board power with ``nvidia-smi``. Each duty is measured
twice in a shuffled order, so a drift over the run shows.

    python3 -m lab.duty_clock_probe --out FILE [--settle-s 3]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import time
from pathlib import Path

import torch

DUTIES = (1.0, 0.85, 0.7, 0.55, 0.4, 0.25)
COPY_BYTES = 64 * 2**20


def _smi() -> subprocess.Popen:
    return subprocess.Popen(["nvidia-smi", "--query-gpu=clocks.sm,power.draw,temperature.gpu", "--format=csv,noheader,nounits",
                             "-lms", "100"], stdout=subprocess.PIPE, text=True)


def _read(p: subprocess.Popen) -> dict:
    p.terminate()
    out = p.communicate(timeout=5)[0]
    rows = []
    for ln in out.strip().splitlines():
        try:
            rows.append([float(x) for x in ln.split(",")])
        except ValueError:   # "[N/A]" or a torn line
            continue
    rows = [r for r in rows if len(r) == 3]
    if not rows:
        return {}
    return {"sm_mhz": statistics.median(r[0] for r in rows), "power_w": statistics.median(r[1] for r in rows),
            "temp_c": statistics.median(r[2] for r in rows), "samples": len(rows)}


def _gemm_ops() -> dict:
    from moesim.calibrate.duty_section import _gemms   # the calibrate section's two GEMMs

    return _gemms()


def _median_event_ms(fn, n: int = 20) -> float:
    ts = []
    for _ in range(n):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e))
    return statistics.median(ts)


def measure(name: str, fn, duty: float, copy, copy_ms: float, gemm_ms: float, settle_s: float) -> dict:
    copies = 0 if duty >= 1.0 else max(1, round(gemm_ms * (1 - duty) / duty / copy_ms))

    def pattern() -> None:
        fn()
        for _ in range(copies):
            copy()

    per = gemm_ms + copies * copy_ms
    t0 = time.monotonic()
    while time.monotonic() - t0 < settle_s:
        for _ in range(max(1, int(50 / per))):
            pattern()
        torch.cuda.synchronize()
    smi = _smi()
    starts, ends = [], []
    for _ in range(40):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record()
        for _ in range(copies):
            copy()
        starts.append(s); ends.append(e)
    for _ in range(max(1, int(300 / per))):   # keep the pattern running while nvidia-smi samples
        pattern()
    torch.cuda.synchronize()
    state = _read(smi)
    ts = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    achieved = gemm_ms / per
    return {"op": name, "duty_asked": duty, "duty": round(achieved, 3), "copies_per_gemm": copies,
            "gemm_ms": statistics.median(ts), "gemm_p25_ms": sorted(ts)[len(ts) // 4], "gemm_p75_ms": sorted(ts)[3 * len(ts) // 4],
            **state}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--settle-s", type=float, default=3.0)
    args = p.parse_args()
    src = torch.empty(COPY_BYTES // 2, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    copy = lambda: dst.copy_(src)  # noqa: E731
    ops = _gemm_ops()
    # reference: a cool GPU, then the calibration grid's protocol (20 ms of 8192^3 GEMMs first)
    from moesim.calibrate.timing import Timer
    rows = []
    copy_ms = _median_event_ms(copy, 50)
    for name, fn in ops.items():
        cool = _median_event_ms(fn, 10)
        grid = Timer("cuda", heat_ms=20.0).time(fn).median_ns / 1e6
        rows.append({"op": name, "protocol": "cool", "gemm_ms": cool})
        rows.append({"op": name, "protocol": "grid (heat 20 ms, L2 flush)", "gemm_ms": grid})
    order = [(n, d) for n in ops for d in DUTIES] * 2
    random.Random(7).shuffle(order)
    for name, duty in order:
        fn = ops[name]
        gemm_ms = _median_event_ms(fn, 5)
        rows.append(measure(name, fn, duty, copy, copy_ms, gemm_ms, args.settle_s))
        print(json.dumps(rows[-1]), flush=True)
    doc = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "copy_bytes": COPY_BYTES,
           "copy_ms": copy_ms, "settle_s": args.settle_s, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": "python3 -m lab.duty_clock_probe " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
           "rows": rows}
    args.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
