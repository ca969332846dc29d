"""Zero-bubble schedules (Qi et al.): handcrafted ZB-H1 and ZB-H2, and ZB-V.

ZB-H1 and ZB-H2 share one shape, read from the paper's Figure 3: rank r runs ``warmup(r)``
forwards, then F/B pairs where each B is followed by the oldest pending W once more than
``lag(r)`` W's are pending, then the remaining B's each followed by a W, then the leftover W's.
ZB-H1: warmup p-r-1, lag r (1F1B memory). ZB-H2: warmup 2(p-r)-2, lag 2r (the parallelogram).

ZB-V follows sail-sg ``handcrafted_zb_v.get_zb_v_schedule`` (v0.1.0): two chunks per rank in
a V (chunk 0 is stage r, chunk 1 is stage 2p-1-r), generated for max(2p-1, m) microbatches with
the padding microbatches dropped afterwards.
"""
from __future__ import annotations

from collections import deque

from moesim.errors import ConfigError
from moesim.schedules._common import check_sizes, fixed_chunks
from moesim.schedules.model import Action, Schedule, Step


def zb_h1(num_ranks: int, num_microbatches: int, num_chunks: int | None = None) -> Schedule:
    """ZB-H1: 1F1B with W deferred into the cool-down bubble; peak memory as 1F1B."""
    check_sizes("zb-h1", num_ranks, num_microbatches)
    fixed_chunks("zb-h1", num_chunks, 1)
    p = num_ranks
    rows = tuple(_handcrafted_rank(r, num_microbatches, warmup=p - r - 1, lag=r) for r in range(p))
    return Schedule("zb-h1", p, num_microbatches, 1, 1, "looped", rows)


def zb_h2(num_ranks: int, num_microbatches: int, num_chunks: int | None = None) -> Schedule:
    """ZB-H2: extra warm-up forwards and deferred W's; zero bubble under the span metric."""
    check_sizes("zb-h2", num_ranks, num_microbatches)
    fixed_chunks("zb-h2", num_chunks, 1)
    p, m = num_ranks, num_microbatches
    if m < 2 * p - 1:
        raise ConfigError(
            "num_microbatches", f"zb-h2 needs num_microbatches >= 2*p-1 to fill its warm-up (got m={m}, p={p})",
            f"use m >= {2 * p - 1}, or zb-h1",
        )
    rows = tuple(_handcrafted_rank(r, m, warmup=2 * (p - r) - 2, lag=2 * r) for r in range(p))
    return Schedule("zb-h2", p, m, 1, 1, "looped", rows)


def _handcrafted_rank(rank: int, num_microbatches: int, warmup: int, lag: int) -> tuple[Step, ...]:
    m = num_microbatches
    warmup = min(warmup, m)
    steps: list[Step] = [Action("F", rank, j) for j in range(warmup)]
    pending: deque[int] = deque()
    for j in range(m - warmup):
        steps += [Action("F", rank, warmup + j), Action("B", rank, j)]
        pending.append(j)
        if j >= lag:
            steps.append(Action("W", rank, pending.popleft()))
    for j in range(m - warmup, m):
        steps.append(Action("B", rank, j))
        pending.append(j)
        steps.append(Action("W", rank, pending.popleft()))
    steps += [Action("W", rank, j) for j in pending]
    return tuple(steps)


def zb_v(num_ranks: int, num_microbatches: int, num_chunks: int | None = None) -> Schedule:
    """ZB-V: the handcrafted V-shape schedule with two chunks per rank."""
    check_sizes("zb-v", num_ranks, num_microbatches)
    fixed_chunks("zb-v", num_chunks, 2)
    p, m = num_ranks, num_microbatches
    padded = max(2 * p - 1, m)
    rows = tuple(
        tuple(a for a in _zb_v_rank(r, p, padded) if a.microbatch < m) for r in range(p)
    )
    return Schedule("zb-v", p, m, 2, 1, "v", rows)


class _ChunkCounters:
    """Next microbatch of each op kind on each of a rank's two V chunks."""

    def __init__(self, rank: int, num_ranks: int) -> None:
        self.stages = (rank, 2 * num_ranks - 1 - rank)
        self.next = {(kind, c): 0 for kind in "FBW" for c in (0, 1)}

    def take(self, kind: str, chunk: int) -> Action:
        j = self.next[(kind, chunk)]
        self.next[(kind, chunk)] = j + 1
        return Action(kind, self.stages[chunk], j)

    def count(self, kind: str, chunk: int) -> int:
        return self.next[(kind, chunk)]


def _zb_v_rank(rank: int, p: int, n: int) -> list[Action]:
    c = _ChunkCounters(rank, p)
    out = [c.take("F", 0) for _ in range(2 * (p - rank) - 1)]
    for _ in range(rank):
        out += [c.take("F", 1), c.take("F", 0)]
    for _ in range(p - rank):
        out += [c.take("F", 1), c.take("B", 1), c.take("W", 1)]
    while c.count("F", 1) < c.count("F", 0) or c.count("F", 0) < n:
        if c.count("F", 0) < n:
            out.append(c.take("F", 0))
        out += [c.take("B", 0), c.take("W", 0), c.take("F", 1), c.take("B", 1), c.take("W", 1)]
    for _ in range(rank):
        out += [c.take("B", 0), c.take("B", 1)]
    for _ in range(p - rank):
        out += [c.take("B", 0), c.take("W", 0)]
    while c.count("W", 1) < c.count("B", 1):
        out.append(c.take("W", 1))
    while c.count("W", 0) < c.count("B", 0):
        out.append(c.take("W", 0))
    return out
