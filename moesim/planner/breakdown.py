"""The parallelism breakdown of one layout: where everything lives and what crosses which wire.

:func:`parallelism_breakdown` checks the plan against the fabric (world size, with an error
naming the field when they differ), then gathers: the rank-to-GPU mapping of every parallel
group (:mod:`moesim.planner.mapping`), layers per pipeline stage, experts per GPU, tokens per
expert per step, the bytes per step of each parallel dimension and the link kinds they cross
(:mod:`moesim.planner.traffic`), the bandwidth each link kind must sustain at the step time, the
per-GPU memory budget, the coarse estimate and, unless ``simulate=False``, the simulated step
time, tokens/s, MFU and bottlenecks from :func:`~moesim.experiment.runner.run_scenario`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from moesim.errors import ConfigError
from moesim.experiment.scenario import ParallelPlan
from moesim.planner import mapping, traffic
from moesim.planner.candidates import Candidate, check_candidate
from moesim.planner.context import PlanContext
from moesim.planner.estimate import Estimate, estimate
from moesim.planner.presets import ScenarioPreset
from moesim.planner.simulate import DEFAULT_MAX_TASKS, REDUCED_NETWORK, Simulated, simulate
from moesim.topology.analysis import gpu_bandwidth_by_kind
from moesim.workload.moe import MoESpec


@dataclass(frozen=True)
class Breakdown:
    """Everything :func:`parallelism_breakdown` found (JSON-ready through :meth:`to_dict`)."""

    preset: str
    model: str
    topology: str
    num_gpus: int
    label: str
    plan: dict[str, Any]
    schedule: str
    placement: str
    mapping: list[str]
    layers_per_stage: list[int]
    moe_layers_per_stage: list[int]
    layers_per_rank: list[int]
    experts_per_gpu: int
    tokens_per_expert_per_step: float
    traffic: list[traffic.DimensionTraffic]
    bytes_by_kind: dict[str, float]
    available_gbps: dict[str, float]
    memory_gib: float
    hbm_gib: float
    fits: bool
    memory_verdict: str
    estimate: Estimate
    simulated: Simulated | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def step_ms(self) -> float:
        """The simulated step time when there is one, else the estimate."""
        return self.simulated.step_ms if self.simulated else self.estimate.step_ms

    @property
    def needed_gbps(self) -> dict[str, float]:
        """Average GB/s per GPU each link kind must carry at the step time."""
        seconds = self.step_ms / 1e3
        return {k: v / seconds / 1e9 for k, v in self.bytes_by_kind.items()} if seconds > 0 else {}

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("simulated", "estimate", "traffic")}
        out["traffic"] = [{**asdict(t), "collective": t.collective} for t in self.traffic]
        out["estimate"] = asdict(self.estimate)
        out["needed_gbps"] = self.needed_gbps
        out["step_ms"] = self.step_ms
        if self.simulated:
            r = self.simulated
            out["simulated"] = {"step_ms": r.step_ms, "tokens_per_s": r.tokens_per_s, "mfu": r.mfu,
                                "bubble_fraction": r.result.bubble_fraction, "bottlenecks": r.result.bottlenecks,
                                "network": r.network, "reduced": r.reduced, "cost_model": r.result.cost_model,
                                "moe": {k: v for k, v in r.result.moe.items() if k not in ("gpu_tokens", "expert_tokens")}}
        return out


def check_world(preset: ScenarioPreset, plan: ParallelPlan) -> None:
    """ConfigError naming the plan fields when tp*dp*pp differs from the fabric's GPUs."""
    gpus = preset.num_gpus
    if plan.world_size != gpus:
        hint = f"e.g. dp={gpus // (plan.tp * plan.pp)}" if gpus % (plan.tp * plan.pp) == 0 else "change tp or pp"
        raise ConfigError("plan", f"tp*dp*pp = {plan.tp}*{plan.dp}*{plan.pp} = {plan.world_size} GPUs but "
                          f"{preset.topology} x {preset.nodes or 1} node(s) has {gpus}",
                          f"make tp*dp*pp equal {gpus} ({hint}), or change the node count", source=preset.name)


