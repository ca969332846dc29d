"""Bytes per training step of each parallel dimension, and the link kinds they cross.

For one plan and schedule, per GPU and per step (the busiest pipeline rank):

* TP: every action's tensor-parallel collectives in all-reduce-equivalent bytes S (as the
  lowering folds them); a ring all-reduce makes each GPU send ``2(tp-1)/tp * S``.
* PP: one activation (forward) or gradient (backward) per stage boundary an action crosses to
  another rank: ``micro_batch_size * seq_len * hidden * dtype / tp`` bytes each.
* DP: one ring all-reduce of the gradients per step: dense gradients over the ``dp`` group,
  routed-expert gradients over the expert-data-parallel group ``plan.expert_dp`` (Megatron); each GPU
  sends ``2(n-1)/n`` of its gradient bytes.
* EP: per MoE layer and microbatch a GPU routes ``tokens_per_rank * top_k`` token copies, of
  which ``(ep-1)/ep`` leave it under balanced routing: dispatch and combine forward (dispatch
  may be FP8), two gradient all-to-alls backward.

``bytes_by_kind`` spreads the same bytes over the link kinds of the routes the representative
group uses (:mod:`moesim.planner.mapping`): for each kind, the most any one GPU of the group
pushes through links of that kind (a transfer counts on every kind its route crosses).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from moesim.experiment.scenario import ParallelPlan
from moesim.ops import DTYPE_BYTES
from moesim.planner import mapping
from moesim.planner.costing import StageView, send_bytes
from moesim.topology.model import Topology
from moesim.workload.moe import MoESpec, combine_bytes_per_token, dispatch_bytes_per_token, moe_input_tokens

COLLECTIVE = {"tp": "ring all-reduce per action", "pp": "send/recv per stage boundary",
              "dp": "ring all-reduce of gradients", "ep": "all-to-all dispatch + combine"}


@dataclass(frozen=True)
class DimensionTraffic:
    """One parallel dimension's traffic per GPU per step."""

    dim: str
    group_size: int
    bytes_per_gpu: float
    bytes_by_kind: dict[str, float] = field(default_factory=dict)
    kinds: tuple[str, ...] = ()
    tier: str = "local"
    detail: str = ""

    @property
    def collective(self) -> str:
        return COLLECTIVE[self.dim]


def ring_factor(n: int) -> float:
    """Bytes each member sends per byte of buffer in a ring all-reduce: ``2(n-1)/n``."""
    return 2.0 * (n - 1) / n if n > 1 else 0.0


def tp_bytes(view: StageView, rank: int, tp: int) -> float:
    """Bytes one GPU of pipeline rank ``rank`` sends for TP in one step."""
    buffer = sum(view.pass_cost(a.kind, a.stage).tp_bytes for a in view.actions(rank))
    return buffer * ring_factor(tp)


def pp_sends(view: StageView, rank: int) -> int:
    """Activations and gradients pipeline rank ``rank`` sends to another rank in one step."""
    s, count = view.schedule, 0
    for a in view.actions(rank):
        if a.kind == "F" and not s.is_last_stage(a.stage):
            count += s.rank_of(a.path, a.stage + 1) != rank
        elif a.is_backward and a.stage > 0:
            count += s.rank_of(a.path, a.stage - 1) != rank
    return count


def pp_bytes(view: StageView, rank: int) -> float:
    """Bytes one GPU of pipeline rank ``rank`` sends to other stages in one step."""
    return pp_sends(view, rank) * send_bytes(view.layer_spec, view.shard.mbs, view.shard.tp)


def dp_bytes(view: StageView, plan: ParallelPlan, rank: int) -> tuple[float, float]:
    """(dense, expert) gradient bytes one GPU of pipeline rank ``rank`` sends in the DP reduction."""
    total, expert = view.rank_params(rank)
    g = plan.grad_dtype_bytes
    return (total - expert) * g * ring_factor(plan.dp), expert * g * ring_factor(plan.expert_dp)


def tokens_per_rank(spec: MoESpec, plan: ParallelPlan) -> int:
    """Tokens one GPU routes per MoE layer and microbatch (split over TP under SP)."""
    return moe_input_tokens(spec, plan.micro_batch_size, plan.tp, plan.sequence_parallel and plan.tp > 1)


def ep_bytes_per_exchange(spec: Any, plan: ParallelPlan, phase: str) -> float:
    """Bytes one GPU sends in one MoE layer's dispatch + combine of phase F or B (balanced)."""
    if not isinstance(spec, MoESpec) or plan.ep < 2:
        return 0.0
    routed = tokens_per_rank(spec, plan) * spec.top_k * (plan.ep - 1) / plan.ep
    if phase == "F":
        return routed * (dispatch_bytes_per_token(spec) + combine_bytes_per_token(spec))
    return routed * 2 * spec.hidden * DTYPE_BYTES[spec.dtype]


