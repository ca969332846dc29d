"""The Pareto front of a sweep (step time against memory per GPU) and its plot.

:func:`pareto_front` is pure: the indices of the points no other point beats in both
coordinates (smaller is better in each). :func:`plot_pareto` draws every successful point,
the front as a red staircase with labels, and points over the HBM budget as grey crosses
(matplotlib Agg through :mod:`moesim.plots.style`, no pyplot).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from moesim.plots.style import DPI, new_figure, save_figure

MAX_LABELS = 40
LABEL_FONT_PT = 7
LABEL_GAP_PX = 5


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices (ascending) of the non-dominated points, minimising both coordinates.

    ``q`` dominates ``p`` when it is no worse in both coordinates and better in one; equal
    points do not dominate each other, so duplicates on the front all stay. O(n log n).
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front: list[int] = []
    best_y = float("inf")  # lowest y among points lexicographically smaller than the current run
    run_start = 0
    while run_start < len(order):
        key = points[order[run_start]]
        run_end = run_start
        while run_end < len(order) and tuple(points[order[run_end]]) == tuple(key):
            run_end += 1
        if key[1] < best_y:
            front.extend(order[run_start:run_end])
            best_y = key[1]
        run_start = run_end
    return sorted(front)


def front_ids(records: Sequence[dict[str, Any]]) -> list[str]:
    """Ids of the Pareto-optimal points among the successful records that fit in HBM."""
    feasible = [r for r in records if r.get("status") == "ok" and r["result"].get("fits", True)]
    xy = [(r["result"]["step_time_ms"], r["result"]["memory_gib"]) for r in feasible]
    return [feasible[i]["id"] for i in pareto_front(xy)]


def point_label(record: dict[str, Any], keys: Sequence[str], with_base: bool) -> str:
    """Short label from the override values of ``keys`` (``num_microbatches=8 schedule=1f1b``)."""
    parts = [f"{k.rsplit('.', 1)[-1]}={record['overrides'][k]}" for k in keys if k in record["overrides"]]
    if with_base or not parts:
        parts.insert(0, record["base"])
    return " ".join(parts)


def _varying_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    values: dict[str, set[str]] = {}
    for r in records:
        for k, v in r["overrides"].items():
            values.setdefault(k, set()).add(v)
    return sorted(k for k, vs in values.items() if len(vs) > 1)


def _annotate(ax: Any, records: Sequence[dict[str, Any]], with_base: bool) -> None:
    """One label per distinct position (coincident points share it), inside the axes, nudged
    up or down (with a leader line) when it would cover a label already placed."""
    keys = _varying_keys(records)
    at: dict[tuple[float, float], list[str]] = {}
    for r in records:
        at.setdefault((r["result"]["memory_gib"], r["result"]["step_time_ms"]), []).append(point_label(r, keys, with_base))
    ax.autoscale_view()
    x_lo, x_hi = ax.get_xlim()
    placed: list[tuple[float, float, float, float]] = []
    for (x, y), labels in sorted(at.items(), key=lambda item: (-item[0][1], item[0][0])):
        text = "\n".join(labels[:3] + ([f"+{len(labels) - 3} more"] if len(labels) > 3 else []))
        right = x > (x_lo + x_hi) / 2
        px, py = ax.transData.transform((x, y))
        dx, dy = _free_offset(px, py, text, right, placed)
        ax.annotate(text, (x, y), textcoords="offset pixels", xytext=(dx, dy), fontsize=LABEL_FONT_PT,
                    ha="right" if right else "left", va="bottom",
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="#666666") if dy != LABEL_GAP_PX else None)


def _free_offset(px: float, py: float, text: str, right: bool,
                 placed: list[tuple[float, float, float, float]]) -> tuple[float, float]:
    """Pixel offset of a label anchored at (px, py) that overlaps no box in ``placed`` (greedy);
    the chosen box is added to ``placed``."""
    scale = DPI / 72.0
    width = max(len(line) for line in text.splitlines()) * LABEL_FONT_PT * 0.6 * scale
    height = len(text.splitlines()) * LABEL_FONT_PT * 1.25 * scale
    dx = -LABEL_GAP_PX if right else LABEL_GAP_PX
    for step in (0, -1, 1, -2, 2, -3, 3, -4, 4):
        dy = LABEL_GAP_PX + step * (height + 2)
        x0 = px + dx - (width if right else 0.0)
        box = (x0, py + dy, x0 + width, py + dy + height)
        if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
            placed.append(box)
            return dx, dy
    return dx, LABEL_GAP_PX


def plot_pareto(records: Sequence[dict[str, Any]], front: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Step time (y) against memory per GPU (x) of the successful points; front highlighted."""
    ok = [r for r in records if r.get("status") == "ok"]
    on_front = set(front)
    fig = new_figure(10.0, 6.5)
    ax = fig.add_subplot(1, 1, 1)
    groups = {"fits": [r for r in ok if r["id"] not in on_front and r["result"].get("fits", True)],
              "over": [r for r in ok if not r["result"].get("fits", True)],
              "front": sorted((r for r in ok if r["id"] in on_front), key=lambda r: r["result"]["memory_gib"])}
    styles = {"fits": dict(color="#4C72B0", marker="o", alpha=0.6, label="fits in HBM"),
              "over": dict(color="#8C8C8C", marker="x", alpha=0.8, label="over the HBM budget"),
              "front": dict(color="#C44E52", marker="o", s=60, zorder=3, label="Pareto front")}
    for name, group in groups.items():
        if group:
            ax.scatter([r["result"]["memory_gib"] for r in group], [r["result"]["step_time_ms"] for r in group],
                       **styles[name])
    if groups["front"]:
        ax.step([r["result"]["memory_gib"] for r in groups["front"]],
                [r["result"]["step_time_ms"] for r in groups["front"]], where="post", color="#C44E52", lw=1.2)
    _annotate(ax, groups["front"] if len(ok) > MAX_LABELS else ok, with_base=len({r["base"] for r in records}) > 1)
    ax.margins(x=0.08, y=0.1)
    ax.set_xlabel("memory per GPU (GiB)")
    ax.set_ylabel("step time (ms)")
    ax.set_title(title or f"{len(ok)} points, {len(front)} on the Pareto front")
    ax.grid(True, alpha=0.3)
    if ok:
        ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)
