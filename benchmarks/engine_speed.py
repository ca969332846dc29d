"""Engine speed: simulated tasks/s and flow events/s on three synthetic workloads.

    python benchmarks/engine_speed.py [--quick]

(a) 100k independent compute tasks on 8 GPUs (pure event-loop cost; target >= 250k tasks/s on
a 2-core machine); (b) repeated 8-GPU all-to-alls on one DGX H100 (fluid network, 56 flows per
collective); (c) one 512-GPU ring all-reduce on a 64-node rail-optimized fat-tree.
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


if __name__ == "__main__":
    main()
