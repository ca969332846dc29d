"""The op vocabulary shared by workload descriptions and cost models.

A workload (dense layer, expert FFN, router) describes what it computes as a list of these
frozen records; a cost model (roofline or calibrated profile) answers how long each takes on a
device. Neither side imports the other; both import this module.
"""
from __future__ import annotations

from dataclasses import dataclass

DTYPE_BYTES: dict[str, float] = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "fp4": 0.5}


@dataclass(frozen=True)
class Gemm:
    """C[m, n] = A[m, k] @ B[k, n], repeated ``groups`` times (grouped GEMM when > 1)."""

    m: int
    n: int
    k: int
    dtype: str = "bf16"
    groups: int = 1
    name: str = "gemm"
    scaling: str = ""

    def __post_init__(self) -> None:
        check_scaling("Gemm", self.scaling)

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k * self.groups

    @property
    def bytes(self) -> float:
        b = DTYPE_BYTES[self.dtype]
        return b * self.groups * (self.m * self.k + self.k * self.n + self.m * self.n)


FP8_SCALINGS = ("tensorwise", "rowwise", "blockwise")  # torch._scaled_mm scale layouts (Gemm.scaling)
GROUPED_LAYOUTS = ("fwd", "dgrad", "wgrad")
# How a framework issues a grouped GEMM: "" one kernel over all groups (torch._grouped_mm, CUTLASS);
# "te": Transformer Engine's Hopper default, one cuBLAS GEMM per group over 4 streams
GROUPED_IMPLS = ("", "te")


def check_scaling(owner: str, scaling: str) -> None:
    """``scaling`` is empty or one of :data:`FP8_SCALINGS` (``owner``: the op class, for the message)."""
    if scaling and scaling not in FP8_SCALINGS:
        raise ValueError(f"{owner}.scaling {scaling!r}: use one of {FP8_SCALINGS} (fp8 only) or ''")


@dataclass(frozen=True)
class GroupedGemm:
    """One grouped-GEMM kernel over ``len(counts)`` experts (``torch._grouped_mm`` and friends).

    Group g multiplies ``counts[g]`` token rows: ``layout="fwd"`` computes
    ``y_g[m_g, n] = x_g[m_g, k] @ W_g[k, n]`` (``dgrad`` is the same product against the
    transposed weight, as the input gradient runs it); ``"wgrad"`` computes
    ``dW_g[k, n] = x_g[m_g, k]^T @ dy_g[m_g, n]``, the token rows being the reduction dimension.
    Its cost depends on the whole count vector (tiles per group, empty groups), not only on the
    sum, so the vector is part of the op. ``scaling`` is the FP8 scale layout where
    ``dtype="fp8"``. ``impl`` is how it is issued (:data:`GROUPED_IMPLS`): ``"te"`` is Transformer
    Engine's grouped GEMM as Megatron-Core's ``TEGroupedMLP`` runs it on Hopper (one cuBLAS GEMM per
    group, round-robin over 4 streams), priced from its own measured rows.
    """

    counts: tuple[int, ...]
    n: int
    k: int
    dtype: str = "bf16"
    layout: str = "fwd"
    scaling: str = ""
    name: str = "grouped_gemm"
    impl: str = ""

    def __post_init__(self) -> None:
        if not self.counts or any((not isinstance(c, int)) or c < 0 for c in self.counts):
            raise ValueError(f"GroupedGemm.counts must be a non-empty tuple of integers >= 0, got {self.counts!r}")
        if self.layout not in GROUPED_LAYOUTS:
            raise ValueError(f"GroupedGemm.layout {self.layout!r}: use one of {GROUPED_LAYOUTS}")
        if self.impl not in GROUPED_IMPLS:
            raise ValueError(f"GroupedGemm.impl {self.impl!r}: use one of {GROUPED_IMPLS}")
        check_scaling("GroupedGemm", self.scaling)

    @property
    def groups(self) -> int:
        return len(self.counts)

    @property
    def rows(self) -> int:
        """Token rows over all groups."""
        return sum(self.counts)

    @property
    def flops(self) -> float:
        return 2.0 * self.rows * self.n * self.k

    @property
    def bytes(self) -> float:
        b = DTYPE_BYTES[self.dtype]
        return b * (self.rows * self.k + self.groups * self.k * self.n + self.rows * self.n)


@dataclass(frozen=True)
class Attention:
    """Core (flash) attention: softmax(Q K^T) V over ``batch`` sequences.

    ``backward`` selects the backward kernel (dQ, dK, dV), which costs about 2.5x forward.
    ``call="enable_gqa"``: ``F.scaled_dot_product_attention(..., enable_gqa=True)`` with ``kv_heads``
    K/V heads, which PyTorch runs with another kernel than the equal-heads call (K/V repeated to
    the query heads, or multi-head attention); a calibrated profile prices it from its
    ``attention_gqa`` rows. ``causal=False`` with ``seq_kv`` below ``seq_q`` is a sliding-window
    layer (``seq_kv`` = the window): a calibrated profile prices it as a block-skipping window
    kernel (:mod:`moesim.costs.attention_window`).
    """

    batch: int
    heads: int
    kv_heads: int
    seq_q: int
    seq_kv: int
    head_dim: int
    causal: bool = True
    dtype: str = "bf16"
    backward: bool = False
    name: str = "attention"
    call: str = ""   # "enable_gqa": SDPA given grouped K/V heads (another kernel); "": equal heads

    @property
    def flops(self) -> float:
        fwd = 4.0 * self.batch * self.heads * self.seq_q * self.seq_kv * self.head_dim
        if self.causal and self.seq_q == self.seq_kv:
            fwd /= 2.0
        return fwd * (2.5 if self.backward else 1.0)

    @property
    def bytes(self) -> float:
        b = DTYPE_BYTES[self.dtype]
        q = self.batch * self.heads * self.seq_q * self.head_dim
        kv = 2 * self.batch * self.kv_heads * self.seq_kv * self.head_dim
        return b * (2 * q + kv) * (2.0 if self.backward else 1.0)


@dataclass(frozen=True)
class MemoryOp:
    """A memory-bound kernel that moves ``bytes`` through HBM (read + write counted).

    ``kind`` is one of MEMORY_OP_KINDS; it selects the calibrated curve. ``variant`` names one
    measured kernel of that kind (e.g. ``"index_add"``, the bf16-atomic scatter-add of an MoE
    unpermute, or ``"argsort"``); empty means the kind's generic curve.
    """

    kind: str
    bytes: float
    name: str = ""
    variant: str = ""

    @property
    def flops(self) -> float:
        return 0.0


MEMORY_OP_KINDS = ("copy", "elementwise", "norm", "softmax", "topk", "permute", "sort", "histogram", "cast")

ComputeOp = Gemm | GroupedGemm | Attention | MemoryOp

COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send_recv")
