"""Engine speed: simulated tasks/s and flow events/s on synthetic workloads.

    python benchmarks/engine_speed.py [--quick] [--repeat N]

(a) 100k independent compute tasks on 8 GPUs (the engine folds runs of independent tasks into
one timeout, so this measures building and folding more than the event loop; target >= 250k
tasks/s on a 2-core machine); (b) repeated 8-GPU all-to-alls on one DGX H100 (fluid network, 56
flows per collective); (c) one 512-GPU ring all-reduce on a 64-node rail-optimized fat-tree;
(d) chained compute tasks, each depending on the previous (nothing folds), on one stream and
rotating over 8 GPUs, against bare SimPy timeouts/s measured in the same process (target: the
one-stream chain at >= 40% of bare SimPy); (e) one EP64 dispatch: 64 H800 GPUs (8 nodes), 4,032
flows of Zipf-drawn sizes, all started at once (target <= 0.25 s, the topology's first-use route search
counted apart as well); (f) the EP32 MoE scenario of ``benchmarks/scaling.py`` (Qwen3-30B-A3B,
4 layers, 32 GPUs, 4 microbatches) through ``run_scenario``: build, engine run and analysis
(target <= 3 s for the whole).

Timings of (d)-(f) are CPU seconds of this process (``time.process_time``), the best of
``--repeat`` runs: the machine is shared, and CPU time is what the engine costs.
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moesim.engine import Simulation, gc_paused  # noqa: E402
from moesim.topology.loader import load_topology  # noqa: E402


def timed(build_and_run):
    """Wall time of build + run, and the build and run phases apart; peak Python heap from a
    second, traced pass (tracemalloc slows code several-fold, so it never shares the timing)."""
    t0 = time.perf_counter()
    sim, result = build_and_run()
    wall = time.perf_counter() - t0
    tracemalloc.start()
    build_and_run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return sim, result, wall, peak


def bench_compute(num_tasks: int):
    phases = {}

    def go():
        t0 = time.perf_counter()
        sim = Simulation(load_topology("dgx_h100"), record_link_counters=False)
        with gc_paused():  # bulk building, as build_scenario does
            for i in range(num_tasks):
                sim.compute(i % 8, 1000 + (i % 7), "k")
        t1 = time.perf_counter()
        result = sim.run()
        phases.setdefault("build", t1 - t0)
        phases.setdefault("run", time.perf_counter() - t1)
        return sim, result
    sim, result, wall, peak = timed(go)
    return sim, result, wall, peak, phases


def bench_all_to_all(repeats: int):
    def go():
        sim = Simulation(load_topology("dgx_h100"))
        for i in range(repeats):
            sim.collective("all_to_all", list(range(8)), 64e6, f"a2a{i}")
        return sim, sim.run()
    return timed(go)


def bench_ring(num_nodes: int):
    def go():
        topo = load_topology("dgx_h100", nodes=num_nodes)
        sim = Simulation(topo, record_link_counters=False)
        sim.collective("all_reduce", list(range(topo.num_gpus)), 1e9, "ar")
        return sim, sim.run()
    return timed(go)


def best_cpu(fn, repeat: int) -> tuple[float, object]:
    """The smallest CPU time of ``repeat`` calls of ``fn`` and the last call's result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def chained_run_cpu(num_tasks: int, gpus: int) -> float:
    """CPU seconds of ``run()`` for a chain of compute tasks, task i on GPU i % gpus depending on
    task i-1 (built beforehand, not timed)."""
    sim = Simulation(load_topology("dgx_h100"), record_link_counters=False)
    with gc_paused():
        prev = None
        for i in range(num_tasks):
            prev = sim.compute(i % gpus, 1000, "k", deps=(prev,) if prev is not None else ())
    t0 = time.process_time()
    sim.run()
    return time.process_time() - t0


def bare_simpy_cpu(num_timeouts: int) -> float:
    """CPU seconds of one bare SimPy process yielding ``num_timeouts`` timeouts."""
    import simpy

    env = simpy.Environment()

    def proc():
        for _ in range(num_timeouts):
            yield env.timeout(1000)
    env.process(proc())
    t0 = time.process_time()
    env.run()
    return time.process_time() - t0


def bench_chained(num_tasks: int, repeat: int) -> list[str]:
    bare = min(bare_simpy_cpu(num_tasks) for _ in range(repeat))
    lines = [f"(d) bare SimPy: {num_tasks / bare:,.0f} timeouts/s (CPU)"]
    for gpus in (1, 8):
        cpu = min(chained_run_cpu(num_tasks, gpus) for _ in range(repeat))
        where = "one stream" if gpus == 1 else f"rotating over {gpus} GPUs (a dependency event + a timeout each)"
        lines.append(f"(d) chained, {where}: {num_tasks / cpu:,.0f} tasks/s = {bare / cpu:.0%} of bare SimPy")
    return lines


def ep_dispatch(nodes: int, seed: int = 0):
    """One all-to-all of 8 x ``nodes`` H800 GPUs (``h800_cluster``), one receiving task per GPU,
    every pair's size drawn from a Zipf law (0.1-5 MB), all flows started at t = 0."""
    import numpy as np

    topo = load_topology("h800_cluster", nodes=nodes)
    n = topo.num_gpus
    sizes = np.random.default_rng(seed).zipf(1.5, size=(n, n)).clip(1, 50) * 1e5
    sim = Simulation(topo, record_link_counters=False)
    for j in range(n):
        flows = [(i, j, float(sizes[i, j])) for i in range(n) if i != j]
        sim.comm([(j, "comm.ep")], [flows], f"recv{j}", category="all_to_all")
    return sim.run()


