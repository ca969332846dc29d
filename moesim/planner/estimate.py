"""The coarse analytic step-time estimate the planner ranks candidates with.

No engine. Per virtual stage: the cached layer costs (:mod:`moesim.planner.costing`), the
routed-expert compute under balanced routing times the busiest-GPU factor of the preset's
routing and the candidate's placement (one routing sample), tensor-parallel all-reduces at the
TP group's link rate, the MoE all-to-alls split into the bytes that stay on the host and those
that cross the NICs (the slower bounds the exchange), and the pipeline sends. The slowest
stage's F / B / W costs go through the schedule's dependency dry run
(:func:`moesim.schedules.dry_run`), which yields the pipeline makespan with its bubble;
DualPipe's overlapped F&B pairs hide the all-to-alls behind the other microbatch's compute. The
exposed part of the DP gradient reduction (all but the last model chunk's hides behind the
backward) and the optimizer step are added.

It orders candidates; it does not replace the simulation. It ignores link contention between
dimensions, the hot expert's effect on the all-to-all and recomputation time. Against fluid
simulations of the small presets it lands within about 10%.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moesim.experiment.scenario import ParallelPlan
from moesim.planner import mapping, traffic
from moesim.planner.candidates import Candidate
from moesim.planner.context import PlanContext
from moesim.planner.costing import PassCost, StageView, send_bytes
from moesim.schedules import dry_run
from moesim.workload.moe import MoESpec


@dataclass(frozen=True)
class Estimate:
    """Coarse figures of one candidate (milliseconds per step unless named otherwise)."""

    step_ms: float
    pipeline_ms: float
    compute_ms: float
    tp_ms: float
    ep_ms: float
    pp_send_ms: float
    dp_ms: float
    dp_exposed_ms: float
    optimizer_ms: float
    bubble_fraction: float
    imbalance: float
    tokens_per_s: float
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class _Link:
    """Achievable bandwidth (bytes/ns, efficiency applied) and per-step latency (ns) of a pair."""

    bytes_per_ns: float
    latency_ns: float


def _link(ctx: PlanContext, src: int, dst: int, op: str, n: int) -> _Link:
    route = ctx.topo.route(src, dst)
    tier = mapping.tier_of(route.kinds)
    kind = tier if tier != "local" else "nvlink"
    lat = ctx.cost.p2p_latency_ns(kind) if op == "p2p" else ctx.cost.collective_step_latency_ns(op, max(2, n), kind)
    return _Link(route.bottleneck_gbps * ctx.cost.link_efficiency(kind), float(lat))


def hierarchical_allreduce_ns(ctx: PlanContext, ranks: list[int], nbytes: float) -> float:
    """A ring inside each host, then a ring over hosts on 1/g of the data (g GPUs per host)."""
    per_byte, fixed = allreduce_coefficients(ctx, tuple(ranks))
    return per_byte * nbytes + fixed if nbytes > 0 else 0.0


def allreduce_coefficients(ctx: PlanContext, ranks: tuple[int, ...]) -> tuple[float, float]:
    """(ns per byte, fixed ns) of :func:`hierarchical_allreduce_ns` over ``ranks``."""
    if len(ranks) < 2:
        return 0.0, 0.0
    by_host: dict[int, list[int]] = {}
    for r in ranks:
        by_host.setdefault(ctx.topo.host_of(r), []).append(r)
    local = next(iter(by_host.values()))
    g, hosts = len(local), len(by_host)
    per_byte = fixed = 0.0
    if g > 1:
        link = _link(ctx, local[0], local[1], "all_reduce", g)
        per_byte += traffic.ring_factor(g) / link.bytes_per_ns
        fixed += 2 * (g - 1) * link.latency_ns
    if hosts > 1:
        heads = [members[0] for members in by_host.values()]
        link = _link(ctx, heads[0], heads[1], "all_reduce", hosts)
        per_byte += traffic.ring_factor(hosts) / g / link.bytes_per_ns
        fixed += 2 * (hosts - 1) * link.latency_ns
    return per_byte, fixed


def exchange_ns(ctx: PlanContext, plan: ParallelPlan, phase: str) -> float:
    """One MoE layer's dispatch + combine in phase F or B on one GPU: the host-local and the
    cross-host share of its bytes each at their tier's rate; the slower bounds the exchange."""
    nbytes = traffic.ep_bytes_per_exchange(ctx.spec, plan, phase)
    if nbytes <= 0:
        return 0.0
    group = mapping.plan_ep_group(plan)
    home = ctx.topo.host_of(group[0])
    same = [r for r in group[1:] if ctx.topo.host_of(r) == home]
    other = [r for r in group[1:] if ctx.topo.host_of(r) != home]
    t = 0.0
    for peers in (same, other):
        if peers:
            link = _link(ctx, group[0], peers[0], "all_to_all", plan.ep)
            t = max(t, nbytes * len(peers) / (plan.ep - 1) / link.bytes_per_ns + 2 * link.latency_ns)
    return t


