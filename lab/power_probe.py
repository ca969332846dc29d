"""Burst versus sustained GEMM throughput, with the GPU's clocks and power beside it.

A GPU that has idled runs a short burst of large GEMMs at boost clocks; under sustained load
it settles at a lower, power-limited clock. Training runs sustained, so the calibration times
shapes after a GEMM load (``--heat-ms``). This probe records the difference: an 8192^3 bf16
GEMM (nn.Linear layout) timed as a burst after idling, then in chunks over a sustained run,
then as a burst again after a rest, while a thread samples ``nvidia-smi`` (SM clock, power,
temperature, throttle reasons) every quarter second.
``python3 -m lab.power_probe --out power_probe.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from moesim.calibrate import provenance

N = 8192
SMI_FIELDS = "clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active"


def _sampler(stop: threading.Event, out: list, t0: float) -> None:
    while not stop.is_set():
        res = subprocess.run(["nvidia-smi", "-i", "0", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=False)
        out.append({"t_s": round(time.monotonic() - t0, 3), "smi": res.stdout.strip()})
        stop.wait(0.25)


def _chunk_tflops(fn, count: int) -> float:
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(count):
        fn()
    e.record()
    torch.cuda.synchronize()
    return 2.0 * N**3 * count / (s.elapsed_time(e) * 1e-3) / 1e12


def probe(idle_s: float = 3.0, sustained_s: float = 15.0) -> dict:
    g = torch.Generator(device="cuda").manual_seed(5)
    x, w = (torch.randn(N, N, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    y = torch.empty_like(x)
    fn = lambda: torch.mm(x, w.t(), out=y)  # noqa: E731
    fn()
    torch.cuda.synchronize()
    smi: list = []
    stop = threading.Event()
    t0 = time.monotonic()
    thread = threading.Thread(target=_sampler, args=(stop, smi, t0), daemon=True)
    thread.start()
    rows = []
    for phase in ("burst_after_idle", "sustained", "burst_after_rest"):
        time.sleep(idle_s if phase != "sustained" else 0.0)
        end = time.monotonic() + (sustained_s if phase == "sustained" else 0.0)
        while True:
            rows.append({"phase": phase, "t_s": round(time.monotonic() - t0, 3), "tflops": round(_chunk_tflops(fn, 10), 1)})
            if time.monotonic() >= end:
                break
    stop.set()
    thread.join()
    return {"gemm": f"{N}x{N}x{N} bf16, y = x w^T, chunks of 10", "smi_fields": SMI_FIELDS, "chunks": rows, "smi": smi}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("power_probe.json"))
    p.add_argument("--sustained-s", type=float, default=15.0)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    doc = {**provenance.collect("cuda", 1), **probe(sustained_s=args.sustained_s)}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for phase in ("burst_after_idle", "sustained", "burst_after_rest"):
        vals = [r["tflops"] for r in doc["chunks"] if r["phase"] == phase]
        print(f"{phase:<18} chunks={len(vals):4d} first={vals[0]:.0f} last={vals[-1]:.0f} TFLOP/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
