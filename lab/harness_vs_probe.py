"""Is a host-bound case's spread between the layer harness and a probe the process or the moment?

Alternates, six times with 1 s pauses, in ONE process on one machine: the harness's own timing of a
case (``layer_workloads.Runner.build`` + ``measure``), the same with Python's garbage collector off
during the timing, and ``lab/megatron_host_trace.py``'s ticked program (host wall per iteration, back
to back). Cases: the Megatron t1024 forward and the torchtitan loop t1024 forward that the harness
files read 1.2-2.1 ms and 10-24 ms. ``python3 lab/harness_vs_probe.py --out hvp.json``.
Nothing here feeds a prediction.
"""
from __future__ import annotations

import argparse
import gc
import json
import time

import numpy as np
import torch

from lab.megatron_host_trace import Ticks, loop_ticked, megatron_ticked
from moesim.calibrate import layer_cases as lc
from moesim.calibrate import layer_workloads as lw
from moesim.calibrate.layer_programs import MoEWeights

CASES = ("deepseek_v2_lite.megatron.grouped.scatter_add.t1024.uniform.fwd",
         "qwen3_30b_a3b.torchtitan.loop.scatter_add.t1024.uniform.fwd")


def probe_wall(case, device: str, iters: int = 20) -> float:
    shape = lc.MOE_SHAPES[case.model]
    w = MoEWeights(shape, device)
    chosen, _ = lw.draw_routing(shape, case.tokens, case.routing, case.zipf_s)
    titan = case.movement == "torchtitan"
    x = torch.randn((case.tokens, shape.hidden), device=device, dtype=torch.bfloat16)
    bias = lw.route_bias(chosen, shape.num_experts, lw.ROUTE_BIAS_FP32 if titan else lw.ROUTE_BIAS_BF16,
                         torch.float32 if titan else torch.bfloat16, device)
    prog, tick = (loop_ticked if titan else megatron_ticked), Ticks(False)
    with torch.no_grad():
        for _ in range(3):
            prog(w, x, bias, shape.top_k, tick)
        lw.sync(device)
        t0 = time.perf_counter_ns()
        for _ in range(iters):
            prog(w, x, bias, shape.top_k, tick)
        lw.sync(device)
    return (time.perf_counter_ns() - t0) / iters


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = args.device
    cases = {c.id: c for c in lw.plan_cases(dev != "cuda")}
    runner = lw.Runner(dev)
    lw.preheat(dev, 3.0)
    out = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "cases": {}}
    for cid in CASES:
        rec = {"harness": [], "harness_gc_off": [], "probe": []}
        step, _ = runner.build(cases[cid])
        for _ in range(6):
            m = lw.measure(step, dev, 60.0)
            rec["harness"].append(m.time_ns)
            time.sleep(1.0)
            gc.disable()
            try:
                m = lw.measure(step, dev, 60.0)
            finally:
                gc.enable()
            rec["harness_gc_off"].append(m.time_ns)
            time.sleep(1.0)
            rec["probe"].append(round(probe_wall(cases[cid], dev), 1))
            time.sleep(1.0)
        out["cases"][cid] = rec
        print(cid, {k: [round(v / 1e3) for v in vs] for k, vs in rec.items()}, flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
