"""Simulate a large expert-parallel training step by exact symmetry and per-phase events.

``run_reduced(scenario)`` simulates the scenario's whole training step (every pipeline rank,
every microbatch, every MoE layer's dispatch and combine, the DP gradient and parameter
collectives) without lowering every GPU. What is reduced, and why it holds, is listed in the
result's ``reductions``:

1. **EP groups by symmetry.** The ``tp * dp`` GPUs of a pipeline rank form ``tp * dp / ep``
   expert-parallel groups (order 'tp-dp-pp': EP group k at TP index t holds DP ranks
   ``k ep .. (k+1) ep - 1`` of that index; folded, ``ep / tp`` consecutive DP ranks' whole TP
   groups, :class:`~moesim.workload.parallel.ParallelPlan`). Every group sees the same routing
   sample (in moesim the seed fixes expert popularity, a property of the model) and the same fabric (whole nodes of
   a rail-optimised fabric, one NIC per GPU), so they run alike: one DP block is simulated. With
   TP the lane is one TP group (``tp`` GPUs of one node, its TP collectives on the real NVSwitch)
   and each of its GPUs runs its own EP group's phases; the phase solver loads the fabric with
   all ``tp`` groups of the block at once, as they share its nodes.
2. **Lanes.** Inside a group the GPUs do identical dense work and meet at every all-to-all; one
   lane per pipeline rank runs the dense work, each all-to-all as one phase event solved on the
   group's real fabric, and the busiest GPU's expert queue (:mod:`moesim.scale.lanes`). Nothing
   is averaged away: the slowest GPU sets the pace as it does through the combine.
3. **Routing samples.** ``routing_samples`` distinct routing draws per layer are cycled over the
   microbatches (sampling noise between microbatches beyond that is not repeated).
4. **DP collectives as phases.** ZeRO-1: per model chunk, after its last backward, a
   hierarchical reduce-scatter of the dense gradients over the ``dp`` GPUs (NVSwitch inside the
   node, then one ring per rail across nodes) and of the expert gradients over the ``dp / ep``
   expert-data-parallel GPUs; then the optimizer on the 1/dp shard and the all-gather of the
   updated bf16 parameters, each one phase event on the lane's NIC (:mod:`moesim.scale.dp_sync`).

Not reduced: DualPipe's (or any schedule's) order, the overlap of one microbatch's all-to-all
with the other's compute, the measured compute slowdown under communication, NIC sharing
between all-to-all, P2P and DP traffic, per-layer routing imbalance.
"""
from __future__ import annotations

import dataclasses
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moesim.costs.base import cost_sources, profile_identity
from moesim.costs.devices import gemm_peak_ratio
from moesim.engine import Simulation, gc_paused
from moesim.errors import ConfigError
from moesim.lowering.host import add_eager_host
from moesim.lowering.moe_costs import MoEStageTable, exec_kwargs
from moesim.lowering.op_classes import gemm_duty as duty_of
from moesim.lowering.pipeline import Grid, LoweringOptions, lower_pipeline
from moesim.lowering.resolve import (eager_host_counts, group_link_kind, make_routing, make_schedule,
                                     resolve_cost_model, resolve_model, scenario_host, scenario_overlap)
from moesim.lowering.overlap import compute_slowdown, table_kwargs
from moesim.lowering.sized_latency import sized_latency
from moesim.scale.cache import ReducedCache
from moesim.scale.dp_sync import zero1_sync
from moesim.scale.lanes import LaneExchangeLowering, LaneLink
from moesim.scale.phase import PhaseSolver
from moesim.topology.loader import load_topology
from moesim.workload.layers import gemm_precision
from moesim.workload.moe import MoESpec
from moesim.workload.parallel import ep_group_members

if TYPE_CHECKING:  # the Scenario type lives in moesim.experiment, above this layer
    from moesim.experiment.scenario import Scenario


@dataclass(frozen=True)
class ReducedOptions:
    """Knobs of the reduced run: routing samples cycled over microbatches. Everything else is the
    scenario's (overlap switches on the plan, ``overlap_slowdown`` on the scenario)."""

    routing_samples: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.routing_samples, bool) or not isinstance(self.routing_samples, int) \
                or self.routing_samples < 1:
            raise ConfigError("routing_samples", f"must be a whole number >= 1, got {self.routing_samples!r}")