@dataclass(frozen=True)
class _StageTime:
    compute: float
    tp: float
    a2a: float

    @property
    def total(self) -> float:
        return self.compute + self.tp + self.a2a


def _tp_ns(ctx: PlanContext, plan: ParallelPlan, cost: PassCost) -> float:
    if plan.tp < 2 or cost.tp_bytes <= 0:
        return 0.0
    group = mapping.representative_group(plan, "tp")
    link = _link(ctx, group[0], group[1], "all_reduce", plan.tp)
    return (traffic.ring_factor(plan.tp) * cost.tp_bytes / link.bytes_per_ns
            + cost.tp_collectives * 2 * (plan.tp - 1) * link.latency_ns)


def _stage_times(ctx: PlanContext, view: StageView, plan: ParallelPlan, stage: int, gamma: float,
                 a2a: dict[str, float], recompute: float) -> dict[str, _StageTime]:
    """F, B and W times of one virtual stage; with full recomputation the backward first runs
    the stage's forward again (compute and TP; the all-to-alls are not repeated here), for the
    ``recompute`` share of its layers that are recomputed."""
    out = {}
    for kind in ("F", "B", "W"):
        c = view.pass_cost(kind, stage)
        if kind == "B" and recompute:
            f = view.pass_cost("F", stage)
            c = c + (f if recompute >= 1 else f.scaled(recompute))
        exchange = a2a.get(kind, 0.0) * view.pass_cost(kind, stage).moe_layers
        out[kind] = _StageTime(c.compute_ns + gamma * c.expert_ns, _tp_ns(ctx, plan, c), exchange)
    return out


def estimate(ctx: PlanContext, cand: Candidate, layer_spec: Any = None, exact: bool = True) -> Estimate:
    """The coarse step time of ``cand`` (ConfigError if its schedule rejects the plan). Long
    microbatch counts are dry-run at 2 and 4 per pipeline rank and extrapolated linearly.
    ``layer_spec`` replaces the model's layer count (a reduced simulation proxy). With
    ``exact=False`` pipelines deeper than :data:`QUICK_MIN_RANKS` use the closed-form bubble of
    :func:`quick_makespan` instead of the dry run (screening; within ~15% of it)."""
    plan = cand.plan
    sched = ctx.short_schedule(cand)
    view, note = ctx.view(cand, sched, layer_spec)
    gamma = ctx.imbalance(cand, traffic.tokens_per_rank(ctx.spec, plan)) if isinstance(ctx.spec, MoESpec) else 1.0
    a2a = {ph: exchange_ns(ctx, plan, ph) for ph in ("F", "B")}
    recompute = _recompute_share(ctx.preset.memory, view.layer_spec.num_layers / sched.num_stages)
    stages = [_stage_times(ctx, view, plan, s, gamma, a2a, recompute) for s in range(sched.num_stages)]
    worst = {k: max(stages, key=lambda st: st[k].total)[k] for k in ("F", "B", "W")}
    send_ns = _send_ns(ctx, plan)
    # DualPipe's overlapped pairs are F & BW: both computes in series, the all-to-alls of one
    # hidden behind the other's compute.
    overlapped = (max(worst["F"].compute + worst["B"].compute + worst["W"].compute, worst["F"].a2a + worst["B"].a2a)
                  + worst["F"].tp + worst["B"].tp + worst["W"].tp)
    costs = (worst["F"].total, worst["B"].total, worst["W"].total)
    if not exact and sched.num_ranks >= QUICK_MIN_RANKS and cand.schedule in QUICK_SCHEDULES:
        makespan = quick_makespan(cand.schedule, plan, *costs, send_ns)
    else:
        makespan = _dry_run_makespan(ctx, cand, sched, costs, send_ns, overlapped)
    params = ctx.rank_params(cand, view)
    dp_ns = _dp_ns(ctx, plan, params)
    exposed = dp_ns / sched.num_chunks if plan.dp_overlap else dp_ns
    opt_ns = ctx.costs.optimizer_ns(max(total for total, _ in params))
    step_ns = makespan + exposed + opt_ns
    counts = sched.op_counts(0)
    scale = plan.num_microbatches / sched.num_microbatches
    fused = counts.get("BW", 0)  # a fused backward runs both B and W
    per_rank = {"F": counts.get("F", 0) * scale, "B": (counts.get("B", 0) + fused) * scale,
                "W": (counts.get("W", 0) + fused) * scale}
    tokens = plan.dp * plan.micro_batch_size * plan.num_microbatches * ctx.spec.seq_len

    def total(part: str) -> float:
        return sum(per_rank[k] * getattr(worst[k], part) for k in per_rank) / 1e6

    total_busy = sum(per_rank[k] * worst[k].total for k in per_rank)

    return Estimate(step_ms=step_ns / 1e6, pipeline_ms=makespan / 1e6, compute_ms=total("compute"),
                    tp_ms=total("tp"), ep_ms=total("a2a"), pp_send_ms=send_ns / 1e6, dp_ms=dp_ns / 1e6,
                    dp_exposed_ms=exposed / 1e6, optimizer_ms=opt_ns / 1e6,
                    bubble_fraction=max(0.0, 1 - total_busy / makespan) if makespan else 0.0, imbalance=gamma,
                    tokens_per_s=tokens / (step_ns / 1e9), notes=tuple(n for n in (note, _recompute_note(recompute)) if n))


