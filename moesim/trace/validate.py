"""Structural checks of a Chrome Trace Event JSON trace, mirroring what Perfetto's importer does.

trace_processor cannot run offline here, so this module replays the parts of the importer that
decide whether a trace loads cleanly: required fields per phase, uint32 pid/tid with tid != 0,
events sorted the way Perfetto sorts them (X by descending duration at equal ts) and stacked per
thread with half-open intervals (partial overlaps are errors), numeric finite counter args, and
v1 flows (``s``/``f`` keyed by cat, name, id) that bind to an enclosing slice at both ends.
:func:`validate_chrome_trace` returns a list of human-readable errors; empty means clean.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from numbers import Real
from typing import Any

_UINT32_MAX = 2**32 - 1
_KNOWN_METADATA = {"process_name": "name", "thread_name": "name",
                   "process_sort_index": "sort_index", "thread_sort_index": "sort_index"}


@dataclass(frozen=True)
class Slice:
    """One complete slice as Perfetto would reconstruct it (times in integer ns)."""

    pid: int
    tid: int
    name: str
    ts_ns: int
    dur_ns: int
    depth: int

    @property
    def end_ns(self) -> int:
        return self.ts_ns + self.dur_ns


def to_ns(value: Any) -> int:
    """Microseconds to integer ns, rounded half away from zero like the importer's ``llround``.

    Accepts int, float, numeric strings and ``Decimal`` (from ``json.loads(parse_float=Decimal)``,
    which keeps the printed digits exactly).
    """
    if isinstance(value, Decimal):
        us = value
    elif isinstance(value, int):
        us = Decimal(value)
    else:
        us = Decimal(repr(float(value)))
    return int((us * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _events(trace: Any) -> tuple[list[Any], list[str]]:
    if isinstance(trace, list):
        return trace, []
    if isinstance(trace, dict) and isinstance(trace.get("traceEvents"), list):
        return trace["traceEvents"], []
    return [], ["top level must be a list of events or an object with a traceEvents list"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (Real, Decimal)) and not isinstance(value, bool) and math.isfinite(float(value))


def _check_ids(i: int, ev: dict[str, Any], errors: list[str]) -> None:
    for key in ("pid", "tid"):
        if key in ev and not (isinstance(ev[key], int) and 0 <= ev[key] <= _UINT32_MAX):
            errors.append(f"event {i}: {key} {ev[key]!r} is not a uint32")
    if ev.get("tid") == 0:
        errors.append(f"event {i}: tid 0 merges with the process main thread")


def _check_fields(i: int, ev: Any, errors: list[str]) -> None:
    if not isinstance(ev, dict) or "ph" not in ev:
        errors.append(f"event {i}: not an object with a ph field")
        return
    _check_ids(i, ev, errors)
    ph = ev["ph"]
    if ph != "M" and not _is_number(ev.get("ts")):
        errors.append(f"event {i} ({ph}): ts missing or not a finite number")
    if ph == "X" and not (_is_number(ev.get("dur")) and ev["dur"] >= 0):
        errors.append(f"event {i} (X): dur missing or negative")
    if ph == "X" and "tid" not in ev:
        errors.append(f"event {i} (X): tid missing")
    if ph == "C" and not (isinstance(ev.get("args"), dict) and ev["args"]
                          and all(_is_number(v) for v in ev["args"].values())):
        errors.append(f"event {i} (C): args must be a non-empty object of finite numbers")
    if ph == "M" and ev.get("name") in _KNOWN_METADATA:
        if _KNOWN_METADATA[ev["name"]] not in (ev.get("args") or {}):
            errors.append(f"event {i} (M {ev['name']}): args.{_KNOWN_METADATA[ev['name']]} missing")
        if ev["name"].startswith("thread") and "tid" not in ev:
            errors.append(f"event {i} (M {ev['name']}): tid missing")
    if ph in ("s", "t", "f") and not (isinstance(ev.get("id"), int) and "cat" in ev and "name" in ev):
        errors.append(f"event {i} ({ph}): flow needs an integer id, cat and name")


def replay_slices(events: list[Any], errors: list[str]) -> list[Slice]:
    """Stack X events per thread in Perfetto's order; report partial overlaps; return slices."""
    xs = [ev for ev in events if isinstance(ev, dict) and ev.get("ph") == "X"
          and _is_number(ev.get("ts")) and _is_number(ev.get("dur"))]
    keyed = sorted(((ev["pid"], ev["tid"], to_ns(ev["ts"]), -to_ns(ev["dur"]), n), ev) for n, ev in enumerate(xs))
    slices: list[Slice] = []
    stacks: dict[tuple[int, int], list[Slice]] = {}
    for (pid, tid, ts_ns, neg_dur, _), ev in keyed:
        stack = stacks.setdefault((pid, tid), [])
        while stack and stack[-1].end_ns <= ts_ns:
            stack.pop()
        sl = Slice(pid, tid, str(ev.get("name", "")), ts_ns, -neg_dur, len(stack))
        if stack and sl.end_ns > stack[-1].end_ns:
            errors.append(f"thread ({pid},{tid}): slice {sl.name!r} [{ts_ns},{sl.end_ns}) partially overlaps "
                          f"{stack[-1].name!r} [{stack[-1].ts_ns},{stack[-1].end_ns})")
            continue
        if sl.depth >= 512:
            errors.append(f"thread ({pid},{tid}): slice depth above 512")
        stack.append(sl)
        slices.append(sl)
    return slices


