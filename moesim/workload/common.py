"""Building blocks shared by every workload description: comm records, GEMM gradients, FFNs.

A workload's *program* for one layer and one microbatch is a list of compute ops
(:mod:`moesim.ops`) and :class:`CommOp` records in execution order, so the lowering layer knows
which collective follows which GEMM. The backward GEMMs of a forward ``C[m,n] = A[m,k] B[k,n]``
are derived here once for everyone: the input gradient ``dA[m,k] = dC[m,n] B^T`` and the
weight gradient ``dB[k,n] = A^T dC[m,n]``, each with the forward's FLOPs. The feed-forward
block (GELU: up, down; SwiGLU: gate, up, down) is written once and used by dense layers, routed
experts and shared experts alike.
"""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple, Sequence

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES, Attention, ComputeOp, Gemm, MemoryOp

ACTIVATIONS = ("swiglu", "gelu")


class CommOp(NamedTuple):
    """One collective inside a layer's program.

    ``bytes`` is the size of the full logical buffer, following the nccl-tests convention: the
    all-reduce buffer, the all-gather *output*, the reduce-scatter *input*, the all-to-all
    send buffer. ``group`` names the parallel group it runs over (``"tp"``, ``"ep"``).
    """

    op: str
    bytes: float
    name: str
    group: str = "tp"


ProgramItem = ComputeOp | CommOp


def compute_only(program: Sequence[ProgramItem]) -> list[ComputeOp]:
    """The compute ops of a program, in order."""
    return [item for item in program if not isinstance(item, CommOp)]


def comm_only(program: Sequence[ProgramItem]) -> list[CommOp]:
    """The collectives of a program, in order."""
    return [item for item in program if isinstance(item, CommOp)]


def dgrad(op: Gemm) -> Gemm:
    """Input-gradient GEMM of forward ``op``: (m, n, k) -> (m, k, n)."""
    return replace(op, m=op.m, n=op.k, k=op.n, name=f"{op.name}.dgrad")


def wgrad(op: Gemm) -> Gemm:
    """Weight-gradient GEMM of forward ``op``: (m, n, k) -> (k, n, m)."""
    return replace(op, m=op.k, n=op.n, k=op.m, name=f"{op.name}.wgrad")


def attention_backward(op: Attention) -> Attention:
    """The backward (dQ, dK, dV) kernel of a forward attention op."""
    return replace(op, backward=True, name=f"{op.name}.bwd")


