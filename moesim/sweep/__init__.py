"""Design-space sweeps: experiment scenarios x a grid of overrides, run on a process pool or
Ray, streamed to ``results.jsonl`` (resumable), summarised with the Pareto front.

``expand(scenarios, parse_grid(["plan.tp=1,2"]))`` builds the points, ``make_executor("local")``
picks where they run and :func:`run_sweep` runs them into a sweep directory. Names are
imported on first use, so mounting the ``sweep`` command does not load the simulator.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EXECUTORS": "executors", "LocalExecutor": "executors", "RayExecutor": "executors", "SweepAborted": "executors",
    "make_executor": "executors", "SweepPoint": "grid", "expand": "grid", "parse_grid": "grid",
    "select_scenarios": "grid", "front_ids": "pareto", "pareto_front": "pareto", "plot_pareto": "pareto",
    "SweepOutcome": "runner", "run_sweep": "runner", "run_point": "worker",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'moesim.sweep' has no attribute {name!r}")
    return getattr(importlib.import_module(f"moesim.sweep.{_EXPORTS[name]}"), name)