def first_routes(nodes: int) -> None:
    """Every pair's route on a fresh ``h800_cluster`` of ``nodes`` nodes (the topology's
    equal-cost path search, done on first use and cached per topology object)."""
    topo = load_topology("h800_cluster", nodes=nodes)
    n = topo.num_gpus
    for src in range(n):
        for dst in range(n):
            topo.route(src, dst, src * n + dst)


def bench_dispatch(repeat: int, nodes: int = 8) -> str:
    cpu, r = best_cpu(lambda: ep_dispatch(nodes), repeat)
    routes, _ = best_cpu(lambda: first_routes(nodes), repeat)
    return (f"(e) EP{8 * nodes} dispatch, {r.num_flows:,} flows: {cpu:.2f} s CPU (target <= 0.25 s; "
            f"{routes:.2f} s of it the topology's first-use route search), {r.num_rate_solves:,} rate solves, "
            f"simulated {r.makespan_ns / 1e3:.1f} us")


def ep32_parts() -> tuple[dict[str, float], object]:
    """``run_scenario(moe(32))`` (build, engine run, analysis) with the CPU seconds of each part."""
    from scaling import moe  # benchmarks/scaling.py
    from moesim.experiment.build import build_scenario
    from moesim.experiment.runner import run_built

    parts: dict[str, float] = {}
    scn = moe(32)
    t0 = time.process_time()
    built = build_scenario(scn, force=True)
    parts["build"] = time.process_time() - t0
    run = built.sim.run

    def timed_run(*args, **kwargs):
        t = time.process_time()
        out = run(*args, **kwargs)
        parts["run"] = time.process_time() - t
        return out
    built.sim.run = timed_run
    res, _rec = run_built(scn, built)
    parts["total"] = time.process_time() - t0
    parts["analysis"] = parts["total"] - parts["build"] - parts["run"]
    return parts, res


def bench_ep32(repeat: int) -> str:
    runs = [ep32_parts() for _ in range(repeat)]
    parts, res = min(runs, key=lambda r: r[0]["total"])
    return (f"(f) EP32 MoE scenario, 32 GPUs: {parts['total']:.2f} s CPU build + run + analysis (target <= 3 s): "
            f"build {parts['build']:.2f}, engine run {parts['run']:.2f}, analysis {parts['analysis']:.2f}; "
            f"{res.num_tasks:,} tasks, {res.num_flows:,} flows, step {res.step_time_ms:.1f} ms")


def raw_simpy(num_timeouts: int) -> float:
    """Timeouts per second of bare SimPy on this machine now: the ceiling for (a)."""
    import simpy

    env = simpy.Environment()

    def proc(n: int):
        for _ in range(n):
            yield env.timeout(1000)
    for _ in range(8):
        env.process(proc(num_timeouts // 8))
    t0 = time.perf_counter()
    env.run()
    return num_timeouts / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of (d)-(f); the best CPU time is printed")
    args = ap.parse_args()
    n_tasks, n_a2a, n_nodes = (10_000, 10, 8) if args.quick else (100_000, 200, 64)

    rows = []
    sim, r, wall, peak, phases = bench_compute(n_tasks)
    rows.append(("(a) independent compute, 8 GPUs", f"{n_tasks} tasks", wall,
                 f"{n_tasks / wall:,.0f} tasks/s end to end; run phase {n_tasks / phases['run']:,.0f} tasks/s, "
                 f"building {n_tasks / phases['build']:,.0f} tasks/s", peak))
    sim, r, wall, peak = bench_all_to_all(n_a2a)
    ev = r.num_flows + r.num_rate_solves
    rows.append(("(b) 8-GPU all-to-all (fluid)", f"{n_a2a} x 56 flows", wall,
                 f"{r.num_flows / wall:,.0f} flows/s, {r.num_rate_solves / wall:,.0f} rate solves/s, {ev / wall:,.0f} flow events/s", peak))
    sim, r, wall, peak = bench_ring(n_nodes)
    ev = r.num_flows + r.num_rate_solves
    rows.append((f"(c) ring all-reduce, {8 * n_nodes} GPUs", f"{r.num_flows} flows", wall,
                 f"{r.num_flows / wall:,.0f} flows/s, {ev / wall:,.0f} flow events/s; simulated {r.makespan_ns / 1e6:.2f} ms", peak))
    print(f"reference: bare SimPy runs {raw_simpy(n_tasks):,.0f} timeouts/s on this machine right now")
    print(f"{'case':38} {'size':18} {'wall s':>8} {'peak MB':>8}  rate")
    for name, size, wall, rate, peak in rows:
        print(f"{name:38} {size:18} {wall:8.2f} {peak / 1e6:8.1f}  {rate}")
    for line in bench_chained(n_tasks, args.repeat):
        print(line)
    print(bench_dispatch(args.repeat, nodes=2 if args.quick else 8))
    if not args.quick:
        print(bench_ep32(args.repeat))


if __name__ == "__main__":
    main()