def _recompute_share(memory: Any, layers_per_stage: float) -> float:
    """The share of a stage's layers full recomputation re-runs (:meth:`MemoryConfig.recompute_at`)."""
    if memory.recompute != "full":
        return 0.0
    n = max(1, round(layers_per_stage))
    return sum(memory.recompute_at(i) != "kept" for i in range(n)) / n


def _recompute_note(recompute: float) -> str:
    return ("full recomputation: each backward reruns its forward (charged in this estimate and in the "
            "simulation, which re-runs it before each backward)") if recompute else ""


# Screening uses closed forms from this pipeline depth on (dry runs grow as depth squared).
QUICK_MIN_RANKS = 12
QUICK_SCHEDULES = ("gpipe", "1f1b", "interleaved", "zb-h1")


def _dry_run_makespan(ctx: PlanContext, cand: Candidate, sched: Any, costs: tuple[float, float, float],
                      send_ns: float, overlapped: float) -> float:
    """The schedule's dependency dry run; long microbatch counts by two-point extrapolation (the
    makespan grows linearly in the steady state)."""
    run = dry_run(sched, *costs, comm=send_ns, t_fb=overlapped)
    short = cand.short_microbatches()
    if not short:
        return run.makespan
    longer = dry_run(ctx.schedule(cand, short[1]), *costs, comm=send_ns, t_fb=overlapped)
    slope = (longer.makespan - run.makespan) / (short[1] - short[0])
    return run.makespan + slope * (cand.plan.num_microbatches - short[0])


def quick_makespan(schedule: str, plan: ParallelPlan, f: float, b: float, w: float, comm: float) -> float:
    """Closed-form pipeline makespan of the looped schedules: every rank's work plus the bubble
    (DualPipe paper Table 2, reference §1.5): 1F1B and GPipe (p-1)(F+B+W), interleaved the same
    on chunk costs; ZB-H1 (p-1) max(F + B - W, F, B): the paper's (p-1)(F+B-W) where it holds
    (W <= F, B; reference §1.5: with W = 0 it is 1F1B's bubble), and where W is longer, when that
    form would fall below max(F, B), the forward ramp and the input-gradient chain the generated
    order still idles on; plus a pipeline send each way per stage boundary. DualPipe is always
    dry-run."""
    p, m, v = plan.pp, plan.num_microbatches, plan.vpp
    work, edges = m * (f + b + w), 2 * (p - 1) * comm
    if schedule == "interleaved":
        return m * v * (f + b + w) + (p - 1) * (f + b + w) + edges
    if schedule == "zb-h1":
        return work + (p - 1) * max(f + b - w, f, b) + edges
    return work + (p - 1) * (f + b + w) + edges


def _send_ns(ctx: PlanContext, plan: ParallelPlan) -> float:
    if plan.pp < 2:
        return 0.0
    group = mapping.representative_group(plan, "pp")
    link = _link(ctx, group[0], group[1], "p2p", 2)
    return send_bytes(ctx.spec, plan.micro_batch_size, plan.tp) / link.bytes_per_ns + link.latency_ns


def _dp_ns(ctx: PlanContext, plan: ParallelPlan, params: list[tuple[float, float]]) -> float:
    """The DP gradient reduction of the busiest pipeline rank: dense gradients over DP, expert
    gradients over the expert-DP group (hierarchical across hosts)."""
    if plan.dp < 2:
        return 0.0
    grid = mapping.grid_of(plan)
    dense_a, dense_b = allreduce_coefficients(ctx, tuple(grid.dp_group(0, 0)))
    holders = tuple(grid.gpu(0, d, 0) for d in range(0, plan.dp, plan.ep_dp_span))   # one per EP group
    expert_a, expert_b = allreduce_coefficients(ctx, holders)
    g = plan.grad_dtype_bytes
    shard = plan.expert_tp   # strided EP with TP: each GPU holds 1/tp of its experts (ParallelPlan.expert_tp)
    return max((dense_a * (total - expert) + expert_a * expert / shard) * g + (dense_b if total > expert else 0.0)
               + (expert_b if expert else 0.0) for total, expert in params)
