"""What every candidate of one preset shares: :class:`PlanContext`.

The model spec, the loaded fabric, the cost model (calibrated where a profile ships, as the
runner picks it), the cached per-layer costs (:class:`~moesim.planner.costing.LayerCosts`), the
cached routing-imbalance samples and memory budgets. Building it once per preset keeps each
candidate's estimate to a few milliseconds.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from moesim.experiment.build import resolve_cost_model, scenario_budget
from moesim.planner import mapping, shapes
from moesim.planner.candidates import Candidate
from moesim.planner.costing import LayerCosts, Shard, StageView
from moesim.planner.presets import ScenarioPreset
from moesim.schedules.model import Schedule
from moesim.workload.moe import MoESpec


# Above this many tokens per sample the imbalance is drawn with the routing's fast sampler, from a
# pilot of PILOT_TOKENS exact draws (group- and node-limited gates are slow to sample exactly).
FAST_SAMPLE_TOKENS = 1 << 15
PILOT_TOKENS = 4096


class PlanContext:
    """Shared state of one planning run over one preset."""

    def __init__(self, preset: ScenarioPreset, cost_model: str = "auto") -> None:
        self.preset = preset
        self.spec = preset.spec
        self.topo = preset.topo
        self.cost = resolve_cost_model(cost_model, self.topo.gpu_kind)
        self.costs = LayerCosts(self.spec, self.cost)
        self._imbalance: dict[tuple, float] = {}
        self._budgets: dict[tuple, Any] = {}
        self._bounds: dict[tuple, float] = {}
        self._schedules: dict[tuple, Schedule] = {}
        self._params: dict[tuple, list[tuple[float, float]]] = {}

    def schedule(self, cand: Candidate, num_microbatches: int | None = None) -> Schedule:
        """The candidate's schedule (cached), at ``num_microbatches`` when given."""
        p = cand.plan
        key = (cand.schedule, p.pp, num_microbatches or p.num_microbatches, p.vpp)
        if key not in self._schedules:
            self._schedules[key] = cand.schedule_obj(num_microbatches)
        return self._schedules[key]

    def short_schedule(self, cand: Candidate) -> Schedule:
        """The schedule at the short microbatch count when the plan's is long (see
        :meth:`Candidate.short_microbatches`), else the plan's own."""
        short = cand.short_microbatches()
        return self.schedule(cand, short[0] if short else None)

    def rank_params(self, cand: Candidate, view: StageView) -> list[tuple[float, float]]:
        """(all, expert) parameters per pipeline rank (cached per layout, tp and ep)."""
        p = cand.plan
        key = (cand.schedule, p.pp, p.vpp, p.tp, p.ep, view.layer_spec.num_layers)
        if key not in self._params:
            self._params[key] = [view.rank_params(r) for r in range(view.schedule.num_ranks)]
        return self._params[key]

    @property
    def is_moe(self) -> bool:
        return isinstance(self.spec, MoESpec)

    def view(self, cand: Candidate, schedule: Schedule, layer_spec: Any = None) -> tuple[StageView, str]:
        """The candidate's stage view over ``layer_spec`` (default: the model), and a note when
        the layers had to be padded to split evenly over the stages."""
        layer_spec, note = shapes.padded_to_stages(layer_spec or self.spec, schedule.num_stages)
        p = cand.plan
        return StageView(self.costs, layer_spec, schedule, Shard(p.tp, p.micro_batch_size, p.sequence_parallel, p.ep)), note

    def budget(self, cand: Candidate) -> Any:
        """The candidate's per-GPU memory budget (cached per memory-relevant shape). Long
        microbatch counts are cut to 4 per pipeline rank, by which every schedule's in-flight
        activations have peaked (``tests/test_planner.py`` checks this)."""
        key = cand.shape_key
        if key not in self._budgets:
            short = cand.short_microbatches()
            plan = replace(cand.plan, num_microbatches=short[0]) if short else cand.plan
            scn = self.preset.scenario(plan=plan, schedule=cand.schedule, placement=cand.placement,
                                       num_redundant=cand.num_redundant)
            self._budgets[key] = scenario_budget(scn, self.spec, self.topo.gpu_kind)
        return self._budgets[key]

    def budget_with(self, cand: Candidate, memory: Any) -> Any:
        """The candidate's full budget under another :class:`~moesim.memory.MemoryConfig` (not cached)."""
        scn = self.preset.scenario(plan=cand.plan, schedule=cand.schedule, placement=cand.placement,
                                   num_redundant=cand.num_redundant, memory=memory)
        return scenario_budget(scn, self.spec, self.topo.gpu_kind)

    def static_lower_bound(self, cand: Candidate) -> float:
        """Bytes one GPU needs at least: weights, gradients and optimizer states of its busiest
        pipeline rank with the preset's ZeRO stage, plus the framework reserve (no activations,
        buffers or replicas). Cheap, so the planner skips the full budget when this alone is over."""
        if cand.shape_key in self._bounds:
            return self._bounds[cand.shape_key]
        mem, p = self.preset.memory, cand.plan
        z = mem.effective_zero_stage
        expert_dp = max(1, p.tp * p.dp // (p.ep * mem.expert_tp))

        def sharded(dense: float, expert: float, per_param: float, from_stage: int) -> float:
            return per_param * (dense / (p.dp if z >= from_stage else 1) + expert / (expert_dp if z >= from_stage else 1))

        worst = 0.0
        for total, expert in self.held_params(cand):
            dense = total - expert
            need = (sharded(dense, expert, mem.param_bytes, 3) + sharded(dense, expert, mem.grad_bytes(p.grad_dtype_bytes), 2)
                    + sharded(dense, expert, mem.optimizer_bytes_per_param, 1))
            worst = max(worst, need)
        self._bounds[cand.shape_key] = worst + mem.framework_reserve_bytes
        return self._bounds[cand.shape_key]

    def held_params(self, cand: Candidate) -> list[tuple[float, float]]:
        """(all, expert) parameters per pipeline rank under the memory model's layer split (uneven
        splits give the first stages one layer more), cached per layout, tp and ep."""
        from moesim.memory.layout import layout_from_schedule

        p = cand.plan
        key = ("held", cand.schedule, p.pp, p.vpp, p.tp, p.ep)
        if key not in self._params:
            layout = layout_from_schedule(self.short_schedule(cand), self.spec.num_layers)
            out = []
            for rank in range(layout.num_ranks):
                total = expert = 0.0
                for layer in layout.param_layers(rank):
                    t, e = self.costs.layer_params(self.spec.is_moe_layer(layer), p.tp, p.ep)
                    total, expert = total + t, expert + e
                total += self.costs.edge_params(layout.holds_first(rank), layout.holds_last(rank), p.tp)
                out.append((total, expert))
            self._params[key] = out
        return self._params[key]

    @property
    def hbm_bytes(self) -> float:
        from moesim.costs.devices import get_device

        return float(get_device(self.topo.gpu_kind).hbm_bytes)

    def imbalance(self, cand: Candidate, tokens_per_rank: int) -> float:
        """Busiest / mean expert-GPU load of one microbatch of the first MoE layer, with the
        preset's routing and the candidate's placement (1.0 for balanced routing)."""
        plan, routing = cand.plan, self.preset.routing
        if not self.is_moe or plan.ep < 2 or routing is None:
            return 1.0
        hosts = tuple(self.topo.host_of(r) for r in mapping.plan_ep_group(plan))
        key = (plan.ep, cand.placement, cand.num_redundant, tokens_per_rank, hosts)
        if key not in self._imbalance:
            self._imbalance[key] = sampled_imbalance(self.spec, routing, plan.ep, cand.placement, cand.num_redundant,
                                                     tokens_per_rank, hosts)
        return self._imbalance[key]


def sampled_imbalance(spec: MoESpec, routing: Any, ep: int, placement: str, num_redundant: int,
                      tokens_per_rank: int, hosts: tuple, seed: int = 0) -> float:
    """max/mean GPU load of a fresh routing sample under a placement planned on another sample,
    as the runner does (statistics of step 0, simulated step 1)."""
    from moesim.moe.dispatch import split_to_gpus
    from moesim.moe.placement import PlacementInputs, make_placement
    from moesim.moe.routing import generate_routing

    cfg = replace(routing, tokens_per_rank=tokens_per_rank)
    if cfg.kind != "trace" and ep * tokens_per_rank > FAST_SAMPLE_TOKENS:
        # per-expert frequencies are what the ratio needs: the fast sampler from a small pilot
        cfg = replace(cfg, sampler="fast", pilot_tokens=min(cfg.pilot_tokens, PILOT_TOKENS))
    layer = next(i for i in range(spec.num_layers) if spec.is_moe_layer(i))
    stats = generate_routing(cfg, spec, ep, 1, 1, 0, hosts, first_layer=layer).kept[0, 0]
    place = make_placement(placement, PlacementInputs(
        num_experts=spec.num_experts, num_gpus=ep, host_of=hosts, expert_load=stats.sum(axis=0), traffic=stats,
        num_redundant=num_redundant, num_groups=max(1, spec.n_groups), seed=seed))
    sample = generate_routing(cfg, spec, ep, 1, 1, 1, hosts, first_layer=layer).kept[0, 0]
    load = split_to_gpus(sample, place, host_of=hosts).gpu_load.astype(np.float64)
    return float(load.max() / load.mean()) if load.mean() > 0 else 1.0
