"""What a simulation leaves behind: spans, flow arrows and counters.

The engine writes; Perfetto export, analysis, plots and reports read. Nothing else is shared
between them. All times are integer nanoseconds from the start of the simulation.

* A :class:`Span` is one task occupying one stream of one GPU: ``track`` is
  ``(rank, stream)`` (e.g. ``(3, "compute")``), ``host`` is the node index of that GPU.
  Spans on one track never partially overlap (a stream runs one task at a time).
* An :class:`Arrow` links two spans causally (a pipeline send to the receive, a dependency).
* A :class:`CounterSample` is a step function value on a named counter track (link utilisation
  in [0, 1], bytes in flight...). The value holds from ``t_ns`` until the next sample. The
  engine's link-utilisation samples are kept as numpy arrays (one block per instant) and become
  ``CounterSample`` objects only when ``counters`` is read (a trace). A run that writes no trace
  may keep each link's integral only (``link_totals``), storing no sample.
* ``task_deps`` keeps, for every task id, the ids it waited on, and ``task_spans`` the spans it
  produced, so analysis can walk the critical path.
"""
from __future__ import annotations

import gc
import itertools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np


class Span(NamedTuple):
    """One task on one GPU stream (a NamedTuple: immutable and cheap to create in bulk)."""

    task_id: int
    rank: int
    host: int
    stream: str
    name: str
    category: str
    start_ns: int
    end_ns: int
    args: dict[str, Any]

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def track(self) -> tuple[int, str]:
        return (self.rank, self.stream)


@dataclass(frozen=True, slots=True)
class Arrow:
    """A causal arrow from the end of span ``src`` to the start of span ``dst`` (indices into spans)."""

    src_span: int
    dst_span: int
    name: str


class CounterSample(NamedTuple):
    """Value of counter ``track`` from ``t_ns`` on (a NamedTuple: built by the million from the
    engine's arrays when ``Recorder.counters`` is read)."""

    track: str
    t_ns: int
    value: float


@dataclass
class Recorder:
    """Collects spans, arrows and counters in the order the engine produces them."""

    spans: list[Span] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)
    samples: list[CounterSample] = field(default_factory=list)
    _task_deps: dict[int, tuple[int, ...]] = field(default_factory=dict, repr=False)
    task_names: dict[int, str] = field(default_factory=dict)
    _task_spans: dict[int, list[int]] = field(default_factory=dict, repr=False)
    _spans_indexed: int = field(default=0, repr=False, compare=False)
    meta: dict[str, Any] = field(default_factory=dict)
    record_counters: bool = True
    link_tracks: list[str] = field(default_factory=list)   # counter track name of every link id
    _link_blocks: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)
    # where the network kept each link's utilisation integral instead of samples: horizon_ns ->
    # [(link id, integral x ns, ns above 0, peak)] (moesim.analysis.timeline.link_integrals)
    link_totals: Any = field(default=None, repr=False, compare=False)
    _counters_cache: tuple[tuple[int, int], list[CounterSample]] | None = field(default=None, repr=False, compare=False)
    _deps_of: list[Any] | None = field(default=None, repr=False, compare=False)

    @property
    def task_deps(self) -> dict[int, tuple[int, ...]]:
        """Task id -> the ids of the tasks it waited on (tasks without dependencies absent).
        The engine hands over its tasks (:meth:`deps_from`); the map is built on first read."""
        if self._deps_of is not None:
            tasks, self._deps_of = self._deps_of, None
            deps = self._task_deps
            for t in tasks:
                if t.deps:
                    deps[t.id] = tuple([d.id for d in t.deps])
        return self._task_deps

    def deps_from(self, tasks: list[Any]) -> None:
        """Take ``task_deps`` from ``tasks`` (objects with ``id`` and ``deps``) when first read:
        a run's bookkeeping for analysis, not work of the run itself."""
        self._deps_of = tasks

    def add_span(self, span: Span) -> int:
        """Append a span; return its index."""
        idx = len(self.spans)
        self.spans.append(span)
        return idx

    @property
    def task_spans(self) -> dict[int, list[int]]:
        """Task id -> the indices of its spans, in the order recorded; indexed from ``spans`` on
        read (the engine appends spans only)."""
        spans, start = self.spans, self._spans_indexed
        if start < len(spans):
            index = self._task_spans
            for i in range(start, len(spans)):
                tid = spans[i][0]
                got = index.get(tid)
                if got is None:
                    index[tid] = [i]
                else:
                    got.append(i)
            self._spans_indexed = len(spans)
        return self._task_spans

    def add_arrow(self, src_span: int, dst_span: int, name: str) -> None:
        self.arrows.append(Arrow(src_span, dst_span, name))

    def add_counter(self, track: str, t_ns: int, value: float) -> None:
        if self.record_counters:
            self.samples.append(CounterSample(track, t_ns, value))

    def add_link_samples(self, t_ns: int, link_ids: np.ndarray, values: np.ndarray) -> None:
        """Link utilisation at ``t_ns`` for several links at once (track names: ``link_tracks``)."""
        if self.record_counters:
            self._link_blocks.append((t_ns, link_ids, values))

    def link_sample_arrays(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """The link samples as arrays in recording order: (track names by link id, link ids,
        times in ns, values); an id past the names (none today) reads as the track ``""``."""
        blocks = self._link_blocks
        if not blocks:
            return list(self.link_tracks), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, float)
        ids = np.concatenate([b[1] for b in blocks]).astype(np.int64, copy=False)
        times = np.repeat(np.array([b[0] for b in blocks], dtype=np.int64), [b[1].size for b in blocks])
        return list(self.link_tracks) + [""], ids, times, np.concatenate([b[2] for b in blocks])

    @property
    def num_link_samples(self) -> int:
        return sum(ids.size for _, ids, _ in self._link_blocks)

    @property
    def counters(self) -> list[CounterSample]:
        """Every counter sample: those added one by one, then the link samples, each in the order
        recorded. Built from the stored arrays on the first read after a change (a shared list:
        read it, do not change it)."""
        key = (len(self.samples), len(self._link_blocks))
        if self._counters_cache is None or self._counters_cache[0] != key:
            out = list(self.samples)
            blocks = self._link_blocks
            if blocks:  # in bulk, the cyclic collector paused (it would rescan every live object)
                was_enabled = gc.isenabled()
                gc.disable()
                ids = np.concatenate([b[1] for b in blocks])
                times = np.repeat(np.array([b[0] for b in blocks], dtype=np.int64), [b[1].size for b in blocks])
                values = np.concatenate([b[2] for b in blocks])
                names = np.array(self.link_tracks + [""], dtype=object)[ids].tolist()
                out.extend(map(tuple.__new__, itertools.repeat(CounterSample),
                               zip(names, times.tolist(), values.tolist())))
                if was_enabled:
                    gc.enable()
            self._counters_cache = (key, out)
        return self._counters_cache[1]

    @property
    def end_ns(self) -> int:
        return max((s.end_ns for s in self.spans), default=0)

    def spans_on(self, rank: int, stream: str | None = None) -> list[Span]:
        """Spans of one GPU (optionally one stream), in start order."""
        out = [s for s in self.spans if s.rank == rank and (stream is None or s.stream == stream)]
        out.sort(key=lambda s: (s.start_ns, s.end_ns, s.task_id))
        return out
