"""Sliding-window attention as a block-skipping kernel runs it (FlashAttention's ``window_size``,
cuDNN's, FlexAttention's ``BlockMask``).

A window layer is an :class:`~moesim.ops.Attention` with ``causal=False`` and ``seq_kv`` (the
window W) below ``seq_q`` (S), the band of a causal kernel over S. Such kernels tile the
score matrix in 128 x 128 blocks and visit only the blocks the band touches, but each block row
(a query tile) also pays a fixed cost that does not shrink with the window (loading Q, the
softmax's final rescale, writing O and, in the backward, dQ). So, relative to the causal kernel
at the same query length:

    time(window) = time(causal, S) x (R c + V) / (R c + C)

with R = ceil(S / 128) query tiles, C = R (R + 1) / 2 blocks the causal kernel visits, V the
blocks the band visits, and c a query tile's fixed cost in units of one block. c was measured
with FlexAttention on an H100 at GPT-OSS's shape (1 x 64 heads, 8 KV heads, head_dim 64,
S = 4,096; causal vs W = 128: forward 0.503 vs 0.166 ms, backward 1.669 vs 0.395 ms;
``data/validation/runs/session_2026_12_06c/window/flex.json``, ``lab/published_window_attn_probe.py``):
c = 5.2 forward, 2.5 backward. One shape on one GPU: callers mark the result a measured
stand-in. A plain FLOPs scaling (2W / S) would say 0.0625 here; the kernel takes 0.33 / 0.24.
"""
from __future__ import annotations

import math

TILE = 128
ROW_COST_BLOCKS = {"fwd": 5.2, "bwd": 2.5}   # a query tile's fixed cost, in blocks (FlexAttention, H100)


def band_blocks(seq: int, window: int, tile: int = TILE) -> int:
    """Blocks of a ``tile`` x ``tile`` grid over ``seq`` queries and keys that a causal band of
    ``window`` keys per query (key j attended by query i when i - window < j <= i) touches."""
    rows = math.ceil(seq / tile)
    total = 0
    for i in range(rows):
        last_q = min(seq, (i + 1) * tile) - 1
        first_k = max(0, i * tile - window + 1)
        total += last_q // tile - first_k // tile + 1
    return total


def window_ratio(seq: int, window: int, direction: str) -> float:
    """time(window) / time(causal) at query length ``seq`` (module docstring); 1.0 for a window
    covering the whole sequence."""
    if window >= seq:
        return 1.0
    rows = math.ceil(seq / TILE)
    c = ROW_COST_BLOCKS[direction] * rows
    return (c + band_blocks(seq, window)) / (c + band_blocks(seq, seq))
