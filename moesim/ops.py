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

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k * self.groups

    @property
    def bytes(self) -> float:
        b = DTYPE_BYTES[self.dtype]
        return b * self.groups * (self.m * self.k + self.k * self.n + self.m * self.n)


@dataclass(frozen=True)
class Attention:
    """Core (flash) attention: softmax(Q K^T) V over ``batch`` sequences.

    ``backward`` selects the backward kernel (dQ, dK, dV), which costs about 2.5x forward.
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

    ``kind`` is one of MEMORY_OP_KINDS; it selects the calibrated curve.
    """

    kind: str
    bytes: float
    name: str = ""

    @property
    def flops(self) -> float:
        return 0.0


MEMORY_OP_KINDS = ("copy", "elementwise", "norm", "softmax", "topk", "permute")

ComputeOp = Gemm | Attention | MemoryOp

COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send_recv")
