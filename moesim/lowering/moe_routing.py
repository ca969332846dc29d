"""Routing sources for the MoE exchange: turn routing counts and a placement into ExchangePlans.

:class:`BalancedRouting` spreads every rank's routed tokens as evenly as integers allow over
contiguously placed experts (the workload's balanced assumption, made explicit).
:class:`CountsRouting` takes per-(layer, microbatch) counts ``[src, expert]`` for each EP group
from a generator and a per-layer placement (slot map with replicas) and splits each expert's
tokens over its replicas.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from moesim.errors import ConfigError
from moesim.lowering.moe_exchange import ExchangePlan
from moesim.workload.parallel import ep_group

# Replica slots beyond this many per expert are refused: the placement search grows with them (10^9 hung
# the EPLB search), and no deployment replicates every expert eight times over.
MAX_REPLICAS_PER_EXPERT = 8


def _check_trace_totals(routed: np.ndarray, pairs: int, source: Any) -> None:
    """A recorded trace routes, per layer, microbatch and source rank, the model's tokens x top_k
    token-expert pairs; else the simulated step would not be the model's."""
    totals = routed.sum(axis=-1)  # [layers, microbatches, ranks]
    bad = np.argwhere(totals != pairs)
    if len(bad):
        layer, mb, rank = (int(v) for v in bad[0])
        raise ConfigError("moe.routing.trace_path", f"the trace routes {int(totals[layer, mb, rank])} token-expert pairs "
                          f"from rank {rank} in microbatch {mb} of MoE layer {layer} ({len(bad)} such cells); the "
                          f"model routes tokens x top_k = {pairs}", "record the trace at this batch size and "
                          "micro_batch_size, or rescale it to the model's tokens", source=str(source))


def spread(total: int, parts: int) -> np.ndarray:
    """``total`` split into ``parts`` integers differing by at most one (larger first)."""
    base, extra = divmod(int(total), parts)
    return np.array([base + 1] * extra + [base] * (parts - extra), dtype=np.int64)


def plan_from_gpu_counts(gpu_tokens: np.ndarray, expert_slots: Sequence[Sequence[int]],
                         expert_tokens: np.ndarray, dropped: int = 0) -> ExchangePlan:
    """Build a plan from ``gpu_tokens[src, dst]`` and ``expert_tokens[dst, expert]``."""
    experts = tuple(tuple((int(e), int(expert_tokens[j, e])) for e in dict.fromkeys(slots))
                    for j, slots in enumerate(expert_slots))
    return ExchangePlan(np.asarray(gpu_tokens, dtype=np.int64), experts, int(dropped))


class BalancedRouting:
    """Every EP rank routes ``tokens * top_k`` pairs spread evenly over all experts, which sit
    contiguously (``num_experts / ep`` per GPU). ``capacity_factor`` drops each source's tokens
    over every expert's capacity (:func:`moesim.moe.routing.apply_capacity`; None: dropless)."""

    def __init__(self, num_experts: int, top_k: int, tokens_per_rank: int, ep: int,
                 capacity_factor: "float | None" = None) -> None:
        from moesim.moe.routing import apply_capacity

        self.num_experts, self.ep = num_experts, ep
        routed = np.stack([spread(tokens_per_rank * top_k, num_experts) for _ in range(ep)])
        counts, dropped = apply_capacity(routed, capacity_factor, tokens_per_rank * top_k / num_experts)
        per_gpu = num_experts // ep
        slots = [list(range(j * per_gpu, (j + 1) * per_gpu)) for j in range(ep)]
        gpu = np.stack([counts[:, s].sum(axis=1) for s in slots], axis=1)
        expert_tokens = np.zeros((ep, num_experts), dtype=np.int64)
        for j, s in enumerate(slots):
            expert_tokens[j, s] = counts[:, s].sum(axis=0)
        self._plan = plan_from_gpu_counts(gpu, slots, expert_tokens, int(dropped.sum()))

    def plan(self, tp: int, group: int, layer: int, microbatch: int) -> ExchangePlan:
        return self._plan


class CountsRouting:
    """Plans from a counts generator and a per-layer placement.

    ``counts_of(tp, group) -> array[layers, microbatches, ep, experts]`` (row 0 is model layer
    ``first_layer``); ``split(counts[src, expert], layer) -> (gpu_tokens[src, dst],
    expert_tokens[dst, expert], slots per GPU)``.
    """

    def __init__(self, counts_of: Callable[[int, int], np.ndarray],
                 split: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, Sequence[Sequence[int]]]],
                 dropped_of: Callable[[int, int], np.ndarray] | None = None, first_layer: int = 0) -> None:
        self._counts_of, self._split, self._dropped_of = counts_of, split, dropped_of
        self._first = first_layer
        self._counts: dict[tuple[int, int], np.ndarray] = {}
        self._plans: dict[tuple[int, int, int, int], ExchangePlan] = {}

    def plan(self, tp: int, group: int, layer: int, microbatch: int) -> ExchangePlan:
        key = (tp, group, layer, microbatch)
        if key not in self._plans:
            if (tp, group) not in self._counts:
                self._counts[(tp, group)] = self._counts_of(tp, group)
            row = layer - self._first
            counts = self._counts[(tp, group)][row, microbatch]
            gpu, experts, slots = self._split(counts, layer)
            dropped = int(self._dropped_of(tp, group)[row, microbatch].sum()) if self._dropped_of else 0
            self._plans[key] = plan_from_gpu_counts(gpu, slots, experts, dropped)
        return self._plans[key]


