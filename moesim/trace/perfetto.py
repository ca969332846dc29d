"""Chrome Trace Event JSON export of a Recorder, laid out the way Perfetto loads it.

Owns the mapping from recorded spans, arrows and counters to trace events: one process per
host (pid = host + 1, never 0) plus a last "network" process for link counters; one thread per
(GPU, stream) named like ``gpu3 compute`` (tids start at 1, never 0); complete ``X`` events whose
``ts``/``dur`` are microseconds printed exactly from integer nanoseconds (``1234.567``), so no
float rounding can create overlaps; v1 flow events (``s`` inside the source slice, ``f`` with
``bp:"e"`` inside the destination slice, never before the ``s``) for every Arrow; ``C`` counter events for every counter
track. Spans that would partially overlap on one stream go onto extra "lane" threads, so every
thread holds disjoint half-open slices. Output is deterministic: same Recorder, same bytes.
"""
from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.analysis.timeline import resource_name, stream_order
from moesim.engine.recorder import Recorder, Span

COUNTER_ARG_LINK = "utilisation"
COUNTER_ARG_OTHER = "value"
FLOW_CATEGORY = "flow"

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)


class Micros(float):
    """A microsecond value that remembers the exact integer nanoseconds it came from.

    It behaves as the float ``ns / 1000`` everywhere (so the trace dict stays JSON-able), and
    :func:`dumps_chrome_trace` prints it as the exact decimal of ``ns`` / 1000 at any size.
    """

    __slots__ = ("ns",)
    ns: int

    def __new__(cls, ns: int) -> "Micros":
        value = super().__new__(cls, ns / 1000)
        value.ns = ns
        return value

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (Micros, (self.ns,))


def format_micros(ns: int) -> str:
    """Exact decimal microseconds for integer ``ns``: ``1500 -> "1.5"``, ``2000 -> "2.0"``, ``1 -> "0.001"``.

    For ``|ns| < 10**15`` this is exactly ``repr(ns / 1000)`` (a decimal of at most 15 significant
    digits survives the trip through a double), so the fast C JSON encoder prints the same text.
    """
    sign = "-" if ns < 0 else ""
    whole, frac = divmod(abs(ns), 1000)
    return f"{sign}{whole}." + (f"{frac:03d}".rstrip("0") or "0")


def _ns(value: Any) -> int:
    as_int = int(value)
    assert as_int == value, f"times must be integer nanoseconds, got {value!r}"
    return as_int


# -- layout: processes and threads ---------------------------------------------------------
@dataclass(frozen=True)
class ThreadKey:
    """One trace thread: a lane of one stream of one GPU."""

    host: int
    rank: int
    stream: str
    lane: int

    @property
    def name(self) -> str:
        base = resource_name(self.rank, self.stream)
        return base if self.lane == 0 else f"{base} #{self.lane + 1}"

    @property
    def sort_key(self) -> tuple[int, int, tuple[int, str], int]:
        return (self.host, self.rank, stream_order(self.stream), self.lane)


def assign_lanes(spans: list[Span]) -> list[int]:
    """Lane of each span so spans on one lane of a stream never overlap ([start, end) half-open).

    Spans are placed in start order on the lowest lane that is free; a well-formed stream
    (one task at a time) gets lane 0 for everything.
    """
    tracks = [(s.rank, s.stream) for s in spans]   # Span.track, read once per span
    order = sorted(range(len(spans)), key=lambda i: (tracks[i], spans[i].start_ns, spans[i].end_ns, i))
    lanes = [0] * len(spans)
    lane_free_at: dict[tuple[int, str], list[int]] = {}
    for i in order:
        span = spans[i]
        free = lane_free_at.setdefault(tracks[i], [])
        lane = next((k for k, t in enumerate(free) if t <= span.start_ns), len(free))
        if lane == len(free):
            free.append(span.end_ns)
        else:
            free[lane] = span.end_ns
        lanes[i] = lane
    return lanes


@dataclass(frozen=True)
class Layout:
    """pid/tid of every span, in one deterministic numbering."""

    span_threads: tuple[ThreadKey, ...]
    pids: dict[int, int]
    tids: dict[ThreadKey, int]
    network_pid: int


