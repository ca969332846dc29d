"""The router and the token movement around an MoE layer's experts, by framework: which kernels
run before the dispatch all-to-all, after the combine, and in their backward
(:mod:`moesim.workload.moe_exec` adds the experts' own kernels).

``token_movement`` (``MoEOptions.token_movement``):

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

With ``spec.expert_bias`` (auxiliary-loss-free balancing) the torchtitan and Megatron routers add
the bias to the scores before top-k (``router.expert_bias``), gather the unbiased scores of the
chosen experts (``router.gather_scores``) and add the tokens per expert into the count the bias
update reads (``router.tokens_per_expert``); the fused router applies the bias inside its kernel.

Sizes: every :class:`~moesim.ops.MemoryOp` here carries ``bytes`` = bytes read plus bytes
written by that kernel (each input read once, each output written once; index tensors are
counted where the kernel reads them per row, not per element), the axis a measured curve of the
kind / variant is indexed by (``nbytes`` of a ``memory`` profile row).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES, ComputeOp, Gemm, MemoryOp

TOKEN_MOVEMENTS = ("torchtitan", "megatron", "fused")
# ops whose result an eager host reads back (it waits for the GPU to reach them): Megatron's
# tokens-per-expert ``.cpu()`` and its two ``masked_select`` (the output size is known on the GPU
# only), torchtitan's expert-parallel split sizes (``output_splits`` copied with non_blocking=False)
HOST_SYNC_OPS = frozenset({"router.counts", "moe.masked_select", "moe.probs.masked_select", "moe.splits_to_host"})
# of those, the reads of the routed counts, which a padded dispatch (static splits) does not make
COUNT_SYNC_OPS = frozenset({"router.counts", "moe.splits_to_host"})
# the ``megatron`` movement's probabilities multiply after the experts (moesim's harness program;
# Megatron-Core 0.13+ fuses it into the SwiGLU: moesim.lowering.moe_costs drops these for its modules)
PROBS_AFTER_EXPERTS = frozenset({"moe.probs_mul", "moe.probs_mul.bwd.probs", "moe.probs_mul.bwd"})


def check_movement(token_movement: object) -> None:
    """ConfigError naming ``moe.token_movement`` and its valid values unless it is one of them."""
    if not isinstance(token_movement, str) or token_movement not in TOKEN_MOVEMENTS:
        raise ConfigError("moe.token_movement", f"unknown token movement {token_movement!r}",
                          f"use one of: {', '.join(TOKEN_MOVEMENTS)}")


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
    bias: bool = False


def _shape(spec, tokens: int) -> _Shape:
    return _Shape(tokens, spec.num_experts, spec.top_k, spec.hidden, float(DTYPE_BYTES[spec.dtype]),
                  tokens * spec.top_k, spec.score_func, bool(spec.num_shared_experts),
                  bool(getattr(spec, "expert_bias", False)))


def _bias_add(s: _Shape, score_bytes: float) -> list[ComputeOp]:
    """``scores + expert_bias`` over [T, E] before top-k (``spec.expert_bias``)."""
    return [mem_op("elementwise", 2 * score_bytes * s.T * s.E + 4 * s.E, "router.expert_bias", "add")] if s.bias else []


def _bias_after_topk(s: _Shape) -> list[ComputeOp]:
    """With an expert bias: the unbiased scores of the chosen experts (``scores.gather``)."""
    if not s.bias:
        return []
    return [mem_op("permute", 16 * s.P, "router.gather_scores", "gather")]


def _bias_count(s: _Shape) -> list[ComputeOp]:
    """With an expert bias: the tokens per expert added into the running count the bias update
    reads (an ``add_`` on [E])."""
    return [mem_op("elementwise", 12 * s.E, "router.tokens_per_expert", "add")] if s.bias else []


def mem_op(kind: str, nbytes: float, name: str, variant: str = "") -> MemoryOp:
    """One memory-bound kernel of ``nbytes`` read plus written."""
    return MemoryOp(kind, float(nbytes), name, variant)


def _gate(spec, s: _Shape) -> Gemm:
    return Gemm(m=s.T, n=s.E, k=s.h, dtype=spec.dtype, name="router.gate")


def _titan_router(s: _Shape) -> list[ComputeOp]:
    T, E, P = s.T, s.E, s.P
    score = (mem_op("softmax", 8 * T * E, "router.softmax", "softmax_fp32") if s.score == "softmax"
             else mem_op("elementwise", 8 * T * E, "router.sigmoid", "sigmoid_fp32"))
    return [mem_op("cast", (s.e + 4) * T * E, "router.to_fp32", "cast_fp32"), score, *_bias_add(s, 4),
            mem_op("topk", 4 * T * E + 12 * P, "router.topk", "topk"), *_bias_after_topk(s),
            mem_op("histogram", 8 * P + 4 * E, "router.histc", "histc"), *_bias_count(s)]


def _titan_permute(s: _Shape) -> list[ComputeOp]:
    P, h, e = s.P, s.h, s.e
    return [mem_op("sort", 16 * P, "moe.argsort", "argsort"),
            mem_op("permute", 16 * P, "moe.sort_scores", "gather"),
            mem_op("elementwise", 16 * P, "moe.token_index"),
            mem_op("permute", 2 * e * P * h, "moe.permute", "gather"),
            mem_op("cast", (e + 4) * P * h, "moe.probs.to_fp32", "cast_fp32"),
            # fp32 rows times a broadcast fp32 column: PyTorch's non-vectorized kernel (prob_mul_fp32)
            mem_op("elementwise", 8 * P * h + 4 * P, "moe.probs_mul", "prob_mul_fp32"),
            mem_op("cast", (4 + e) * P * h, "moe.probs.to_dtype", "cast_bf16")]


def _base(s: _Shape) -> list[ComputeOp]:
    """The zeros the unpermute adds into (the shared experts' output when there is one)."""
    return [] if s.shared else [mem_op("copy", s.e * s.T * s.h, "moe.zeros", "zeros")]


def _titan_unpermute(s: _Shape) -> list[ComputeOp]:
    return _base(s) + [mem_op("permute", 2 * s.e * s.P * s.h, "moe.unpermute", "scatter_add")]


def _titan_unpermute_bwd(s: _Shape) -> list[ComputeOp]:
    return [mem_op("permute", 2 * s.e * s.P * s.h, "moe.unpermute.bwd", "gather")]


def _titan_permute_bwd(s: _Shape) -> list[ComputeOp]:
    P, h, e, T = s.P, s.h, s.e, s.T
    return [mem_op("elementwise", 8 * P * h + 4 * P, "moe.probs_mul.bwd.scores"),
            mem_op("cast", (e + 4) * P * h, "moe.probs.to_dtype.bwd", "cast_fp32"),
            mem_op("elementwise", 8 * P * h + 4 * P, "moe.probs_mul.bwd", "prob_mul_fp32"),   # g * probs
            mem_op("cast", (4 + e) * P * h, "moe.probs.to_fp32.bwd", "cast_bf16"),
            mem_op("copy", e * T * h, "moe.permute.bwd.zeros", "zeros"),
            mem_op("permute", 2 * e * P * h, "moe.permute.bwd", "scatter_add"),
            mem_op("copy", 4 * P, "moe.sort_scores.bwd.zeros", "zeros"),
            mem_op("permute", 16 * P, "moe.sort_scores.bwd", "scatter_add")]


def _titan_router_bwd(s: _Shape) -> list[ComputeOp]:
    T, E, P = s.T, s.E, s.P
    score = (mem_op("softmax", 12 * T * E, "router.softmax.bwd") if s.score == "softmax"
             else mem_op("elementwise", 12 * T * E, "router.sigmoid.bwd"))
    return [mem_op("copy", 4 * T * E, "router.topk.bwd.zeros", "zeros"), mem_op("permute", 16 * P, "router.topk.bwd"),
            score, mem_op("cast", (4 + s.e) * T * E, "router.to_fp32.bwd", "cast_bf16")]


def _megatron_router(s: _Shape) -> list[ComputeOp]:
    T, E, P, e = s.T, s.E, s.P, s.e
    if s.score == "softmax":
        scores = [*_bias_add(s, e), mem_op("topk", e * T * E + (e + 8) * P, "router.topk", "topk"),
                  *_bias_after_topk(s), mem_op("softmax", (e + 4) * P, "router.softmax", "softmax_fp32")]
    else:
        scores = [mem_op("elementwise", (e + 4) * T * E, "router.sigmoid", "sigmoid_fp32"), *_bias_add(s, 4),
                  mem_op("topk", 4 * T * E + 12 * P, "router.topk", "topk"), *_bias_after_topk(s),
                  mem_op("elementwise", 8 * P, "router.normalize")]
    return scores + [mem_op("copy", 4 * T * E, "router.probs.zeros", "zeros"),
                     mem_op("permute", 16 * P, "router.probs.scatter"),
                     mem_op("copy", e * T * E, "router.map.zeros", "zeros"),
                     mem_op("cast", (e + 4) * T * E, "router.map.to_int"),
                     mem_op("permute", 12 * P, "router.map.scatter"),
                     mem_op("cast", 5 * T * E, "router.map.to_bool"),
                     mem_op("histogram", T * E + 8 * E, "router.counts"), *_bias_count(s)]


def _megatron_permute(s: _Shape) -> list[ComputeOp]:
    T, E, P, h, e = s.T, s.E, s.P, s.h, s.e
    return [mem_op("copy", 2 * T * E, "moe.map.transpose"),
            mem_op("copy", 8 * T, "moe.arange"),
            mem_op("permute", 9 * T * E + 8 * P, "moe.masked_select"),
            mem_op("copy", 8 * T * E, "moe.probs.transpose"),
            mem_op("permute", 5 * T * E + 4 * P, "moe.probs.masked_select"),
            mem_op("permute", 2 * e * P * h, "moe.permute", "index_select")]


def _megatron_unpermute(s: _Shape) -> list[ComputeOp]:
    P, h, e, T = s.P, s.h, s.e, s.T
    # y * probs.unsqueeze(-1): a broadcast operand keeps PyTorch off its vectorized kernel; the
    # profile's prob_mul rows time exactly this multiply
    return [mem_op("elementwise", 2 * e * P * h + 4 * P, "moe.probs_mul", "prob_mul"),
            mem_op("copy", e * T * h, "moe.zeros", "zeros"),
            mem_op("permute", 2 * e * P * h, "moe.unpermute", "scatter_add")]


def _megatron_unpermute_bwd(s: _Shape) -> list[ComputeOp]:
    P, h, e = s.P, s.h, s.e
    return [mem_op("permute", 2 * e * P * h, "moe.unpermute.bwd", "gather"),
            mem_op("elementwise", 2 * e * P * h + 4 * P, "moe.probs_mul.bwd.probs"),
            mem_op("elementwise", 2 * e * P * h + 4 * P, "moe.probs_mul.bwd", "prob_mul")]   # g * probs


def _megatron_permute_bwd(s: _Shape) -> list[ComputeOp]:
    T, E, P, h, e = s.T, s.E, s.P, s.h, s.e
    return [mem_op("copy", e * T * h, "moe.permute.bwd.zeros", "zeros"),
            mem_op("permute", 2 * e * P * h, "moe.permute.bwd", "index_add"),
            mem_op("copy", 4 * T * E, "moe.probs.masked_select.bwd.zeros", "zeros"),
            mem_op("permute", 5 * T * E + 4 * P, "moe.probs.masked_select.bwd"),
            mem_op("copy", 8 * T * E, "moe.probs.transpose.bwd")]


def _megatron_router_bwd(s: _Shape) -> list[ComputeOp]:
    T, E, P, e = s.T, s.E, s.P, s.e
    ops = [mem_op("permute", 16 * P, "router.probs.scatter.bwd")]
    if s.score == "softmax":
        return ops + [mem_op("softmax", 12 * P, "router.softmax.bwd"),
                      mem_op("copy", e * T * E, "router.topk.bwd.zeros", "zeros"),
                      mem_op("permute", (e + 8) * P, "router.topk.bwd")]
    return ops + [mem_op("elementwise", 12 * P, "router.normalize.bwd"),
                  mem_op("copy", 4 * T * E, "router.topk.bwd.zeros", "zeros"),
                  mem_op("permute", 12 * P, "router.topk.bwd"),
                  mem_op("elementwise", (e + 8) * T * E, "router.sigmoid.bwd")]


def _fused_router(s: _Shape) -> list[ComputeOp]:
    T, E = s.T, s.E
    return [mem_op("topk", s.e * T * E + 5 * T * E, "router.fused_topk"),
            mem_op("histogram", T * E + 8 * E, "router.counts")]


def _fused_permute(s: _Shape) -> list[ComputeOp]:
    return [mem_op("permute", 2 * s.e * s.P * s.h + 4 * s.P, "moe.permute", "fused_permute")]


def _fused_unpermute(s: _Shape) -> list[ComputeOp]:
    return [mem_op("permute", 2 * s.e * s.P * s.h + 4 * s.P, "moe.unpermute", "fused_unpermute")]


def _fused_unpermute_bwd(s: _Shape) -> list[ComputeOp]:
    return [mem_op("permute", 2 * s.e * s.P * s.h + 8 * s.P, "moe.unpermute.bwd", "fused_permute")]


def _fused_permute_bwd(s: _Shape) -> list[ComputeOp]:
    return [mem_op("permute", 2 * s.e * s.P * s.h, "moe.permute.bwd", "fused_unpermute")]


def _fused_router_bwd(s: _Shape) -> list[ComputeOp]:
    return [mem_op("topk", 8 * s.T * s.E + s.T * s.E, "router.fused_topk.bwd")]


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
    check_movement(token_movement)
    return token_movement


def dispatch_side_forward(spec, tokens: int, token_movement: str = "torchtitan", ep: int = 1) -> list[ComputeOp]:
    """Router and permute before the dispatch all-to-all (forward), in launch order. torchtitan
    with an all-to-all (``ep`` > 1) then copies the send and receive split sizes to the host
    (``moe.splits_to_host``, ``2 ep`` int64; the small all-to-all of the counts before it is not
    priced); Megatron's and the fused router read their counts already (``router.counts``)."""
    router, permute, _ = _FORWARD[_movement(token_movement)]
    s = _shape(spec, tokens)
    splits = [mem_op("copy", 16.0 * ep, "moe.splits_to_host")] if token_movement == "torchtitan" and ep > 1 else []
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
        return ([mem_op("copy", tokens, "moe.sort_chunks"), mem_op("copy", probs, "moe.sort_chunks.probs")],
                [mem_op("copy", tokens, "moe.unsort_chunks")])
    return ([mem_op("copy", tokens, "moe.unsort_chunks.bwd")],
            [mem_op("copy", tokens, "moe.sort_chunks.bwd"), mem_op("copy", probs, "moe.sort_chunks.probs.bwd")])
