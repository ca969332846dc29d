"""Kernels that run back to back: the fixed cost each profile sample carries once.

Every calibrated sample times one kernel alone in a CUDA-event region after an L2-evicting write,
so each carries the region's fixed cost ``O`` (the event-to-kernel and kernel-to-event gaps and
what the first kernel after the flush pays) once. Runs 9 and 16 (``lab/chain_probe.py``,
``moesim calibrate run --sections kernel_region``: ``moesim.calibrate.regions``; docs/accuracy.md) timed regions of back-to-back
kernels of eight kinds on two H200 machines: a region of N kernels lasts ``N x in-stream + O``;
``O`` depends on the kernel (0.6-6.9 us over 28 kind-and-state intercepts), their median is
2.13 us, and no kernel in a chain takes less than ``floor = 2.47 us`` (a one-element add). So a kernel queued behind another on the same
stream takes ``max(t - O, floor)`` (its alone time ``t`` when that is already below the floor),
and a sequence of kernels issued back to back is those in-stream times plus ``O`` once, paid by
the first. A profile carries the figures in ``kernel_region`` (``region_ns``, ``floor_ns`` and
their provenance); a cost model without them (the datasheet roofline, which has no region cost
in its times) gives ``(0, 0)`` and every rule here leaves times unchanged.
"""
from __future__ import annotations

import statistics
from typing import Any, Iterable, Sequence

FLOOR_KIND = "tiny"  # the one-element add of the chain measurement: the shortest in-stream kernel


def kernel_region(cost: Any) -> tuple[float, float]:
    """``(region_ns, floor_ns)`` of a cost model; ``(0, 0)`` when it has none."""
    method = getattr(cost, "kernel_region", None)
    return method() if callable(method) else (0.0, 0.0)


def in_stream_ns(alone_ns: float, region_ns: float, floor_ns: float) -> float:
    """A kernel's time queued behind another, from its time alone in a region."""
    if region_ns <= 0 or alone_ns <= floor_ns:
        return alone_ns
    return max(alone_ns - region_ns, floor_ns)


def sequence_ns(alone_ns: Iterable[float], region_ns: float, floor_ns: float) -> float:
    """Kernels issued back to back on one stream: in-stream times plus the region cost once
    (a single kernel keeps its own time; nothing costs nothing; never more than their sum)."""
    return _sequence(list(alone_ns), region_ns, floor_ns)[0]


def sequence(alone_ns: Iterable[float], region_ns: float, floor_ns: float) -> tuple[int, int]:
    """``(total_ns, region_ns)`` of a back-to-back sequence as one engine task: its time on an idle
    stream (:func:`sequence_ns`, rounded) and what it saves when queued behind another task (the
    first kernel's region cost: ``O``, or less for a single kernel near the floor)."""
    times = list(alone_ns)
    total_ns, queued_ns = _sequence(times, region_ns, floor_ns)
    total = int(round(total_ns))
    if not times or region_ns <= 0:
        return total, 0
    return total, max(0, min(total, total - int(round(queued_ns))))


def _sequence(times: list[float], region_ns: float, floor_ns: float) -> tuple[float, float]:
    """(time on an idle stream, time queued behind another task) of kernels run back to back."""
    if region_ns <= 0:
        return float(sum(times)), float(sum(times))
    queued = float(sum(in_stream_ns(t, region_ns, floor_ns) for t in times))
    if len(times) <= 1:
        return float(sum(times)), queued
    # never longer than the kernels alone (kernels below the floor cannot shed the region cost)
    return min(float(sum(times)), queued + region_ns), queued


def region_from_chains(rows: Sequence[dict]) -> "dict | None":
    """``region_ns``, ``floor_ns`` and the per-kind intercepts from chain timings: rows with
    ``kind``, ``state``, ``n`` (kernels in the region) and ``time_ns``. Per (kind, state) the region
    cost is ``2 t(1) - t(2)`` (longer chains of short kernels become host-bound, so only the two
    shortest are used); ``region_ns`` is the median over kinds and states. ``floor_ns`` is
    ``t(2) - t(1)`` of the one-element add (``FLOOR_KIND``), median over states. None without a
    kind timed at both lengths."""
    by: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        by.setdefault((str(r["kind"]), str(r.get("state", ""))), {})[int(r["n"])] = float(r["time_ns"])
    per_kind, floors = [], []
    for (kind, state), t in sorted(by.items()):
        if 1 not in t or 2 not in t:
            continue
        if kind == FLOOR_KIND:
            floors.append(t[2] - t[1])
        else:
            per_kind.append((kind, state, 2.0 * t[1] - t[2]))
    if not per_kind:
        return None
    return {"region_ns": round(float(statistics.median(o for _, _, o in per_kind)), 1),
            "floor_ns": round(float(statistics.median(floors)), 1) if floors else 0.0,
            "per_kind": [[k, s, round(o, 1)] for k, s, o in per_kind]}