def parallelism_breakdown(preset: ScenarioPreset, cand: Candidate | None = None, *, simulate_it: bool = True,
                          network: str = "analytical", max_tasks: int = DEFAULT_MAX_TASKS,
                          ctx: PlanContext | None = None, simulated: Simulated | None = None) -> Breakdown:
    """The breakdown of ``cand`` (default: the preset's own plan, schedule and placement).
    ``simulated`` reuses a simulation already run; otherwise ``simulate_it`` runs one in
    ``network`` mode (a reduced proxy above ``max_tasks`` engine tasks, none if even that is over)."""
    cand = cand or Candidate(preset.plan, preset.schedule, preset.placement, preset.num_redundant)
    check_world(preset, cand.plan)
    ctx = ctx or PlanContext(preset)
    check_candidate(preset, cand)
    est = estimate(ctx, cand)
    view, _ = ctx.view(cand, ctx.short_schedule(cand))
    budget = ctx.budget(cand)
    spec = ctx.spec
    if simulated is None and simulate_it:
        simulated = simulate(ctx, cand, network, max_tasks)
    notes = list(est.notes)
    if simulated is None and simulate_it:
        notes.append(f"not simulated: even a reduced proxy exceeds {max_tasks:,} engine tasks; figures are the estimate")
    elif simulated and simulated.network == REDUCED_NETWORK:
        notes.append("simulated at full size with the reduced engine (EP-group symmetry, one lane per pipeline "
                     "rank, all-to-alls as phases; docs/scale.md)")
    elif simulated and simulated.reduced:
        notes.append(f"simulated a reduced proxy ({simulated.reduced}); full-size step time scaled by the estimate")
    items = traffic.step_traffic(view, cand.plan, ctx.topo)
    return Breakdown(
        preset=preset.name, model=spec.name, topology=f"{preset.topology} x {preset.nodes or 1}", num_gpus=ctx.topo.num_gpus,
        label=cand.label, plan=asdict(cand.plan), schedule=cand.schedule, placement=cand.placement,
        mapping=mapping.mapping_summary(ctx.topo, cand.plan),
        layers_per_stage=[len(r) for r in _stages(spec, budget)],
        moe_layers_per_stage=[sum(spec.is_moe_layer(i) for i in r) for r in _stages(spec, budget)],
        layers_per_rank=[r.num_layers for r in budget.per_rank], experts_per_gpu=experts_per_gpu(spec, cand),
        tokens_per_expert_per_step=tokens_per_expert_per_step(spec, cand.plan), traffic=items,
        bytes_by_kind=traffic.bytes_by_kind_total(items), available_gbps=gpu_bandwidth_by_kind(ctx.topo),
        memory_gib=budget.total_bytes / 2**30, hbm_gib=budget.hbm_bytes / 2**30, fits=budget.fits,
        memory_verdict=budget.verdict(), estimate=est, simulated=simulated, notes=notes)


def experts_per_gpu(spec: Any, cand: Candidate) -> int:
    """Routed-expert slots per GPU per MoE layer (replicas included)."""
    if not isinstance(spec, MoESpec):
        return 0
    return math.ceil(spec.num_experts / cand.plan.ep) + math.ceil(cand.num_redundant / cand.plan.ep)


def tokens_per_expert_per_step(spec: Any, plan: ParallelPlan) -> float:
    """Tokens one routed expert computes per MoE layer in one step's forward, balanced routing:
    all tokens of the global batch times top_k over the experts."""
    if not isinstance(spec, MoESpec):
        return 0.0
    tokens = plan.dp * plan.micro_batch_size * plan.num_microbatches * spec.seq_len
    return tokens * spec.top_k / spec.num_experts


def _stages(spec: Any, budget: Any) -> tuple[range, ...]:
    """Layer ranges of the virtual stages, split as the memory budget splits them."""
    from moesim.memory.layout import split_layers

    return split_layers(spec.num_layers, budget.sharding.num_stages)