def build_layout(recorder: Recorder) -> Layout:
    """Number hosts and threads: pid = host + 1, tids 1.. per pid in display order."""
    lanes = assign_lanes(recorder.spans)
    made: dict[tuple[int, int, str, int], ThreadKey] = {}   # one ThreadKey per thread, shared by its spans
    keys = tuple(made.get(t) or made.setdefault(t, ThreadKey(*t))
                 for t in ((s.host, s.rank, s.stream, lane) for s, lane in zip(recorder.spans, lanes)))
    hosts = sorted({k.host for k in keys} | _meta_hosts(recorder))
    assert all(h >= 0 for h in hosts), "hosts must be non-negative node indices"
    pids = {h: h + 1 for h in hosts}
    tids: dict[ThreadKey, int] = {}
    next_tid: dict[int, int] = {}
    for key in sorted(set(keys), key=lambda k: k.sort_key):
        next_tid[key.host] = next_tid.get(key.host, 0) + 1
        tids[key] = next_tid[key.host]
    network_pid = (max(hosts) + 2) if hosts else 1
    return Layout(keys, pids, tids, network_pid)


def _meta_hosts(recorder: Recorder) -> set[int]:
    ranks = recorder.meta.get("ranks") or {}
    return {int(info["host"]) for info in ranks.values() if isinstance(info, dict) and "host" in info}


# -- events ----------------------------------------------------------------------------------
_PLAIN_TYPES = (str, int, bool, type(None))


def _plain(value: Any) -> bool:
    """A value JSON prints as itself: str, int, bool, None or a finite float."""
    kind = type(value)
    return kind in _PLAIN_TYPES or (kind is float and math.isfinite(value))


