"""Kernels that run back to back: the fixed cost each profile sample carries once.

Every calibrated sample times one kernel alone in a CUDA-event region after an L2-evicting write,
so each carries the region's fixed cost ``O`` (the event-to-kernel and kernel-to-event gaps and
what the first kernel after the flush pays) once. Run 9 (``moesim.calibrate.chain_probe``,
docs/accuracy.md) timed regions of 1 to 16 back-to-back kernels of eight kinds on an H200: a
region of N kernels lasts ``N x in-stream + O``, ``O = 3.0 us``, and no kernel in a chain takes
less than ``floor = 2.55 us`` (a one-element add). So a kernel queued behind another on the same
stream takes ``max(t - O, floor)`` (its alone time ``t`` when that is already below the floor),
and a sequence of kernels issued back to back is those in-stream times plus ``O`` once, paid by
the first. A profile carries the figures in ``kernel_region`` (``region_ns``, ``floor_ns`` and
their provenance); a cost model without them (the datasheet roofline, which has no region cost
in its times) gives ``(0, 0)`` and every rule here leaves times unchanged.
"""
from __future__ import annotations

from typing import Any, Iterable


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
    times = list(alone_ns)
    if region_ns <= 0 or len(times) <= 1:
        return float(sum(times))
    # never longer than the kernels alone (kernels below the floor cannot shed the region cost)
    return min(float(sum(times)), float(sum(in_stream_ns(t, region_ns, floor_ns) for t in times)) + region_ns)


def sequence(alone_ns: Iterable[float], region_ns: float, floor_ns: float) -> tuple[int, int]:
    """``(total_ns, region_ns)`` of a back-to-back sequence as one engine task: its time on an idle
    stream (:func:`sequence_ns`, rounded) and what it saves when queued behind another task (the
    first kernel's region cost: ``O``, or less for a single kernel near the floor)."""
    times = list(alone_ns)
    total = int(round(sequence_ns(times, region_ns, floor_ns)))
    if not times or region_ns <= 0:
        return total, 0
    queued = int(round(sum(in_stream_ns(t, region_ns, floor_ns) for t in times)))
    return total, max(0, min(total, total - queued))