@dataclass(frozen=True)
class _GroupGrid:
    """The routing generator's view of one EP group: EP rank d at TP index t is GPU ``d * tp + t``
    of the group fabric (TP innermost, as order 'tp-dp-pp' places it)."""

    tp: int = 1

    def gpu(self, tp: int, dp: int, pp: int) -> int:
        return dp * self.tp + tp


# The reduced run lowers every (microbatch, layer, pass) of one lane per pipeline rank: ~170 us
# each on one core (Qwen3-30B-A3B, 1,024 microbatches: 25 s), so 10^6 is minutes; 10^9
# microbatches ran out of memory instead of answering. Checked before anything is built.
MAX_LAYER_PASSES = 1_000_000


def _check_size(scn: Scenario, spec) -> None:
    passes = scn.plan.num_microbatches * spec.num_layers * (1 if scn.mode == "forward" else 3)
    if passes > MAX_LAYER_PASSES:
        raise ConfigError("plan.num_microbatches", f"{scn.plan.num_microbatches:,} microbatches x {spec.num_layers} "
                          f"layers x passes = {passes:,} layer passes, more than the reduced run's {MAX_LAYER_PASSES:,}",
                          "use fewer microbatches (past the warm-up the step grows by the same time per microbatch)")


def _check(scn: Scenario, spec, gpus_per_node: int, num_nodes: int) -> None:
    _check_size(scn, spec)
    plan = scn.plan
    if not isinstance(spec, MoESpec) or plan.ep < 2:
        raise ConfigError("plan.ep", "the reduced run simulates expert-parallel MoE models (ep >= 2)",
                          "use engine='full' (the default) for dense models or ep=1")
    if gpus_per_node % plan.tp:
        raise ConfigError("plan.tp", f"tp={plan.tp} does not divide the {gpus_per_node} GPUs of a node (the reduced "
                          "run keeps each TP group inside one node)", f"use a divisor of {gpus_per_node}, or the full "
                          "run `moesim run`")
    if plan.order != "tp-dp-pp":
        raise ConfigError("plan.order", f"the reduced run places DP innermost (order 'tp-dp-pp'), got {plan.order!r}",
                          "use order='tp-dp-pp'")
    if plan.world_size != gpus_per_node * num_nodes:
        raise ConfigError("plan", f"tp*dp*pp = {plan.world_size} GPUs but topology {scn.topology!r} with "
                          f"{num_nodes} nodes has {gpus_per_node * num_nodes}", "change dp/pp or nodes")
    block = _block(plan)
    what = "ep" if plan.ep_layout == "folded" else "ep*tp"
    if block > gpus_per_node and block % gpus_per_node:
        raise ConfigError("plan.ep", f"{what}={block} GPUs do not fill whole nodes of {gpus_per_node}",
                          f"use {what} dividing or a multiple of {gpus_per_node} (symmetric groups need whole nodes)")
    if (plan.dp * plan.tp) % gpus_per_node:
        raise ConfigError("plan.dp", f"dp*tp={plan.dp * plan.tp}: the GPUs of a pipeline rank do not fill whole "
                          f"nodes of {gpus_per_node}", f"use dp*tp a multiple of {gpus_per_node} (lanes stand for "
                          "whole nodes)")
    routing = scn.moe.routing
    if routing is not None and getattr(routing, "capacity_factor", None) is not None:
        raise ConfigError("moe.routing.capacity_factor", "the reduced run models dropless routing only",
                          "set capacity_factor=None or use the full run `moesim run` on a smaller cluster")
    if scn.moe.experts == "padded":
        raise ConfigError("moe.experts", "the reduced run models dropless routing only; experts='padded' drops "
                          "and pads to capacity", "use experts='grouped' or 'loop', or the full run `moesim run`")
    if scn.faults and (scn.faults.slow_gpus or scn.faults.slow_nics or scn.faults.failed_links
                       or scn.faults.degraded_links):
        raise ConfigError("faults", "injected faults break the symmetry the reduced run relies on",
                          "simulate faults with the full run on a smaller cluster")


def reducible(scn: Scenario) -> str | None:
    """Why the reduced run cannot simulate ``scn`` (the ConfigError's text), or None when it can.
    Cheap: loads one node of the fabric and the model, builds nothing."""
    try:
        probe = load_topology(scn.topology, nodes=1)
        _check(scn, resolve_model(scn.model), probe.gpus_per_host,
               scn.nodes or load_topology(scn.topology).num_hosts)
    except ConfigError as err:
        return str(err)
    return None


def _block(plan) -> int:
    """GPUs of the EP groups that share nodes: the tp strided groups of a DP block (``ep * tp``),
    or one folded group (``ep``, whole TP groups)."""
    return plan.tp * plan.ep_dp_span


