"""Simulating a planner candidate with :func:`~moesim.experiment.runner.run_scenario`, shrunk when needed.

The engine's cost grows with GPUs x microbatches x layers x expert slots. :func:`engine_tasks`
predicts the task count of a candidate; :func:`simulate` runs it as it is when that stays under
``max_tasks``, else a proxy: first the schedule's short microbatch count (the steady state is
linear beyond it), then fewer layers per stage (same share of MoE layers). Full-size figures
are then the proxy's simulated step time scaled by the coarse estimate's full / proxy ratio, and
the result says exactly what was reduced. Layouts whose layers split unevenly over the stages
(which the lowering cannot simulate) are always reduced to an even split.

An expert-parallel candidate too big for the engine that :mod:`moesim.scale` can take (tp=1,
whole nodes per pipeline rank) is simulated at full size with the reduced engine instead
(EP-group symmetry, one lane per pipeline rank; docs/scale.md): no proxy, no scaling.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from moesim.experiment.runner import ScenarioResult, run_scenario
from moesim.planner import shapes
from moesim.planner.candidates import Candidate
from moesim.planner.context import PlanContext
from moesim.planner.estimate import estimate
from moesim.workload.moe import MoESpec

DEFAULT_MAX_TASKS = 120_000


@dataclass(frozen=True)
class Simulated:
    """A candidate's simulation: the runner's result and the full-size figures."""

    cand: Candidate
    result: ScenarioResult
    step_ms: float
    tokens_per_s: float
    mfu: float
    reduced: str
    wall_s: float
    network: str

    @property
    def scaled(self) -> bool:
        return bool(self.reduced)


def engine_tasks(ctx: PlanContext, cand: Candidate, num_microbatches: int, num_layers: int) -> int:
    """Predicted engine tasks: per GPU, microbatch and pass (F, B, W), a few per layer plus one per
    expert slot of each MoE layer the GPU holds (within ~10% on the qwen3 preset)."""
    spec, p = ctx.spec, cand.plan
    sched = ctx.short_schedule(cand)
    chunks = sched.num_chunks
    layers_per_rank = num_layers // sched.num_stages * chunks
    moe_share = spec.num_moe_layers / spec.num_layers if isinstance(spec, MoESpec) else 0.0
    slots = (-(-spec.num_experts // p.ep) + cand.num_redundant // max(1, p.ep)) if isinstance(spec, MoESpec) else 0
    per_layer = 2 + moe_share * (slots + 4)
    return int(ctx.topo.num_gpus * num_microbatches * 3 * (layers_per_rank * per_layer + 2))


def proxy_shape(ctx: PlanContext, cand: Candidate, max_tasks: int) -> tuple[int, int] | None:
    """(microbatches, layers) to simulate, or None when even the smallest proxy is too big."""
    sched_stages = ctx.short_schedule(cand).num_stages
    m, layers = cand.plan.num_microbatches, ctx.spec.num_layers
    if layers % sched_stages:
        layers = max(1, layers // sched_stages) * sched_stages
    if engine_tasks(ctx, cand, m, layers) <= max_tasks:
        return m, layers
    short = cand.short_microbatches()
    if short:
        m = short[0]
    per_stage = layers // sched_stages
    while engine_tasks(ctx, cand, m, per_stage * sched_stages) > max_tasks and per_stage > 1:
        per_stage = max(1, per_stage // 2)
    layers = per_stage * sched_stages
    return (m, layers) if engine_tasks(ctx, cand, m, layers) <= max_tasks else None


def simulate(ctx: PlanContext, cand: Candidate, network: str = "analytical",
             max_tasks: int = DEFAULT_MAX_TASKS) -> Simulated | None:
    """Run the candidate (or its proxy); None when no proxy fits under ``max_tasks``."""
    if engine_tasks(ctx, cand, cand.plan.num_microbatches, ctx.spec.num_layers) > max_tasks:
        full = _reduced_engine(ctx, cand)
        if full is not None:
            return full
    shape = proxy_shape(ctx, cand, max_tasks)
    if shape is None:
        return None
    m, layers = shape
    spec = shapes.with_layers(ctx.spec, layers)
    proxy = Candidate(dataclasses.replace(cand.plan, num_microbatches=m), cand.schedule, cand.placement,
                      cand.num_redundant)
    scn = ctx.preset.scenario(plan=proxy.plan, schedule=cand.schedule, placement=cand.placement,
                              num_redundant=cand.num_redundant, network=network, spec=spec,
                              name=_name(cand))
    t0 = time.perf_counter()
    result, _ = run_scenario(scn, link_series=False)
    wall = time.perf_counter() - t0
    reduced = _reduction_note(cand, ctx.spec, m, layers)
    if not reduced:
        return Simulated(cand, result, result.step_time_ms, result.tokens_per_s, result.mfu, "", wall, network)
    return _scaled(ctx, cand, proxy, spec, result, reduced, wall, network)


def _reduced_engine(ctx: PlanContext, cand: Candidate) -> Simulated | None:
    """The full-size candidate through the reduced engine, or None when it cannot take it."""
    from moesim.scale.reduced import reducible

    scn = dataclasses.replace(
        ctx.preset.scenario(plan=cand.plan, schedule=cand.schedule, placement=cand.placement,
                            num_redundant=cand.num_redundant, name=_name(cand)), engine="reduced")
    if not isinstance(ctx.spec, MoESpec) or reducible(scn) is not None:
        return None
    t0 = time.perf_counter()
    result, _ = run_scenario(scn, link_series=False)
    return Simulated(cand, result, result.step_time_ms, result.tokens_per_s, result.mfu, "",
                     time.perf_counter() - t0, REDUCED_NETWORK)


REDUCED_NETWORK = "fluid, reduced engine"


def _scaled(ctx: PlanContext, cand: Candidate, proxy: Candidate, spec: Any, result: ScenarioResult, reduced: str,
            wall: float, network: str) -> Simulated:
    """Full-size figures from a proxy: step time x (full estimate / proxy estimate)."""
    full, small = estimate(ctx, cand), estimate(ctx, proxy, layer_spec=spec)
    step_ms = result.step_time_ms * full.step_ms / small.step_ms
    p = cand.plan
    tokens = p.dp * p.micro_batch_size * p.num_microbatches * ctx.spec.seq_len
    flops_ratio = (ctx.spec.training_flops_per_token * tokens) / (spec.training_flops_per_token * result.tokens_per_step)
    mfu = result.mfu * flops_ratio * result.step_time_ms / step_ms
    return Simulated(cand, result, step_ms, tokens / (step_ms / 1e3), mfu, reduced, wall, network)


def _reduction_note(cand: Candidate, spec: Any, m: int, layers: int) -> str:
    parts = []
    if m != cand.plan.num_microbatches:
        parts.append(f"microbatches {cand.plan.num_microbatches} -> {m}")
    if layers != spec.num_layers:
        parts.append(f"layers {spec.num_layers} -> {layers}")
    return ", ".join(parts)


def _name(cand: Candidate) -> str:
    return cand.label.replace(" ", "_").replace("+", "r")
