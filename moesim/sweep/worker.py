"""Run one sweep point and return a plain JSON-able record (what crosses process boundaries).

:func:`run_point` is a top-level function so a process pool or Ray can ship it by reference.
It applies the point's overrides to its base scenario, runs :func:`run_scenario` and returns
``{"id", "name", "base", "overrides", "status", "result" | "error", "wall_s"}`` (an ok record also
names ``moesim_version`` and the results ``schema_version``). The Recorder
and the bulky ``analysis`` summary stay in the worker. A :class:`MoesimError` (an invalid
combination, a deadlock) becomes ``status="error"`` with its message; any other exception is
a bug, recorded the same way but with ``error_type`` and the traceback so it is not lost.
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from typing import Any

from moesim import __version__
from moesim.errors import MoesimError
from moesim.experiment import runner
from moesim.experiment.report import RESULTS_SCHEMA_VERSION
from moesim.experiment.scenario import Scenario
from moesim.sweep.grid import SweepPoint

DROPPED_RESULT_KEYS = ("analysis",)


def run_point(point: SweepPoint, base: Scenario) -> dict[str, Any]:
    """Simulate ``base`` with ``point``'s overrides; never raises for a failing scenario."""
    t0 = time.perf_counter()
    record = point.record()
    try:
        scn = dataclasses.replace(base.with_overrides(dict(point.overrides)), name=point.name)
        result, _recorder = runner.run_scenario(scn, link_series=False)
    except MoesimError as err:
        record.update(status="error", error=str(err), error_type=type(err).__name__)
    except Exception as err:  # noqa: BLE001 - a bug in one point must not end a long sweep
        record.update(status="error", error=f"{type(err).__name__}: {err}", error_type=type(err).__name__,
                      unexpected=True, traceback=traceback.format_exc())
    else:
        data = result.to_dict()
        for key in DROPPED_RESULT_KEYS:
            data.pop(key, None)
        record.update(status="ok", result=data, moesim_version=__version__, schema_version=RESULTS_SCHEMA_VERSION)
    record["wall_s"] = round(time.perf_counter() - t0, 4)
    return record


def error_record(point: SweepPoint, message: str, error_type: str, wall_s: float = 0.0) -> dict[str, Any]:
    """The record of a point whose worker died before returning (reported by the executor)."""
    record = point.record()
    record.update(status="error", error=message, error_type=error_type, unexpected=True, wall_s=round(wall_s, 4))
    return record
