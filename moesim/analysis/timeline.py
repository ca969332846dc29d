"""Shared vocabulary for reading a Recorder's timeline: span kinds, tracks, makespan, busy time.

Owns the conventions every analysis agrees on: a span is *communication* when its stream starts
with ``comm`` or its category is a collective/point-to-point name, otherwise *compute*; a
resource is one (rank, stream) track named like ``gpu3 compute``; the step (makespan) runs from
0 to the last span end; busy time is the length of the union of a track's spans. Counter tracks
are step functions read with the same "last sample at a time wins" rule as the trace exporter.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from moesim.engine.recorder import Recorder, Span
from moesim.engine.sim import HOST_STREAM  # a GPU's simulated host thread (Scenario.host = "eager")

COMPUTE_STREAM = "compute"
COMPUTE_CATEGORIES = ("forward", "backward", "weight_grad", "optimizer", "expert", "router", "compute")
COMM_CATEGORIES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send", "recv")
LINK_PREFIX = "link:"

KIND_COMPUTE = "compute"
KIND_COMM = "communication"
KIND_WAIT = "waiting"
KIND_HOST = "host"


def is_comm(span: Span) -> bool:
    """Whether ``span`` is communication (by stream name first, category second)."""
    return span.stream.startswith("comm") or span.category in COMM_CATEGORIES


def span_kind(span: Span) -> str:
    """``"communication"``, ``"host"`` (a host thread issuing GPU work) or ``"compute"``."""
    if span.stream == HOST_STREAM:
        return KIND_HOST
    return KIND_COMM if is_comm(span) else KIND_COMPUTE


def resource_name(rank: int, stream: str) -> str:
    """Display name of one GPU stream, the same one the trace uses: ``gpu3 compute``."""
    return f"gpu{rank} {stream}"


def makespan_ns(recorder: Recorder) -> int:
    """End of the last span (the step starts at 0)."""
    return int(recorder.end_ns)


def stream_order(stream: str) -> tuple[int, str]:
    """Sort key of streams on one GPU: compute, other streams, then comm streams."""
    if stream == COMPUTE_STREAM:
        return (0, stream)
    return (2 if stream.startswith("comm") else 1, stream)


def tracks(recorder: Recorder) -> dict[tuple[int, str], list[int]]:
    """Span indices per (rank, stream), each list in (start, end, index) order."""
    out: dict[tuple[int, str], list[int]] = {}
    for idx, span in enumerate(recorder.spans):
        out.setdefault(span.track, []).append(idx)
    spans = recorder.spans
    for ids in out.values():
        ids.sort(key=lambda i: (spans[i].start_ns, spans[i].end_ns, i))
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], stream_order(kv[0][1]))))


def all_ranks(recorder: Recorder) -> list[int]:
    """Every rank seen in spans or declared in meta (``num_ranks`` / ``ranks``), sorted."""
    ranks = {s.rank for s in recorder.spans}
    ranks.update(range(int(recorder.meta.get("num_ranks", 0) or 0)))
    ranks.update(int(r) for r in (recorder.meta.get("ranks") or {}))
    return sorted(ranks)


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint half-open intervals covering the same time as ``intervals``."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def union_length_ns(intervals: Iterable[tuple[int, int]]) -> int:
    """Total length covered by half-open intervals (overlaps counted once)."""
    return sum(end - start for start, end in merge_intervals(intervals))


def overlap_ns(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int:
    """Length of the intersection of two lists of sorted, disjoint intervals."""
    total, i, j = 0, 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0, hi - lo)
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return total


def gaps(merged: list[tuple[int, int]], horizon_ns: int) -> list[tuple[int, int]]:
    """The complement of sorted, disjoint intervals within [0, horizon_ns)."""
    out, cursor = [], 0
    for start, end in merged:
        if start > cursor:
            out.append((cursor, min(start, horizon_ns)))
        cursor = max(cursor, end)
    if cursor < horizon_ns:
        out.append((cursor, horizon_ns))
    return [(s, e) for s, e in out if e > s]


def counter_steps(recorder: Recorder) -> dict[str, list[tuple[int, float]]]:
    """Per counter track, sorted (t_ns, value) steps; the last sample recorded at a time wins."""
    raw: dict[str, dict[int, float]] = {}
    for sample in recorder.counters:
        raw.setdefault(sample.track, {})[int(sample.t_ns)] = float(sample.value)
    return {track: sorted(points.items()) for track, points in sorted(raw.items())}


def _links_added_one_by_one(recorder: Recorder) -> bool:
    """Whether some ``link:`` sample was added as a single counter sample (not by the network)."""
    return any(s.track.startswith(LINK_PREFIX) for s in recorder.samples)


def _link_arrays(recorder: Recorder) -> "tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None":
    """The recorder's link samples as arrays sorted by link then time, the last sample recorded
    at a time kept: (names, link ids, times, values); None where the recorder has no arrays or
    some link sample was added one by one."""
    arrays = getattr(recorder, "link_sample_arrays", None)
    if not callable(arrays) or _links_added_one_by_one(recorder):
        return None
    names, ids, times, values = arrays()
    order = np.lexsort((np.arange(ids.size), times, ids))   # by link, then time, then recording order
    ids, times, values = ids[order], times[order], values[order]
    last = np.ones(ids.size, dtype=bool)                      # the last sample of each (link, time)
    last[:-1] = (ids[1:] != ids[:-1]) | (times[1:] != times[:-1])
    return names, ids[last], times[last], values[last]


def link_integrals(recorder: Recorder, horizon_ns: int) -> "dict[str, tuple[float, int, float]] | None":
    """:func:`step_integral` of every ``link:`` track's :func:`counter_steps`, computed on the
    recorder's sample arrays at once, without a sample object each (the same sums, term by term
    in time order); None where the recorder has no arrays or some link sample was added one by
    one (then :func:`counter_steps` answers). Where the network kept each link's integral
    instead of samples (``recorder.link_totals``), those are the answer: the same sums, added in
    the same order as :func:`step_integral` adds them."""
    totals = getattr(recorder, "link_totals", None)
    if callable(totals) and not getattr(recorder, "_link_blocks", True) and not _links_added_one_by_one(recorder):
        names = recorder.link_tracks
        return {names[l]: (area, busy, peak) for l, area, busy, peak in totals(horizon_ns)}
    got = _link_arrays(recorder)
    if got is None:
        return None
    names, ids, times, values = got
    if ids.size == 0:
        return {}
    first = np.ones(ids.size, dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    nxt = np.empty_like(times)
    nxt[:-1] = times[1:]
    nxt[np.roll(first, -1)] = horizon_ns                      # a track's last step holds to the horizon
    width = np.minimum(nxt, horizon_ns) - np.maximum(times, 0)
    held = width > 0
    width = np.where(held, width, 0)
    starts = first.nonzero()[0]
    terms = values * width
    area = [float(sum(terms[a:b].tolist())) for a, b in zip(starts.tolist(), [*starts[1:].tolist(), ids.size])]
    positive = np.add.reduceat(np.where(held & (values > 0), width, 0), starts)
    peak = np.maximum.reduceat(np.where(held, values, 0.0), starts)
    peak = np.maximum(peak, 0.0)
    return {names[int(i)]: (a, int(p), float(m))
            for i, a, p, m in zip(ids[starts].tolist(), area, positive.tolist(), peak.tolist())}


def step_integral(steps: list[tuple[int, float]], horizon_ns: int) -> tuple[float, int, float]:
    """(integral of value·dt, time with value > 0, peak) of a step function over [0, horizon).

    The value is 0 before the first sample and holds from each sample until the next.
    """
    area, positive_ns, peak = 0.0, 0, 0.0
    for k, (t_ns, value) in enumerate(steps):
        nxt = steps[k + 1][0] if k + 1 < len(steps) else horizon_ns
        lo, hi = max(0, t_ns), min(horizon_ns, nxt)
        if hi <= lo:
            continue
        area += value * (hi - lo)
        positive_ns += (hi - lo) if value > 0 else 0
        peak = max(peak, value)
    return area, positive_ns, peak


def link_label(track: str, recorder: Recorder) -> str:
    """``link:a->b`` as ``a->b (kind)`` using meta["links"] when it knows the kind."""
    name = track[len(LINK_PREFIX):] if track.startswith(LINK_PREFIX) else track
    kind = ((recorder.meta.get("links") or {}).get(track) or {}).get("kind")
    return f"{name} ({kind})" if kind else name
