"""Network affinity: where experts should live, from the traffic of a placement on the fabric.

For one EP group of a plan, a routing sample of the preset's routing (one MoE layer, one
microbatch per source GPU) and an expert placement planned from another sample (as the runner
does) give tokens from every GPU to every GPU (:func:`moesim.moe.dispatch.split_to_gpus`).
Per step each pair carries dispatch + combine forward and two gradient all-to-alls backward, for
every MoE layer a pipeline rank holds and every microbatch. Every transfer is laid on its
topology route(s) (ECMP paths share it evenly), which gives:

* bytes per hop kind: the group's bytes crossing at least one link of each kind
  (NVLink/NVSwitch, PCIe, C2C, InfiniBand/Ethernet);
* a time lower bound per link kind: the most loaded link of that kind, its bytes over its
  achievable bandwidth (the cost model's link efficiency applied): the all-to-alls of a step
  cannot finish sooner;
* the busiest GPU's expert load over the mean (what a hot expert costs in compute).

:func:`network_affinity` compares mappings (the plan's rank orders, which put the EP group inside
a host or across hosts, and placements: contiguous, topology_aware, load_balanced) and ends
with a sentence saying where experts should live.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moesim.errors import ConfigError
from moesim.experiment.scenario import ParallelPlan
from moesim.ops import DTYPE_BYTES
from moesim.planner import mapping, traffic
from moesim.planner.candidates import ORDERS, Candidate
from moesim.planner.context import PlanContext
from moesim.planner.presets import ScenarioPreset
from moesim.workload.moe import MoESpec, combine_bytes_per_token, dispatch_bytes_per_token

PLACEMENTS_COMPARED = ("contiguous", "topology_aware", "load_balanced")


@dataclass(frozen=True)
class AffinityResult:
    """One mapping's expert traffic on the fabric, per step, for one EP group."""

    name: str
    order: str
    placement: str
    num_redundant: int
    ep_ranks: tuple[int, ...]
    hosts: int
    bytes_by_kind: dict[str, float]
    bound_ms_by_kind: dict[str, float]
    cross_host_fraction: float
    gpu_load_max_over_mean: float
    expert_compute_ms: float

    @property
    def a2a_bound_ms(self) -> float:
        """The all-to-all time lower bound: the slowest link kind's."""
        return max(self.bound_ms_by_kind.values(), default=0.0)

    @property
    def score_ms(self) -> float:
        """All-to-all bound plus the busiest GPU's expert compute: what the mapping costs a step."""
        return self.a2a_bound_ms + self.expert_compute_ms * self.gpu_load_max_over_mean


@dataclass(frozen=True)
class AffinityReport:
    """Every compared mapping, the best one and the advice sentence."""

    preset: str
    plan_label: str
    results: list[AffinityResult]
    best: str
    advice: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.results:
            row = dataclasses.asdict(r)
            row.update(a2a_bound_ms=r.a2a_bound_ms, score_ms=r.score_ms)
            rows.append(row)
        return {"preset": self.preset, "plan": self.plan_label, "results": rows, "best": self.best,
                "advice": self.advice, "notes": self.notes}


def pair_tokens(ctx: PlanContext, plan: ParallelPlan, placement: str, num_redundant: int,
                ranks: list[int]) -> tuple[np.ndarray, float]:
    """(tokens[src, dst] between the EP group's GPUs for one MoE layer and microbatch, busiest
    GPU's expert load / mean) under ``placement``, with the preset's routing."""
    from moesim.moe.dispatch import split_to_gpus
    from moesim.moe.placement import PlacementInputs, make_placement
    from moesim.moe.routing import RoutingConfig, generate_routing

    spec, ep = ctx.spec, plan.ep
    hosts = tuple(ctx.topo.host_of(r) for r in ranks)
    tokens = traffic.tokens_per_rank(spec, plan)
    cfg = ctx.preset.routing or RoutingConfig(kind="uniform", tokens_per_rank=tokens)
    cfg = dataclasses.replace(cfg, tokens_per_rank=tokens)
    layer = next(i for i in range(spec.num_layers) if spec.is_moe_layer(i))
    stats = generate_routing(cfg, spec, ep, 1, 1, 0, hosts, first_layer=layer).kept[0, 0]
    place = make_placement(placement, PlacementInputs(
        num_experts=spec.num_experts, num_gpus=ep, host_of=hosts, expert_load=stats.sum(axis=0), traffic=stats,
        num_redundant=num_redundant, num_groups=max(1, spec.n_groups)))
    sample = generate_routing(cfg, spec, ep, 1, 1, 1, hosts, first_layer=layer).kept[0, 0]
    split = split_to_gpus(sample, place, host_of=hosts)
    load = split.gpu_load.astype(np.float64)
    return split.src_gpu.astype(np.float64), float(load.max() / load.mean()) if load.mean() else 1.0


