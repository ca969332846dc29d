"""How busy each GPU stream and each link was over the step, and where compute sat idle.

:func:`utilization` gives, per (rank, stream), busy time (union of its spans) over the makespan,
and per ``link:`` counter track the time-weighted mean of its utilisation step function (plus
the time it was non-zero and its peak). :func:`bubbles` looks at each rank's ``compute`` stream:
idle = makespan - busy, split into idle before the first compute span (pipeline warm-up), after
the last one (cool-down) and the gaps in between (``busy_streams`` can add streams that count
as work, e.g. a blocking tensor-parallel collective stream). Idle compute time while another
stream of the same GPU was busy is *overlapped*; the rest, with nothing running on the GPU, is
the *GPU idle* time, the pipeline bubble proper. The bubble fraction is idle over the makespan
and, against the ideal (a step as long as the busy time), idle over busy. Per pipeline stage
(``args["stage"]`` on compute spans) it reports the mean idle fraction of the ranks running it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

from moesim.analysis.timeline import (COMPUTE_STREAM, LINK_PREFIX, all_ranks, counter_steps, gaps, link_integrals,
                                      link_label, makespan_ns, merge_intervals, overlap_ns, resource_name,
                                      step_integral, tracks, union_length_ns)
from moesim.engine.recorder import Recorder
from moesim.errors import ConfigError


def _fraction(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


@dataclass(frozen=True)
class StreamUse:
    """Busy time of one GPU stream."""

    rank: int
    stream: str
    busy_ns: int
    fraction: float

    @property
    def resource(self) -> str:
        return resource_name(self.rank, self.stream)


@dataclass(frozen=True)
class LinkUse:
    """Time-weighted utilisation of one directed link over the step."""

    track: str
    label: str
    mean_utilization: float
    busy_fraction: float
    peak_utilization: float


@dataclass(frozen=True)
class Utilization:
    """Busy fractions of every stream and link over one makespan."""

    makespan_ns: int
    streams: tuple[StreamUse, ...]
    links: tuple[LinkUse, ...]

    def stream(self, rank: int, stream: str) -> StreamUse:
        """The entry of one (rank, stream); KeyError if that stream never ran anything."""
        for use in self.streams:
            if use.rank == rank and use.stream == stream:
                return use
        raise KeyError((rank, stream))

    def busiest_links(self, n: int) -> list[LinkUse]:
        """The ``n`` links with the highest mean utilisation (ties by name)."""
        return sorted(self.links, key=lambda u: (-u.mean_utilization, u.track))[:n]

    def to_dict(self) -> dict[str, Any]:
        return {"makespan_ns": self.makespan_ns,
                "streams": {u.resource: {"busy_ns": u.busy_ns, "fraction": u.fraction} for u in self.streams},
                "links": {u.track: {k: v for k, v in asdict(u).items() if k != "track"} for u in self.links}}


def utilization(recorder: Recorder) -> Utilization:
    """Per (rank, stream) busy/makespan and per link time-weighted mean utilisation."""
    horizon = makespan_ns(recorder)
    spans = recorder.spans
    streams = []
    for (rank, stream), ids in tracks(recorder).items():
        busy = union_length_ns((spans[i].start_ns, spans[i].end_ns) for i in ids)
        streams.append(StreamUse(rank, stream, busy, _fraction(busy, horizon)))
    integrals = link_integrals(recorder, horizon)
    if integrals is None:
        steps = counter_steps(recorder)
        integrals = {t: step_integral(s, horizon) for t, s in steps.items() if t.startswith(LINK_PREFIX)}
    names = sorted(set(integrals) | {t for t in (recorder.meta.get("links") or {}) if t.startswith(LINK_PREFIX)})
    links = []
    for track in names:
        area, positive_ns, peak = integrals.get(track, (0.0, 0, 0.0))
        links.append(LinkUse(track, link_label(track, recorder), _fraction(area, horizon),
                             _fraction(positive_ns, horizon), peak))
    return Utilization(horizon, tuple(streams), tuple(links))


@dataclass(frozen=True)
class RankBubble:
    """Idle time of one rank's compute stream over the step.

    ``overlapped_idle_ns`` is the part of the idle time during which another stream of the same
    GPU (communication, usually) was busy; ``gpu_idle_ns`` the rest, when nothing ran at all.
    """

    rank: int
    busy_ns: int
    idle_ns: int
    leading_idle_ns: int
    trailing_idle_ns: int
    interior_idle_ns: int
    overlapped_idle_ns: int
    gpu_idle_ns: int
    idle_fraction: float
    gpu_idle_fraction: float
    idle_vs_ideal: float | None


@dataclass(frozen=True)
class StageBubble:
    """Mean idle fractions of the ranks that run one pipeline stage."""

    stage: int
    ranks: tuple[int, ...]
    busy_ns: int
    idle_fraction: float
    gpu_idle_fraction: float


@dataclass(frozen=True)
class Bubbles:
    """Compute-stream idle time per rank and per pipeline stage, and over the whole job."""

    makespan_ns: int
    ranks: tuple[RankBubble, ...]
    stages: tuple[StageBubble, ...]
    total_idle_ns: int
    idle_fraction: float
    gpu_idle_fraction: float
    idle_vs_ideal: float | None

    def rank(self, rank: int) -> RankBubble:
        """The entry of one rank; KeyError if unknown."""
        for bubble in self.ranks:
            if bubble.rank == rank:
                return bubble
        raise KeyError(rank)

    def to_dict(self) -> dict[str, Any]:
        return {"makespan_ns": self.makespan_ns, "total_idle_ns": self.total_idle_ns,
                "idle_fraction": self.idle_fraction, "gpu_idle_fraction": self.gpu_idle_fraction,
                "idle_vs_ideal": self.idle_vs_ideal,
                "ranks": {f"gpu{b.rank}": {k: v for k, v in asdict(b).items() if k != "rank"} for b in self.ranks},
                "stages": {str(s.stage): {k: list(v) if k == "ranks" else v for k, v in asdict(s).items()
                                          if k != "stage"} for s in self.stages}}


def _rank_bubble(rank: int, busy: list[tuple[int, int]], other: list[tuple[int, int]], horizon: int) -> RankBubble:
    """Bubble of one rank from its merged busy intervals and its other streams' merged intervals."""
    busy_ns = sum(e - s for s, e in busy)
    idle = horizon - busy_ns
    overlapped = overlap_ns(gaps(busy, horizon), other)
    leading = busy[0][0] if busy else idle
    trailing = horizon - busy[-1][1] if busy else 0
    return RankBubble(rank, busy_ns, idle, leading, trailing, idle - leading - trailing, overlapped,
                      idle - overlapped, _fraction(idle, horizon), _fraction(idle - overlapped, horizon),
                      idle / busy_ns if busy_ns else None)


