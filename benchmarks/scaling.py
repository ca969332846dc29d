"""How simulation cost grows with GPUs, microbatches and layers.

    python benchmarks/scaling.py [--quick]

Dense: a Llama-3-8B-shaped model (TP1, PP4, DP = GPUs/4, 1F1B) on DGX H100 nodes, swept over
GPU count (fixed 16 microbatches, 32 layers), microbatches (16 GPUs) and layers (16 GPUs).
MoE: Qwen3-30B-A3B layers (4 layers, EP = GPUs, Zipf routing) on 8 and 16 GPUs.
Each row prints tasks, flows, wall seconds (build + run + analysis), tasks/s and the peak
Python heap of the same run traced a second time (tracemalloc slows code, so timing and
memory come from separate passes).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moesim.experiment import MoEOptions, ParallelPlan, Scenario  # noqa: E402
from moesim.experiment.runner import run_scenario  # noqa: E402
from moesim.moe.routing import RoutingConfig  # noqa: E402
from moesim.workload.presets import get_model  # noqa: E402


def dense(gpus: int, microbatches: int, layers: int) -> Scenario:
    spec = dataclasses.replace(get_model("llama3-8b"), num_layers=layers, seq_len=4096)
    plan = ParallelPlan(tp=1, dp=gpus // 4, pp=4, num_microbatches=microbatches, order="dp-pp-tp")
    return Scenario(name=f"dense_{gpus}g_{microbatches}m_{layers}l", topology="dgx_h100", nodes=max(1, gpus // 8),
                    model=spec, plan=plan)


def moe(gpus: int, microbatches: int = 4) -> Scenario:
    spec = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=4, seq_len=4096)
    return Scenario(name=f"moe_ep{gpus}", topology="dgx_h100", nodes=max(1, gpus // 8), model=spec,
                    plan=ParallelPlan(dp=gpus, ep=gpus, num_microbatches=microbatches),
                    moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=1.0, tokens_per_rank=1)))


def measure(scn: Scenario) -> tuple:
    t0 = time.perf_counter()
    res, rec = run_scenario(scn)
    wall = time.perf_counter() - t0
    tracemalloc.start()
    run_scenario(scn)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return res, wall, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the smallest row of each sweep only")
    args = ap.parse_args()
    gpus = [8] if args.quick else [8, 16, 32, 64]
    mbs = [8] if args.quick else [8, 16, 32, 64]
    layers = [8] if args.quick else [8, 16, 32]
    cases = ([("GPUs", g, dense(g, 16, 32)) for g in gpus]
             + [("microbatches", m, dense(16, m, 32)) for m in mbs]
             + [("layers", n, dense(16, 16, n)) for n in layers]
             + [("MoE EP GPUs", g, moe(g)) for g in ([8] if args.quick else [8, 16])])
    print(f"{'sweep':14} {'value':>6} {'tasks':>8} {'flows':>8} {'wall s':>7} {'tasks/s':>9} {'peak MB':>8}  simulated step")
    for sweep, value, scn in cases:
        res, wall, peak = measure(scn)
        print(f"{sweep:14} {value:6d} {res.num_tasks:8d} {res.num_flows:8d} {wall:7.2f} {res.num_tasks / wall:9,.0f} "
              f"{peak / 1e6:8.1f}  {res.step_time_ms:.1f} ms")


if __name__ == "__main__":
    main()
