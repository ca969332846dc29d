"""Measuring the run-size estimate's constants (``moesim.experiment.estimate.CONSTANTS``).

:func:`measure` builds and runs a scenario once and records what it cost; :func:`fit_costs` /
:func:`fit_minimax` fit the time constants to such records (benchmarks/scaling.py --section
estimate --fit) and :func:`fit_memory` the memory constants to peak RSS measured per process
(benchmarks/memory_estimate.py --fit). How and on what scenarios: docs/robustness.md.
Kept apart from ``estimate`` (which ``build`` uses to refuse oversized runs) because it builds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moesim.experiment.build import build_scenario
from moesim.experiment.scenario import Scenario


@dataclass(frozen=True)
class Measured:
    """What one real build + run of a scenario cost (see :func:`measure`)."""

    tasks: int
    flows: int
    events: int
    peak_bytes: float
    wall_s: float
    network: str
    cpu_s: float = 0.0


def measure(scn: Scenario, trace_memory: bool = True) -> Measured:
    """Build and run ``scn`` once, recording tasks, flows, SimPy events, the peak of traced
    Python + numpy memory (tracemalloc; 0 when ``trace_memory`` is off) and the wall time."""
    import time
    import tracemalloc

    if trace_memory:
        tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    built = build_scenario(scn, force=True)
    result = built.sim.run()
    wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    peak = float(tracemalloc.get_traced_memory()[1]) if trace_memory else 0.0
    if trace_memory:
        tracemalloc.stop()
    events = next(built.sim.env._eid)  # SimPy's event-id counter: events scheduled so far
    return Measured(result.num_tasks, result.num_flows, events, peak, wall_s, result.mode, cpu_s)


def fit_per_item(rows: list[tuple[float, float, float]]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` >= 0 with ``y ~ a * tasks + b * flows`` from ``(tasks, flows, y)`` rows."""
    import numpy as np

    x = np.array([[t, f] for t, f, _ in rows], dtype=float)
    y = np.array([v for _, _, v in rows], dtype=float)
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    if (coef < 0).any():  # one term explains it alone: fit that one
        col = int(np.argmax(coef))
        coef = np.zeros(2)
        coef[col] = float(x[:, col] @ y / (x[:, col] @ x[:, col]))
    return float(coef[0]), float(coef[1])


def fit_costs(rows: list[tuple[float, float, float, float, float]], per_task: float | None = None,
              per_flow: float | None = None) -> tuple[float, ...]:
    """Non-negative least squares ``(fixed, per_task, per_flow, per_exchange_flow,
    per_exchange_flow_in_flight)`` with ``y ~ fixed + per_task * tasks + per_flow * flows +
    exchange_flows * (per_exchange_flow + per_exchange_flow_in_flight * in_flight)`` from
    ``(tasks, flows, exchange_flows, in_flight, y)`` rows, weighted by 1/y (relative error).
    ``per_task`` / ``per_flow`` given: held at that value (measured apart, e.g. by
    benchmarks/engine_speed.py, where the rows cannot tell tasks and flows apart)."""
    import numpy as np
    from scipy.optimize import nnls

    data = np.array(rows, dtype=float)
    tasks, flows, exchanged, in_flight, y = data.T
    columns = [np.ones_like(y), tasks, flows, exchanged, exchanged * in_flight]
    pinned = {1: per_task, 2: per_flow}
    rest = y - sum(columns[i] * v for i, v in pinned.items() if v is not None)
    free = [i for i in range(5) if pinned.get(i) is None]
    coef, _ = nnls(np.column_stack([columns[i] for i in free]) / y[:, None], rest / y)
    out = [pinned.get(i) or 0.0 for i in range(5)]
    for i, c in zip(free, coef):
        out[i] = float(c)
    return tuple(out)


def fit_minimax(rows: list[tuple[float, float, float, float, float]], per_task: float, per_flow: float,
                start: tuple[float, float, float]) -> tuple[float, float, float]:
    """``(fixed, per_exchange_flow, per_exchange_flow_in_flight)`` minimising the largest
    |log(estimate / measured)| over the rows (the estimate's promise is a ratio bound, and the
    least-squares fit leaves the few MoE rows to the many dense ones); per-task and per-flow
    costs held. Nelder-Mead from ``start`` (e.g. :func:`fit_costs`'s answer), on scaled terms."""
    import numpy as np
    from scipy.optimize import minimize

    data = np.array(rows, dtype=float)
    tasks, flows, exchanged, in_flight, y = data.T
    scale = np.array([1.0, 1e-4, 1e-7])

    def worst(p: np.ndarray) -> float:
        fixed, a, b = np.abs(p) * scale
        est = fixed + per_task * tasks + per_flow * flows + exchanged * (a + b * in_flight)
        return float(np.max(np.abs(np.log(est / y))))
    res = minimize(worst, np.asarray(start) / scale, method="Nelder-Mead",
                   options={"xatol": 1e-6, "fatol": 1e-6, "maxiter": 20_000})
    fixed, a, b = np.abs(res.x) * scale
    return float(fixed), float(a), float(b)


def fit_memory(rows: list[tuple[float, float, float, float, float, bool, bool, float]], baseline_bytes: float) -> Any:
    """:class:`~moesim.experiment.estimate.MemoryConstants` fitted to measured peak RSS:
    non-negative least squares on the relative error (each row weighted by 1 / its peak) of
    ``peak - baseline_bytes ~ memory_columns(...) . terms`` from ``(tasks, flows, exchange_flows,
    width, in_flight, trace, plots, peak_rss_bytes)`` rows (benchmarks/memory_estimate.py ``--fit``).
    The baseline is measured, not fitted."""
    import numpy as np
    from scipy.optimize import nnls

    from moesim.experiment.estimate import MemoryConstants, memory_columns

    x = np.array([memory_columns(*r[:7]) for r in rows], dtype=float)
    y = np.array([r[7] for r in rows], dtype=float)
    coef, _ = nnls(x / y[:, None], (y - baseline_bytes) / y)
    return MemoryConstants(baseline_bytes, *(float(c) for c in coef))