def link_loads(ctx: PlanContext, transfers: list[tuple[int, int, float]]) -> tuple[Counter, Counter]:
    """(bytes per link id, bytes per hop kind) of transfers laid on their routes, ECMP-split."""
    per_link: Counter = Counter()
    per_kind: Counter = Counter()
    for src, dst, nbytes in transfers:
        if src == dst or nbytes <= 0:
            continue
        paths = ctx.topo.num_paths(src, dst)
        for key in range(paths):
            for link_id in ctx.topo.route(src, dst, key).link_ids:
                per_link[link_id] += nbytes / paths
        for kind in set(ctx.topo.route(src, dst).kinds):
            per_kind[kind] += nbytes
    return per_link, per_kind


def bound_ms_by_kind(ctx: PlanContext, per_link: Counter) -> dict[str, float]:
    """Per link kind, the most loaded link's bytes over its achievable bandwidth (ms)."""
    out: dict[str, float] = {}
    for link_id, nbytes in per_link.items():
        link = ctx.topo.links[link_id]
        rate = link.bandwidth_gbps * ctx.cost.link_efficiency(link.kind)  # bytes per ns
        out[link.kind] = max(out.get(link.kind, 0.0), float(nbytes) / rate / 1e6)
    return out


def step_multiplier(ctx: PlanContext, cand: Candidate) -> int:
    """MoE layer passes per step on one GPU of the busiest pipeline rank: MoE layers held x microbatches."""
    view, _ = ctx.view(cand, ctx.short_schedule(cand))
    held = max(sum(view.pass_cost("F", st).moe_layers for st in view.owned_stages(r)) for r in range(cand.plan.pp))
    return held * cand.plan.num_microbatches // max(1, view.schedule.num_paths)


def evaluate_mapping(ctx: PlanContext, cand: Candidate, name: str) -> AffinityResult:
    """One mapping's :class:`AffinityResult`."""
    plan, spec = cand.plan, ctx.spec
    ranks = mapping.plan_ep_group(plan)
    tokens, gamma = pair_tokens(ctx, plan, cand.placement, cand.num_redundant, ranks)
    grad = spec.hidden * DTYPE_BYTES[spec.dtype]  # backward: the combine's and the dispatch's gradients
    out_b, back_b = dispatch_bytes_per_token(spec) + grad, combine_bytes_per_token(spec) + grad
    mult = step_multiplier(ctx, cand)
    transfers = []
    for i, src in enumerate(ranks):
        for j, dst in enumerate(ranks):
            if i != j and tokens[i, j] > 0:
                transfers += [(src, dst, mult * tokens[i, j] * out_b), (dst, src, mult * tokens[i, j] * back_b)]
    per_link, per_kind = link_loads(ctx, transfers)
    total = sum(b for _, _, b in transfers)
    cross = sum(b for s, d, b in transfers if ctx.topo.host_of(s) != ctx.topo.host_of(d))
    layer = ctx.costs.layer("F", True, _shard(plan))
    expert_ms = mult * (layer.expert_ns + ctx.costs.layer("B", True, _shard(plan)).expert_ns
                        + ctx.costs.layer("W", True, _shard(plan)).expert_ns) / 1e6
    return AffinityResult(name=name, order=plan.order, placement=cand.placement, num_redundant=cand.num_redundant,
                          ep_ranks=tuple(ranks), hosts=len({ctx.topo.host_of(r) for r in ranks}),
                          bytes_by_kind={k: float(v) for k, v in per_kind.items()},
                          bound_ms_by_kind=bound_ms_by_kind(ctx, per_link),
                          cross_host_fraction=cross / total if total else 0.0, gpu_load_max_over_mean=gamma,
                          expert_compute_ms=expert_ms)


def _shard(plan: ParallelPlan):
    from moesim.planner.costing import Shard

    return Shard(plan.tp, plan.micro_batch_size, plan.sequence_parallel, plan.ep)


