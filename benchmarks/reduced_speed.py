"""How fast the reduced engine (moesim.scale) simulates DeepSeek-V3 at 2,048 GPUs, and how its
cost grows with GPUs, layers and microbatches.

Part 1 runs the scenarios of ``experiments/deepseek_v3_2048.py`` as ``moesim run`` does (one
:class:`~moesim.scale.cache.ReducedCache` shared by the experiment's scenarios): per scenario the
build and engine time (wall and CPU seconds), the tasks, and what the shared cache served. The
first scenario pays the routing draws, DeepEP copies, phase solves and expert costs; the later
ones only what is their own (schedule, overlap, lowering, the engine run). ``--cold`` gives every
scenario its own cache (the cost of one scenario alone). "made" is the CPU seconds spent making
each kind the cache missed (routing draws, phase solvers, solved phases, expert costs, fabrics).

Part 2 (``--growth``) varies one factor of the ``dualpipe`` scenario at a time, each run with its
own cache: GPUs (dp, with EP64 and PP16), MoE layers kept (``num_layers``) and microbatches.

Timings are of this machine; CPU seconds are the figure to compare when other work shares it.

Run: python benchmarks/reduced_speed.py [--cold] [--growth [--factors gpus,microbatches,layers]] [--scenarios N]
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import time
from pathlib import Path

from moesim.scale.cache import ReducedCache
from moesim.scale.reduced import ReducedOptions, build_reduced

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "deepseek_v3_2048.py"


def load_scenarios():
    spec = importlib.util.spec_from_file_location("deepseek_v3_2048", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPERIMENT.scenarios


def timed(scn, cache: ReducedCache) -> dict:
    """Build and run one scenario; wall and CPU seconds of each part."""
    w0, c0 = time.perf_counter(), time.process_time()
    built = build_reduced(scn, ReducedOptions(), cache)
    w1, c1 = time.perf_counter(), time.process_time()
    res = built["sim"].run()
    w2, c2 = time.perf_counter(), time.process_time()
    return {"build_s": w1 - w0, "build_cpu_s": c1 - c0, "run_s": w2 - w1, "run_cpu_s": c2 - c1,
            "tasks": res.num_tasks, "step_ms": res.makespan_ns / 1e6}


def row(name: str, gpus: int, t: dict, extra: str = "") -> str:
    total, cpu = t["build_s"] + t["run_s"], t["build_cpu_s"] + t["run_cpu_s"]
    return (f"{name:<28}{gpus:>6}{t['tasks']:>8}{t['step_ms']:>11.1f}{t['build_s']:>8.1f}{t['run_s']:>7.1f}"
            f"{total:>8.1f}{t['build_cpu_s']:>8.1f}{t['run_cpu_s']:>7.1f}{cpu:>8.1f}  {extra}")


HEADER = (f"{'scenario':<28}{'GPUs':>6}{'tasks':>8}{'step ms':>11}{'build':>8}{'run':>7}{'wall s':>8}{'build':>8}"
          f"{'run':>7}{'cpu s':>8}  (wall s: build, run, total; CPU s: build, run, total)")


def experiment(scenarios, cold: bool) -> None:
    print(f"DeepSeek-V3 2,048 GPUs, {'a fresh cache per scenario' if cold else 'one cache for the experiment'}")
    print(HEADER)
    shared = ReducedCache()
    for scn in scenarios:
        cache = ReducedCache() if cold else shared
        before = {k: dict(v) for k, v in cache.summary().items()}
        t = timed(scn, cache)
        after = cache.summary()
        served = ", ".join(f"{k} {after[k]['hits'] - before[k]['hits']:.0f}/"
                           f"{after[k]['hits'] - before[k]['hits'] + after[k]['misses'] - before[k]['misses']:.0f}"
                           for k in after)
        print(row(scn.name, scn.plan.world_size, t, f"cache hits: {served}"))
        made = {k: round(after[k]["seconds"] - before[k]["seconds"], 2) for k in after}
        if any(made.values()):
            print(f"{'':<28}  made (CPU s): " + ", ".join(f"{k} {v}" for k, v in made.items()))


def growth(base, factors: set[str]) -> None:
    print("\ngrowth: the dualpipe scenario, one factor at a time (each with a fresh cache)")
    print(HEADER)
    plan = base.plan
    for dp in (64, 128, 256) if "gpus" in factors else ():
        scn = dataclasses.replace(base, nodes=dp * plan.pp // 8, plan=dataclasses.replace(plan, dp=dp))
        print(row(f"dp={dp}", scn.plan.world_size, timed(scn, ReducedCache())))
    for m in (32, 64, 128) if "microbatches" in factors else ():
        scn = dataclasses.replace(base, plan=dataclasses.replace(plan, num_microbatches=m))
        print(row(f"microbatches={m}", scn.plan.world_size, timed(scn, ReducedCache())))
    from moesim.lowering.resolve import resolve_model

    spec = resolve_model(base.model)
    for layers in (16, 32, spec.num_layers) if "layers" in factors else ():
        scn = dataclasses.replace(base, model=dataclasses.replace(spec, num_layers=layers))
        print(row(f"num_layers={layers}", scn.plan.world_size, timed(scn, ReducedCache())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="a fresh cache for every scenario")
    parser.add_argument("--growth", action="store_true", help="also vary GPUs, microbatches and layers")
    parser.add_argument("--factors", default="gpus,microbatches,layers", help="which factors --growth varies")
    parser.add_argument("--scenarios", type=int, default=None, help="run only the first N scenarios")
    args = parser.parse_args()
    scenarios = load_scenarios()[:args.scenarios]
    if scenarios:
        experiment(scenarios, args.cold)
    if args.growth:
        growth(load_scenarios()[0], set(args.factors.split(",")))


if __name__ == "__main__":
    main()