def _groups(plan) -> list[list[int]]:
    """The EP groups on the group fabric (:func:`_block` GPUs numbered TP innermost,
    ``dp * tp + t``): strided, group t holds GPUs t, t + tp, t + 2 tp, ...; folded, one group of
    all of them (:func:`moesim.workload.parallel.ep_group_members` over one DP block)."""
    return [[d * plan.tp + t for d, t in members]
            for _t, _k, members in ep_group_members(plan.tp, plan.ep_dp_span, plan.ep, plan.ep_layout)]


def _nodes(gpus: int, per_node: int) -> int:
    return max(1, -(-gpus // per_node))


def build_reduced(scn: Scenario, options: ReducedOptions = ReducedOptions(),
                  cache: ReducedCache | None = None, gemm_duty: float | None = None) -> dict[str, Any]:
    """Everything the reduced run needs, lowered into a lane Simulation (see the module docstring).
    ``cache`` shares routing, phase solves and expert costs with the experiment's other scenarios
    (:mod:`moesim.scale.cache`); None builds everything afresh. With ``gpu_clock="duty"`` the lanes
    are first built and run at the burst clock and their GEMM duty read from that run
    (:func:`moesim.lowering.op_classes.gemm_duty`), unless ``gemm_duty`` gives it."""
    cache = cache if cache is not None else ReducedCache()
    if scn.gpu_clock == "duty" and gemm_duty is None:
        first = build_reduced(scn, options, cache, gemm_duty=0.0)
        gemm_duty = duty_of(first["sim"].run().recorder, first["cost"])
    gemm_duty = gemm_duty or 0.0
    plan = scn.plan
    probe = _topology(cache, scn.topology, 1)
    per_node = probe.gpus_per_host
    spec = resolve_model(scn.model)
    _check(scn, spec, per_node, scn.nodes or load_topology(scn.topology).num_hosts)
    cost = resolve_cost_model(scn.cost_model, probe.gpu_kind, scn.profile, scn.gpu_clock, gemm_duty, scn.host_speed)
    kinds = {l.kind for l in probe.links} | {"ib", "ethernet", "pcie", "nvswitch", "nvlink"}
    efficiency = {k: cost.link_efficiency(k) for k in sorted(kinds)}
    sched = make_schedule(scn)
    table = MoEStageTable(spec, sched, cost, tp=plan.tp, ep=plan.ep, expert_tp=plan.expert_tp,
                          micro_batch_size=plan.micro_batch_size,
                          sequence_parallel=plan.sequence_parallel, grad_dtype_bytes=plan.grad_dtype_bytes,
                          recompute=scn.memory.recompute, recompute_modules=scn.memory.recompute_modules,
                          recompute_at=scn.memory.recompute_at,
                          split_slots=scn.memory.split_slots(spec),
                          autograd=scn.mode != "forward", **exec_kwargs(scn.moe),
                          **table_kwargs(scenario_overlap(scn)))
    # The EP groups' own fabric: the nodes the EP groups of one DP block share, of the same
    # topology (routing and phase solves; :func:`_groups`)
    tp = plan.tp
    group_nodes = _nodes(_block(plan), per_node)
    group_topo = _topology(cache, scn.topology, group_nodes)
    groups = _groups(plan)
    fabric = (_topology_key(scn.topology), group_nodes, plan.ep, tp, plan.ep_layout)
    routing_key = (fabric, spec, scn.moe, scn.seed, table.tokens_per_rank, options.routing_samples,
                   plan.num_microbatches if _auto_sampler(scn) else None)
    routing = cache.get("routing", routing_key, lambda: _routing(scn, spec, table, group_topo, options))
    solver_key = (fabric, tuple(sorted(efficiency.items())))
    solver = cache.get("solvers", solver_key, lambda: PhaseSolver(group_topo, groups[0], efficiency, groups[1:]))
    pricing_key = (type(cost).__name__, cost.name, repr(profile_identity(cost)), spec, table.ep, table.experts,
                   table.token_movement, table.capacity, table.region, table.grouped_gemm)
    # Lanes: pipeline rank p on GPUs 0..tp-1 of node p (one TP group); mirrors on node pp + p.
    lane_topo = _topology(cache, scn.topology, 2 * plan.pp)
    ranks = tuple(p * per_node + t for p in range(plan.pp) for t in range(tp))
    lanes = tuple(p * per_node for p in range(plan.pp))
    link = LaneLink(lane_topo, efficiency, {g: (plan.pp * per_node + g) for g in ranks})
    group_kind = group_link_kind(group_topo, groups[0])
    exchange = LaneExchangeLowering(table, routing, solver, link, options.routing_samples,
                                    cost.collective_step_latency_ns("all_to_all", plan.ep, group_kind),
                                    per_task=scn.host == "eager", cache=cache,
                                    keys=(cache.intern(routing_key), cache.intern(solver_key),
                                          cache.intern(pricing_key)),
                                    layers=table.moe_layers)
    slowdown = compute_slowdown(scenario_overlap(scn), scn.overlap_slowdown, cost, probe.gpu_kind)
    sim = Simulation(lane_topo, mode="fluid", link_efficiency=efficiency, overlap_slowdown=slowdown, seed=scn.seed,
                     record_link_counters=False)   # lane links are stand-ins: their counters would mislead
    grid = Grid(tp, 1, plan.pp, ranks)
    tp_kind = group_link_kind(lane_topo, grid.tp_group(0, 0))
    opts = LoweringOptions(p2p_latency_ns=cost.p2p_latency_ns(group_link_kind(lane_topo, [0, per_node])),
                           tp_sized=sized_latency(cost, "all_reduce", grid.tp_group(0, 0), lane_topo, efficiency,
                                                  getattr(cost, "measured_link_kinds", ())),
                           tp_step_latency_ns=cost.collective_step_latency_ns("all_reduce", tp, tp_kind) if tp > 1 else 0,
                           p2p_overlap=plan.p2p_overlap, pair_overlap=plan.pair_overlap,
                           tp_overlap=scenario_overlap(scn).tp_comm_overlap)
    dp_info: dict[str, Any] = {"reduce_scatter_ms": {}, "all_gather_ms": {}, "all_reduce_ms": {}}
    nvswitch = min((l.bandwidth_gbps * efficiency.get(l.kind, 1.0) for l in group_topo.links
                    if l.kind in ("nvswitch", "nvlink")), default=min(link.capacity.values()))
    sync, gather = zero1_sync(scn, table, cost, link, grid, per_node, nvswitch, dp_info)
    opts = dataclasses.replace(opts, param_gather_overlap=gather is not None)
    host = scenario_host(scn, cost)
    with gc_paused():
        counts = lower_pipeline(sim, sched, grid, table, opts, exchange, gradient_sync=sync, param_gather=gather)
        if scn.host == "eager":   # a host thread per lane, as for every GPU of the full run
            counts.update(eager_host_counts(add_eager_host(sim, host)))
    return {"scenario": scn, "spec": spec, "cost": cost, "schedule": sched, "table": table, "sim": sim,
            "exchange": exchange, "counts": counts, "dp": dp_info, "lanes": lanes, "grid": grid, "slowdown": slowdown,
            "efficiency": efficiency, "per_node": per_node, "options": options, "gpu_kind": probe.gpu_kind,
            "num_gpus": plan.world_size, "host": host}


def _topology(cache: ReducedCache, topology: Any, nodes: int):
    """``load_topology(topology, nodes=nodes)``, once per experiment (see ReducedCache.topologies)."""
    return cache.get("topologies", (_topology_key(topology), nodes), lambda: load_topology(topology, nodes=nodes))


def _topology_key(topology: Any) -> Any:
    """A topology choice as a cache key: its name or path, or the object itself."""
    return str(topology) if isinstance(topology, (str, Path)) else id(topology)


def _auto_sampler(scn: Scenario) -> bool:
    """Whether the routing sampler is picked from the full run's token count (which depends on
    ``num_microbatches``; see :func:`_routing`)."""
    routing = scn.moe.routing
    return routing is not None and routing.kind != "trace" and routing.sampler == "auto"


def _routing(scn: Scenario, spec, table: MoEStageTable, group_topo, options: ReducedOptions):
    """Routing plans of one EP group: ``routing_samples`` draws per MoE layer, with the sampler the
    full run of this scenario would use (``auto`` decides on the full run's token count, so a
    reduced run sees the same routing statistics and hence the same placement)."""
    from moesim.moe.routing import EXACT_TOKEN_LIMIT

    moe = scn.moe
    if moe.routing is not None and moe.routing.kind != "trace" and moe.routing.sampler == "auto":
        moe_layers = table.moe_layers
        span = moe_layers[-1] - moe_layers[0] + 1
        total = span * scn.plan.num_microbatches * scn.plan.ep * table.tokens_per_rank
        sampler = "exact" if total <= EXACT_TOKEN_LIMIT else "fast"
        moe = dataclasses.replace(moe, routing=dataclasses.replace(moe.routing, sampler=sampler))
    small = dataclasses.replace(scn, moe=moe, plan=dataclasses.replace(
        scn.plan, dp=scn.plan.ep_dp_span, pp=1, num_microbatches=options.routing_samples))
    return make_routing(small, spec, table, group_topo, _GroupGrid(scn.plan.tp))


def run_reduced(scn: Scenario, options: ReducedOptions = ReducedOptions(),
                cache: ReducedCache | None = None) -> dict[str, Any]:
    """Build and run the reduced step; return the figures, the reductions and the bottlenecks."""
    return simulate_reduced(scn, options, cache)[0]


def simulate_reduced(scn: Scenario, options: ReducedOptions = ReducedOptions(),
                     cache: ReducedCache | None = None) -> tuple[dict[str, Any], Any]:
    """:func:`run_reduced`'s figures plus the lanes' Recorder (for traces and plots); ``cache``
    as for :func:`build_reduced`."""
    from moesim.analysis.host_issue import host_issue
    from moesim.analysis.summary import summarize
    from moesim.analysis.utilization import pipeline_bubble

    wall0 = time.perf_counter()
    built = build_reduced(scn, options, cache)
    built_s = time.perf_counter() - wall0
    meta = built["sim"].recorder.meta
    tp = built["grid"].tp
    meta.update(num_ranks=0, ranks={gpu: {"pipeline_rank": p, **({"tp_rank": t} if tp > 1 else {})}
                                    for (p, t), gpu in _lane_gpus(built).items()},
                scenario=scn.name, reduced=True)
    res = built["sim"].run()
    wall = time.perf_counter() - wall0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rec = res.recorder
    plan, spec, cost = scn.plan, built["spec"], built["cost"]
    step_s = res.makespan_ns / 1e9
    tokens = plan.dp * plan.micro_batch_size * plan.num_microbatches * spec.seq_len
    lane_flops = sum(s.args.get("flops", 0.0) for s in rec.spans if s.stream == "compute")
    total_flops = lane_flops * plan.dp   # every lane stands for the dp GPUs of its pipeline rank
    summary = summarize(rec, top=5)
    ex = built["exchange"]
    issue = host_issue(rec, built["host"], mode=scn.host)
    return {
        "scenario": scn.name, "num_gpus": built["num_gpus"], "schedule": scn.schedule,
        "plan": dataclasses.asdict(plan), "step_time_ms": round(res.makespan_ns / 1e6, 3),
        "tokens_per_step": tokens, "tokens_per_s_per_gpu": round(tokens / step_s / built["num_gpus"], 2),
        "mfu": round(total_flops / (cost.peak_flops * gemm_peak_ratio(built["gpu_kind"], gemm_precision(spec))
                                    * built["num_gpus"] * step_s), 4),
        "cost_model": cost.name, "cost_sources": cost_sources(cost), "profile": profile_identity(cost),
        "gpu_kind": built["gpu_kind"],
        "calibrated": bool(getattr(cost, "calibrated", False)),
        "overlap_slowdown": built["slowdown"], "pair_overlap": plan.pair_overlap, "dp_overlap": plan.dp_overlap,
        "bubble_fraction": round(pipeline_bubble(rec), 4),
        "moe": {"phases_solved": ex.stats.phases, "phases_bound_by": dict(sorted(ex.stats.bound_by.items())),
                "busiest_over_mean_expert_time": _stats(ex.stats.imbalance),
                "busiest_over_mean_expert_tokens": _stats(ex.stats.expert_imbalance),
                "a2a_bytes_per_group_microbatch": round(ex.stats.a2a_bytes),
                "dispatcher": scn.moe.dispatcher,
                "cross_node_fraction": round(float(ex.stats.cross_node_bytes / ex.stats.a2a_bytes), 4)
                if ex.stats.a2a_bytes else 0.0},
        "dp": built["dp"],
        "bottlenecks": bottleneck_list(summary, ex.stats, built, issue),
        "host_issue": issue,
        "critical_path_ms": {k: round(v / 1e6, 2) for k, v in summary["critical_path"]["by_category_ns"].items()},
        "reductions": reductions(built),
        "engine": {"tasks": res.num_tasks, "flows": res.num_flows, "wall_s": round(wall, 2),
                   "build_s": round(built_s, 2), "peak_rss_mib": round(peak / 2**20, 1)},
        "analysis": summary,
    }, rec


def _lane_gpus(built: dict) -> dict[tuple[int, int], int]:
    """Every lane GPU by (pipeline rank, TP rank)."""
    grid = built["grid"]
    return {(p, t): grid.gpu(t, 0, p) for p in range(grid.pp) for t in range(grid.tp)}


def _stats(values: dict[int, float]) -> dict[str, float]:
    if not values:
        return {}
    v = np.array(list(values.values()))
    worst = max(values, key=values.get)
    return {"mean": round(float(v.mean()), 3), "max": round(float(v.max()), 3), "worst_layer": int(worst)}


def reductions(built: dict) -> list[str]:
    """What the reduced run did not simulate one by one, each with why it is exact or bounded."""
    scn, opts = built["scenario"], built["options"]
    plan = scn.plan
    groups, folded = plan.tp * plan.dp // plan.ep, plan.ep_layout == "folded"
    return [
        f"EP-group symmetry: the {groups} EP group(s) of {plan.ep} GPUs per pipeline rank see the same routing "
        "sample on alike whole-node fabrics; one is simulated and stands for all"
        + (f" (with TP{plan.tp}: one per TP index, {plan.tp} sharing nodes, all {plan.tp} simulated)"
           if plan.tp > 1 and not folded else "")
        + (f" (folded: each holds {plan.ep // plan.tp} whole TP{plan.tp} groups)" if plan.tp > 1 and folded else ""),
        f"lanes: each pipeline rank's {plan.ep} GPUs run identical dense work and meet at every all-to-all; "
        "one lane runs it, the all-to-alls as one phase each (load bound of the group's byte matrix on its "
        "real fabric), the busiest GPU's expert queue, the busiest NIC's bytes sharing the lane NIC",
        f"routing: {opts.routing_samples} routing samples per MoE layer cycled over {plan.num_microbatches} "
        "microbatches",
        (f"DP (ZeRO-1): gradient reduce-scatter and parameter all-gather over {plan.dp} GPUs"
         if scn.memory.effective_zero_stage >= 1 else f"DP: gradient all-reduce over {plan.dp} GPUs")
        + " as hierarchical ring phases (NVSwitch, then one ring per rail), expert gradients over "
        f"{plan.expert_dp} expert-DP GPUs",
    ]


def bottleneck_list(summary: dict, stats, built: dict, issue: "dict | None" = None) -> list[str]:
    """Ranked findings: the critical path, the MoE exchange's binding links and routing imbalance,
    then the engine's own bottlenecks and the eager-host check, lane GPUs named by their pipeline rank."""
    from moesim.analysis.host_issue import host_issue_message

    out = []
    cp = summary["critical_path"]["by_category_ns"]
    total = sum(cp.values()) or 1
    top = sorted(cp.items(), key=lambda kv: -kv[1])[:3]
    out.append("critical path: " + ", ".join(f"{k} {v / total:.0%}" for k, v in top))
    if stats.bound_by:
        n = sum(stats.bound_by.values())
        out.append("all-to-all phases bound by: " + ", ".join(f"{k} {v / n:.0%}" for k, v in
                                                             sorted(stats.bound_by.items(), key=lambda kv: -kv[1])))
    imb = _stats(stats.imbalance)
    if imb:
        busiest = stats.busiest_gpu[imb["worst_layer"]]
        counts = np.bincount(list(stats.busiest_gpu.values()))
        per = built["per_node"]
        out.append(f"expert imbalance: busiest GPU's expert queue {imb['mean']:.2f}x the group mean on average, "
                   f"{imb['max']:.2f}x at layer {imb['worst_layer']} (EP rank {busiest}, node {busiest // per} "
                   f"of the group); EP rank {int(counts.argmax())} is the busiest in {int(counts.max())} of "
                   f"{len(stats.busiest_gpu)} MoE layers")
    host_line = host_issue_message(issue or {})
    for msg in [b["message"] for b in summary["bottlenecks"][:3]] + ([host_line] if host_line else []):
        for (p, t), lane in _lane_gpus(built).items():
            who = f"pipeline rank {p}" + (f" (TP rank {t})" if built["grid"].tp > 1 else "")
            msg = msg.replace(f"gpu{lane} ", f"{who} ").replace(f"GPU {lane} ", f"{who} ") \
                .replace(f"GPU {lane}'s", f"{who}'s")
        out.append(msg)
    return out
