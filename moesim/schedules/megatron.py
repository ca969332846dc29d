"""GPipe, 1F1B and Megatron interleaved 1F1B: the fused-backward (BW) schedules.

Orders follow Megatron-LM's ``forward_backward_pipelining_without_interleaving`` (1F1B:
``min(p-r-1, m)`` warm-up forwards, then F/BW pairs, then the cool-down) and the current
(post Nov 2024) ``forward_backward_pipelining_with_interleaving``: virtual microbatch k maps
to (microbatch, chunk) through the microbatch-group table, rank r warms up with
``2(p-r-1) + (v-1)N`` forwards (N = microbatch group size, default p), and backward k runs
chunk ``v-1-chunk(k)``. Chunk c of rank r is virtual stage ``c*p + r``.
"""
from __future__ import annotations

from dataclasses import replace

from moesim.errors import ConfigError
from moesim.schedules._common import check_sizes, fixed_chunks
from moesim.schedules.model import Action, Schedule, Step


def gpipe(num_ranks: int, num_microbatches: int, num_chunks: int | None = None) -> Schedule:
    """GPipe: every forward, then every full backward in FIFO order."""
    check_sizes("gpipe", num_ranks, num_microbatches)
    fixed_chunks("gpipe", num_chunks, 1)
    m = num_microbatches
    rows = tuple(
        tuple([Action("F", r, j) for j in range(m)] + [Action("BW", r, j) for j in range(m)]) for r in range(num_ranks)
    )
    return Schedule("gpipe", num_ranks, m, 1, 1, "looped", rows)


def one_f_one_b(num_ranks: int, num_microbatches: int, num_chunks: int | None = None) -> Schedule:
    """1F1B (PipeDream-Flush, Megatron non-interleaved)."""
    check_sizes("1f1b", num_ranks, num_microbatches)
    fixed_chunks("1f1b", num_chunks, 1)
    rows = tuple(_one_f_one_b_rank(r, num_ranks, num_microbatches) for r in range(num_ranks))
    return Schedule("1f1b", num_ranks, num_microbatches, 1, 1, "looped", rows)


def _one_f_one_b_rank(rank: int, num_ranks: int, num_microbatches: int) -> tuple[Step, ...]:
    warmup = min(num_ranks - rank - 1, num_microbatches)
    steps: list[Step] = [Action("F", rank, j) for j in range(warmup)]
    for j in range(num_microbatches - warmup):
        steps += [Action("F", rank, warmup + j), Action("BW", rank, j)]
    steps += [Action("BW", rank, j) for j in range(num_microbatches - warmup, num_microbatches)]
    return tuple(steps)


def interleaved(
    num_ranks: int, num_microbatches: int, num_chunks: int | None = None, microbatch_group_size: int | None = None
) -> Schedule:
    """Megatron interleaved 1F1B with ``num_chunks`` (default 2) chunks per rank.

    One chunk per rank is plain 1F1B (Megatron runs the non-interleaved schedule then).
    """
    check_sizes("interleaved", num_ranks, num_microbatches)
    v = 2 if num_chunks is None else num_chunks
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError("num_chunks", f"interleaved needs an integer number of chunks >= 1, got {num_chunks!r}")
    if v == 1:
        return replace(one_f_one_b(num_ranks, num_microbatches), name="interleaved")
    p, m = num_ranks, num_microbatches
    group = p if microbatch_group_size is None else microbatch_group_size
    _check_interleaved(p, m, group)
    table = microbatch_table(m, v, group)
    rows = tuple(_interleaved_rank(r, p, v, group, table) for r in range(p))
    return Schedule("interleaved", p, m, v, 1, "looped", rows)


def _check_interleaved(p: int, m: int, group: int) -> None:
    if p < 2:
        raise ConfigError("num_ranks", f"interleaved needs at least 2 pipeline ranks (got p={p})",
                          "use p >= 2, or 1f1b on a single rank")
    if m < p:
        raise ConfigError("num_microbatches", f"interleaved needs num_microbatches >= p (got m={m}, p={p})",
                          f"use m >= {p}")
    if not p <= group <= m:
        raise ConfigError("microbatch_group_size", f"interleaved needs p <= microbatch_group_size <= m "
                          f"(got N={group}, p={p}, m={m})", f"use N between {p} and {m}")
    if 0 < m % group < p:
        if group == p:
            raise ConfigError("num_microbatches", f"interleaved needs num_microbatches to be a multiple of the "
                              f"pipeline size (got m={m}, p={p})", f"use m = {m - m % p} or {m - m % p + p}")
        raise ConfigError("microbatch_group_size", f"interleaved needs m % N to be 0 or >= p, it would leave "
                          f"dependency bubbles (got m={m}, N={group}, p={p})", "pick N that divides m")


def microbatch_table(num_microbatches: int, num_chunks: int, group: int) -> list[tuple[int, int]]:
    """Megatron's virtual-microbatch table: k -> (microbatch, chunk), group by group."""
    table: list[tuple[int, int]] = []
    for low in range(0, num_microbatches, group):
        high = num_microbatches if low + group >= num_microbatches else low + group
        table += [(j, c) for c in range(num_chunks) for j in range(low, high)]
    return table


def _interleaved_rank(rank: int, p: int, v: int, group: int, table: list[tuple[int, int]]) -> tuple[Step, ...]:
    total = len(table)
    warmup = min(2 * (p - rank - 1) + (v - 1) * group, total)

    def forward(k: int) -> Action:
        j, c = table[k]
        return Action("F", c * p + rank, j)

    def backward(k: int) -> Action:
        j, c = table[k]
        return Action("BW", (v - 1 - c) * p + rank, j)

    steps: list[Step] = [forward(k) for k in range(warmup)]
    for k in range(total - warmup):
        steps += [forward(warmup + k), backward(k)]
    steps += [backward(k) for k in range(total - warmup, total)]
    return tuple(steps)

