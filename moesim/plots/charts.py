"""Bar charts: GPU stream and link utilisation of a Recorder, and per-expert token load.

``plot_utilization`` reads :func:`moesim.analysis.utilization`: one bar per GPU stream (or, past
``MAX_STREAM_BARS`` streams, one bar per stream name with the min..max range over GPUs) and the
busiest links by time-weighted mean utilisation. ``plot_expert_load`` draws token counts per
expert with the mean and the max/mean imbalance in the title.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes

from moesim.analysis.utilization import Utilization, utilization
from moesim.engine.recorder import Recorder
from moesim.errors import ConfigError
from moesim.plots.style import new_figure, save_figure

MAX_STREAM_BARS = 64
TOP_LINKS = 20


def _stream_bars(ax: Axes, util: Utilization) -> None:
    if len(util.streams) <= MAX_STREAM_BARS:
        labels = [u.resource for u in util.streams]
        ax.bar(range(len(labels)), [u.fraction for u in util.streams], color="#4C72B0")
        ax.set_title("busy fraction per GPU stream")
    else:
        names = sorted({u.stream for u in util.streams})
        values = [[u.fraction for u in util.streams if u.stream == n] for n in names]
        means = np.array([np.mean(v) for v in values])
        spread = np.array([[m - min(v) for m, v in zip(means, values)], [max(v) - m for m, v in zip(means, values)]])
        spread = np.maximum(spread, 0.0)  # equal fractions: the mean can round a hair past min or max
        ax.bar(range(len(names)), means, yerr=spread, color="#4C72B0", capsize=3)
        labels = [f"{n} (x{len(v)})" for n, v in zip(names, values)]
        ax.set_title(f"busy fraction per stream name over {len({u.rank for u in util.streams})} GPUs (mean, min..max)")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("busy / makespan")


def _link_bars(ax: Axes, util: Utilization) -> None:
    top = [u for u in util.busiest_links(TOP_LINKS) if u.mean_utilization > 0]
    ax.barh(range(len(top)), [u.mean_utilization for u in top], color="#C44E52")
    ax.set_yticks(range(len(top)))
    ax.set_yticklabels([u.label for u in top], fontsize=7)
    ax.set_ylim(len(top) - 0.5 if top else 0.5, -0.5)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("time-weighted mean utilisation")
    ax.set_title(f"busiest links (top {len(top)} of {len(util.links)})" if top else "no link traffic recorded")


def plot_utilization(recorder: Recorder, path: str | Path) -> Path:
    """Bar charts of GPU stream busy fractions and the busiest links; PNG at ``path``."""
    util = utilization(recorder)
    fig = new_figure(14.0, 5.5)
    _stream_bars(fig.add_subplot(1, 2, 1), util)
    _link_bars(fig.add_subplot(1, 2, 2), util)
    fig.tight_layout()
    return save_figure(fig, path)


def expert_load_array(loads: Sequence[float] | Mapping[int, float] | np.ndarray) -> np.ndarray:
    """Token counts per expert as a float array indexed by expert id (missing ids count 0)."""
    if isinstance(loads, Mapping):
        if any(not isinstance(k, (int, np.integer)) or k < 0 for k in loads):
            raise ConfigError("loads", "keys must be expert ids (integers >= 0)", "pass {expert_id: tokens}")
        values = np.zeros(max(loads, default=-1) + 1)
        for expert, count in loads.items():
            values[int(expert)] = float(count)
    else:
        values = np.asarray(loads, dtype=float).reshape(-1)
    if values.size == 0:
        raise ConfigError("loads", "no experts given", "pass one token count per expert")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ConfigError("loads", "token counts must be finite and >= 0", "pass non-negative token counts")
    return values


def plot_expert_load(loads: Sequence[float] | Mapping[int, float] | np.ndarray, path: str | Path,
                     title: str = "tokens per expert") -> Path:
    """Bar chart of tokens routed to each expert, with the mean and max/mean imbalance; PNG at ``path``."""
    values = expert_load_array(loads)
    mean = float(values.mean())
    imbalance = float(values.max()) / mean if mean > 0 else 0.0
    fig = new_figure(max(6.0, min(20.0, 0.12 * values.size + 4)), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    hot = values >= values.max() if values.max() > 0 else np.zeros_like(values, dtype=bool)
    ax.bar(np.arange(values.size), values, color=np.where(hot, "#C44E52", "#55A868"))
    ax.axhline(mean, color="black", linewidth=0.8, linestyle="--", label=f"mean {mean:.1f}")
    ax.set_xlabel("expert")
    ax.set_ylabel("tokens")
    ax.set_title(f"{title}: {values.size} experts, max/mean = {imbalance:.2f}")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)