def ep_bytes(view: StageView, plan: ParallelPlan, rank: int) -> float:
    """Bytes one GPU of pipeline rank ``rank`` sends in EP all-to-alls in one step."""
    spec = view.costs.spec
    per = {"F": ep_bytes_per_exchange(spec, plan, "F"), "B": ep_bytes_per_exchange(spec, plan, "B")}
    total = 0.0
    for a in view.actions(rank):
        if a.kind in ("F", "B", "BW"):
            total += view.pass_cost("F" if a.kind == "F" else "B", a.stage).moe_layers * per["F" if a.kind == "F" else "B"]
    return total


def _max_per_kind(topo: Topology, transfers: Iterable[tuple[int, int, float]]) -> dict[str, float]:
    """For each link kind, the most bytes any one source pushes through links of that kind."""
    per_src: dict[int, Counter[str]] = {}
    for src, dst, nbytes in transfers:
        if src == dst or nbytes <= 0:
            continue
        bucket = per_src.setdefault(src, Counter())
        for kind in set(mapping.route_kinds(topo, src, dst)):
            bucket[kind] += nbytes
    out: Counter[str] = Counter()
    for bucket in per_src.values():
        for kind, nbytes in bucket.items():
            out[kind] = max(out[kind], nbytes)
    return dict(out)


def kinds_of_dimension(topo: Topology, plan: ParallelPlan, dim: str, bytes_per_gpu: float) -> dict[str, float]:
    """``bytes_per_gpu`` of dimension ``dim`` spread over the link kinds of its group's routes."""
    ranks = mapping.representative_group(plan, dim)
    if len(ranks) < 2 or bytes_per_gpu <= 0:
        return {}
    if dim == "ep":
        share = bytes_per_gpu / (len(ranks) - 1)
        return _max_per_kind(topo, ((a, b, share) for a, b in mapping.all_pairs(ranks)))
    pairs = list(zip(ranks, ranks[1:])) if dim == "pp" else mapping.ring_pairs(ranks)
    return _max_per_kind(topo, ((a, b, bytes_per_gpu) for a, b in pairs))


def step_traffic(view: StageView, plan: ParallelPlan, topo: Topology) -> list[DimensionTraffic]:
    """Traffic per GPU per step of every parallel dimension of degree > 1 (busiest pipeline rank).
    ``view`` may hold a shortened schedule (see :meth:`Candidate.short_microbatches`): every
    rank's action count is proportional to the microbatches, so per-microbatch traffic is
    scaled to the plan's ``num_microbatches``."""
    ranks = range(view.schedule.num_ranks)
    scale = plan.num_microbatches / view.schedule.num_microbatches
    sends = max(pp_sends(view, r) for r in ranks) * scale
    values = {"tp": scale * max(tp_bytes(view, r, plan.tp) for r in ranks) if plan.tp > 1 else 0.0,
              "pp": scale * max(pp_bytes(view, r) for r in ranks) if plan.pp > 1 else 0.0,
              "ep": scale * max(ep_bytes(view, plan, r) for r in ranks) if plan.ep > 1 else 0.0}
    dense, expert = max((dp_bytes(view, plan, r) for r in ranks), key=sum) if plan.dp > 1 else (0.0, 0.0)
    values["dp"] = dense + expert
    details = {"dp": f"dense {dense / 1e9:.3f} GB over DP{plan.dp} + experts {expert / 1e9:.3f} GB over "
                     f"expert-DP{plan.expert_dp}",
               "pp": f"{sends:.0f} sends of "
                     f"{send_bytes(view.layer_spec, plan.micro_batch_size, plan.tp) / 1e6:.1f} MB",
               "ep": "balanced routing: (ep-1)/ep of routed tokens leave the GPU"}
    sizes = {"tp": plan.tp, "ep": plan.ep, "pp": plan.pp, "dp": plan.dp}
    out = []
    for dim in mapping.DIMENSIONS:
        if sizes[dim] < 2:
            continue
        group = mapping.group_placement(topo, plan, dim)
        out.append(DimensionTraffic(dim=dim, group_size=sizes[dim], bytes_per_gpu=values[dim],
                                    bytes_by_kind=kinds_of_dimension(topo, plan, dim, values[dim]),
                                    kinds=group.kinds, tier=group.tier, detail=details.get(dim, "")))
    return out


def bytes_by_kind_total(items: Iterable[DimensionTraffic]) -> dict[str, float]:
    """Per link kind, the bytes per GPU per step of all dimensions together."""
    out: Counter[str] = Counter()
    for t in items:
        out.update(t.bytes_by_kind)
    return dict(out)
