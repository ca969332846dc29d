"""Timeline plot of a Recorder: one row per GPU stream, one box per span, coloured by category.

Rows follow the trace's order (gpu0 compute, gpu0 comm..., gpu1 ...). Above ``max_spans`` boxes
the plot is downsampled without changing what the eye sees: boxes of one category on one row
closer than a pixel are merged, and if that is still too many the longest boxes are kept; the
title then says how many of the recorded spans are drawn.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.patches import Patch

from moesim.analysis.timeline import makespan_ns, resource_name, tracks
from moesim.engine.recorder import Recorder
from moesim.plots.style import category_color, category_order, new_figure, save_figure

MAX_SPANS = 200_000
PIXELS_WIDE = 2000

Box = tuple[int, int, int]  # (row, start_ns, end_ns)


def time_unit(horizon_ns: int) -> tuple[str, float]:
    """Axis unit for a step of ``horizon_ns``: (label, ns per unit)."""
    if horizon_ns >= 10_000_000:
        return "ms", 1e6
    return ("us", 1e3) if horizon_ns >= 10_000 else ("ns", 1.0)


def _boxes(recorder: Recorder) -> tuple[list[str], dict[str, list[Box]]]:
    rows, by_cat = [], {}
    spans = recorder.spans
    for row, ((rank, stream), ids) in enumerate(tracks(recorder).items()):
        rows.append(resource_name(rank, stream))
        for i in ids:
            by_cat.setdefault(spans[i].category, []).append((row, spans[i].start_ns, spans[i].end_ns))
    return rows, by_cat


def _merge_close(boxes: list[Box], gap_ns: float) -> list[Box]:
    merged: list[Box] = []
    for row, start, end in sorted(boxes):
        if merged and merged[-1][0] == row and start - merged[-1][2] <= gap_ns:
            merged[-1] = (row, merged[-1][1], max(merged[-1][2], end))
        else:
            merged.append((row, start, end))
    return merged


def downsample(by_cat: dict[str, list[Box]], horizon_ns: int, max_spans: int) -> dict[str, list[Box]]:
    """At most ``max_spans`` boxes: merge sub-pixel gaps, then keep the longest boxes."""
    if sum(map(len, by_cat.values())) <= max_spans:
        return by_cat
    gap_ns = horizon_ns / PIXELS_WIDE
    merged = {cat: _merge_close(boxes, gap_ns) for cat, boxes in by_cat.items()}
    flat = [(box[2] - box[1], cat, box) for cat, boxes in merged.items() for box in boxes]
    if len(flat) > max_spans:
        flat.sort(key=lambda item: (-item[0], item[1], item[2]))
        flat = flat[:max_spans]
    kept: dict[str, list[Box]] = {}
    for _, cat, box in sorted(flat, key=lambda item: (item[1], item[2])):
        kept.setdefault(cat, []).append(box)
    return kept


def _polygons(boxes: list[Box], ns_per_unit: float) -> np.ndarray:
    arr = np.asarray(boxes, dtype=float).reshape(-1, 3)
    row, x0, x1 = arr[:, 0], arr[:, 1] / ns_per_unit, arr[:, 2] / ns_per_unit
    lo, hi = row - 0.4, row + 0.4
    return np.stack([np.stack([x0, lo], 1), np.stack([x1, lo], 1), np.stack([x1, hi], 1),
                     np.stack([x0, hi], 1)], axis=1)


def plot_timeline(recorder: Recorder, path: str | Path, max_spans: int = MAX_SPANS) -> Path:
    """Draw the per-GPU-stream timeline of ``recorder`` to the PNG ``path``; return the path."""
    rows, by_cat = _boxes(recorder)
    horizon = makespan_ns(recorder)
    shown = downsample(by_cat, horizon, max_spans)
    unit, ns_per_unit = time_unit(horizon)
    fig = new_figure(14.0, min(40.0, 1.6 + 0.24 * max(1, len(rows))))
    ax = fig.add_subplot(1, 1, 1)
    cats = category_order(set(shown))
    for cat in cats:
        ax.add_collection(PolyCollection(_polygons(shown[cat], ns_per_unit), facecolors=category_color(cat),
                                         edgecolors="none"))
    _decorate(ax, rows, horizon / ns_per_unit, unit)
    if cats:
        ax.legend(handles=[Patch(color=category_color(c), label=c) for c in cats], loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    num_spans, num_boxes = len(recorder.spans), sum(map(len, shown.values()))
    note = f" (downsampled: {num_boxes} boxes for {num_spans} spans)" if shown is not by_cat else ""
    ax.set_title(f"{recorder.meta.get('scenario', 'timeline')}: {num_spans} spans{note}")
    fig.tight_layout()
    return save_figure(fig, path)


def _decorate(ax: Axes, rows: list[str], width: float, unit: str) -> None:
    step = max(1, len(rows) // 80)
    ax.set_yticks(range(0, len(rows), step))
    ax.set_yticklabels(rows[::step], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, width if width > 0 else 1)
    ax.set_xlabel(f"time ({unit})")
    ax.grid(axis="x", linewidth=0.3)