def _jsonable_args(args: dict[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of span args (fast path when every key is a str and every value a plain
    scalar or a flat dict of them, as a segment's ``op_ns``; the same dict :func:`_jsonable` makes)."""
    out: dict[str, Any] = {}
    for k, v in args.items():
        if type(k) is not str:
            return _jsonable(dict(args))
        kind = type(v)
        if kind in _PLAIN_TYPES or (kind is float and math.isfinite(v)):   # _plain(v), inline
            out[k] = v
        elif type(v) is dict and all(type(a) is str and _plain(b) for a, b in v.items()):
            out[k] = dict(v)
        else:
            return _jsonable(dict(args))
    return out


def _jsonable(value: Any) -> Any:
    """Args as plain JSON: tuples to lists, numpy scalars to Python, non-finite floats to text."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if callable(getattr(value, "tolist", None)):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    return str(value)


def _metadata_events(recorder: Recorder, layout: Layout) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for host, pid in sorted(layout.pids.items()):
        events.append({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": f"host{host}"}})
        events.append({"ph": "M", "pid": pid, "name": "process_sort_index", "args": {"sort_index": host}})
    for key, tid in sorted(layout.tids.items(), key=lambda kv: kv[0].sort_key):
        pid = layout.pids[key.host]
        events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": key.name}})
        events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index", "args": {"sort_index": tid}})
    if _counter_tracks(recorder):
        pid = layout.network_pid
        events.append({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": "network"}})
        events.append({"ph": "M", "pid": pid, "name": "process_sort_index", "args": {"sort_index": pid}})
    return events


def _slice_events(recorder: Recorder, layout: Layout) -> list[dict[str, Any]]:
    rows = []
    for idx, (span, key) in enumerate(zip(recorder.spans, layout.span_threads)):
        start, end = _ns(span.start_ns), _ns(span.end_ns)
        assert end >= start, f"span {span.name!r} ends before it starts"
        pid, tid = layout.pids[key.host], layout.tids[key]
        args = _jsonable_args(span.args)
        args["task_id"] = span.task_id
        event = {"ph": "X", "pid": pid, "tid": tid, "ts": Micros(start), "dur": Micros(end - start),
                 "name": span.name, "cat": span.category, "args": args}
        rows.append(((pid, tid, start, start - end, idx), event))
    rows.sort(key=lambda row: row[0])
    return [event for _, event in rows]


def flow_times(src: Span, dst: Span) -> tuple[int, int]:
    """ns of the flow start (inside ``src``) and end (inside ``dst``), start never after end.

    Normally the start sits at the last ns of ``src`` and the end 1 ns into ``dst``, strictly
    inside each slice where it has room. When the two spans overlap in time (a send and its
    receive share one interval) both go to the start of the overlap: Perfetto sorts flow events
    by time, and an end seen before its start would drop the arrow.
    """
    out_ts = src.end_ns - 1 if src.end_ns > src.start_ns else src.start_ns
    in_ts = dst.start_ns + 1 if dst.end_ns - dst.start_ns >= 2 else dst.start_ns
    if out_ts > in_ts:
        overlap_start = max(src.start_ns, dst.start_ns)
        if overlap_start < min(src.end_ns, dst.end_ns):
            return overlap_start, overlap_start
    return out_ts, in_ts


def _flow_events(recorder: Recorder, layout: Layout) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for flow_id, arrow in enumerate(recorder.arrows, start=1):
        src, dst = recorder.spans[arrow.src_span], recorder.spans[arrow.dst_span]
        src_key, dst_key = layout.span_threads[arrow.src_span], layout.span_threads[arrow.dst_span]
        common = {"cat": FLOW_CATEGORY, "name": arrow.name, "id": flow_id}
        out_ts, in_ts = flow_times(src, dst)
        events.append({**common, "ph": "s", "pid": layout.pids[src_key.host], "tid": layout.tids[src_key],
                       "ts": Micros(_ns(out_ts))})
        events.append({**common, "ph": "f", "bp": "e", "pid": layout.pids[dst_key.host],
                       "tid": layout.tids[dst_key], "ts": Micros(_ns(in_ts))})
    return events


def _counter_tracks(recorder: Recorder) -> dict[str, list[tuple[int, float]]]:
    """Per counter track, its step function as (t_ns, value): one sample per time, no repeats."""
    raw: dict[str, dict[int, float]] = {}
    for sample in recorder.counters:
        value = float(sample.value)
        assert math.isfinite(value), f"counter {sample.track!r} has non-finite value {value}"
        raw.setdefault(sample.track, {})[_ns(sample.t_ns)] = value  # the last sample at a time wins
    tracks: dict[str, list[tuple[int, float]]] = {}
    for track in sorted(raw):
        steps: list[tuple[int, float]] = []
        for t_ns in sorted(raw[track]):
            if not steps or steps[-1][1] != raw[track][t_ns]:
                steps.append((t_ns, raw[track][t_ns]))
        tracks[track] = steps
    return tracks


def counter_arg(track: str) -> str:
    """The args key a counter track's value is written under."""
    return COUNTER_ARG_LINK if track.startswith("link:") else COUNTER_ARG_OTHER


def _counter_events(recorder: Recorder, layout: Layout) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for track, steps in _counter_tracks(recorder).items():
        key = counter_arg(track)
        for t_ns, value in steps:
            events.append({"ph": "C", "pid": layout.network_pid, "name": track, "ts": Micros(t_ns),
                           "args": {key: value}})
    return events


def _trace_metadata(recorder: Recorder) -> dict[str, Any]:
    """Scalar run facts for Perfetto's metadata table (nested values go to otherData)."""
    flat = {str(k): _jsonable(v) for k, v in recorder.meta.items() if isinstance(v, (str, int, float, bool))}
    flat["time_unit"] = "us"
    flat["producer"] = "moesim"
    return flat


def to_chrome_trace(recorder: Recorder) -> dict[str, Any]:
    """Build the Chrome Trace Event JSON object for ``recorder``.

    ``ts``/``dur`` values are :class:`Micros` (floats that keep their exact ns); write with
    :func:`write_chrome_trace` or :func:`dumps_chrome_trace` to print them exactly. A run that
    kept each link's utilisation integral instead of its samples (``link_series=False``) has no
    link counters to draw: refused rather than written without them.
    """
    if getattr(recorder, "link_totals", None) is not None and not recorder.num_link_samples:
        raise ValueError("this run kept each link's utilisation integral, not its samples (link_series=False), so "
                         "a trace would lack its link counters: run it with link_series=True to export a trace")
    layout = build_layout(recorder)
    events = (_metadata_events(recorder, layout) + _slice_events(recorder, layout)
              + _flow_events(recorder, layout) + _counter_events(recorder, layout))
    return {"traceEvents": events, "metadata": _trace_metadata(recorder),
            "otherData": _jsonable(recorder.meta)}


EXACT_FLOAT_LIMIT_NS = 10**15  # below this, repr(ns / 1000) is the exact decimal


def _dump_value(value: Any) -> str:
    return format_micros(value.ns) if isinstance(value, Micros) else _ENCODER.encode(value)


def _dump_event_exact(event: dict[str, Any]) -> str:
    return "{" + ",".join(f"{_ENCODER.encode(k)}:{_dump_value(event[k])}" for k in sorted(event)) + "}"


def _needs_exact(events: list[dict[str, Any]]) -> bool:
    return any(isinstance(v, Micros) and abs(v.ns) >= EXACT_FLOAT_LIMIT_NS for e in events for v in e.values())


def dumps_chrome_trace(trace: dict[str, Any]) -> str:
    """Serialise a trace dict: sorted keys, fixed separators, one event per line, exact µs.

    Times below ``EXACT_FLOAT_LIMIT_NS`` go through the C encoder (whose float text is then
    exact); a trace with a larger time is printed key by key from the integer ns instead.
    """
    parts = [f"{_ENCODER.encode(k)}:{_ENCODER.encode(trace[k])}" for k in sorted(trace) if k != "traceEvents"]
    events = trace.get("traceEvents", [])
    dump_event = _dump_event_exact if _needs_exact(events) else _ENCODER.encode
    parts.append('"traceEvents":[\n' + ",\n".join(map(dump_event, events)) + "\n]")
    return "{" + ",".join(parts) + "}\n"


def _slice_lines(recorder: Recorder, layout: Layout) -> list[str]:
    """:func:`_slice_events` as the text :func:`dumps_chrome_trace` prints for them, each task's
    args made JSON once (the spans of one task, e.g. a collective's on every GPU, share them)."""
    encode = _ENCODER.encode
    task_args: dict[tuple[int, int], str] = {}
    names: dict[str, str] = {}
    rows = []
    for idx, (span, key) in enumerate(zip(recorder.spans, layout.span_threads)):
        start, end = _ns(span.start_ns), _ns(span.end_ns)
        assert end >= start, f"span {span.name!r} ends before it starts"
        pid, tid = layout.pids[key.host], layout.tids[key]
        which = (span.task_id, id(span.args))
        args = task_args.get(which)
        if args is None:
            plain = _jsonable_args(span.args)
            plain["task_id"] = span.task_id
            args = task_args[which] = encode(plain)
        name = names.get(span.name) or names.setdefault(span.name, encode(span.name))
        cat = names.get(span.category) or names.setdefault(span.category, encode(span.category))
        line = (f'{{"args":{args},"cat":{cat},"dur":{format_micros(end - start)},"name":{name},"ph":"X",'
                f'"pid":{pid},"tid":{tid},"ts":{format_micros(start)}}}')
        rows.append(((pid, tid, start, start - end, idx), line))
    rows.sort(key=lambda row: row[0])
    return [line for _, line in rows]


def _dumps_recorder(recorder: Recorder) -> str:
    """``dumps_chrome_trace(to_chrome_trace(recorder))``, the same text, with the slices (most of
    a trace) printed straight from the spans rather than through event dicts."""
    layout = build_layout(recorder)
    head = {"metadata": _trace_metadata(recorder), "otherData": _jsonable(recorder.meta)}
    parts = [f"{_ENCODER.encode(k)}:{_ENCODER.encode(head[k])}" for k in sorted(head)]
    events = _metadata_events(recorder, layout)
    rest = _flow_events(recorder, layout) + _counter_events(recorder, layout)
    dump_event = _dump_event_exact if _needs_exact(rest) else _ENCODER.encode
    lines = [*map(_ENCODER.encode, events), *_slice_lines(recorder, layout), *map(dump_event, rest)]
    parts.append('"traceEvents":[\n' + ",\n".join(lines) + "\n]")
    return "{" + ",".join(parts) + "}\n"


def write_chrome_trace(recorder: Recorder, path: str | Path) -> Path:
    """Write ``recorder`` as a Perfetto-loadable JSON trace at ``path``; return the path.

    A path ending in ``.gz`` gets gzip (timestamp 0, so still the same bytes every time); the
    Perfetto UI opens both. The bytes are :func:`dumps_chrome_trace` of :func:`to_chrome_trace`'s
    dict, printed without building it (:func:`_dumps_recorder`).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = _dumps_recorder(recorder).encode("utf-8")
    out.write_bytes(gzip.compress(data, mtime=0) if out.suffix == ".gz" else data)
    return out
