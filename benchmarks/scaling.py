"""How simulation cost grows with GPUs, microbatches and layers.

    python benchmarks/scaling.py [--quick] [--section all|dense|reduced]

Dense: a Llama-3-8B-shaped model (TP1, PP4, DP = GPUs/4, 1F1B) on DGX H100 nodes, swept over
GPU count (fixed 16 microbatches, 32 layers), microbatches (16 GPUs) and layers (16 GPUs).
MoE: Qwen3-30B-A3B layers (4 layers, EP = GPUs, Zipf routing) on 8 and 16 GPUs. Eager host:
the dense 8- and 16-GPU rows with ``host="eager"`` (a simulated host thread per GPU).
Each row prints tasks, flows, wall seconds (build + run + analysis), tasks/s and the peak
Python heap of the same run traced a second time (tracemalloc slows code, so timing and
memory come from separate passes).
Reduced (``--section reduced``): the DeepSeek-V3 preset (``deepseek-v3-h800``, EP64, DualPipe,
selective recomputation) through ``moesim.scale.reduced.run_reduced`` at 64-2,048 GPUs (32
microbatches) and at 2,048 GPUs over 16-256 microbatches. Each configuration runs in a fresh
subprocess (``--one``) so its peak RSS is its own; rows print build and run seconds, peak RSS,
tasks, flows and events (tasks + flows) per wall second, then log-log slopes of wall time
against GPUs and microbatches.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

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


def pipeline_only(microbatches: int) -> Scenario:
    """Llama-3-8B on one DGX H100 as 8 pipeline stages (no DP, no TP): many tasks, few flows."""
    spec = dataclasses.replace(get_model("llama3-8b"), num_layers=32, seq_len=4096)
    return Scenario(name=f"pp8_{microbatches}m", topology="dgx_h100", nodes=1, model=spec,
                    plan=ParallelPlan(tp=1, dp=1, pp=8, num_microbatches=microbatches))


def moe(gpus: int, microbatches: int = 4) -> Scenario:
    spec = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=4, seq_len=4096)
    return Scenario(name=f"moe_ep{gpus}", topology="dgx_h100", nodes=max(1, gpus // 8), model=spec,
                    plan=ParallelPlan(dp=gpus, ep=gpus, num_microbatches=microbatches),
                    moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=1.0)))


def measure(scn: Scenario) -> tuple:
    t0 = time.perf_counter()
    res, rec = run_scenario(scn)
    wall = time.perf_counter() - t0
    tracemalloc.start()
    run_scenario(scn)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return res, wall, peak


# --- reduced DeepSeek-V3 runs -------------------------------------------------------------------

# Pipeline ranks per GPU count: PP16 wherever DP >= EP = 64 allows it (the preset's shape), else
# DP = 64 and as many ranks as fill the GPUs. DualPipe needs an even rank count, so 64 GPUs
# (PP1) run 1F1B, which is what one pipeline rank amounts to.
REDUCED_PP = {64: 1, 128: 2, 256: 4, 512: 8, 1024: 16, 2048: 16}


def reduced_scenario(gpus: int, num_microbatches: int, num_layers: int = 0) -> Scenario:
    """The deepseek-v3-h800 preset resized to ``gpus`` GPUs and ``num_microbatches`` microbatches
    (and ``num_layers`` layers, the first three dense as in the model, when given)."""
    from moesim.planner.presets import get_preset

    pp = REDUCED_PP[gpus]
    scn = get_preset("deepseek-v3-h800").scenario()
    plan = dataclasses.replace(scn.plan, dp=gpus // pp, pp=pp, num_microbatches=num_microbatches)
    model = dataclasses.replace(scn.model, num_layers=num_layers) if num_layers else scn.model
    scn = dataclasses.replace(scn, name=f"dsv3_{gpus}g_{num_microbatches}m", nodes=gpus // 8, plan=plan,
                              model=model, memory=dataclasses.replace(scn.memory, recompute="selective"))
    return scn if pp % 2 == 0 else dataclasses.replace(scn, schedule="1f1b")


def run_one(gpus: int, num_microbatches: int, num_layers: int = 0) -> dict:
    """One reduced run in this process: its figures, or the error text of a refused configuration."""
    from moesim.errors import ConfigError
    from moesim.scale.reduced import ReducedOptions, run_reduced

    scn = reduced_scenario(gpus, num_microbatches, num_layers)
    row = {"gpus": gpus, "pp": scn.plan.pp, "dp": scn.plan.dp, "microbatches": num_microbatches,
           "schedule": scn.schedule, "layers": scn.model.num_layers}
    try:
        res = run_reduced(scn, ReducedOptions())
    except ConfigError as exc:
        return {**row, "error": str(exc)}
    return {**row, "step_time_ms": res["step_time_ms"], **res["engine"]}


def measure_reduced(gpus: int, num_microbatches: int, num_layers: int = 0) -> dict:
    """``run_one`` in a fresh interpreter, so peak RSS belongs to this configuration alone."""
    out = subprocess.run([sys.executable, __file__, "--one", str(gpus), str(num_microbatches), str(num_layers)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        return {"gpus": gpus, "microbatches": num_microbatches, "layers": num_layers,
                "error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_reduced_row(sweep: str, row: dict) -> None:
    head = f"{sweep:12} {row['gpus']:5d} {row.get('pp', 0):3d} {row.get('dp', 0):4d} {row['microbatches']:4d} " \
           f"{row.get('layers', 0):4d} {row.get('schedule', '?'):9}"
    if "error" in row:
        print(f"{head} error: {row['error']}", flush=True)
        return
    events = row["tasks"] + row["flows"]
    print(f"{head} {row['step_time_ms']:10.1f} {row['build_s']:7.2f} {row['wall_s'] - row['build_s']:6.2f} "
          f"{row['wall_s']:7.2f} {row['peak_rss_mib']:8.1f} {row['tasks']:7d} {row['flows']:7d} "
          f"{events / row['wall_s']:9,.0f}", flush=True)


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x): the exponent k of y ~ x^k."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def print_growth(label: str, rows: list[dict], key: str) -> None:
    ok = [r for r in rows if "error" not in r and r.get("schedule") == "dualpipe"]
    if len(ok) < 2:
        return
    xs = [r[key] for r in ok]
    fits = {"wall": [r["wall_s"] for r in ok], "build": [r["build_s"] for r in ok],
            "run": [r["wall_s"] - r["build_s"] for r in ok], "tasks+flows": [r["tasks"] + r["flows"] for r in ok],
            "peak RSS": [r["peak_rss_mib"] for r in ok]}
    slopes = ", ".join(f"{name} ~ {label}^{loglog_slope(xs, ys):.2f}" for name, ys in fits.items())
    print(f"growth over {label} {min(xs)}-{max(xs)} (DualPipe rows): {slopes}", flush=True)


def reduced_section(quick: bool) -> None:
    gpus = [128, 2048] if quick else [64, 128, 256, 512, 1024, 2048]
    mbs = [32, 64] if quick else [16, 32, 64, 120, 128, 256]
    print(f"{'sweep':12} {'GPUs':>5} {'pp':>3} {'dp':>4} {'mb':>4} {'lay':>4} {'schedule':9} {'step ms':>10} {'build s':>7} "
          f"{'run s':>6} {'wall s':>7} {'RSS MiB':>8} {'tasks':>7} {'flows':>7} {'events/s':>9}", flush=True)
    done: dict[tuple[int, int], dict] = {}
    by_gpus, by_mbs = [], []
    for g in gpus:
        done[g, 32] = measure_reduced(g, 32)
        by_gpus.append(done[g, 32])
        print_reduced_row("GPUs", done[g, 32])
    for m in mbs:
        row = done.get((2048, m)) or measure_reduced(2048, m)
        by_mbs.append(row)
        print_reduced_row("microbatches", row)
    by_layers = [done[2048, 32]]
    for n in ([122] if quick else [32, 122, 244]):
        row = measure_reduced(2048, 32, n)
        by_layers.append(row)
        print_reduced_row("layers", row)
    print_growth("GPUs", by_gpus, "gpus")
    print_growth("microbatches", by_mbs, "microbatches")
    print_growth("layers", sorted(by_layers, key=lambda r: r.get("layers", 0)), "layers")


def dense_section(quick: bool) -> None:
    gpus = [8] if quick else [8, 16, 32, 64]
    mbs = [8] if quick else [8, 16, 32, 64]
    layers = [8] if quick else [8, 16, 32]
    cases = ([("GPUs", g, dense(g, 16, 32)) for g in gpus]
             + [("microbatches", m, dense(16, m, 32)) for m in mbs]
             + [("layers", n, dense(16, 16, n)) for n in layers]
             + [("MoE EP GPUs", g, moe(g)) for g in ([8] if quick else [8, 16])]
             + [("eager host", g, dataclasses.replace(dense(g, 16, 32), host="eager")) for g in ([8] if quick else [8, 16])])
    print(f"{'sweep':14} {'value':>6} {'tasks':>8} {'flows':>8} {'wall s':>7} {'tasks/s':>9} {'peak MB':>8}  simulated step")
    for sweep, value, scn in cases:
        res, wall, peak = measure(scn)
        print(f"{sweep:14} {value:6d} {res.num_tasks:8d} {res.num_flows:8d} {wall:7.2f} {res.num_tasks / wall:9,.0f} "
              f"{peak / 1e6:8.1f}  {res.step_time_ms:.1f} ms", flush=True)


def estimate_cases(quick: bool) -> list[tuple[str, int, Scenario]]:
    """The full-engine rows of the dense section, task-heavy pipeline-only rows (no DP flows) and
    MoE up to EP64 (flows in flight up to 4,032)."""
    gpus = [8] if quick else [8, 16, 32, 64]
    mbs = [8] if quick else [8, 16, 32, 64]
    layers = [8] if quick else [8, 16, 32]
    return ([("GPUs", g, dense(g, 16, 32)) for g in gpus]
            + [("microbatches", m, dense(16, m, 32)) for m in mbs]
            + [("layers", n, dense(16, 16, n)) for n in layers]
            + [("pipeline only", m, pipeline_only(m)) for m in ([64] if quick else [64, 256])]
            + [("MoE EP GPUs", g, moe(g)) for g in ([8] if quick else [8, 16, 32, 64])]
            + [("eager host", g, dataclasses.replace(dense(g, 16, 32), host="eager")) for g in ([8] if quick else [8, 16])])


def estimate_section(quick: bool, fit: bool) -> None:
    """The size estimate's time against the measurement: CPU seconds of build + run (the machine
    is shared; CPU time is the engine's cost). ``fit``: refit the time constants on these rows and
    print them with the refitted ratios. The estimate's memory (peak RSS, with or without the
    trace and plots) is measured and fitted by benchmarks/memory_estimate.py on these same rows."""
    from moesim.experiment.estimate import CONSTANTS, estimate_run, exchange_flows, parts_of
    from moesim.experiment.estimate_fit import fit_costs, fit_minimax, measure

    rows = []
    measure(dense(8, 8, 8), trace_memory=False)  # warm-up: imports, profile and cost-model caches
    print(f"{'sweep':14} {'value':>5} {'tasks':>8} {'flows':>8} {'in flight':>9} {'est s':>7} {'CPU s':>7} "
          f"{'ratio':>6}", flush=True)
    for sweep, value, scn in estimate_cases(quick):
        est = estimate_run(scn)
        timed = measure(scn, trace_memory=False)
        rows.append((sweep, value, scn, est, timed))
        print(f"{sweep:14} {value:5d} {timed.tasks:8d} {timed.flows:8d} {est.flows_in_flight:9d} {est.wall_s:7.2f} "
              f"{timed.cpu_s:7.2f} {est.wall_s / timed.cpu_s:6.2f}", flush=True)
    if not fit:
        return
    fluid = [r for r in rows if r[4].network == "fluid"]
    ex = {id(scn): exchange_flows(parts_of(scn)) for _, _, scn, *_ in fluid}
    # the rows cannot tell a task's or a ring flow's seconds apart from the fixed cost: held at
    # what benchmarks/engine_speed.py measures ((a) build + run per task, (c) per ring flow)
    t_fix, t_task, t_flow, t_ex, t_ex_k = fit_costs([(m.tasks, m.flows, ex[id(scn)], e.flows_in_flight, m.cpu_s)
                                                     for _, _, scn, e, m in fluid], per_task=3e-6, per_flow=2e-6)
    # then the worst ratio, not the squares, is what the estimate promises
    t_fix, t_ex, t_ex_k = fit_minimax([(m.tasks, m.flows, ex[id(scn)], e.flows_in_flight, m.cpu_s)
                                       for _, _, scn, e, m in fluid], t_task, t_flow, (t_fix, t_ex, t_ex_k))
    print(f"fitted: seconds fixed {t_fix:.3f}, per task {t_task * 1e6:.1f} us, per flow {t_flow * 1e6:.1f} us, "
          f"per exchange flow {t_ex * 1e6:.1f} us + {t_ex_k * 1e9:.1f} ns per flow in flight")
    refit = dataclasses.replace(
        CONSTANTS, seconds_per_task=t_task, seconds_fixed=t_fix,
        seconds_per_flow={**CONSTANTS.seconds_per_flow, "fluid": t_flow},
        seconds_per_exchange_flow={"fluid": (t_ex, t_ex_k)})
    for sweep, value, scn, _, timed in rows:
        est = estimate_run(scn, refit)
        print(f"refit {sweep:14} {value:5d} time {est.wall_s / timed.cpu_s:5.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the smallest rows of each sweep only")
    ap.add_argument("--fit", action="store_true", help="with --section estimate: refit the estimate's constants")
    ap.add_argument("--section", choices=("all", "dense", "reduced", "estimate"), default="all",
                    help="dense: full-engine dense and EP16 sweeps; reduced: DeepSeek-V3 at 64-2,048 GPUs")
    ap.add_argument("--one", nargs="+", type=int, metavar="N",
                    help="internal: GPUS MICROBATCHES [LAYERS]: one reduced run in this process, printed as JSON")
    args = ap.parse_args()
    if args.one:
        if len(args.one) not in (2, 3) or args.one[0] not in REDUCED_PP:
            ap.error(f"--one takes GPUS MICROBATCHES [LAYERS], GPUS one of {sorted(REDUCED_PP)}")
        print(json.dumps(run_one(*args.one)))
        return
    if args.section == "estimate":
        estimate_section(args.quick, args.fit)
        return
    if args.section in ("all", "dense"):
        dense_section(args.quick)
    if args.section in ("all", "reduced"):
        if args.section == "all":
            print()
        reduced_section(args.quick)


if __name__ == "__main__":
    main()
