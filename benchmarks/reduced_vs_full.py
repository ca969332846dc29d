"""How far the reduced run (moesim.scale) is from the full per-GPU engine, and how much faster.

Small expert-parallel clusters both engines can simulate: Qwen3-30B-A3B cut to 4 layers on
H800 nodes (``h800_cluster``), Zipf 0.5 routing, tp=1 and TP2 / TP4 inside the EP groups, 8
microbatches, and EP folded over TP x DP (``ep_layout="folded"``). For each, the time to the
end of the last backward (the full engine all-reduces gradients, the reduced run does ZeRO-1,
so the data-parallel tail is left out), both engines' wall time, and the phase solver's load
bound against the per-flow fluid solve on one real dispatch.

``--large`` adds 128-GPU cases (EP64 over 8 nodes; TP2 x EP32 DualPipe), the largest the full
engine finishes here in minutes (about 12 minutes each on the shared 2-core machine).

``--ep64`` adds EP64 cases (the DeepSeek-V3 group: 64 GPUs on 8 nodes, every all-to-all 4,032
flows) cut so the full engine finishes in minutes: 64 GPUs (one pipeline rank, 2 layers, 4
microbatches) and 512 GPUs (PP8, one layer per stage, 2 or 4 microbatches); ``--ep64-only`` runs
just those, ``--gpus 64,512`` / ``--microbatches 4`` only cases of those sizes. The full engine's CPU seconds are printed too (the
machine is shared; wall time includes waiting for a core).

Measured on the shared 2-core machine (2026-12-06, compiled fluid network; full engine CPU s):
64 GPUs EP64 full 365.94 ms, reduced 369.47 ms (+1.0%), 7.0 CPU s; 512 GPUs EP64 x PP8, 4
microbatches: 481.73 vs 486.74 ms (+1.0%), 44.2 CPU s (the numpy network took 56.6 and 239 s).
The reduced run took 0.4-0.7 s. The whole DeepSeek-V3 step at 512 GPUs: ``python -m
lab.full_engine_512``.

Run: python benchmarks/reduced_vs_full.py [--large] [--ep64 | --ep64-only] [--gpus N,M] [--microbatches M]
"""
from __future__ import annotations

import dataclasses
import sys
import time

from moesim.experiment.runner import run_scenario
from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario
from moesim.memory import MemoryConfig
from moesim.moe.routing import RoutingConfig
from moesim.scale.phase import fluid_phase_ns
from moesim.scale.reduced import ReducedOptions, build_reduced
from moesim.workload.presets import get_model

SPEC = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=4)
CASES = [  # nodes, tp, dp, pp, ep, schedule
    (2, 1, 8, 2, 8, "1f1b"),
    (4, 1, 16, 2, 8, "1f1b"),
    (4, 1, 16, 2, 16, "1f1b"),
    (4, 1, 16, 2, 16, "dualpipe"),
    (8, 1, 32, 2, 16, "dualpipe"),
    (4, 2, 8, 2, 8, "1f1b"),
    (4, 4, 4, 2, 4, "1f1b"),
    (8, 2, 16, 2, 16, "dualpipe"),
]
# EP folded over TP x DP (Megatron's expert TP 1: each EP group whole TP groups on consecutive GPUs)
FOLDED_CASES = [
    (4, 2, 8, 2, 16, "1f1b"),
    (4, 2, 8, 2, 8, "1f1b"),
    (4, 4, 4, 2, 16, "dualpipe"),
]
LARGE_CASES = [
    (16, 1, 64, 2, 64, "1f1b"),
    (16, 2, 32, 2, 32, "dualpipe"),
]
# EP64 (the DeepSeek-V3 group size: 64 GPUs on 8 nodes, one all-to-all of 4,032 flows), cut to
# what the full engine finishes in minutes: few layers and microbatches. 512 GPUs: PP8 of EP64
# groups, one layer per stage, 2 microbatches (mostly pipeline bubble; the comparison is of the
# exchanges and the pipeline's P2P around them)
EP64_CASES = [
    (8, 1, 64, 1, 64, "1f1b", 2, 4),
    (64, 1, 64, 8, 64, "1f1b", 8, 2),
    (64, 1, 64, 8, 64, "1f1b", 8, 4),
]