def mapping_options(ctx: PlanContext, cand: Candidate) -> list[tuple[str, Candidate]]:
    """The mappings compared: each rank order giving a different EP group (contiguous experts),
    then the other placements on the order whose EP group spans the fewest hosts."""
    plan = cand.plan
    out: list[tuple[str, Candidate]] = []
    seen: set[tuple[int, ...]] = set()
    for order in dict.fromkeys((plan.order, *ORDERS, "pp-tp-dp", "dp-tp-pp")):
        p = dataclasses.replace(plan, order=order)
        ranks = tuple(mapping.plan_ep_group(p))
        if ranks in seen:
            continue
        seen.add(ranks)
        hosts = len({ctx.topo.host_of(r) for r in ranks})
        where = "inside one host" if hosts == 1 else f"across {hosts} hosts"
        out.append((f"EP{p.ep} {where} (order {order}), contiguous", Candidate(p, cand.schedule, "contiguous", 0)))
    local = min(out, key=lambda o: len({ctx.topo.host_of(r) for r in mapping.plan_ep_group(o[1].plan)}))
    for placement in PLACEMENTS_COMPARED[1:]:
        red = plan.ep if placement == "load_balanced" else 0
        base = local[1]
        out.append((f"{local[0].split(',')[0]}, {placement}" + (f" +{red} replicas" if red else ""),
                    Candidate(base.plan, base.schedule, placement, red)))
    return out


def network_affinity(preset: ScenarioPreset, cand: Candidate | None = None, ctx: PlanContext | None = None) -> AffinityReport:
    """Compare mappings of the preset's EP groups (or ``cand``'s) and say where experts should live."""
    ctx = ctx or PlanContext(preset)
    cand = cand or Candidate(preset.plan, preset.schedule, preset.placement, preset.num_redundant)
    if not isinstance(ctx.spec, MoESpec) or cand.plan.ep < 2:
        raise ConfigError("plan.ep", f"network affinity needs expert parallelism (ep > 1), got ep={cand.plan.ep}",
                          "use an MoE model with ep >= 2", source=preset.name)
    results, notes = [], []
    for name, option in mapping_options(ctx, cand):
        try:
            results.append(evaluate_mapping(ctx, option, name))
        except ConfigError as err:
            notes.append(f"{name}: skipped ({err})")
    best = min(results, key=lambda r: r.score_ms)
    return AffinityReport(preset=preset.name, plan_label=cand.label, results=results, best=best.name,
                          advice=advice(results, best), notes=notes)


def advice(results: list[AffinityResult], best: AffinityResult) -> str:
    """One or two sentences: where the EP group should live and how to place experts in it."""
    contiguous = [r for r in results if r.placement == "contiguous"]
    spread = max(contiguous, key=lambda r: r.hosts)
    local = min(contiguous, key=lambda r: r.hosts)
    slow_kind = max(spread.bound_ms_by_kind, key=spread.bound_ms_by_kind.get, default="-")
    if local.hosts < spread.hosts:
        where = (f"Keep each EP group on as few hosts as possible ({local.hosts} with order {local.order}): its "
                 f"all-to-alls then need at least {local.a2a_bound_ms:,.1f} ms per step, against "
                 f"{spread.a2a_bound_ms:,.1f} ms when the group spans {spread.hosts} hosts and {slow_kind} limits it")
    else:
        kind = max(local.bound_ms_by_kind, key=local.bound_ms_by_kind.get, default="-")
        where = (f"Every rank order puts the EP group on {local.hosts} host(s); its all-to-alls need at least "
                 f"{local.a2a_bound_ms:,.1f} ms per step, bounded by {kind}")
    base = next(r for r in contiguous if r.order == best.order) if any(r.order == best.order for r in contiguous) else local
    if best.placement != "contiguous":
        how = (f"; place experts with {best.placement}"
               f"{f' (+{best.num_redundant} replicas)' if best.num_redundant else ''}: the busiest GPU then computes "
               f"{best.gpu_load_max_over_mean:.2f}x the mean expert load instead of {base.gpu_load_max_over_mean:.2f}x "
               f"with contiguous ids.")
    else:
        how = (f"; contiguous expert ids are already as good as the other placements here (busiest GPU "
               f"{best.gpu_load_max_over_mean:.2f}x the mean load).")
    return where + how
