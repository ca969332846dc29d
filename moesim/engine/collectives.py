"""Collectives lowered to phases of point-to-point flows.

Each builder is a pure function returning ``phases``: a list of phases, each a list of
``(src_rank, dst_rank, nbytes)`` flows that run concurrently; a phase starts when the previous
one has fully finished (plus the per-step latency the caller charges). This is the
synchronous-step model of ring/tree algorithms: it reproduces the classic costs exactly, e.g. a
ring all-reduce of S bytes on n GPUs over links of bandwidth B takes
``2(n-1) * (S/n/B + step latency)``.

Byte conventions (what ``nbytes`` means):
    all_reduce: the buffer size on every rank.
    all_gather: the gathered output size (each rank contributes nbytes/n).
    reduce_scatter: the input size on every rank (each rank keeps nbytes/n).
    all_to_all: the bytes each rank sends in total, split evenly over all ranks (itself included).
    all_to_all_v: an explicit n x n matrix of bytes from rank i to rank j.
    broadcast: the buffer size, sent from the first rank.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np

Flow = tuple[int, int, float]


class FlowArrays(NamedTuple):
    """One phase's flows as three equal-length arrays (16-24 bytes a flow instead of a tuple's
    ~120): ``src[k]`` sends ``nbytes[k]`` bytes to ``dst[k]``."""

    src: np.ndarray
    dst: np.ndarray
    nbytes: np.ndarray

    def __iter__(self) -> Iterator[Flow]:  # type: ignore[override]
        return zip(self.src.tolist(), self.dst.tolist(), self.nbytes.tolist())

    def __len__(self) -> int:
        return int(self.src.shape[0])


Phase = list[Flow] | FlowArrays
Phases = list[Phase]


class LazyPhases:
    """Phases built when iterated (at the task's start), not when the task is created: a task
    waiting for its turn holds its builder and arguments, not its flows."""

    __slots__ = ("builder", "args")

    def __init__(self, builder: Callable[..., Phases], *args: Any) -> None:
        self.builder = builder
        self.args = args

    def __iter__(self) -> Iterator[Phase]:
        return iter(self.builder(*self.args))


def _ring_steps(ranks: Sequence[int], chunk: float, steps: int) -> Phases:
    n = len(ranks)
    if n < 2 or chunk <= 0:
        return []
    one = [(ranks[i], ranks[(i + 1) % n], chunk) for i in range(n)]
    return [one] * steps  # every step is the same (read-only) list


def ring_all_reduce(ranks: Sequence[int], nbytes: float) -> Phases:
    """Ring all-reduce: reduce-scatter then all-gather, 2(n-1) steps of nbytes/n."""
    n = len(ranks)
    return _ring_steps(ranks, nbytes / n, 2 * (n - 1))


def ring_all_gather(ranks: Sequence[int], nbytes: float) -> Phases:
    """Ring all-gather of an nbytes output: n-1 steps of nbytes/n."""
    n = len(ranks)
    return _ring_steps(ranks, nbytes / n, n - 1)


def ring_reduce_scatter(ranks: Sequence[int], nbytes: float) -> Phases:
    """Ring reduce-scatter of an nbytes input: n-1 steps of nbytes/n."""
    n = len(ranks)
    return _ring_steps(ranks, nbytes / n, n - 1)


def _merge(parallel: list[Phases]) -> Phases:
    """Run several independent phase lists side by side, step by step."""
    out: Phases = []
    for i in range(max((len(p) for p in parallel), default=0)):
        out.append([f for p in parallel if i < len(p) for f in p[i]])
    return out


def group_by_host(ranks: Sequence[int], host_of: Callable[[int], int]) -> list[list[int]]:
    """Ranks grouped by host, hosts in first-appearance order, ranks in given order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for r in ranks:
        groups[host_of(r)].append(r)
    return list(groups.values())


def hierarchical_all_reduce(ranks: Sequence[int], nbytes: float, host_of: Callable[[int], int]) -> Phases:
    """Intra-host ring reduce-scatter, inter-host ring all-reduce per local index, intra all-gather.

    Falls back to a flat ring when hosts hold unequal numbers of ranks or there is one host.
    """
    groups = _host_groups(ranks, host_of)
    if groups is None:
        return ring_all_reduce(ranks, nbytes)
    return (_per_host(groups, ring_reduce_scatter, nbytes) + _per_rail(groups, ring_all_reduce, nbytes)
            + _per_host(groups, ring_all_gather, nbytes))


def _host_groups(ranks: Sequence[int], host_of: Callable[[int], int]) -> list[list[int]] | None:
    """Ranks by host where every host holds as many and there are several hosts, else None
    (the hierarchical builders then fall back to a flat ring)."""
    groups = group_by_host(ranks, host_of)
    if len(groups) == 1 or len({len(g) for g in groups}) != 1:
        return None
    return groups


def _per_host(groups: list[list[int]], ring: Callable[[Sequence[int], float], Phases], nbytes: float) -> Phases:
    """``ring`` of ``nbytes`` inside every host, side by side."""
    return _merge([ring(g, nbytes) for g in groups])


def _per_rail(groups: list[list[int]], ring: Callable[[Sequence[int], float], Phases], nbytes: float) -> Phases:
    """``ring`` across hosts, one per local index (a rail), each over the ``1/local`` share of
    ``nbytes`` a rank holds after the intra-host part, side by side."""
    local = len(groups[0])
    return _merge([ring([g[i] for g in groups], nbytes / local) for i in range(local)])


def hierarchical_reduce_scatter(ranks: Sequence[int], nbytes: float, host_of: Callable[[int], int]) -> Phases:
    """Intra-host ring reduce-scatter of the nbytes input, then one inter-host ring
    reduce-scatter per local index of the 1/local share each rank holds (one ring per rail, as
    the all-reduce's middle part): every rank ends with nbytes/n reduced over all ranks."""
    groups = _host_groups(ranks, host_of)
    if groups is None:
        return ring_reduce_scatter(ranks, nbytes)
    return _per_host(groups, ring_reduce_scatter, nbytes) + _per_rail(groups, ring_reduce_scatter, nbytes)


def hierarchical_all_gather(ranks: Sequence[int], nbytes: float, host_of: Callable[[int], int]) -> Phases:
    """The reverse of :func:`hierarchical_reduce_scatter`: one inter-host ring all-gather per local
    index (each rank's nbytes/n into the nbytes/local its host holds), then an intra-host ring
    all-gather of the nbytes output."""
    groups = _host_groups(ranks, host_of)
    if groups is None:
        return ring_all_gather(ranks, nbytes)
    return _per_rail(groups, ring_all_gather, nbytes) + _per_host(groups, ring_all_gather, nbytes)


def direct_all_to_all(ranks: Sequence[int], nbytes: float) -> Phases:
    """All pairs at once; each rank sends nbytes/n to every other rank (its own share stays)."""
    n = len(ranks)
    if n < 2 or nbytes <= 0:
        return []
    part = nbytes / n
    return [[(s, d, part) for s in ranks for d in ranks if s != d]]


def direct_all_to_all_v(ranks: Sequence[int], matrix: Sequence[Sequence[float]]) -> Phases:
    """All pairs at once with per-pair sizes ``matrix[i][j]`` (bytes from ranks[i] to ranks[j])."""
    n = len(ranks)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (n, n):
        raise ValueError(f"all_to_all_v matrix must be {n}x{n} for {n} ranks")
    m = m.copy()
    np.fill_diagonal(m, 0.0)
    i, j = np.nonzero(m > 0)  # row-major: the order of the nested loop over (i, j)
    r = np.asarray(ranks, dtype=np.int64)
    return [FlowArrays(r[i], r[j], m[i, j])] if i.size else []


def pipelined_broadcast(ranks: Sequence[int], nbytes: float, num_chunks: int = 8) -> Phases:
    """Chain broadcast from ranks[0], pipelined in chunks (as NCCL's ring broadcast)."""
    n = len(ranks)
    if n < 2 or nbytes <= 0:
        return []
    chunks = max(1, min(num_chunks, int(nbytes // 4096) or 1))
    part = nbytes / chunks
    phases: Phases = []
    for step in range(chunks + n - 2):
        phase = [(ranks[h], ranks[h + 1], part) for h in range(n - 1) if 0 <= step - h < chunks]
        phases.append(phase)
    return phases


def send_recv(src: int, dst: int, nbytes: float) -> Phases:
    """One point-to-point transfer."""
    return [[(src, dst, float(nbytes))]] if nbytes > 0 and src != dst else []


ALGORITHMS = ("ring", "hierarchical", "direct", "pipelined")
