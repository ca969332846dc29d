"""Shared look of moesim plots: fixed colours per span category, figure creation and saving.

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas, never through
pyplot, so plotting keeps no global state, opens no window and gives the same PNG for the same
input. Unknown categories get a colour from a fixed palette chosen by a CRC of the name.
"""
from __future__ import annotations

import zlib
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CATEGORY_COLORS: dict[str, str] = {
    "forward": "#4C72B0", "backward": "#DD8452", "weight_grad": "#937860", "optimizer": "#8C8C8C",
    "expert": "#55A868", "router": "#64B5CD", "compute": "#8172B3",
    "all_reduce": "#C44E52", "all_gather": "#DA8BC3", "reduce_scatter": "#CCB974",
    "all_to_all": "#E377C2", "broadcast": "#7F7F7F", "send": "#17BECF", "recv": "#BCBD22",
}
_PALETTE = ("#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#7F7F7F",
            "#BCBD22", "#17BECF", "#AEC7E8", "#FFBB78", "#98DF8A", "#FF9896", "#C5B0D5", "#C49C94")
DPI = 110


def category_color(category: str) -> str:
    """Fixed colour of a span category (stable across runs and processes)."""
    if category in CATEGORY_COLORS:
        return CATEGORY_COLORS[category]
    return _PALETTE[zlib.crc32(category.encode("utf-8")) % len(_PALETTE)]


def category_order(categories: set[str]) -> list[str]:
    """Known categories in their canonical order, then the rest alphabetically."""
    known = [c for c in CATEGORY_COLORS if c in categories]
    return known + sorted(categories - set(CATEGORY_COLORS))


def new_figure(width_in: float, height_in: float) -> Figure:
    """A pyplot-free figure attached to an Agg canvas."""
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG at ``path`` (parent folders created); return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out
