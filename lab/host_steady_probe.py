"""Is the host time of one eager iteration the same in steady state as right after a sync?

``layer_workloads.host_issue_ns`` times ONE iteration issued right after a ``synchronize`` and a
queued GPU sleep. For the torchtitan grouped t1024 cases it reads ~1.5 ms while the same step runs
back to back at ~0.95 ms per iteration, which a 1.5 ms host issue could not sustain. This probe
times, per case:

- ``gpu_ns``: back-to-back iterations between CUDA events (as ``measure``);
- ``cold_ns``: one iteration right after sync + sleep (``host_issue_ns``'s protocol), 5 rounds;
- ``chain_ns``: K iterations issued behind one long sleep, each iteration's host time alone
  (the first is the cold one, the rest are steady state), 3 rounds;
- ``wall_free_ns``: back-to-back iterations' host wall time with no sleep (host and GPU overlap).

And a micro chain: 40 small ``F.linear`` calls, each call's host time, issued (a) right after a
``synchronize`` then a sleep, (b) right after another 40 calls (warm), (c) right after a
``.item()`` read (the Megatron ``.cpu()`` / loop ``.tolist()`` pattern: host waited on the GPU).

``--harness N``: after that pass, run the first N layer-workload cases as
``moesim.calibrate.layer_workloads`` does (preheat, ``run_case``), probe again, then
``gc.collect()`` + ``torch.cuda.empty_cache()`` and probe a third time (does the harness process
itself slow the host?).

``python3 lab/host_steady_probe.py --device cuda --out probe.json`` (``--device cpu``: a smoke run).
Nothing here feeds a prediction.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from moesim.calibrate import layer_workloads as lw
from moesim.calibrate.layer_workloads import Runner, plan_cases, sync
from moesim.calibrate.timing import BUSY_CYCLES_PER_NS

CASES = (
    "qwen3_30b_a3b.torchtitan.grouped.scatter_add.t1024.uniform.fwd",
    "qwen3_30b_a3b.torchtitan.grouped.scatter_add.t1024.uniform.fwd_bwd",
    "qwen3_30b_a3b.torchtitan.grouped.scatter_add.t16384.uniform.fwd",
    "deepseek_v2_lite.torchtitan.grouped.scatter_add.t4096.uniform.fwd_bwd",
    "llama3_8b.dense.s2048.fwd",
    "llama3_8b.dense.s2048.fwd_bwd",
)
WALL_CASES = (  # cases with a device-to-host read: only gpu_ns and wall_free_ns
    "deepseek_v2_lite.megatron.grouped.scatter_add.t1024.uniform.fwd",
    "deepseek_v2_lite.megatron.grouped.scatter_add.t1024.uniform.fwd_bwd",
    "qwen3_30b_a3b.torchtitan.loop.scatter_add.t1024.uniform.fwd",
)
SMOKE = ("tiny_moe.torchtitan.grouped.scatter_add.t32.uniform.fwd", "tiny_dense.dense.s32.fwd_bwd")
K = 8


def sleep_ns(ns: float, device: str) -> None:
    if device == "cuda":
        torch.cuda._sleep(int(ns * BUSY_CYCLES_PER_NS))


def busy_marker(device: str):
    if device != "cuda":
        return None
    ev = torch.cuda.Event()
    ev.record()
    return ev


def still_busy(ev) -> bool:
    return ev is None or not ev.query()


def gpu_ns(step, device: str, n: int = 10) -> float:
    """Per-iteration time of back-to-back iterations, median of 3 rounds (the harness's timer)."""
    for _ in range(3):
        step()
    sync(device)
    return float(np.median([lw._timed(step, n, device) / n for _ in range(3)]))


def wall_free_ns(step, device: str, n: int = 10) -> float:
    """Host wall time per iteration of back-to-back iterations (ends at the last issue, no sync)."""
    sync(device)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        step()
    dt = (time.perf_counter_ns() - t0) / n
    sync(device)
    return float(dt)


def cold_ns(step, device: str, gpu: float) -> list[float]:
    out = []
    for _ in range(5):
        sync(device)
        sleep_ns(max(4 * gpu, 2e6), device)
        mark = busy_marker(device)
        t0 = time.perf_counter_ns()
        step()
        dt = time.perf_counter_ns() - t0
        out.append(float(dt) if still_busy(mark) else -1.0)
    sync(device)
    return out


def chain_ns(step, device: str, gpu: float, cold: float) -> list[list[float]]:
    rounds = []
    for _ in range(3):
        sync(device)
        sleep_ns(max(K * 3 * max(gpu, cold), 5e6), device)
        mark = busy_marker(device)
        times = []
        for _ in range(K):
            t0 = time.perf_counter_ns()
            step()
            times.append(float(time.perf_counter_ns() - t0))
        if not still_busy(mark):
            times.append(-1.0)   # the GPU ran dry: the later samples waited for it
        rounds.append(times)
    sync(device)
    return rounds


def micro(device: str) -> dict:
    """Per-call host time of 40 small linears after a sync, after 40 calls, after an .item()."""
    n, width = 40, 256
    ws = [torch.randn(width, width, device=device, dtype=torch.bfloat16) for _ in range(n)]
    x0 = torch.randn(64, width, device=device, dtype=torch.bfloat16)

    def chain(x):
        times = []
        for w in ws:
            t0 = time.perf_counter_ns()
            x = F.linear(x, w)
            times.append(time.perf_counter_ns() - t0)
        return x, times

    out: dict = {"after_sync": [], "warm": [], "after_item": []}
    for _ in range(7):
        sync(device)
        sleep_ns(20e6, device)
        _x, t_sync = chain(x0)
        _x, t_warm = chain(x0)
        sync(device)
        s = x0.sum()
        _ = s.item()   # host waits for the GPU (idle queue now)
        sleep_ns(20e6, device)
        _x, t_item = chain(x0)
        out["after_sync"].append(t_sync)
        out["warm"].append(t_warm)
        out["after_item"].append(t_item)
    sync(device)
    return {k: np.median(np.array(v, dtype=float), axis=0).round(1).tolist() for k, v in out.items()}


def probe_cases(runner, cases: dict, ids, dev: str, smoke: bool) -> dict:
    out = {}
    for cid in ids:
        step, _ = runner.build(cases[cid])
        g = gpu_ns(step, dev)
        rec = {"gpu_ns": round(g, 1), "wall_free_ns": round(wall_free_ns(step, dev), 1)}
        if cid in CASES or smoke:
            cold = cold_ns(step, dev, g)
            rec["cold_ns"] = cold
            rec["chain_ns"] = chain_ns(step, dev, g, max(cold))
        out[cid] = rec
        print(cid, json.dumps(rec), flush=True)
        del step
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--harness", type=int, default=0, help="then run this many layer-workload cases and probe again")
    args = ap.parse_args()
    dev = args.device
    smoke = dev != "cuda"
    cases = {c.id: c for c in plan_cases(smoke)}
    runner = Runner(dev)
    doc: dict = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                 "torch": torch.__version__, "host": platform.processor() or platform.machine(),
                 "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "micro": micro(dev), "cases": {}}
    print("micro", json.dumps({k: [round(sum(v) / 1e3, 1), v[:5]] for k, v in doc["micro"].items()}), flush=True)
    ids = SMOKE if smoke else CASES + WALL_CASES
    doc["cases"] = probe_cases(runner, cases, ids, dev, smoke)
    if args.harness:
        lw.preheat(dev, 3.0)
        inventory: dict = {}
        t0 = time.monotonic()
        ran = [lw.run_case(runner, c, 60.0, inventory, dev)["id"] for c in list(cases.values())[:args.harness]]
        doc["harness"] = {"cases": ran, "wall_s": round(time.monotonic() - t0, 1)}
        doc["after_harness"] = probe_cases(runner, cases, ids, dev, smoke)
        gc.collect()
        if dev == "cuda":
            torch.cuda.empty_cache()
        doc["after_cleanup"] = probe_cases(runner, cases, ids, dev, smoke)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
