"""Does a GEMM's slowdown under load depend on how long its GEMM bursts last, not only on the GEMM
share? (GPU, torch; nothing here feeds a prediction)

The fifteenth session found the stored dense layer cases running near the burst clock (1,935-1,965
MHz sampled) although section ``duty`` says a 0.70 GEMM share holds ~1,650 MHz in steady state, and
the layers' GEMM slowdown growing with the layer's size (s2048 x1.00, s4096 x1.05, s8192 x1.06-1.11
over the burst rows) at about the same share. Two candidate mechanisms: the power limiter averages
over a window, so short GEMM bursts between memory-bound kernels never trip it while long ones do;
or the timed cases are too short (~150 ms of work after the previous case) for the steady state.

For GEMM bursts of ``k`` back-to-back dense 8192x4096x4096 GEMMs (``k`` in ``--bursts``), each
followed by 64 MiB copies to a GEMM share of ``--share``, this times the GEMM (median per GEMM over
the burst, CUDA events) in two regimes: *settled* (after ``--settle-s`` of the pattern) and *short*
(after ``--idle-s`` idle, a 150 ms run of the pattern, as a layer case's rounds are), with NVML's
mean SM clock and power over each timed window, against the GEMM alone on a cool GPU.

    python3 -m lab.burst_length_probe --out FILE [--share 0.7] [--bursts 1,2,4,8,16]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from moesim.calibrate.clock_timer import Nvml
from moesim.calibrate.duty_section import _events_ms

COPY_BYTES = 64 * 2**20


def _ms(fn, n: int) -> float:
    return statistics.median(_events_ms(fn, n))


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--share", type=float, default=0.7)
    ap.add_argument("--bursts", default="1,2,4,8,16")
    ap.add_argument("--settle-s", type=float, default=2.5)
    ap.add_argument("--idle-s", type=float, default=1.0)
    a = ap.parse_args(argv)
    g = torch.Generator(device="cuda").manual_seed(3)
    x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    src = torch.empty(COPY_BYTES // 2, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)

    def gemm() -> None:
        torch.mm(x, w)

    def copy() -> None:
        dst.copy_(src)

    nvml = Nvml(torch.cuda.current_device())
    rows = []
    try:
        for _ in range(20):
            gemm()
        torch.cuda.synchronize()
        time.sleep(a.idle_s * 3)
        cool = _ms(gemm, 10)
        copy_ms = _ms(copy, 20)
        for k in (int(v) for v in a.bursts.split(",")):
            copies = max(1, round(k * cool * (1 / a.share - 1) / copy_ms))
            period = k * cool + copies * copy_ms

            def burst(marks: "list | None" = None) -> None:
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                for _ in range(k):
                    gemm()
                e.record()
                if marks is not None:
                    marks.append((s, e))
                for _ in range(copies):
                    copy()

            for regime, lead_s in (("short", 0.15), ("settled", a.settle_s)):
                torch.cuda.synchronize()
                time.sleep(a.idle_s)
                t0 = time.monotonic()
                while time.monotonic() - t0 < lead_s - 0.05:   # the run before the timed window
                    for _ in range(max(1, int(10 / period))):
                        burst()
                    torch.cuda.synchronize()
                w0 = time.monotonic()
                marks: list = []
                for _ in range(max(5, int(50 / period))):
                    burst(marks)
                torch.cuda.synchronize()
                state = nvml.window(w0, time.monotonic())
                per_gemm = statistics.median(s.elapsed_time(e) for s, e in marks) / k
                rows.append({"burst_gemms": k, "burst_ms": round(k * cool, 3), "regime": regime,
                             "share": round(k * cool / period, 3), "gemm_ms": round(per_gemm, 4),
                             "over_cool": round(per_gemm / cool, 4), **state})
                print(f"burst {k:>3} x {cool:.3f} ms  {regime:<8} share {k * cool / period:.2f}  "
                      f"x{per_gemm / cool:.3f}  {state.get('sm_mhz')} MHz {state.get('power_w')} W", flush=True)
    finally:
        nvml.stop()
    Path(a.out).write_text(json.dumps({"cool_gemm_ms": cool, "copy_ms": copy_ms, "rows": rows,
                                       "device": torch.cuda.get_device_name(), "torch": torch.__version__}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
