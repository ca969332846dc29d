"""The quantize kernels every FP8 GEMM's changing operand needs, inserted before the GEMM.

An FP8 GEMM multiplies fp8 operands; the activations it reads arrive in bf16 and must be cast
first, on every call. Which operand changes per call, for ``C[m, n] = A[m, k] @ B[k, n]``:

* forward and input-gradient (dgrad) GEMMs: ``A`` (the layer input, or the output gradient of
  the forward GEMM), ``m x k`` elements (a grouped GEMM: ``sum(counts) x k``);
* weight-gradient GEMMs (``name`` ending ``.wgrad``, or a grouped ``layout="wgrad"``): none;
  both operands are the transposed fp8 copies the forward and dgrad quantize made;
* weights: quantized once per step and cached over the microbatches (Transformer Engine's
  ``is_first_microbatch``), not per GEMM call; not counted here.

Hopper's FP8 tensor cores take both operands K-major, so the weight gradient
``dW = dY^T X`` needs ``X`` and ``dY`` transposed in fp8 too: each quantize writes a row-wise
and a column-wise copy. Per operand of ``N`` elements of ``e`` bytes (bf16: 2), two streaming
kernels (:func:`quantize_ops`):

* tensorwise scaling (Transformer Engine's FP8 *current scaling*; ``scaling="tensorwise"``, or
  "" on a dense :class:`~moesim.ops.Gemm`, as the cost model prices it): an amax reduction over the tensor (reads ``e N``), then a fused cast-transpose
  with the scale it gives (reads ``e N``, writes ``N`` row-wise + ``N`` column-wise);
* row-wise or block-wise scales (local to a row or tile, no global pass; a grouped GEMM with
  ``scaling=""`` is row-wise, as :mod:`moesim.costs.grouped` prices it): a row-wise quantize
  (reads ``e N``, writes ``N``) and a column-wise one for the transposed copy (reads ``e N``,
  writes ``N``).

Both total ``(2 e + 2) N`` bytes. Each kernel is a :class:`~moesim.ops.MemoryOp` of kind
``"cast"``, variant ``"cast_fp8"``: a calibrated profile prices it from its measured
single-kernel bf16 -> fp8 cast rows at the kernel's bytes moved (read + written, the axis those
rows are indexed by), the roofline as a streaming cast. This is the fused-kernel cost; unfused
eager quantize functions (the profile's ``quantize_tensorwise`` / ``quantize_rowwise`` rows,
an amax, a scale and a saturating cast as separate PyTorch ops) run several times longer.
"""
from __future__ import annotations

from typing import Sequence

from moesim.ops import Gemm, GroupedGemm, MemoryOp

CAST_VARIANT = "cast_fp8"  # the profile's one-kernel bf16 -> fp8 cast rows


def is_weight_gradient(op: "Gemm | GroupedGemm") -> bool:
    """Whether ``op`` is a weight-gradient GEMM (its operands were quantized by earlier GEMMs)."""
    if isinstance(op, GroupedGemm):
        return op.layout == "wgrad"
    return op.name.endswith(".wgrad")


def quantized_elements(op: object) -> int:
    """Elements of the operand an FP8 GEMM quantizes per call (0: not an FP8 GEMM, or a weight
    gradient)."""
    if not isinstance(op, (Gemm, GroupedGemm)) or op.dtype != "fp8" or is_weight_gradient(op):
        return 0
    if isinstance(op, GroupedGemm):
        return sum(op.counts) * op.k
    return op.m * op.k * op.groups


def quantize_ops(op: object, act_bytes: float) -> list[MemoryOp]:
    """The two quantize kernels of ``op``'s changing operand (none if it needs none); activations
    of ``act_bytes`` bytes per element (see the module docstring)."""
    n = quantized_elements(op)
    if n <= 0:
        return []
    name = getattr(op, "name", "gemm")
    tensorwise = op.scaling == "tensorwise" or (op.scaling == "" and isinstance(op, Gemm))  # grouped "": rowwise
    if tensorwise:
        return [MemoryOp("cast", act_bytes * n, f"{name}.fp8_amax", CAST_VARIANT),
                MemoryOp("cast", (act_bytes + 2) * n, f"{name}.fp8_cast_transpose", CAST_VARIANT)]
    return [MemoryOp("cast", (act_bytes + 1) * n, f"{name}.fp8_quantize_rows", CAST_VARIANT),
            MemoryOp("cast", (act_bytes + 1) * n, f"{name}.fp8_quantize_cols", CAST_VARIANT)]


def is_input_gradient(op: "Gemm | GroupedGemm") -> bool:
    """Whether ``op`` is an input-gradient (dgrad) GEMM."""
    if isinstance(op, GroupedGemm):
        return op.layout == "dgrad"
    return op.name.endswith(".dgrad")


def _input_key(op: object) -> "tuple | None":
    """What identifies a forward FP8 GEMM's input for sharing: rows (or the count vector) and k."""
    if quantized_elements(op) == 0 or is_input_gradient(op):  # type: ignore[arg-type]
        return None
    return (op.counts, op.k) if isinstance(op, GroupedGemm) else (op.m, op.k, op.groups)  # type: ignore[union-attr]


def with_quantize(program: Sequence, act_bytes: float, skip: "frozenset[str]" = frozenset()) -> list:
    """``program`` with each FP8 GEMM preceded by its quantize kernels (other items unchanged).

    A forward GEMM launched right after another forward GEMM of the same input shape reads the
    same tensor (a SwiGLU's gate and up projections, MLA's q and kv down-projections) and reuses
    its quantized copy. GEMMs named in ``skip`` arrive quantized (experts fed by an fp8 dispatch)."""
    out: list = []
    previous = None
    for item in program:
        key = _input_key(item)
        if getattr(item, "name", None) not in skip and not (key is not None and key == previous):
            out += quantize_ops(item, act_bytes)
        out.append(item)
        previous = key
    return out
