"""The measurement grids: which shapes and sizes each calibration mode measures.

``full`` is the grid shipped in the H200 profile (a full tensor grid over M, N, K so that the
calibrated model can interpolate multilinearly); ``quick`` keeps the corners and a few interior
points; ``smoke`` is a tiny CPU grid for tests. Sizes are chosen to cover transformer and MoE
expert shapes: hidden sizes 1024..18432, tokens 64..32768 per GEMM, 1..16384 per expert.
Memory ops step by x2 in bytes (curves bend between 16 and 128 MiB, where L2 residency ends);
collectives by x4 up to 256 KiB (latency-bound, flat) and x2 from 1 MiB to 1 GiB (NCCL's
bandwidth ramp); attention varies batch and heads separately (cuDNN's kernel speed depends on
both, not only on their product), up to ``attn_max_tokens`` = batch x heads x seq.
"""
from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
DEFAULT_HEAT_MS = 60.0  # GEMM load before each shape on cuda: keeps the GPU at sustained clocks (docs/calibration.md)


@dataclass(frozen=True)
class Grid:
    """One calibration mode's shapes and sizes."""

    gemm_m: tuple[int, ...]
    gemm_nk: tuple[int, ...]
    fp8_m: tuple[int, ...]
    fp8_nk: tuple[int, ...]
    ffn_tokens: tuple[int, ...]
    ffn_hidden: tuple[int, ...]
    ffn_ffn: tuple[int, ...]
    attn_seq: tuple[int, ...]
    attn_heads: tuple[int, ...]
    attn_head_dim: tuple[int, ...]
    attn_batch: tuple[int, ...]
    attn_max_tokens: int
    memory_nbytes: tuple[int, ...]
    memory_warm_nbytes: tuple[int, ...]
    collective_nbytes: tuple[int, ...]
    overlap_gemm: int
    overlap_nbytes: int


def _pow2(lo: int, hi: int) -> tuple[int, ...]:
    out, v = [], lo
    while v <= hi:
        out.append(v)
        v *= 2
    return tuple(out)


def _pow4(lo: int, hi: int) -> tuple[int, ...]:
    out, v = [], lo
    while v <= hi:
        out.append(v)
        v *= 4
    return tuple(out)


GRIDS: dict[str, Grid] = {
    "full": Grid(
        gemm_m=_pow2(64, 32768),
        gemm_nk=(1024, 2048, 4096, 7168, 8192, 14336, 18432),
        fp8_m=(64, 256, 1024, 4096, 16384),
        fp8_nk=(2048, 4096, 7168, 14336),
        ffn_tokens=_pow2(1, 16384),
        ffn_hidden=(4096, 7168),
        ffn_ffn=(1408, 2048, 14336),
        attn_seq=_pow2(512, 16384),
        attn_heads=(8, 16, 32, 64, 128),
        attn_head_dim=(64, 128),
        attn_batch=(1, 2, 4, 8),
        attn_max_tokens=128 * 16384,
        memory_nbytes=_pow2(64 * KIB, 4 * GIB),
        memory_warm_nbytes=_pow2(64 * KIB, 1 * GIB),
        collective_nbytes=_pow4(4 * KIB, 256 * KIB) + _pow2(1 * MIB, 1 * GIB),
        overlap_gemm=8192,
        overlap_nbytes=256 * MIB,
    ),
    "quick": Grid(
        gemm_m=(64, 512, 4096, 32768),
        gemm_nk=(1024, 4096, 14336),
        fp8_m=(256, 4096),
        fp8_nk=(4096, 14336),
        ffn_tokens=(1, 16, 256, 4096),
        ffn_hidden=(4096,),
        ffn_ffn=(2048,),
        attn_seq=(512, 4096),
        attn_heads=(16, 64),
        attn_head_dim=(128,),
        attn_batch=(1, 4),
        attn_max_tokens=64 * 4096,
        memory_nbytes=_pow4(64 * KIB, 1 * GIB)[::2],
        memory_warm_nbytes=_pow4(64 * KIB, 1 * GIB)[::2],
        collective_nbytes=_pow4(4 * KIB, 256 * MIB)[::2],
        overlap_gemm=4096,
        overlap_nbytes=64 * MIB,
    ),
    "smoke": Grid(
        gemm_m=(16, 32),
        gemm_nk=(32, 64),
        fp8_m=(),
        fp8_nk=(),
        ffn_tokens=(1, 8),
        ffn_hidden=(32,),
        ffn_ffn=(16,),
        attn_seq=(16, 32),
        attn_heads=(2,),
        attn_head_dim=(8,),
        attn_batch=(1, 2),
        attn_max_tokens=2 * 2 * 32,
        memory_nbytes=(4 * KIB, 16 * KIB),
        memory_warm_nbytes=(4 * KIB,),
        collective_nbytes=(4 * KIB, 16 * KIB),
        overlap_gemm=64,
        overlap_nbytes=16 * KIB,
    ),
}
