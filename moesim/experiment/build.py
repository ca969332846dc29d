"""Resolve a Scenario into a ready-to-run Simulation.

Loads the topology, model and cost model, checks the plan against them (world size,
divisibility, schedule constraints) with errors that name the field and the fix, generates and
validates the schedule, and lowers it into engine tasks. What a Scenario's names resolve to (cost
model, model spec, schedule, host pricing, routing) is :mod:`moesim.lowering.resolve`, shared with
the reduced engine (``moesim.scale.reduced``) and re-exported here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from moesim.costs.base import CostModel
from moesim.engine import Simulation, gc_paused
from moesim.errors import ConfigError
from moesim.experiment.estimate import check_budget, estimate_run
from moesim.experiment.faults import Faults, apply_to_topology
from moesim.experiment.scenario import Scenario
from moesim.lowering.host import HostPricing, add_eager_host
from moesim.lowering.stage_costs import StageTable
from moesim.lowering.moe_costs import MoEStageTable, exec_kwargs
from moesim.lowering.moe_exchange import MoEExchangeLowering
from moesim.workload.moe import MoESpec
from moesim.lowering.pipeline import Grid, LoweringOptions, lower_pipeline
from moesim.lowering.resolve import (PROFILE_DIR, PROFILE_FOR_GPU, eager_host_counts, group_link_kind,  # noqa: F401
                                     make_routing, make_schedule, resolve_cost_model, resolve_model,
                                     scenario_host, scenario_overlap)
from moesim.lowering.overlap import compute_slowdown, lowering_kwargs, table_kwargs
from moesim.lowering.sized_latency import sized_latency
from moesim.schedules.model import Schedule
from moesim.topology.loader import load_topology


@dataclass
class Built:
    """Everything a run needs, plus figures known before running."""

    scenario: Scenario
    sim: Simulation
    topology: Any
    cost_model: CostModel
    schedule: Schedule
    table: StageTable
    tokens_per_step: int
    peak_activation_bytes: float
    counts: dict[str, int]
    exchange: Any = None
    budget: Any = None
    host: "HostPricing | None" = None  # what an eager host charges (moesim.lowering.host): run or checked


def build_scenario(scn: Scenario, force: bool = False, *, trace: bool = False, plots: bool = False,
                   link_series: bool = True, gemm_duty: float = 0.0) -> Built:
    """Topology + model + costs + schedule -> lowered Simulation.

    ``gemm_duty``: with ``gpu_clock="duty"``, the share of GPU time in GEMMs the cost model prices
    the clock at (:func:`moesim.experiment.runner.build_at_duty` measures it by a first run).

    ``link_series=False``: keep each link's utilisation integral only, no sample per change
    (what a run writing no Perfetto trace needs; :class:`~moesim.engine.Simulation`).

    A run estimated past the engine's budget (tasks, or memory against what the machine has
    available, counting a Perfetto trace / plots when ``trace`` / ``plots`` will be written) is
    refused with the estimate and a hint before anything is built, unless ``force``."""
    topo = load_topology(scn.topology, nodes=scn.nodes, gpus_per_node=scn.gpus_per_node)
    faults = scn.faults or Faults()
    topo = apply_to_topology(topo, faults)
    plan = scn.plan
    if plan.world_size != topo.num_gpus:
        raise ConfigError("plan", f"tp*dp*pp = {plan.tp}*{plan.dp}*{plan.pp} = {plan.world_size} GPUs but topology "
                          f"{topo.name!r} has {topo.num_gpus}", "change tp/dp/pp or the topology's nodes so they match")
    check_budget(estimate_run(scn, trace=trace, plots=plots, link_series=link_series), force=force)
    spec = resolve_model(scn.model)
    cost = resolve_cost_model(scn.cost_model, topo.gpu_kind, scn.profile, scn.gpu_clock, gemm_duty, scn.host_speed)
    sched = make_schedule(scn)
    overlap = scenario_overlap(scn)
    ranks = tuple(plan.rank(t, d, p) for p in range(plan.pp) for d in range(plan.dp) for t in range(plan.tp))
    grid = Grid(plan.tp, plan.dp, plan.pp, ranks)
    exchange = None
    if isinstance(spec, MoESpec):
        table = MoEStageTable(spec, sched, cost, tp=plan.tp, ep=plan.ep, expert_tp=plan.expert_tp,
                              micro_batch_size=plan.micro_batch_size,
                              sequence_parallel=plan.sequence_parallel, grad_dtype_bytes=plan.grad_dtype_bytes,
                              recompute=scn.memory.recompute, recompute_modules=scn.memory.recompute_modules,
                              recompute_at=scn.memory.recompute_at,
                              split_slots=scn.memory.split_slots(spec),
                              autograd=scn.mode != "forward", **exec_kwargs(scn.moe),
                              **table_kwargs(overlap))
        exchange = MoEExchangeLowering(table, make_routing(scn, spec, table, topo, grid), plan.ep, topo.host_of,
                                       plan.ep_layout)
    else:
        if plan.ep > 1:
            raise ConfigError("plan.ep", f"ep={plan.ep} but model {spec.name!r} has no experts", "set ep=1")
        table = StageTable(spec, sched, cost, tp=plan.tp, micro_batch_size=plan.micro_batch_size,
                           sequence_parallel=plan.sequence_parallel, grad_dtype_bytes=plan.grad_dtype_bytes,
                           recompute=scn.memory.recompute, recompute_modules=scn.memory.recompute_modules,
                           recompute_at=scn.memory.recompute_at,
                           split_slots=scn.memory.split_slots(spec),
                           autograd=scn.mode != "forward")
    for rank in faults.slow_gpus:
        if rank >= topo.num_gpus:
            raise ConfigError("faults.slow_gpus", f"rank {rank} is not a GPU of {topo.name}",
                              f"use 0..{topo.num_gpus - 1}")
    sim = Simulation(topo, mode=scn.network, link_efficiency={k: cost.link_efficiency(k) for k in _kinds(topo)},
                     overlap_slowdown=compute_slowdown(overlap, scn.overlap_slowdown, cost, topo.gpu_kind),
                     compute_scale=faults.slow_gpus,
                     jitter_ns=faults.jitter_ns, seed=scn.seed, link_series=link_series)
    tp_kind = group_link_kind(topo, grid.tp_group(0, 0))
    dp_kind = group_link_kind(topo, grid.dp_group(0, 0))
    efficiency = {k: cost.link_efficiency(k) for k in _kinds(topo)}
    measured = getattr(cost, "measured_link_kinds", ())
    opts = LoweringOptions(
        tp_sized=sized_latency(cost, "all_reduce", grid.tp_group(0, 0), topo, efficiency, measured),
        dp_sized=sized_latency(cost, "all_reduce", grid.dp_group(0, 0), topo, efficiency, measured),
        tp_step_latency_ns=cost.collective_step_latency_ns("all_reduce", plan.tp, tp_kind) if plan.tp > 1 else 0,
        dp_step_latency_ns=cost.collective_step_latency_ns("all_reduce", plan.dp, dp_kind) if plan.dp > 1 else 0,
        p2p_latency_ns=cost.p2p_latency_ns(group_link_kind(topo, [grid.gpu(0, 0, 0), grid.gpu(0, 0, min(1, plan.pp - 1))])),
        p2p_overlap=plan.p2p_overlap,
        pair_overlap=plan.pair_overlap,
        dp_algorithm="hierarchical" if len({topo.host_of(r) for r in grid.dp_group(0, 0)}) > 1 else "ring",
        zero=scn.memory.effective_zero_stage >= 1,
        grad_sync=scn.grad_sync,
        optimizer=scn.optimizer,
        accumulate=_accumulation(scn, table), accumulate_first=scn.grad_accumulation == "add_every",
        ep_dp_span=plan.ep_dp_span,
        **lowering_kwargs(overlap, plan.dp_overlap),
    )
    sim.recorder.meta.update(_ranks_meta(topo), scenario=scn.name, cost_model=cost.name)
    if faults.slow_gpus:   # analysis.bottlenecks tells a configured straggler from a heavier pipeline stage
        sim.recorder.meta["slow_gpus"] = {int(r): float(f) for r, f in faults.slow_gpus.items()}
    with gc_paused():
        counts = lower_pipeline(sim, sched, grid, table, opts, exchange)
    host = scenario_host(scn, cost)  # what eager PyTorch's host costs: charged or checked
    if scn.host == "eager":
        counts.update(eager_host_counts(add_eager_host(sim, host)))
    tokens = plan.dp * plan.micro_batch_size * plan.num_microbatches * spec.seq_len
    budget = scenario_budget(scn, spec, topo.gpu_kind)
    return Built(scn, sim, topo, cost, sched, table, tokens, budget.parts.get("activations", 0.0), counts,
                 exchange, budget, host)


def _accumulation(scn: Scenario, table: StageTable):
    """``LoweringOptions.accumulate`` for ``grad_accumulation="add"`` (one ``.grad +=`` per
    parameter tensor; per expert when experts run as a per-expert loop), else None."""
    if scn.grad_accumulation not in ("add", "add_every") or scn.mode == "forward":
        return None
    from moesim.lowering.grad_accumulation import make_accumulation

    per_expert = getattr(scn.moe, "experts", "grouped") == "loop"
    return make_accumulation(table, scn.plan.grad_dtype_bytes, per_expert)


def scenario_budget(scn: Scenario, spec, gpu_kind: str):
    """The per-GPU memory budget of the scenario (worst GPU), from :mod:`moesim.memory`."""
    from moesim.memory import memory_budget

    cfg = scn.memory
    ep = scn.plan.ep
    redundant = -(-scn.moe.num_redundant // ep) if scn.moe.num_redundant else 0
    cfg = dataclasses.replace(cfg, ep=ep, num_redundant_experts=max(cfg.num_redundant_experts, redundant))
    if ep > 1 and cfg.expert_tp != scn.plan.expert_tp:
        # the layout sets the expert TP (ParallelPlan.expert_tp): strided is Megatron's expert TP = TP,
        # folded expert TP 1; the simulation reduces the expert gradients that way
        if cfg.expert_tp != 1:
            raise ConfigError("memory.expert_tp", f"{cfg.expert_tp} with plan.ep_layout={scn.plan.ep_layout!r} "
                              f"(tp={scn.plan.tp}), whose expert TP is {scn.plan.expert_tp}",
                              "leave memory.expert_tp at 1 (the layout sets it), or use ep_layout='strided' for "
                              "expert TP = TP and 'folded' for expert TP 1")
        cfg = dataclasses.replace(cfg, expert_tp=scn.plan.expert_tp)
    if cfg.expert_activation_fusion is None and getattr(spec, "num_experts", 0):
        from moesim.workload.moe_exec import experts_fuse_activation, framework_modules_run

        framework = framework_modules_run(scn.moe.framework_modules, scn.moe.token_movement)
        cfg = dataclasses.replace(cfg, expert_activation_fusion=experts_fuse_activation(spec, framework, scn.moe.experts))
    return memory_budget(spec, scn.plan, scn.schedule, cfg, gpu_kind)


def _kinds(topo) -> set[str]:
    return {l.kind for l in topo.links}


def _ranks_meta(topo) -> dict[str, Any]:
    links = {f"link:{l.src}->{l.dst}": {"kind": l.kind, "bandwidth_gbps": l.bandwidth_gbps} for l in topo.links}
    ranks = {r: {"host": topo.host_of(r), "gpu": topo.gpus[r]} for r in range(topo.num_gpus)}
    return {"num_ranks": topo.num_gpus, "ranks": ranks, "links": links, "topology": topo.name}
