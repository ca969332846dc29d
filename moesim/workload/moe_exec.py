"""The MoE layer as frameworks execute it: router, token movement and expert kernels by name.

Two choices of a scenario (``MoEOptions.experts`` and ``MoEOptions.token_movement``, checked
by :func:`check_exec`) decide which kernels one MoE layer launches:

* ``token_movement`` -- the router and the permute / unpermute around the experts:

  - ``"torchtitan"``: fp32 cast + softmax (or sigmoid), ``topk``, ``histc`` counts,
    ``argsort(stable)`` + ``gather`` permute, probabilities multiplied into the permuted tokens
    (cast, mul, cast), ``scatter_add`` unpermute (bf16 atomics) into zeros (or the shared
    experts' output);
  - ``"megatron"``: top-k on the logits then softmax over the k (``moe_router_pre_softmax``
    off), probabilities and routing map scattered into zeros, counts by ``routing_map.sum``,
    ``masked_select`` + ``index_select`` permute, probabilities multiplied after the experts
    (moesim's harness program; Megatron-Core 0.13+'s own modules fuse them into the SwiGLU and
    its alltoall dispatcher regroups tokens by local expert, :func:`sort_chunk_ops`),
    ``scatter_add_`` unpermute into zeros;
  - ``"fused"``: a fused top-k router and one fused permute and one fused unpermute kernel
    (Transformer Engine / DeepEP style), each priced as one memory op of the moved bytes.

* ``experts`` -- how the local experts of one GPU run:

  - ``"grouped"``: one kernel per projection over *all* local experts
    (:class:`~moesim.ops.GroupedGemm`, costed on the GPU's whole count vector); torchtitan
    runs w1 and w3 as two grouped GEMMs plus ``silu`` and ``mul``, Megatron's TE GroupedMLP
    fuses gate and up into one fc1 and one SwiGLU kernel;
  - ``"loop"``: one kernel chain per expert with tokens (torchtitan's for-loop, Megatron's
    SequentialMLP), after the device-to-host copy of the counts (``.tolist()``), then a ``cat``;
    its backward runs the experts as autograd does (:func:`expert_tasks`, phase ``"BW"``);
  - ``"padded"``: every expert padded to its capacity (Megatron's capacity factor with
    ``moe_pad_expert_input_to_capacity``; tokens over capacity are dropped by the routing),
    grouped kernels on the padded counts.

Sizes: every :class:`~moesim.ops.MemoryOp` here carries ``bytes`` = bytes read plus bytes
written by that kernel (each input read once, each output written once; index tensors are
counted where the kernel reads them per row, not per element). That is the axis a measured
curve of the kind / variant is indexed by (``nbytes`` of a ``memory`` profile row).
Programs are lists in launch order; the lowering (:mod:`moesim.lowering.moe_exchange`) turns
:func:`expert_tasks` into engine tasks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES, ComputeOp, Gemm, GroupedGemm, MemoryOp

EXPERT_MODES = ("grouped", "loop", "padded")
# ops whose result an eager host reads back (it waits for the GPU to reach them): Megatron's
# tokens-per-expert ``.cpu()`` and its two ``masked_select`` (the output size is known on the GPU
# only), torchtitan's expert-parallel split sizes (``output_splits`` copied with non_blocking=False)
HOST_SYNC_OPS = frozenset({"router.counts", "moe.masked_select", "moe.probs.masked_select", "moe.splits_to_host"})
# of those, the reads of the routed counts, which a padded dispatch (static splits) does not make
COUNT_SYNC_OPS = frozenset({"router.counts", "moe.splits_to_host"})
TOKEN_MOVEMENTS = ("torchtitan", "megatron", "fused")
PHASES = ("F", "B", "W", "BW")   # BW: input and weight gradients in one backward (not split)
FRAMEWORK_LAYER_CLASS = "megatron_moe_layer"   # host_op class: Megatron's MoELayer beyond its kernels' calls
MEGATRON_BODY_CLASS = "megatron_expert_mlp"    # host_op class: one SequentialMLP expert module call
# the ``megatron`` movement's probabilities multiply after the experts (moesim's harness program;
# Megatron-Core 0.13+ fuses it into the SwiGLU: moesim.lowering.moe_costs drops these for its modules)
PROBS_AFTER_EXPERTS = frozenset({"moe.probs_mul", "moe.probs_mul.bwd.probs", "moe.probs_mul.bwd"})
TITAN_BODY_CLASS = "expert_loop_body"          # host_op class: one torchtitan per-expert loop body
COUNT_BYTES = 4  # one int32 count per local expert copied to the host (``tokens_per_expert.tolist()``)


def check_exec(experts: str, token_movement: str, capacity_factor: "float | None", *,
               need_capacity: bool = True) -> None:
    """ConfigError (naming the ``moe.`` field and the valid values) unless the three agree.
    ``need_capacity=False`` lets ``"padded"`` wait for its capacity factor (a scenario set field
    by field, ``--set moe.experts=padded --set moe.capacity_factor=1.25``); the build needs it."""
    if not isinstance(experts, str) or experts not in EXPERT_MODES:
        raise ConfigError("moe.experts", f"unknown expert mode {experts!r}", f"use one of: {', '.join(EXPERT_MODES)}")
    if not isinstance(token_movement, str) or token_movement not in TOKEN_MOVEMENTS:
        raise ConfigError("moe.token_movement", f"unknown token movement {token_movement!r}",
                          f"use one of: {', '.join(TOKEN_MOVEMENTS)}")
    if experts == "padded":
        if capacity_factor is None and not need_capacity:
            return
        if capacity_factor is None:
            raise ConfigError("moe.capacity_factor", "experts='padded' pads every expert to its capacity and needs "
                              "a capacity factor", "give e.g. moe.capacity_factor=1.25")
        if isinstance(capacity_factor, bool) or not isinstance(capacity_factor, (int, float)) \
                or not math.isfinite(capacity_factor) or capacity_factor <= 0:
            raise ConfigError("moe.capacity_factor", f"must be a finite number > 0, got {capacity_factor!r}",
                              "give e.g. 1.0 or 1.25")
    elif capacity_factor is not None:
        raise ConfigError("moe.capacity_factor", f"is only used by experts='padded', not {experts!r}",
                          "leave it out, or set moe.experts='padded' (dropping without padding: "
                          "moe.routing.capacity_factor)")


def capacity(capacity_factor: float, tokens: int, top_k: int, num_experts: int) -> int:
    """Rows one expert is padded to per source rank: ``ceil(cf * tokens * top_k / num_experts)``
    (Megatron's capacity, :func:`moesim.moe.routing.expert_capacity`)."""
    from moesim.moe.routing import expert_capacity

    return int(expert_capacity(tokens * top_k / num_experts, capacity_factor))


# -- router and token movement ------------------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    """T tokens routed on this rank, E experts, k per token, P = T k pairs, h hidden, e bytes."""

    T: int
    E: int
    k: int
    h: int
    e: float
    P: int
    score: str
    shared: bool


def _shape(spec, tokens: int) -> _Shape:
    return _Shape(tokens, spec.num_experts, spec.top_k, spec.hidden, float(DTYPE_BYTES[spec.dtype]),
                  tokens * spec.top_k, spec.score_func, bool(spec.num_shared_experts))


def _mem(kind: str, nbytes: float, name: str, variant: str = "") -> MemoryOp:
    return MemoryOp(kind, float(nbytes), name, variant)


def _gate(spec, s: _Shape) -> Gemm:
    return Gemm(m=s.T, n=s.E, k=s.h, dtype=spec.dtype, name="router.gate")


def _titan_router(s: _Shape) -> list[ComputeOp]:
    T, E, P = s.T, s.E, s.P
    score = (_mem("softmax", 8 * T * E, "router.softmax", "softmax_fp32") if s.score == "softmax"
             else _mem("elementwise", 8 * T * E, "router.sigmoid", "sigmoid_fp32"))
    return [_mem("cast", (s.e + 4) * T * E, "router.to_fp32", "cast_fp32"), score,
            _mem("topk", 4 * T * E + 12 * P, "router.topk", "topk"),
            _mem("histogram", 8 * P + 4 * E, "router.histc", "histc")]


def _titan_permute(s: _Shape) -> list[ComputeOp]:
    P, h, e = s.P, s.h, s.e
    return [_mem("sort", 16 * P, "moe.argsort", "argsort"),
            _mem("permute", 16 * P, "moe.sort_scores", "gather"),
            _mem("elementwise", 16 * P, "moe.token_index"),
            _mem("permute", 2 * e * P * h, "moe.permute", "gather"),
            _mem("cast", (e + 4) * P * h, "moe.probs.to_fp32", "cast_fp32"),
            _mem("elementwise", 8 * P * h + 4 * P, "moe.probs_mul"),
            _mem("cast", (4 + e) * P * h, "moe.probs.to_dtype", "cast_bf16")]


def _base(s: _Shape) -> list[ComputeOp]:
    """The zeros the unpermute adds into (the shared experts' output when there is one)."""
    return [] if s.shared else [_mem("copy", s.e * s.T * s.h, "moe.zeros", "zeros")]


def _titan_unpermute(s: _Shape) -> list[ComputeOp]:
    return _base(s) + [_mem("permute", 2 * s.e * s.P * s.h, "moe.unpermute", "scatter_add")]


def _titan_unpermute_bwd(s: _Shape) -> list[ComputeOp]:
    return [_mem("permute", 2 * s.e * s.P * s.h, "moe.unpermute.bwd", "gather")]


def _titan_permute_bwd(s: _Shape) -> list[ComputeOp]:
    P, h, e, T = s.P, s.h, s.e, s.T
    return [_mem("elementwise", 8 * P * h + 4 * P, "moe.probs_mul.bwd.scores"),
            _mem("cast", (e + 4) * P * h, "moe.probs.to_dtype.bwd", "cast_fp32"),
            _mem("elementwise", 8 * P * h + 4 * P, "moe.probs_mul.bwd"),
            _mem("cast", (4 + e) * P * h, "moe.probs.to_fp32.bwd", "cast_bf16"),
            _mem("copy", e * T * h, "moe.permute.bwd.zeros", "zeros"),
            _mem("permute", 2 * e * P * h, "moe.permute.bwd", "scatter_add"),
            _mem("copy", 4 * P, "moe.sort_scores.bwd.zeros", "zeros"),
            _mem("permute", 16 * P, "moe.sort_scores.bwd", "scatter_add")]


def _titan_router_bwd(s: _Shape) -> list[ComputeOp]:
    T, E, P = s.T, s.E, s.P
    score = (_mem("softmax", 12 * T * E, "router.softmax.bwd") if s.score == "softmax"
             else _mem("elementwise", 12 * T * E, "router.sigmoid.bwd"))
    return [_mem("copy", 4 * T * E, "router.topk.bwd.zeros", "zeros"), _mem("permute", 16 * P, "router.topk.bwd"),
            score, _mem("cast", (4 + s.e) * T * E, "router.to_fp32.bwd", "cast_bf16")]


def _megatron_router(s: _Shape) -> list[ComputeOp]:
    T, E, P, e = s.T, s.E, s.P, s.e
    if s.score == "softmax":
        scores = [_mem("topk", e * T * E + (e + 8) * P, "router.topk", "topk"),
                  _mem("softmax", (e + 4) * P, "router.softmax", "softmax_fp32")]
    else:
        scores = [_mem("elementwise", (e + 4) * T * E, "router.sigmoid", "sigmoid_fp32"),
                  _mem("topk", 4 * T * E + 12 * P, "router.topk", "topk"),
                  _mem("elementwise", 8 * P, "router.normalize")]
    return scores + [_mem("copy", 4 * T * E, "router.probs.zeros", "zeros"),
                     _mem("permute", 16 * P, "router.probs.scatter"),
                     _mem("copy", e * T * E, "router.map.zeros", "zeros"),
                     _mem("cast", (e + 4) * T * E, "router.map.to_int"),
                     _mem("permute", 12 * P, "router.map.scatter"),
                     _mem("cast", 5 * T * E, "router.map.to_bool"),
                     _mem("histogram", T * E + 8 * E, "router.counts")]


def _megatron_permute(s: _Shape) -> list[ComputeOp]:
    T, E, P, h, e = s.T, s.E, s.P, s.h, s.e
    return [_mem("copy", 2 * T * E, "moe.map.transpose"),
            _mem("copy", 8 * T, "moe.arange"),
            _mem("permute", 9 * T * E + 8 * P, "moe.masked_select"),
            _mem("copy", 8 * T * E, "moe.probs.transpose"),
            _mem("permute", 5 * T * E + 4 * P, "moe.probs.masked_select"),
            _mem("permute", 2 * e * P * h, "moe.permute", "index_select")]


def _megatron_unpermute(s: _Shape) -> list[ComputeOp]:
    P, h, e, T = s.P, s.h, s.e, s.T
    return [_mem("elementwise", 2 * e * P * h + 4 * P, "moe.probs_mul"),
            _mem("copy", e * T * h, "moe.zeros", "zeros"),
            _mem("permute", 2 * e * P * h, "moe.unpermute", "scatter_add")]


def _megatron_unpermute_bwd(s: _Shape) -> list[ComputeOp]:
    P, h, e = s.P, s.h, s.e
    return [_mem("permute", 2 * e * P * h, "moe.unpermute.bwd", "gather"),
            _mem("elementwise", 2 * e * P * h + 4 * P, "moe.probs_mul.bwd.probs"),
            _mem("elementwise", 2 * e * P * h + 4 * P, "moe.probs_mul.bwd")]


def _megatron_permute_bwd(s: _Shape) -> list[ComputeOp]:
    T, E, P, h, e = s.T, s.E, s.P, s.h, s.e
    return [_mem("copy", e * T * h, "moe.permute.bwd.zeros", "zeros"),
            _mem("permute", 2 * e * P * h, "moe.permute.bwd", "index_add"),
            _mem("copy", 4 * T * E, "moe.probs.masked_select.bwd.zeros", "zeros"),
            _mem("permute", 5 * T * E + 4 * P, "moe.probs.masked_select.bwd"),
            _mem("copy", 8 * T * E, "moe.probs.transpose.bwd")]


def _megatron_router_bwd(s: _Shape) -> list[ComputeOp]:
    T, E, P, e = s.T, s.E, s.P, s.e
    ops = [_mem("permute", 16 * P, "router.probs.scatter.bwd")]
    if s.score == "softmax":
        return ops + [_mem("softmax", 12 * P, "router.softmax.bwd"),
                      _mem("copy", e * T * E, "router.topk.bwd.zeros", "zeros"),
                      _mem("permute", (e + 8) * P, "router.topk.bwd")]
    return ops + [_mem("elementwise", 12 * P, "router.normalize.bwd"),
                  _mem("copy", 4 * T * E, "router.topk.bwd.zeros", "zeros"),
                  _mem("permute", 12 * P, "router.topk.bwd"),
                  _mem("elementwise", (e + 8) * T * E, "router.sigmoid.bwd")]


def _fused_router(s: _Shape) -> list[ComputeOp]:
    T, E = s.T, s.E
    return [_mem("topk", s.e * T * E + 5 * T * E, "router.fused_topk"),
            _mem("histogram", T * E + 8 * E, "router.counts")]


def _fused_permute(s: _Shape) -> list[ComputeOp]:
    return [_mem("permute", 2 * s.e * s.P * s.h + 4 * s.P, "moe.permute", "fused_permute")]


def _fused_unpermute(s: _Shape) -> list[ComputeOp]:
    return [_mem("permute", 2 * s.e * s.P * s.h + 4 * s.P, "moe.unpermute", "fused_unpermute")]


def _fused_unpermute_bwd(s: _Shape) -> list[ComputeOp]:
    return [_mem("permute", 2 * s.e * s.P * s.h + 8 * s.P, "moe.unpermute.bwd", "fused_permute")]


def _fused_permute_bwd(s: _Shape) -> list[ComputeOp]:
    return [_mem("permute", 2 * s.e * s.P * s.h, "moe.permute.bwd", "fused_unpermute")]


def _fused_router_bwd(s: _Shape) -> list[ComputeOp]:
    return [_mem("topk", 8 * s.T * s.E + s.T * s.E, "router.fused_topk.bwd")]


_FORWARD: dict[str, tuple[Callable, Callable, Callable]] = {  # router, permute, unpermute
    "torchtitan": (_titan_router, _titan_permute, _titan_unpermute),
    "megatron": (_megatron_router, _megatron_permute, _megatron_unpermute),
    "fused": (_fused_router, _fused_permute, _fused_unpermute),
}
_BACKWARD: dict[str, tuple[Callable, Callable, Callable]] = {  # unpermute, permute, router
    "torchtitan": (_titan_unpermute_bwd, _titan_permute_bwd, _titan_router_bwd),
    "megatron": (_megatron_unpermute_bwd, _megatron_permute_bwd, _megatron_router_bwd),
    "fused": (_fused_unpermute_bwd, _fused_permute_bwd, _fused_router_bwd),
}


def _movement(token_movement: str) -> str:
    check_exec("grouped", token_movement, None)
    return token_movement


def dispatch_side_forward(spec, tokens: int, token_movement: str = "torchtitan", ep: int = 1) -> list[ComputeOp]:
    """Router and permute before the dispatch all-to-all (forward), in launch order. torchtitan
    with an all-to-all (``ep`` > 1) then copies the send and receive split sizes to the host
    (``moe.splits_to_host``, ``2 ep`` int64; the small all-to-all of the counts before it is not
    priced); Megatron's and the fused router read their counts already (``router.counts``)."""
    router, permute, _ = _FORWARD[_movement(token_movement)]
    s = _shape(spec, tokens)
    splits = [_mem("copy", 16.0 * ep, "moe.splits_to_host")] if token_movement == "torchtitan" and ep > 1 else []
    return [_gate(spec, s), *router(s), *permute(s), *splits]


def combine_side_forward(spec, tokens: int, token_movement: str = "torchtitan") -> list[ComputeOp]:
    """Unpermute after the combine all-to-all (forward): back to token order, weighted sum."""
    return _FORWARD[_movement(token_movement)][2](_shape(spec, tokens))


def combine_side_backward(spec, tokens: int, token_movement: str = "torchtitan") -> list[ComputeOp]:
    """Backward of the unpermute, before the combine's backward all-to-all."""
    return _BACKWARD[_movement(token_movement)][0](_shape(spec, tokens))


def dispatch_side_backward(spec, tokens: int, token_movement: str = "torchtitan") -> list[ComputeOp]:
    """Backward of permute and router after the dispatch's backward all-to-all; ends with the
    router gate's input gradient (its weight gradient is W's)."""
    _, permute, router = _BACKWARD[_movement(token_movement)]
    s = _shape(spec, tokens)
    gate = _gate(spec, s)
    dgrad = Gemm(m=gate.m, n=gate.k, k=gate.n, dtype=gate.dtype, name="router.gate.dgrad")
    return [*permute(s), *router(s), dgrad]


# -- experts --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpertTask:
    """One engine task of a GPU's expert work: its kernels in launch order.

    ``expert`` is the expert of a loop chain (None for grouped kernels over all local experts);
    ``host_sync`` marks the device-to-host copy of ``sync_bytes`` of counts (no kernels: the
    lowering prices the copy and the eager host waits for it). ``body``: the ops of the whole
    loop body this task is part of, in its pass (the forward chain; or the backward's B chain,
    W chain and torchtitan's select share together), and ``body_class`` the measured host class of
    such a body (``host_op`` ``expert_loop_body``: torchtitan's; ``megatron_expert_mlp``:
    Megatron's ``SequentialMLP`` expert call), so an eager host can price the body by that class
    and this task by its per-op share of it (:meth:`moesim.lowering.host.HostPricing.compute_ns`);
    a ``body_class`` without ``body`` is an expert called on no tokens (Megatron calls every
    local expert's module): the class's whole time, launching nothing."""

    name: str
    ops: tuple[ComputeOp, ...]
    tokens: int
    expert: "int | None" = None
    host_sync: bool = False
    sync_bytes: int = 0
    body: tuple[ComputeOp, ...] = ()
    body_class: str = ""

    @property
    def flops(self) -> float:
        return sum(op.flops for op in self.ops)


def loop_body_class(token_movement: str) -> str:
    """The measured host class of one per-expert loop body: torchtitan's ``_run_experts_for_loop``
    body, or Megatron-Core's ``SequentialMLP`` expert module call (the fused movement is Megatron's
    with Transformer Engine's permute: the same ``SequentialMLP``)."""
    return TITAN_BODY_CLASS if token_movement == "torchtitan" else MEGATRON_BODY_CLASS


def _fused_fc1(token_movement: str, activation: str) -> bool:
    """Megatron / TE run gate and up as one fc1; torchtitan as two GEMMs (w1, w3)."""
    return activation == "swiglu" and token_movement != "torchtitan"


def _projections(spec, token_movement: str) -> list[tuple[str, int, int]]:
    """(name, n, k) of each forward GEMM of one expert, in launch order; activations between."""
    h, f = spec.hidden, spec.expert_ffn_hidden
    if spec.activation != "swiglu":
        return [("expert.up", f, h), ("expert.down", h, f)]
    if _fused_fc1(token_movement, spec.activation):
        return [("expert.fc1", 2 * f, h), ("expert.fc2", h, f)]
    return [("expert.w1", f, h), ("expert.w3", f, h), ("expert.w2", h, f)]


GemmMaker = Callable[[str, int, int, str], ComputeOp]  # (name, n, k, layout) -> one GEMM kernel


def _chain(spec, rows: int, token_movement: str, phase: str, gemm: GemmMaker,
           recompute_act: bool = False) -> list[ComputeOp]:
    """One FFN's kernels over ``rows`` token rows in ``phase`` (F, B input grad, W weight grad);
    ``recompute_act`` (Megatron's ``--recompute-modules moe_act``): B first re-runs the forward's
    activation kernels, whose output the forward did not keep."""
    if phase == "BW":
        raise ConfigError("phase", "a kernel chain is one of F, B, W; BW is an order of B and W tasks",
                          "ask expert_tasks for phase BW, or for B and W chains separately")
    e, f, h = float(DTYPE_BYTES[spec.dtype]), spec.expert_ffn_hidden, spec.hidden
    proj = _projections(spec, token_movement)
    if phase == "W":
        return [gemm(f"{name}.wgrad", n, k, "wgrad") for name, n, k in proj]
    act = spec.activation
    if phase == "F":
        fwd = [gemm(name, n, k, "fwd") for name, n, k in proj]
        if len(proj) == 3:   # torchtitan: silu(w1 x) * (w3 x)
            return [fwd[0], _mem("elementwise", 2 * e * rows * f, "expert.silu"), fwd[1],
                    _mem("elementwise", 3 * e * rows * f, "expert.mul"), fwd[2]]
        act_bytes = (3 if act == "swiglu" else 2) * e * rows * f
        return [fwd[0], _mem("elementwise", act_bytes, f"expert.{act}"), fwd[1]]
    dg = [gemm(f"{name}.dgrad", k, n, "dgrad") for name, n, k in reversed(proj)]
    again = [_mem(op.kind, op.bytes, f"{op.name}.recompute", op.variant)
             for op in _chain(spec, rows, token_movement, "F", gemm) if isinstance(op, MemoryOp)] if recompute_act else []
    if len(proj) == 3:
        return [*again, dg[0], _mem("elementwise", 5 * e * rows * f, "expert.mul.bwd"),
                _mem("elementwise", 3 * e * rows * f, "expert.silu.bwd"), dg[1], dg[2],
                _mem("elementwise", 3 * e * rows * h, "expert.dx_add.bwd")]
    act_bytes = (5 if act == "swiglu" else 3) * e * rows * f
    return [*again, dg[0], _mem("elementwise", act_bytes, f"expert.{act}.bwd"), dg[1]]


def _grouped_maker(spec, counts: tuple[int, ...]) -> GemmMaker:
    return lambda name, n, k, layout: GroupedGemm(counts, n, k, dtype=spec.linear_dtype, layout=layout, name=name)


def _dense_maker(spec, rows: int) -> GemmMaker:
    def make(name: str, n: int, k: int, layout: str) -> Gemm:
        if layout == "wgrad":   # dW[k, n] = x[rows, k]^T dy[rows, n]
            return Gemm(m=k, n=n, k=rows, dtype=spec.linear_dtype, name=name)
        return Gemm(m=rows, n=n, k=k, dtype=spec.linear_dtype, name=name)
    return make


def grouped_ops(spec, counts: Sequence[int], phase: str, token_movement: str = "torchtitan",
                recompute_act: bool = False) -> list[ComputeOp]:
    """The grouped kernels of one GPU's local experts (``counts[g]`` rows for expert g)."""
    vec = _counts(counts)
    return _chain(spec, sum(vec), token_movement, _phase(phase), _grouped_maker(spec, vec), recompute_act)


def kernel_ops(spec, rows: Sequence[int], phase: str, token_movement: str = "torchtitan",
               recompute_act: bool = False) -> list[ComputeOp]:
    """The grouped kernels of one GPU's experts in ``phase``, one task each in grouped / padded
    mode (``rows``: the counts, or the padded counts); BW is B's kernels then W's."""
    return [op for ph in (("B", "W") if phase == "BW" else (phase,))
            for op in grouped_ops(spec, rows, ph, token_movement, recompute_act)]


def loop_chain_ops(spec, rows: int, phase: str, token_movement: str = "torchtitan",
                   recompute_act: bool = False) -> list[ComputeOp]:
    """One expert's kernel chain on ``rows`` tokens (``torch.matmul`` per projection)."""
    return _chain(spec, rows, token_movement, _phase(phase), _dense_maker(spec, rows), recompute_act)


def stacked_select_backward_ops(spec, num_experts: int) -> list[ComputeOp]:
    """What autograd adds when a per-expert loop indexes stacked weights (torchtitan's
    ``_run_experts_for_loop`` uses ``w1[e]`` of one ``[E, F, H]`` parameter): the backward of each
    ``select`` is a zero-filled gradient of the WHOLE stacked tensor with the expert's slice
    copied in, and the E contributions are summed into one buffer (E - 1 full-size adds) before
    ``.grad`` receives it. Per projection: E fills of the full tensor, E slice copies and E - 1
    adds of it; the experts' own wgrad GEMMs are in their chains. Zero-token experts take part too
    (``torch.split`` yields empty chunks that still enter the graph). All E experts' shares
    (:func:`select_backward_share`) in one list, the first without its add."""
    return [op for i in range(num_experts) for op in select_backward_share(spec, num_experts, first=i == 0)]


def select_backward_share(spec, num_experts: int, first: bool) -> list[ComputeOp]:
    """One expert's share of :func:`stacked_select_backward_ops`, per projection in autograd's
    order (w2, w3, w1: the reverse of the forward): the zeros of the whole stacked tensor, the
    slice copy, and the add into the gradient buffer of that parameter (``first``: the first
    contribution the buffer receives is stored, not added)."""
    e = float(DTYPE_BYTES[spec.dtype])
    ops: list[ComputeOp] = []
    for name, n, k in reversed(_projections(spec, "torchtitan")):
        full, one = e * num_experts * n * k, e * n * k
        ops += [_mem("copy", full, f"{name}.select_bwd.zeros", "zeros"),
                _mem("copy", 2 * one, f"{name}.select_bwd.slice_copy")]
        if not first:
            ops.append(_mem("elementwise", 3 * full, f"{name}.select_bwd.sum", "add"))
    return ops


def empty_wgrad_ops(spec, token_movement: str = "torchtitan") -> list[ComputeOp]:
    """The weight gradient of an expert with no tokens: ``x_e.t() @ dy_e`` with an inner
    dimension of 0 launches no GEMM, but its ``[k, n]`` result is filled with zeros
    (``result.zero_()`` in ATen's CUDA ``addmm``), one fill per projection. The empty input
    gradient (an ``[0, h]`` result) and the empty activations launch nothing."""
    e = float(DTYPE_BYTES[spec.dtype])
    return [_mem("copy", e * n * k, f"{name}.wgrad.zeros", "zeros")
            for name, n, k in reversed(_projections(spec, token_movement))]


def padded_counts(counts: Sequence[int], rows_per_expert: int) -> tuple[int, ...]:
    """Every local expert at ``rows_per_expert`` rows (its capacity over all source ranks);
    a count above it is an error (the routing drops tokens over capacity before this)."""
    vec = _counts(counts)
    over = [c for c in vec if c > rows_per_expert]
    if over:
        raise ConfigError("moe.capacity_factor", f"an expert holds {max(over)} tokens, above its padded capacity "
                          f"{rows_per_expert}", "drop tokens over capacity in the routing (experts='padded' does)")
    return tuple(rows_per_expert for _ in vec)


def expert_tasks(spec, counts: Sequence[int], phase: str, experts: str = "grouped",
                 token_movement: str = "torchtitan", experts_ids: "Sequence[int] | None" = None,
                 padded_rows: int = 0, recompute_act: bool = False, framework: bool = True) -> list[ExpertTask]:
    """One GPU's expert work in ``phase`` as engine tasks, in stream order.

    ``counts``: tokens of each local expert (zeros included; ``experts_ids`` names them, default
    0..n-1). ``phase`` F (forward), B (input gradients), W (weight gradients) or BW (a backward
    not split into B and W: both, in the order autograd runs them).

    grouped / padded: one task per kernel (each GEMM over all local experts; BW is B's kernels
    then W's); padded uses ``padded_rows`` rows per expert.

    loop: forward starts with the counts' copy to the host (a ``host_sync`` task), then one task
    per expert with tokens, then a ``cat`` of the outputs. Megatron's ``SequentialMLP`` calls the
    module of every local expert, those without tokens too: a kernel-less task each (its host
    time, class ``megatron_expert_mlp``; in the backward, its weight gradients' zero fills).
    ``framework=False`` (Megatron's kernels issued by plain torch calls, ``MoEOptions.framework_modules``):
    no module class, no calls of empty experts; the per-op host costs. The backward follows autograd's ready
    queue, which runs the node created last first: expert by expert from the last one, each
    expert's whole backward before the previous expert's (:func:`_loop_backward`); B and BW end
    with the ``cat`` that is ``torch.split``'s backward. ``recompute_act``: each B chain starts
    by re-running its forward activation (``moe_act`` recompute)."""
    check_exec(experts, token_movement, 1.0 if experts == "padded" else None)
    vec, phase = _counts(counts), _phase(phase)
    ids = list(experts_ids) if experts_ids is not None else list(range(len(vec)))
    if experts != "loop":
        rows = padded_counts(vec, padded_rows) if experts == "padded" else vec
        return [ExpertTask(op.name, (op,), sum(rows))
                for op in kernel_ops(spec, rows, phase, token_movement, recompute_act)]
    tasks: list[ExpertTask] = []
    cls = loop_body_class(token_movement) if framework or token_movement == "torchtitan" else ""
    if phase == "F":
        tasks.append(ExpertTask("experts.counts_to_host", (), 0, host_sync=True, sync_bytes=COUNT_BYTES * len(vec)))
        for eid, n in zip(ids, vec):
            if n > 0:
                chain = tuple(loop_chain_ops(spec, n, "F", token_movement))
                tasks.append(ExpertTask(f"expert{eid}", chain, n, expert=eid, body=chain, body_class=cls))
            elif token_movement != "torchtitan" and cls:
                tasks.append(ExpertTask(f"expert{eid}.empty", (), 0, expert=eid, body_class=cls))
    else:
        tasks += _loop_backward(spec, vec, ids, phase, token_movement, recompute_act, cls)
    total = sum(vec)
    if phase != "W" and total:
        e = float(DTYPE_BYTES[spec.dtype])
        name = "experts.cat" if phase == "F" else "experts.cat.bwd"
        tasks.append(ExpertTask(name, (_mem("copy", 2 * e * total * spec.hidden, name),), total))
    return tasks


def _loop_backward(spec, vec: tuple[int, ...], ids: list[int], phase: str,
                   token_movement: str, recompute_act: bool = False, cls: str = "") -> list[ExpertTask]:
    """A loop's backward tasks in autograd's order: the experts from the last to the first.

    Each expert's nodes (its ``MmBackward``, ``Mul``/``Silu`` backward, and with torchtitan's
    stacked weights its three ``SelectBackward`` and the add of their result into the stacked
    parameter's gradient buffer) were created after every node of the experts before it, so the
    ready queue (highest sequence number first) finishes expert e before it starts expert e - 1.
    Per expert, as tasks: its B chain (``expert{e}``), its W chain (``expert{e}.wgrad``) and its
    select-backward share (``expert{e}.select_bwd``: zeros of the whole stacked tensor, the slice
    copy, the add except for the first contribution; torchtitan only, Megatron's SequentialMLP
    holds one parameter per expert). Inside one expert autograd interleaves these per projection
    (one ``MmBackward`` computes a projection's input and weight gradient, its select backward
    follows); the tasks keep the same kernels on the same stream, grouped by kind.

    An expert without tokens has an empty chunk that still enters the graph: no B kernels, its
    weight gradients are zero fills (:func:`empty_wgrad_ops`), its select share as any expert's.
    The host time of torchtitan's kernel-less empty ops (the dispatch of an ``mm`` or ``silu`` on
    zero rows) is not priced; Megatron's empty expert module costs its measured backward call
    (``megatron_expert_mlp``, in B or BW, not again in a deferred W).

    ``phase`` B (a split backward: input gradients only) keeps the B chains; W (the deferred weight
    gradients: zero-bubble's W) the W chains and select shares, in the same expert order, which
    assumes the deferred pass replays autograd's per-expert order."""
    stacked = token_movement == "torchtitan"
    num = len(vec)
    tasks: list[ExpertTask] = []
    first = True
    for eid, n in reversed(list(zip(ids, vec))):
        grads = tuple(loop_chain_ops(spec, n, "B", token_movement, recompute_act)) if n > 0 else ()
        wgrads = tuple(loop_chain_ops(spec, n, "W", token_movement) if n > 0 else empty_wgrad_ops(spec, token_movement))
        if n == 0 and not stacked:   # Megatron: the empty module's backward call, its zero fills
            ops = wgrads if phase != "B" else ()
            if ops or cls:
                tasks.append(ExpertTask(f"expert{eid}.empty", ops, 0, expert=eid,
                                        body_class=cls if phase != "W" else ""))
            continue
        share = tuple(select_backward_share(spec, num, first)) if stacked else ()
        first = first and not (stacked and phase != "B")
        parts = [(f"expert{eid}", grads) if phase in ("B", "BW") and grads else None,
                 (f"expert{eid}.wgrad", wgrads) if phase != "B" and wgrads else None,
                 (f"expert{eid}.select_bwd", share) if phase != "B" and share else None]
        # the measured body is an expert with tokens, all of it
        body = (*grads, *wgrads, *share) if n > 0 else ()
        tasks += [ExpertTask(name, ops, n, expert=eid, body=body, body_class=cls if body else "")
                  for name, ops in filter(None, parts)]
    return tasks


def sort_chunk_ops(spec, rows: int, phase: str) -> tuple[list[ComputeOp], list[ComputeOp]]:
    """(before, after) one GPU's experts in ``phase``: Megatron's alltoall dispatcher regroups the
    received tokens by local expert (``sort_chunks_by_idxs``: ``split`` + ``torch.cat``, a copy of
    the ``[rows, h]`` tokens and of their ``[rows]`` probabilities) before the experts and back
    after them, whenever a GPU holds more than one expert (over an expert-parallel group of one
    too: Megatron-Core 0.16.1, ``MoEAlltoAllTokenDispatcher``). The backward of each ``cat`` is a
    view; the backward of each ``split`` is a ``cat`` of the gradients: the same copies in reverse
    order. W (deferred weight gradients) has none. Measured with Megatron-Core's own layer (one
    H100, Qwen3-30B-A3B, 16,384 tokens): 356 + 31 us before the experts, 353 us after."""
    if phase == "W" or rows <= 0:
        return [], []
    e, h = float(DTYPE_BYTES[spec.dtype]), spec.hidden
    tokens, probs = 2 * e * rows * h, 2 * e * rows
    if phase == "F":
        return ([_mem("copy", tokens, "moe.sort_chunks"), _mem("copy", probs, "moe.sort_chunks.probs")],
                [_mem("copy", tokens, "moe.unsort_chunks")])
    return ([_mem("copy", tokens, "moe.unsort_chunks.bwd")],
            [_mem("copy", tokens, "moe.sort_chunks.bwd"), _mem("copy", probs, "moe.sort_chunks.probs.bwd")])


def _counts(counts: Sequence[int]) -> tuple[int, ...]:
    vec = tuple(int(c) for c in counts)
    if not vec or any(c < 0 for c in vec) or any(int(c) != c for c in counts):
        raise ConfigError("counts", f"need one whole number >= 0 per local expert, got {list(counts)!r}",
                          "pass the tokens each local expert receives")
    return vec


def _phase(phase: str) -> str:
    if phase not in PHASES:
        raise ConfigError("phase", f"unknown phase {phase!r}", f"use one of: {', '.join(PHASES)}")
    return phase
