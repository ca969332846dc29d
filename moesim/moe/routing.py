"""Routing samples for the simulator: which expert each source rank's tokens go to.

One entry point, :func:`generate_counts`, returns ``counts[layer, microbatch, src_rank, expert]``
(integers; each token counted once per selected expert) for one training step, from a frozen
:class:`RoutingConfig`: a popularity shape (uniform, Zipf, Dirichlet; :mod:`moesim.moe.popularity`)
with per-layer hot sets and per-step drift, a gate (plain top-k, DeepSeek group-limited, or
node-limited with one group per node; :mod:`moesim.moe.sampling`), or a recorded trace
(:mod:`moesim.moe.traces`). ``capacity_factor`` turns on Megatron-style token dropping
(:func:`apply_capacity`); ``None`` is dropless. :func:`generate_routing` also returns the
pre-drop counts and the dropped tokens per expert.

Samplers: ``exact`` draws every token; ``fast`` draws a pilot of ``pilot_tokens`` tokens per
(layer, step), takes its per-expert selection frequencies and draws each (microbatch, rank) as a
multinomial of ``tokens * top_k`` picks (right means, no per-token distinctness); ``auto`` is exact
up to ``EXACT_TOKEN_LIMIT`` tokens per call. Randomness is keyed by (seed, purpose, step, layer,
microbatch), so a given step/layer/microbatch is identical whatever else is requested.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from moesim.errors import ConfigError
from moesim.moe.layout import Placement, node_index
from moesim.moe.popularity import DRIFT_HORIZON_LEVELS, DRIFT_KINDS, POPULARITY_KINDS, popularity_at, stream
from moesim.moe.sampling import contiguous_groups, sample_topk
from moesim.moe.traces import load_trace

ROUTING_KINDS = (*POPULARITY_KINDS, "trace")
GATINGS = ("topk", "group_limited", "node_limited")
LAYER_MODES = ("independent", "shared")
SAMPLERS = ("auto", "exact", "fast")
EXACT_TOKEN_LIMIT = 1 << 20
_TAG_TOKENS, _TAG_PILOT, _TAG_FAST = 201, 202, 203


def _one_of(field: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ConfigError(field, f"unknown {value!r}", f"use one of: {', '.join(valid)}")


def _whole(field: str, value: Any, low: int, high: float = math.inf) -> None:
    """``value`` must be an int (not a bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bound = f">= {low}" if high == math.inf else f"in {low}..{int(high)}"
        raise ConfigError(field, f"must be a whole number {bound}, got {value!r}")


def _finite(field: str, value: Any, *, positive: bool, fix: str = "") -> None:
    """``value`` must be a finite number > 0 (``positive``) or >= 0 (not a bool, text or NaN)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise ConfigError(field, f"must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}", fix)


@dataclass(frozen=True, kw_only=True)
class RoutingConfig:
    """How tokens pick experts.

    Attributes:
        kind: "uniform", "zipf", "dirichlet" or "trace".
        tokens_per_rank: tokens one source rank routes per microbatch (None for traces; None in a
            Scenario: the model's and plan's, which a given value must equal).
        seed: root of every random draw (>= 0).
        zipf_s: Zipf exponent (popularity ∝ rank**-s); ~0.45 WikiText, ~0.9 code (reference §5.2).
        dirichlet_alpha: symmetric Dirichlet concentration; small = a few very hot experts.
        gating: "topk", "group_limited" (spec.n_groups / spec.topk_groups) or "node_limited"
            (one group per node, spec.max_nodes_per_token nodes per token; needs host_of).
        drift: "none", "rotate" (hot set shifts drift_rate experts per step) or "random_walk"
            (log-popularity Brownian motion, drift_rate standard deviation per step).
        layer_mode: "independent" (own hot set per layer) or "shared" (every layer alike).
        capacity_factor: per-expert capacity multiplier with token dropping; None = dropless.
        sampler: "auto", "exact" or "fast" (see the module docstring).
        pilot_tokens: tokens drawn per (layer, step) to estimate frequencies in fast mode.
        trace_path: the .npz for kind "trace" (docs/routing_traces.md).
    """

    kind: str = "uniform"
    tokens_per_rank: int | None = None
    seed: int = 0
    zipf_s: float = 1.0
    dirichlet_alpha: float = 1.0
    gating: str = "topk"
    drift: str = "none"
    drift_rate: float = 0.0
    layer_mode: str = "independent"
    capacity_factor: float | None = None
    sampler: str = "auto"
    pilot_tokens: int = 16384
    trace_path: str | None = None

    def __post_init__(self) -> None:
        for field, valid in (("kind", ROUTING_KINDS), ("gating", GATINGS), ("drift", DRIFT_KINDS),
                             ("layer_mode", LAYER_MODES), ("sampler", SAMPLERS)):
            _one_of(field, getattr(self, field), valid)
        if self.trace_path is not None and not isinstance(self.trace_path, (str, os.PathLike)):
            raise ConfigError("trace_path", f"must be a file path, got {self.trace_path!r}")
        if self.kind == "trace":
            if not self.trace_path:
                raise ConfigError("trace_path", "kind 'trace' needs a file", "set trace_path to a routing-trace .npz")
            if self.tokens_per_rank is not None:
                raise ConfigError("tokens_per_rank", "a trace fixes its own token counts", "leave it None")
        elif self.tokens_per_rank is not None and (isinstance(self.tokens_per_rank, bool)
                                                   or not isinstance(self.tokens_per_rank, int) or self.tokens_per_rank < 1):
            raise ConfigError("tokens_per_rank", f"must be a whole number >= 1, got {self.tokens_per_rank!r}",
                              "give the tokens one rank routes per microbatch (micro_batch_size * seq_len / tp)")
        self._check_numbers()

    def _check_numbers(self) -> None:
        _whole("seed", self.seed, 0)
        _finite("zipf_s", self.zipf_s, positive=False, fix="0 is uniform; real text ~0.25-1.0")
        _finite("dirichlet_alpha", self.dirichlet_alpha, positive=True)
        _finite("drift_rate", self.drift_rate, positive=False)
        if self.capacity_factor is not None:
            _finite("capacity_factor", self.capacity_factor, positive=True, fix="use None for dropless routing")
        # more pilot tokens than the exact sampler's limit buys nothing and can take forever
        _whole("pilot_tokens", self.pilot_tokens, 1, EXACT_TOKEN_LIMIT)


@dataclass(frozen=True)
class RoutingBatch:
    """One step of routing. Arrays are ``[layers, microbatches, src_rank, expert]`` except
    ``dropped_per_expert`` ``[layers, microbatches, expert]``; ``sampler`` says what produced it."""

    routed: np.ndarray
    kept: np.ndarray
    dropped_per_expert: np.ndarray
    sampler: str

    @property
    def dropped_tokens(self) -> int:
        return int(self.dropped_per_expert.sum())


def expert_capacity(tokens_per_expert_avg: float | np.ndarray, capacity_factor: float) -> np.ndarray:
    """Megatron capacity: ``ceil(tokens_per_rank * top_k / num_experts * capacity_factor)``."""
    cap = np.ceil(np.asarray(tokens_per_expert_avg, dtype=np.float64) * capacity_factor - 1e-9)
    return np.minimum(cap, 2.0**62).astype(np.int64)  # a huge factor must not wrap to a negative capacity


def apply_capacity(counts: np.ndarray, capacity_factor: float | None,
                   tokens_per_expert_avg: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop tokens above each expert's capacity on each source rank (Megatron drops before the
    EP exchange). ``counts[..., src_rank, expert]`` -> ``(kept, dropped_per_expert[..., expert])``.
    ``tokens_per_expert_avg`` (= tokens_per_rank * top_k / num_experts) is a number or an array
    broadcastable against ``counts``. ``capacity_factor=None`` is dropless: ``kept`` equals
    ``counts`` and nothing is dropped."""
    counts = np.asarray(counts)
    if capacity_factor is None:
        return counts.copy(), np.zeros(counts.shape[:-2] + counts.shape[-1:], dtype=counts.dtype)
    if not capacity_factor > 0:
        raise ConfigError("capacity_factor", f"must be > 0, got {capacity_factor}", "use None for dropless")
    if np.any(np.asarray(tokens_per_expert_avg) < 0):
        raise ConfigError("tokens_per_expert_avg", f"must be >= 0, got {tokens_per_expert_avg}")
    kept = np.minimum(counts, expert_capacity(tokens_per_expert_avg, capacity_factor))
    return kept, (counts - kept).sum(axis=-2)


def layer_popularity(config: RoutingConfig, num_experts: int, layer: int, step: int) -> np.ndarray:
    """The popularity vector the sampler uses for ``layer`` at ``step``."""
    key = 0 if config.layer_mode == "shared" else layer
    return popularity_at(config.kind, num_experts, config.seed, key, step, zipf_s=config.zipf_s,
                         dirichlet_alpha=config.dirichlet_alpha, drift=config.drift, drift_rate=config.drift_rate)


def expert_nodes(num_experts: int, host_of: Sequence[Any], placement: Placement | None = None) -> np.ndarray:
    """Node index (0..N-1) of every expert: its placement's home node (the node holding most of
    its replicas, lowest on ties), or, without a placement, the node of rank ``e // (E / ranks)``."""
    node_of_gpu = node_index(host_of)
    if placement is not None:
        if placement.num_gpus != len(node_of_gpu):
            raise ConfigError("host_of", f"{len(node_of_gpu)} entries for {placement.num_gpus} GPUs",
                              "give one node per GPU of the placement")
        return placement.home_nodes(node_of_gpu)
    if num_experts % len(node_of_gpu):
        raise ConfigError("num_experts", f"{num_experts} experts do not split evenly over {len(node_of_gpu)} ranks",
                          "pass a placement, or use an ep that divides num_experts")
    return node_of_gpu[np.arange(num_experts) // (num_experts // len(node_of_gpu))]


def _gate(config: RoutingConfig, spec: Any, host_of: Sequence[Any] | None,
          placement: Placement | None) -> tuple[np.ndarray | None, int]:
    """``(group_of, topk_groups)`` of the configured gate (``None`` = plain top-k)."""
    if config.gating == "topk":
        return None, 1
    if config.gating == "group_limited":
        if spec.n_groups == 1:
            raise ConfigError("gating", "group_limited needs spec.n_groups > 1",
                              "set n_groups/topk_groups on the model, or use gating='topk'")
        return contiguous_groups(spec.num_experts, spec.n_groups), spec.topk_groups
    if host_of is None:
        raise ConfigError("host_of", "node_limited gating needs the node of every EP rank",
                          "pass host_of (one node id per EP rank)")
    if spec.max_nodes_per_token < 1:
        raise ConfigError("max_nodes_per_token", "node_limited gating needs a limit M >= 1",
                          "set max_nodes_per_token on the model (DeepSeek-V3: 4)")
    return expert_nodes(spec.num_experts, host_of, placement), spec.max_nodes_per_token


def _count(chosen: np.ndarray, ranks: int, tokens_per_rank: int, num_experts: int) -> np.ndarray:
    cell = np.repeat(np.arange(ranks) * num_experts, tokens_per_rank)
    flat = np.bincount((cell[:, None] + chosen).ravel(), minlength=ranks * num_experts)
    return flat.reshape(ranks, num_experts)


def _synthetic(config: RoutingConfig, spec: Any, ep: int, layers: range, num_microbatches: int, step: int,
               gate: tuple[np.ndarray | None, int], exact: bool) -> np.ndarray:
    E, k, T = spec.num_experts, spec.top_k, config.tokens_per_rank
    assert T is not None
    out = np.empty((len(layers), num_microbatches, ep, E), dtype=np.int64)
    for i, layer in enumerate(layers):
        p = layer_popularity(config, E, layer, step)
        if exact:
            for mb in range(num_microbatches):
                rng = stream(config.seed, _TAG_TOKENS, step, layer, mb)
                out[i, mb] = _count(sample_topk(rng, p, ep * T, k, *gate), ep, T, E)
            continue
        pilot = sample_topk(stream(config.seed, _TAG_PILOT, step, layer), p, config.pilot_tokens, k, *gate)
        freq = np.bincount(pilot.ravel(), minlength=E) / pilot.size
        out[i] = stream(config.seed, _TAG_FAST, step, layer).multinomial(T * k, freq, size=(num_microbatches, ep))
    return out


def _check_call(spec: Any, ep: int, num_layers: int, num_microbatches: int, step: int,
                host_of: Sequence[Any] | None, first_layer: int) -> None:
    for field, value, low in (("ep", ep, 1), ("num_layers", num_layers, 1),
                              ("num_microbatches", num_microbatches, 1), ("step", step, 0),
                              ("first_layer", first_layer, 0)):
        _whole(field, value, low)
    if step >= 2 ** DRIFT_HORIZON_LEVELS:
        raise ConfigError("step", f"{step} is beyond the drift horizon 2**{DRIFT_HORIZON_LEVELS}", "use a smaller step")
    if host_of is not None and len(host_of) != ep:
        raise ConfigError("host_of", f"{len(host_of)} entries for ep = {ep} ranks", "give one node id per EP rank")
    if spec.top_k > spec.num_experts:
        raise ConfigError("top_k", f"{spec.top_k} exceeds num_experts = {spec.num_experts}", "lower top_k")


def _from_trace(config: RoutingConfig, spec: Any, ep: int, layers: range, num_microbatches: int,
                step: int) -> np.ndarray:
    assert config.trace_path is not None
    trace = load_trace(config.trace_path)
    for field, have, want in (("num_experts", trace.num_experts, spec.num_experts), ("ep", trace.num_ranks, ep),
                              ("top_k", trace.top_k or spec.top_k, spec.top_k)):
        if have != want:
            raise ConfigError(field, f"the trace has {have}, the run {want}", "record a matching trace",
                              source=config.trace_path)
    # an MTP module's MoE layer (numbered after the model's) replays the trace of the layer it copies
    main, mtp = getattr(spec, "num_layers", 0), getattr(spec, "num_nextn_predict_layers", 0)
    return np.stack([trace.step_counts(step, spec.kind_of_layer(layer) if main <= layer < main + mtp else layer,
                                       num_microbatches) for layer in layers])


def generate_routing(config: RoutingConfig, spec: Any, ep: int, num_layers: int, num_microbatches: int,
                     step: int, host_of: Sequence[Any] | None = None, *, placement: Placement | None = None,
                     first_layer: int = 0) -> RoutingBatch:
    """Routed, kept and dropped tokens of one step for layers ``first_layer ..`` (+num_layers).

    ``spec`` is an :class:`~moesim.workload.moe.MoESpec` (num_experts, top_k, n_groups,
    topk_groups, max_nodes_per_token are read). ``host_of[rank]`` names each EP rank's node;
    ``placement`` (optional) decides each expert's node for node-limited gating.
    """
    if config.kind != "trace" and config.tokens_per_rank is None:
        raise ConfigError("tokens_per_rank", "is needed to draw synthetic routing",
                          "give the tokens one rank routes per microbatch (a Scenario sets it from the model)")
    _check_call(spec, ep, num_layers, num_microbatches, step, host_of, first_layer)
    layers = range(first_layer, first_layer + num_layers)
    if config.kind == "trace":
        routed, used = _from_trace(config, spec, ep, layers, num_microbatches, step), "trace"
        tokens = routed.sum(axis=-1, keepdims=True) / spec.top_k  # each rank's own token count
    else:
        gate = _gate(config, spec, host_of, placement)
        total = num_layers * num_microbatches * ep * (config.tokens_per_rank or 0)
        exact = config.sampler == "exact" or (config.sampler == "auto" and total <= EXACT_TOKEN_LIMIT)
        routed = _synthetic(config, spec, ep, layers, num_microbatches, step, gate, exact)
        used, tokens = ("exact" if exact else "fast"), config.tokens_per_rank
    kept, dropped = apply_capacity(routed, config.capacity_factor, tokens * spec.top_k / spec.num_experts)
    return RoutingBatch(routed, kept, dropped, used)


def generate_counts(config: RoutingConfig, spec: Any, ep: int, num_layers: int, num_microbatches: int,
                    step: int, host_of: Sequence[Any] | None = None, *, placement: Placement | None = None,
                    first_layer: int = 0) -> np.ndarray:
    """``counts[layer, microbatch, src_rank, expert]`` after capacity dropping (dropless when
    ``config.capacity_factor`` is None: then ``counts.sum() == layers*mbs*ep*tokens*top_k``)."""
    return generate_routing(config, spec, ep, num_layers, num_microbatches, step, host_of,
                            placement=placement, first_layer=first_layer).kept
