"""PNG plots of a recorded step: timeline, utilisation and expert load (matplotlib Agg, no pyplot).

``write_plots(recorder, out_dir)`` writes the standard set under fixed file names
(``timeline.png``, ``utilization.png`` and, when loads are given, ``expert_load.png``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from moesim.engine.recorder import Recorder
from moesim.plots.charts import plot_expert_load, plot_utilization
from moesim.plots.timeline import plot_timeline

TIMELINE_PNG = "timeline.png"
UTILIZATION_PNG = "utilization.png"
EXPERT_LOAD_PNG = "expert_load.png"


def write_plots(recorder: Recorder, out_dir: str | Path,
                expert_loads: Sequence[float] | Mapping[int, float] | None = None) -> dict[str, Path]:
    """Write the standard plots into ``out_dir``; return {plot name: path}."""
    out = Path(out_dir)
    written = {"timeline": plot_timeline(recorder, out / TIMELINE_PNG),
               "utilization": plot_utilization(recorder, out / UTILIZATION_PNG)}
    if expert_loads is not None:
        written["expert_load"] = plot_expert_load(expert_loads, out / EXPERT_LOAD_PNG)
    return written


__all__ = ["EXPERT_LOAD_PNG", "TIMELINE_PNG", "UTILIZATION_PNG", "plot_expert_load", "plot_timeline",
           "plot_utilization", "write_plots"]
