"""The router and token-movement kernels of an MoE layer, as frameworks launch them, as MemoryOps.

Each variant names one measured expression (``moesim.calibrate.moe_kernels`` times exactly it)
and fixes the size its calibrated curve is indexed by: ``MemoryOp.bytes`` is
:func:`moe_kernel_bytes` of the layer's shape, the bytes the expression must move through HBM
(inputs read once, outputs written once). The profile's rows of a variant carry the shape they
were measured at (``tokens``, ``experts``, ``top_k``, ``hidden``) and their ``nbytes`` by the
same formula, so the curve time(nbytes) is well posed along the size that drives the kernel.
T tokens, E experts, k top-k, h the row width; variant (kind): expression -> nbytes:

- ``softmax_fp32`` (softmax): ``F.softmax(scores, -1)``, fp32 [T, E] -> 8 T E
- ``sigmoid_fp32`` (elementwise): ``torch.sigmoid(scores)``, fp32 [T, E] -> 8 T E
- ``cast_fp32`` (cast): ``x.float()``, bf16 [T, h] -> 6 T h; ``cast_bf16``: ``x.to(bf16)`` of fp32 -> 6 T h
- ``topk`` (topk): ``torch.topk(scores_fp32, k, dim=-1)`` -> 4 T E + 12 T k
- ``argsort`` (sort): ``torch.argsort(ids.view(-1), stable=True)``, int64 keys -> 16 T k
- ``histc`` (histogram): ``torch.histc(ids.view(-1), E, 0, E)`` -> 8 T k + 8 E
- ``bincount`` (histogram): ``torch.bincount(ids.view(-1), minlength=E)`` (syncs for the max) -> 8 T k + 8 E
- ``cumsum`` (elementwise): ``torch.cumsum(counts, 0)``, int64 [E] -> 16 E
- ``gather`` (permute): ``torch.gather(x, 0, idx.view(-1, 1).expand(-1, h))`` (torchtitan) -> 4 T k h + 8 T k
- ``index_select`` (permute): ``x.index_select(0, idx)`` (Megatron) -> 4 T k h + 8 T k
- ``routing_map`` (permute): ``zeros_like(logits).int().scatter(1, ids, 1).bool()`` (Megatron, 5 kernels)
  -> 25 T E + 12 T k
- ``masked_select`` (permute): ``arange(T).expand(E, T).masked_select(map.T.contiguous())`` (Megatron's
  sorted indices; syncs for the size) -> 3 T E + 16 T k
- ``scatter_add`` (permute): ``out.scatter_add_(0, idx_expanded, y)``, bf16 atomics -> 4 T k h + 8 T k
- ``index_add`` (permute): ``out.index_add_(0, idx, y)``, bf16 atomics -> 4 T k h + 8 T k
- ``prob_mul`` (elementwise): ``y * probs.unsqueeze(-1)``, bf16 [T k, h] -> 4 T k h + 2 T k
- ``zeros`` (copy): ``torch.zeros_like(out)``, bf16 [T, h] -> 2 T h (written only)
- ``prob_mul_fp32`` (elementwise): ``y_fp32 * probs_fp32.reshape(-1, 1)`` (torchtitan weights its
  routed rows in fp32) -> 8 T k h + 4 T k
- ``glu_silu`` (elementwise): ``F.silu(gate)`` where ``gate, up = torch.chunk(x, 2, -1)`` of a bf16
  [T k, 2h] fc1 output (Megatron's eager ``glu``: strided halves) -> 4 T k h
- ``glu_mul`` (elementwise): ``a * up``, ``a`` contiguous, ``up`` the strided half -> 6 T k h (also the
  multiply's input gradient ``g * up``)
- ``glu_silu_bwd`` (elementwise): ``silu_backward(g, gate)`` of the strided gate half -> 6 T k h

- ``rope_rotate_half`` / ``rope_halves`` / ``rope_complex`` (elementwise): one eager RoPE program on a
  query or key tensor as :class:`~moesim.workload.transformer.TransformerSpec` ``rope_impl`` names
  it, timed whole (its kernels), on the strided [1, heads, T, d] view a fused QKV projection leaves
  (torchtitan's ``complex``: [1, T, heads, d] in fp32); here ``experts`` is the heads and ``hidden``
  the head dim -> 4 T heads d (the tensor read and written once in bf16); ``*_bwd``: its autograd
  backward, the same bytes.

A strided or broadcast operand keeps PyTorch off its vectorized elementwise kernel (the
``prob_mul``, ``prob_mul_fp32`` and ``glu_*`` variants run ``elementwise_kernel``, at about half the
bandwidth of the contiguous kernels the memory section's curves time).

Where the time depends on more than these bytes the curve averages over the measured rest:
``topk`` over k (1-8) at a given T x E, ``histc``/``bincount`` over E (atomic contention on few
bins), the permutes over top-k duplicates. ``prob_mul`` is bf16 x bf16; a framework that
weights in fp32 (``y.float() * p``, then ``.to(bf16)``) adds ``cast_fp32`` and ``cast_bf16``, as
the router's ``logits.float()`` before ``softmax_fp32`` is a ``cast_fp32``. Build ops with
:func:`moe_kernel_op` (or these formulas). :meth:`CalibratedCostModel.compute_ns` finds a
variant's curve by its name whatever the op's kind; a variant the profile lacks is priced by the
memory section's curve of the same kernel (:data:`LEGACY_STAND_INS`), else its kind's generic
curve (the memory section's variants; for a kind it lacks, the mean of the kind's curves here),
else the fallback model (the roofline), and ``fallback_ops`` records which. The memory section's
own ``"gather"`` rows are an ``index_select``: in ``compute_ns`` a MemoryOp's
``variant="gather"`` always means ``torch.gather`` (this table).
"""
from __future__ import annotations

