"""Is the host slower while the GPU works hard than while it sleeps?

The host figures of a profile (``host_classes``) are timed behind ``torch.cuda._sleep``: the GPU
is busy but draws ~120 W. Layer workloads timed right after heavy cases read host-bound times up to
2x those of the same case in a quiet process minutes later (lab/host_steady_probe.py). This probe
times the same host work behind two kinds of queued GPU work, alternating, several rounds:

- ``sleep``: one ``torch.cuda._sleep`` (low power);
- ``gemm``: a queue of large bf16 GEMMs (full power), long enough to outlast the host work.

Host work: a chain of 40 small ``F.linear`` calls, and 6 iterations of the Llama-3-8B dense layer
forward (s2048, no grad) from the layer workloads, each timed alone. Before the rounds, ``--heat-s``
seconds of GEMMs. ``python3 lab/host_power_probe.py --device cuda --out power.json``
(``--device cpu``: a smoke run, no GPU work queued). Nothing here feeds a prediction.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from moesim.calibrate.layer_workloads import Runner, plan_cases, sync
from moesim.calibrate.timing import BUSY_CYCLES_PER_NS

DENSE = "llama3_8b.dense.s2048.fwd"
SMOKE_DENSE = "tiny_dense.dense.s32.fwd"


def queue_gpu(kind: str, ns: float, device: str, a: "torch.Tensor | None") -> None:
    if device != "cuda":
        return
    if kind == "sleep":
        torch.cuda._sleep(int(ns * BUSY_CYCLES_PER_NS))
        return
    for _ in range(max(1, int(ns / 1.0e6))):   # one 8192^3 bf16 GEMM: ~1.1-1.6 ms on H100/H200
        torch.mm(a, a)


def linear_chain(ws, x0) -> float:
    t0 = time.perf_counter_ns()
    x = x0
    for w in ws:
        x = F.linear(x, w)
    return float(time.perf_counter_ns() - t0)


def step_times(step, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        step()
        out.append(float(time.perf_counter_ns() - t0))
    return out


def gpu_state() -> str:
    try:
        import subprocess
        return subprocess.run(["nvidia-smi", "--query-gpu=power.draw,clocks.sm,temperature.gpu", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, ValueError):
        return ""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--heat-s", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    dev = args.device
    smoke = dev != "cuda"
    cases = {c.id: c for c in plan_cases(smoke)}
    step, _ = Runner(dev).build(cases[SMOKE_DENSE if smoke else DENSE])
    width = 256
    ws = [torch.randn(width, width, device=dev, dtype=torch.bfloat16) for _ in range(40)]
    x0 = torch.randn(64, width, device=dev, dtype=torch.bfloat16)
    big = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16) if not smoke else None
    for _ in range(3):
        step()
        linear_chain(ws, x0)
    sync(dev)
    t_end = time.monotonic() + args.heat_s
    while not smoke and time.monotonic() < t_end:
        queue_gpu("gemm", 50e6, dev, big)
        sync(dev)
    doc: dict = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__,
                 "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "heat_s": args.heat_s, "rounds": []}
    for r in range(args.rounds):
        for kind in (("sleep", "gemm") if r % 2 == 0 else ("gemm", "sleep")):
            sync(dev)
            queue_gpu(kind, 120e6, dev, big)
            time.sleep(0.01)   # the queued work starts (and, for GEMMs, draws power)
            mark = None
            if dev == "cuda":
                mark = torch.cuda.Event()
                mark.record()
            chain = [linear_chain(ws, x0) for _ in range(5)]
            dense = step_times(step, 6)
            busy = mark is None or not mark.query()
            state = gpu_state() if dev == "cuda" else ""
            doc["rounds"].append({"round": r, "gpu_work": kind, "busy_throughout": busy, "gpu_state": state,
                                  "linear40_ns": chain, "dense_fwd_ns": dense})
            print(r, kind, busy, state, round(float(np.median(chain)) / 1e3, 1),
                  round(float(np.median(dense[1:])) / 1e3, 1), flush=True)
    sync(dev)
    summary = {}
    for kind in ("sleep", "gemm"):
        rows = [x for x in doc["rounds"] if x["gpu_work"] == kind and x["busy_throughout"]]
        summary[kind] = {"linear40_us": round(float(np.median([v for x in rows for v in x["linear40_ns"]])) / 1e3, 1)
                         if rows else None,
                         "dense_fwd_us": round(float(np.median([v for x in rows for v in x["dense_fwd_ns"][1:]])) / 1e3, 1)
                         if rows else None}
    doc["summary"] = summary
    print(json.dumps(summary), flush=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