def check_positive(field: str, value: int | float, *, allow_zero: bool = False) -> None:
    """ConfigError unless ``value`` is > 0 (or >= 0 with ``allow_zero``)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(field, f"must be {bound}, got {value}", f"give a number {bound}")


def check_dtype(field: str, dtype: str) -> None:
    """ConfigError unless ``dtype`` is one moesim knows."""
    if dtype not in DTYPE_BYTES:
        raise ConfigError(field, f"unknown dtype {dtype!r}", f"use one of: {', '.join(DTYPE_BYTES)}")


def check_divides(field: str, divisor: int, value: int, what: str) -> None:
    """ConfigError unless ``divisor`` divides ``value``."""
    if divisor < 1:
        raise ConfigError(field, f"must be >= 1, got {divisor}")
    if value % divisor:
        raise ConfigError(field, f"{divisor} does not divide {what} = {value}",
                          f"choose {field} among the divisors of {value}")


def eager_swiglu_ops(elem_bytes: float, elems: float, prefix: str, backward: bool = False) -> list[MemoryOp]:
    """SwiGLU's elementwise kernels as eager PyTorch writes it (``F.silu(gate) * up`` over
    ``elems`` elements): forward ``silu`` (reads gate, writes a) and ``mul`` (reads a and up,
    writes the product); backward ``mul``'s (reads the grad, a and up, writes both grads) then
    ``silu``'s (reads the grad and gate, writes one). The dense FFN, the shared experts and a
    torchtitan expert chain all issue these."""
    if backward:
        return [MemoryOp("elementwise", 5 * elem_bytes * elems, f"{prefix}.mul.bwd"),
                MemoryOp("elementwise", 3 * elem_bytes * elems, f"{prefix}.silu.bwd")]
    return [MemoryOp("elementwise", 2 * elem_bytes * elems, f"{prefix}.silu"),
            MemoryOp("elementwise", 3 * elem_bytes * elems, f"{prefix}.mul")]


def _ffn_gemms(num_tokens: int, hidden: int, ffn_hidden: int, activation: str, g: str, groups: int,
               prefix: str, fused_activation: bool) -> tuple[list[Gemm], Gemm]:
    """(up-side GEMMs, down GEMM) of one FFN: a fused SwiGLU's gate and up are one ``fc1`` GEMM
    of width 2F (Megatron's ``linear_fc1``, which the fused kernel splits); unfused, two GEMMs
    (``gate``, ``up``: Hugging Face, torchtitan)."""
    down = Gemm(m=num_tokens, n=hidden, k=ffn_hidden, dtype=g, groups=groups, name=f"{prefix}.down")
    if activation != "swiglu":
        return [Gemm(m=num_tokens, n=ffn_hidden, k=hidden, dtype=g, groups=groups, name=f"{prefix}.up")], down
    if fused_activation:
        return [Gemm(m=num_tokens, n=2 * ffn_hidden, k=hidden, dtype=g, groups=groups, name=f"{prefix}.fc1")], down
    return [Gemm(m=num_tokens, n=ffn_hidden, k=hidden, dtype=g, groups=groups, name=f"{prefix}.gate"),
            Gemm(m=num_tokens, n=ffn_hidden, k=hidden, dtype=g, groups=groups, name=f"{prefix}.up")], down


def ffn_forward_ops(num_tokens: int, hidden: int, ffn_hidden: int, activation: str, dtype: str,
                    prefix: str, groups: int = 1, gemm_dtype: str | None = None,
                    fused_activation: bool = True) -> list[ComputeOp]:
    """Forward ops of one feed-forward block on ``num_tokens`` tokens.

    ``ffn_hidden`` is the (already sharded) intermediate width on this rank. ``groups > 1`` means
    ``groups`` identical experts run as one grouped GEMM, each on ``num_tokens`` tokens.
    ``gemm_dtype`` is the GEMMs' precision when it differs from the activations' ``dtype``
    (FP8 training: fp8 GEMMs on bf16 activations). A fused SwiGLU (Megatron's
    ``bias_swiglu_fusion``) runs after one ``fc1`` GEMM of width 2F; ``fused_activation`` False:
    SwiGLU as eager PyTorch writes it (``F.silu(gate(x)) * up(x)``: two GEMMs, a ``silu``
    kernel, then a ``mul``).
    """
    e = DTYPE_BYTES[dtype]
    ups, down = _ffn_gemms(num_tokens, hidden, ffn_hidden, activation, gemm_dtype or dtype, groups, prefix,
                           fused_activation)
    elems = float(num_tokens * ffn_hidden * groups)
    if activation == "swiglu" and not fused_activation:
        return [*ups, *eager_swiglu_ops(e, elems, prefix), down]
    act_bytes = (3 if activation == "swiglu" else 2) * e * elems  # read gate and up (or the input), write
    return [*ups, MemoryOp("elementwise", float(act_bytes), f"{prefix}.{activation}"), down]


def ffn_backward_input_ops(num_tokens: int, hidden: int, ffn_hidden: int, activation: str, dtype: str,
                           prefix: str, groups: int = 1, gemm_dtype: str | None = None,
                           fused_activation: bool = True) -> list[ComputeOp]:
    """Input-gradient ops of :func:`ffn_forward_ops`, in backward order: the down projection's
    input gradient, the activation's backward kernels, the up-side input gradient(s) (and, for an
    unfused SwiGLU, the add of the gate's and the up's input gradients that autograd makes)."""
    e = DTYPE_BYTES[dtype]
    elems = float(num_tokens * ffn_hidden * groups)
    ups, down = _ffn_gemms(num_tokens, hidden, ffn_hidden, activation, gemm_dtype or dtype, groups, prefix,
                           fused_activation)
    if activation == "swiglu" and not fused_activation:
        # the two input gradients of x are added
        return [dgrad(down), *eager_swiglu_ops(e, elems, prefix, backward=True), *[dgrad(g) for g in ups],
                MemoryOp("elementwise", float(3 * e * num_tokens * hidden * groups), f"{prefix}.dx_add.bwd")]
    # SwiGLU backward reads gate, up and the incoming grad and writes two grads; GELU reads
    # input and grad and writes one grad.
    per_elem = 5 if activation == "swiglu" else 3
    act_bwd = MemoryOp("elementwise", float(per_elem * e * elems), f"{prefix}.{activation}.bwd")
    return [dgrad(down), act_bwd, *[dgrad(g) for g in ups]]


def ffn_backward_weight_ops(num_tokens: int, hidden: int, ffn_hidden: int, activation: str, dtype: str,
                            prefix: str, groups: int = 1, gemm_dtype: str | None = None,
                            fused_activation: bool = True) -> list[ComputeOp]:
    """Weight-gradient GEMMs of :func:`ffn_forward_ops`."""
    ups, down = _ffn_gemms(num_tokens, hidden, ffn_hidden, activation, gemm_dtype or dtype, groups, prefix,
                           fused_activation)
    return [wgrad(op) for op in (*ups, down)]


def ffn_params(hidden: int, ffn_hidden: int, activation: str) -> int:
    """Weights of one feed-forward block (no biases)."""
    return (3 if activation == "swiglu" else 2) * hidden * ffn_hidden


def ffn_internal_activation_bytes(num_tokens: int, ffn_hidden: int, activation: str, dtype: str,
                                  fused_activation: bool = True) -> float:
    """Bytes a feed-forward block keeps for backward *inside* the block: the activation's inputs
    and output (Korthikanti et al. 2022 §4.1: GeLU input + output = 16sbh for ffn = 4h;
    SwiGLU keeps gate, up and their product, unfused also ``silu(gate)``). The block input is
    the caller's to count."""
    widths = (3 if fused_activation else 4) if activation == "swiglu" else 2
    return DTYPE_BYTES[dtype] * num_tokens * widths * ffn_hidden


def weight_params(ops: Sequence[ComputeOp]) -> int:
    """Weights touched by forward GEMMs: B[k, n] per GEMM and group."""
    return sum(op.k * op.n * op.groups for op in ops if isinstance(op, Gemm))