from moesim.errors import ConfigError
from moesim.ops import MemoryOp

MOE_KERNEL_KINDS: dict[str, str] = {
    "softmax_fp32": "softmax", "sigmoid_fp32": "elementwise", "cast_fp32": "cast", "cast_bf16": "cast",
    "topk": "topk", "argsort": "sort",
    "histc": "histogram", "bincount": "histogram", "cumsum": "elementwise", "gather": "permute",
    "index_select": "permute", "routing_map": "permute", "masked_select": "permute",
    "scatter_add": "permute", "index_add": "permute", "prob_mul": "elementwise", "zeros": "copy",
    "prob_mul_fp32": "elementwise", "glu_silu": "elementwise", "glu_mul": "elementwise", "glu_silu_bwd": "elementwise",
    **{f"rope_{form}{bwd}": "elementwise" for form in ("rotate_half", "halves", "complex") for bwd in ("", "_bwd")},
}
LEGACY_STAND_INS = {"index_select": "gather", "index_add": "index_add", "zeros": "zeros", "topk": "topk"}
"""Where a profile has no ``moe_kernels`` rows, the memory section's variant that timed the same
kernel at one shape (its ``"gather"`` is an ``index_select`` of 4096-wide rows; ``index_add``
top-2 at hidden 4096; ``topk`` k=8 of 256 bf16), used and recorded in ``fallback_ops``."""
NO_BACKWARD_VARIANTS = ("argsort", "histc", "bincount", "cumsum", "routing_map", "masked_select", "zeros")
"""Variants that act on integer ids or fill a buffer: autograd records no backward for them."""


def moe_kernel_bytes(variant: str, tokens: int, experts: int, top_k: int, hidden: int) -> int:
    """The curve index (bytes) of ``variant`` at this shape (table in the module docstring)."""
    if variant not in MOE_KERNEL_KINDS:
        raise ConfigError("variant", f"unknown MoE kernel {variant!r}", f"use one of: {', '.join(MOE_KERNEL_KINDS)}")
    for name, value in (("tokens", tokens), ("experts", experts), ("top_k", top_k), ("hidden", hidden)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(name, f"must be an integer >= 1, got {value!r}")
    t, e, k, h = tokens, experts, top_k, hidden
    rows = t * k
    formulas = {
        "softmax_fp32": 8 * t * e, "sigmoid_fp32": 8 * t * e, "cast_fp32": 6 * t * h, "cast_bf16": 6 * t * h,
        "topk": 4 * t * e + 12 * rows,
        "argsort": 16 * rows, "histc": 8 * rows + 8 * e, "bincount": 8 * rows + 8 * e, "cumsum": 16 * e,
        "gather": 4 * rows * h + 8 * rows, "index_select": 4 * rows * h + 8 * rows,
        "routing_map": 25 * t * e + 12 * rows, "masked_select": 3 * t * e + 16 * rows,
        "scatter_add": 4 * rows * h + 8 * rows, "index_add": 4 * rows * h + 8 * rows,
        "prob_mul": 4 * rows * h + 2 * rows, "zeros": 2 * t * h,
        "prob_mul_fp32": 8 * rows * h + 4 * rows, "glu_silu": 4 * rows * h, "glu_mul": 6 * rows * h,
        "glu_silu_bwd": 6 * rows * h,
        **{v: 4 * t * e * h for v in MOE_KERNEL_KINDS if v.startswith("rope_")},
    }
    return int(formulas[variant])


def moe_kernel_op(variant: str, tokens: int, experts: int, top_k: int, hidden: int, name: str = "") -> MemoryOp:
    """The MemoryOp of one MoE kernel ``variant`` at this layer shape (what the lowering emits)."""
    nbytes = moe_kernel_bytes(variant, tokens, experts, top_k, hidden)
    return MemoryOp(MOE_KERNEL_KINDS[variant], float(nbytes), name or f"moe.{variant}", variant=variant)