def _encloses(sl: Slice, ts_ns: int) -> bool:
    return sl.ts_ns <= ts_ns < sl.end_ns or (sl.dur_ns == 0 and sl.ts_ns == ts_ns)


def _enclosing(thread: tuple[list[int], list[Slice]], ts_ns: int) -> bool:
    """Whether a slice of the thread (slices in replay order, with their start list) holds ``ts_ns``.

    Scans back from the last slice starting at or before ``ts_ns`` and stops at the first
    top-level slice: every earlier slice lies inside an earlier top-level one, which ended sooner.
    """
    starts, slices = thread
    for k in range(bisect_right(starts, ts_ns) - 1, -1, -1):
        if _encloses(slices[k], ts_ns):
            return True
        if slices[k].depth == 0:
            return False
    return False


def check_flows(events: list[Any], slices: list[Slice], errors: list[str]) -> int:
    """Pair v1 flow starts and ends; each end must sit inside a slice. Returns the pair count."""
    by_thread: dict[tuple[int, int], tuple[list[int], list[Slice]]] = {}
    for sl in slices:  # replay order: by start, longer first at equal start
        starts, thread_slices = by_thread.setdefault((sl.pid, sl.tid), ([], []))
        starts.append(sl.ts_ns)
        thread_slices.append(sl)
    starts: dict[tuple[Any, Any, Any], int] = {}
    ends: dict[tuple[Any, Any, Any], int] = {}
    for i, ev in enumerate(events):
        if not isinstance(ev, dict) or ev.get("ph") not in ("s", "f"):
            continue
        key = (ev.get("cat"), ev.get("name"), ev.get("id"))
        seen = starts if ev["ph"] == "s" else ends
        if key in seen:
            errors.append(f"event {i}: flow {key} has a second {ev['ph']!r} event")
        seen[key] = to_ns(ev["ts"])
        if ev["ph"] == "f" and ev.get("bp") != "e":
            errors.append(f"event {i}: flow end without bp:'e' binds to the next slice, not the enclosing one")
        if not _enclosing(by_thread.get((ev.get("pid"), ev.get("tid")), ([], [])), to_ns(ev["ts"])):
            errors.append(f"event {i}: flow {key} {ev['ph']!r} has no enclosing slice")
    for key in sorted(set(starts) ^ set(ends), key=repr):
        errors.append(f"flow {key} has only one end")
    for key in set(starts) & set(ends):
        if ends[key] < starts[key]:
            errors.append(f"flow {key} ends before it starts")
    return len(set(starts) & set(ends))


def validate_chrome_trace(trace: Any) -> list[str]:
    """All structural problems Perfetto's JSON importer would hit in ``trace`` (empty if none)."""
    events, errors = _events(trace)
    for i, ev in enumerate(events):
        _check_fields(i, ev, errors)
    slices = replay_slices(events, errors)
    check_flows(events, slices, errors)
    return errors