def _stage_bubbles(recorder: Recorder, per_rank: dict[int, RankBubble],
                   busy_streams: tuple[str, ...]) -> tuple[StageBubble, ...]:
    ranks_of: dict[int, set[int]] = {}
    busy_of: dict[int, int] = {}
    for span in recorder.spans:
        stage = span.args.get("stage") if span.stream in busy_streams else None
        if stage is None:
            continue
        ranks_of.setdefault(int(stage), set()).add(span.rank)
        busy_of[int(stage)] = busy_of.get(int(stage), 0) + span.duration_ns
    out = []
    for stage in sorted(ranks_of):
        ranks = tuple(sorted(ranks_of[stage]))
        out.append(StageBubble(stage, ranks, busy_of[stage], _mean(per_rank[r].idle_fraction for r in ranks),
                               _mean(per_rank[r].gpu_idle_fraction for r in ranks)))
    return tuple(out)


def bubbles(recorder: Recorder, busy_streams: tuple[str, ...] = (COMPUTE_STREAM,)) -> Bubbles:
    """Compute-stream bubbles per rank, per pipeline stage and in total (see module docstring).

    ``busy_streams`` names the streams whose spans count as the GPU doing useful work; add a
    blocking collective stream (e.g. ``("compute", "comm.tp")``) to leave it out of the bubble.
    """
    if isinstance(busy_streams, str) or not busy_streams:
        raise ConfigError("busy_streams", f"must be a non-empty tuple of stream names, got {busy_streams!r}",
                          'pass e.g. ("compute",) or ("compute", "comm.tp")')
    horizon = makespan_ns(recorder)
    ranks = all_ranks(recorder)
    busy: dict[int, list[tuple[int, int]]] = {r: [] for r in ranks}
    other: dict[int, list[tuple[int, int]]] = {r: [] for r in ranks}
    for span in recorder.spans:
        (busy if span.stream in busy_streams else other)[span.rank].append((span.start_ns, span.end_ns))
    per_rank = {r: _rank_bubble(r, merge_intervals(busy[r]), merge_intervals(other[r]), horizon) for r in ranks}
    total_idle = sum(b.idle_ns for b in per_rank.values())
    total_busy = sum(b.busy_ns for b in per_rank.values())
    return Bubbles(horizon, tuple(per_rank.values()), _stage_bubbles(recorder, per_rank, busy_streams), total_idle,
                   _fraction(total_idle, horizon * len(per_rank)), _mean(b.gpu_idle_fraction for b in per_rank.values()),
                   total_idle / total_busy if total_busy else None)


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def pipeline_bubble(recorder: Recorder) -> float:
    """Mean over GPUs of the share of the step in which the GPU neither computes nor runs a
    blocking tensor-parallel collective: the pipeline bubble proper (waiting on other stages,
    on pipeline transfers or on the DP reduction at the end)."""
    return bubbles(recorder, busy_streams=("compute", "comm.tp")).idle_fraction