def routing_from_options(scn, spec, table, topo, grid) -> CountsRouting:
    """A :class:`CountsRouting` from the scenario's :class:`~moesim.experiment.MoEOptions`.

    Tokens per source rank come from the plan (micro_batch_size * seq_len / tp). The placement
    of every MoE layer is computed from the routing statistics of step ``stats_step`` and the
    simulated step is ``step`` (fresh samples, and the drifted popularity when the routing
    drifts), so the gap between the two shows what a stale placement costs. Every EP group sees
    the same routing sample (the seed fixes expert popularity, which is a property of the model).
    """
    from dataclasses import replace

    from moesim.moe.dispatch import split_to_gpus
    from moesim.moe.placement import LOAD_FREE, PlacementInputs, make_placement
    from moesim.moe.routing import RoutingConfig, generate_routing

    opts, plan = scn.moe, scn.plan
    ep = plan.ep
    if opts.num_redundant > MAX_REPLICAS_PER_EXPERT * spec.num_experts:
        raise ConfigError("moe.num_redundant", f"{opts.num_redundant} replica slots for {spec.num_experts} experts "
                          f"exceeds {MAX_REPLICAS_PER_EXPERT} extra copies per expert",
                          "give a few slots per EP group (DeepSeek-V3's EPLB: 32 for 256 experts)")
    cfg = opts.routing or RoutingConfig(kind="uniform", tokens_per_rank=table.tokens_per_rank, seed=scn.seed)
    if cfg.kind != "trace":
        if cfg.tokens_per_rank not in (None, table.tokens_per_rank):  # kept or refused, never replaced
            raise ConfigError("moe.routing.tokens_per_rank", f"{cfg.tokens_per_rank} differs from the "
                              f"{table.tokens_per_rank} tokens each rank routes per microbatch under this model and plan",
                              "leave it out (the model and plan fix it), or change plan.micro_batch_size or seq_len")
        cfg = replace(cfg, tokens_per_rank=table.tokens_per_rank)
    if getattr(opts, "experts", "grouped") == "padded":   # padding drops tokens over capacity at the source
        cfg = replace(cfg, capacity_factor=opts.capacity_factor)
    # the first EP group's hosts: every group routes alike
    host_of = [topo.host_of(grid.gpu(t, d, 0)) for d, t in ep_group(plan.tp, ep, plan.ep_layout)]
    moe_layers = table.moe_layers   # the MTP modules' MoE layers included (numbered after the model's)
    first, span = moe_layers[0], moe_layers[-1] - moe_layers[0] + 1   # sample only the MoE layer range

    def draw(step: int):
        return generate_routing(cfg, spec, ep, span, plan.num_microbatches, step, host_of, first_layer=first)

    # the stats step's draw feeds the placement only; a load-free one (contiguous, ...) needs none
    stats = draw(opts.stats_step) if cfg.kind == "trace" or opts.placement not in LOAD_FREE else None
    if cfg.kind == "trace":
        _check_trace_totals(stats.routed, table.tokens_per_rank * spec.top_k, cfg.trace_path)
    placements = {}
    for layer in moe_layers:
        traffic = stats.kept[layer - first].sum(axis=0) if stats is not None else None
        placements[layer] = make_placement(opts.placement, PlacementInputs(
            num_experts=spec.num_experts, num_gpus=ep, host_of=tuple(host_of),
            expert_load=traffic.sum(axis=0) if traffic is not None else None,
            traffic=traffic, num_redundant=opts.num_redundant, num_groups=max(1, getattr(spec, "n_groups", 1) or 1),
            seed=scn.seed))
    sim_batch = draw(opts.step)
    if cfg.kind == "trace" and opts.step != opts.stats_step:  # the simulated step is checked too
        _check_trace_totals(sim_batch.routed, table.tokens_per_rank * spec.top_k, cfg.trace_path)

    def split(counts: np.ndarray, layer: int):
        placement = placements[layer]
        s = split_to_gpus(counts, placement, policy=opts.replica_policy, host_of=host_of)
        return s.src_gpu, s.gpu_expert, placement.slots

    routing = CountsRouting(lambda tp, g: sim_batch.kept, split, lambda tp, g: sim_batch.dropped_per_expert,
                            first_layer=first)
    routing.placements = placements
    routing.stats_batch = stats
    routing.host_of = host_of
    routing.copies = {}
    if opts.dispatcher == "deepep":
        from moesim.moe.deepep import token_copies

        routing.copies = {layer: token_copies(cfg, spec, host_of, placements[layer], layer, opts.step)
                          for layer in moe_layers}
    return routing