def scenario(nodes: int, tp: int, dp: int, pp: int, ep: int, schedule: str, layers: int = 4, microbatches: int = 8,
             pair_overlap: bool = True, layout: str = "strided") -> Scenario:
    spec = SPEC if layers == SPEC.num_layers else dataclasses.replace(SPEC, num_layers=layers)
    suffix = "" if (layers, microbatches) == (SPEC.num_layers, 8) else f"-l{layers}m{microbatches}"
    suffix += "-folded" if layout == "folded" else ""
    return Scenario(name=f"{schedule}-{nodes * 8}gpu-tp{tp}-ep{ep}{suffix}", topology="h800_cluster", nodes=nodes,
                    model=spec, schedule=schedule, memory=MemoryConfig(recompute="none"),
                    plan=ParallelPlan(tp=tp, dp=dp, pp=pp, ep=ep, num_microbatches=microbatches,
                                      pair_overlap=pair_overlap, ep_layout=layout),
                    moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=0.5, seed=3)))


def pipeline_ns(spans) -> int:
    return max(s.end_ns for s in spans if s.category not in ("reduce_scatter", "all_gather", "optimizer")
               and not s.name.startswith("dp:"))


def main() -> None:
    cases = ([] if "--ep64-only" in sys.argv else CASES) + (LARGE_CASES if "--large" in sys.argv else []) \
        + (EP64_CASES if "--ep64" in sys.argv or "--ep64-only" in sys.argv else [])
    cases = [(*c, "strided") for c in cases] + ([] if "--ep64-only" in sys.argv else [(*c, "folded") for c in FOLDED_CASES])
    if "--gpus" in sys.argv:   # only cases of these sizes: --gpus 64,512
        sizes = {int(g) for g in sys.argv[sys.argv.index("--gpus") + 1].split(",")}
        cases = [c for c in cases if c[0] * 8 in sizes]
    if "--microbatches" in sys.argv:   # only cases with this many microbatches (8 unless given)
        wanted = int(sys.argv[sys.argv.index("--microbatches") + 1])
        cases = [c for c in cases if (c[7] if len(c) > 8 else 8) == wanted]
    print(f"{'case':<36}{'GPUs':>5}{'full ms':>10}{'reduced ms':>12}{'diff':>8}{'full s':>8}{'red. s':>8}"
          f"{'full cpu':>9}", flush=True)
    for nodes, tp, dp, pp, ep, schedule, *shape, layout in cases:
        for overlap in ((True, False) if schedule == "dualpipe" else (True,)):
            scn = scenario(nodes, tp, dp, pp, ep, schedule, *shape, pair_overlap=overlap, layout=layout)
            t0, c0 = time.perf_counter(), time.process_time()
            _res, rec = run_scenario(scn, force=True)
            t1, c1 = time.perf_counter(), time.process_time()
            built = build_reduced(scn, ReducedOptions(routing_samples=min(8, scn.plan.num_microbatches)))
            red = built["sim"].run().recorder
            t2 = time.perf_counter()
            full_ns, red_ns = pipeline_ns(rec.spans), pipeline_ns(red.spans)
            name = scn.name + ("" if overlap else "-nopair")
            print(f"{name:<36}{nodes * 8:>5}{full_ns / 1e6:>10.2f}{red_ns / 1e6:>12.2f}{red_ns / full_ns - 1:>+8.1%}"
                  f"{t1 - t0:>8.1f}{t2 - t1:>8.1f}{c1 - c0:>9.1f}", flush=True)
    if "--ep64-only" in sys.argv:
        return
    scn = scenario(8, 1, 64, 1, 64, "1f1b")
    built = build_reduced(scn, ReducedOptions(routing_samples=1))
    ex = built["exchange"]
    plan = ex.routing.plan(0, 0, 0, 0)
    out_b, _ = ex.table.bytes_per_token("F")
    t0 = time.perf_counter()
    bound = ex.solver.solve(plan.tokens).duration_ns(out_b)
    t1 = time.perf_counter()
    fluid = fluid_phase_ns(ex.solver.topo, range(64), plan.tokens * out_b, built["efficiency"])
    t2 = time.perf_counter()
    print(f"\none EP64 dispatch on 8 H800 nodes (layer 0, Zipf 0.5): load bound {bound / 1e3:.1f} us in "
          f"{(t1 - t0) * 1e3:.1f} ms; per-flow fluid {fluid / 1e3:.1f} us in {t2 - t1:.1f} s "
          f"({bound / fluid - 1:+.2%})")


if __name__ == "__main__":
    main()
