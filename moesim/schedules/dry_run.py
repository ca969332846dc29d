"""Dependency-only execution of a schedule with abstract op costs.

Each rank runs its steps strictly in order; a step starts when the rank is free and every
dependency of its actions (:func:`cross_deps`) has finished, plus ``comm`` when the dependency
crosses ranks. Costs are plain floats in any one unit: F = ``t_f``, B = ``t_b`` (input grad
only), W = ``t_w``, BW = ``t_b + t_w``, an overlapped pair = ``t_fb`` (default: the sum of its
two actions). For interleaved schedules pass per-chunk costs. The result carries the timeline
and the usual figures: makespan, per-rank busy / idle / span, peak in-flight activations, and
bubble fractions against the ideal time (Megatron), the makespan, and the per-rank span (the
ZB paper's "bubble rate").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from moesim.errors import ConfigError, DeadlockError
from moesim.schedules.deps import Dependency, cross_deps
from moesim.schedules.model import Action, Overlap, Schedule, Step, actions_of


@dataclass(frozen=True)
class DryRunResult:
    """Timeline and figures of one dry run. Per-rank tuples are indexed by rank."""

    makespan: float
    busy: tuple[float, ...]
    idle: tuple[float, ...]
    span: tuple[float, ...]
    peak_activations: tuple[int, ...]
    step_times: tuple[tuple[tuple[float, float], ...], ...]

    @property
    def span_idle(self) -> tuple[float, ...]:
        """Idle time inside each rank's own span (first start to last end)."""
        return tuple(s - b for s, b in zip(self.span, self.busy))

    @property
    def ideal_time(self) -> float:
        """The busiest rank's compute time: the makespan with no bubble at all."""
        return max(self.busy)

    @property
    def bubble_fraction_ideal(self) -> float:
        """Megatron's bubble time fraction: bubble / ideal time, e.g. (p-1)/m for 1F1B."""
        return _ratio(self.makespan - self.ideal_time, self.ideal_time)

    @property
    def bubble_fraction_total(self) -> float:
        """Bubble / makespan, e.g. (p-1)/(m+p-1) for GPipe."""
        return _ratio(self.makespan - self.ideal_time, self.makespan)

    @property
    def bubble_fraction_span(self) -> float:
        """The ZB paper's bubble rate: (max per-rank span - ideal) / max per-rank span."""
        longest = max(self.span)
        return _ratio(longest - self.ideal_time, longest)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def dry_run(
    schedule: Schedule, t_f: float, t_b: float, t_w: float, comm: float = 0.0, t_fb: float | None = None
) -> DryRunResult:
    """Run ``schedule`` on dependencies alone. Raises :class:`ScheduleDeadlockError` (a
    :class:`DeadlockError`) listing the stuck steps when the step orders cannot finish."""
    _check_costs(t_f=t_f, t_b=t_b, t_w=t_w, comm=comm, t_fb=t_fb)
    deps = _step_deps(schedule)
    cost_of = {"F": t_f, "B": t_b, "W": t_w, "BW": t_b + t_w}
    times: list[list[tuple[float, float]]] = [[] for _ in schedule.steps]
    end: dict[Action, float] = {}
    free = [0.0] * schedule.num_ranks
    progressed = True
    while progressed:
        progressed = False
        for rank, row in enumerate(schedule.steps):
            while len(times[rank]) < len(row):
                index = len(times[rank])
                start = _ready_time(deps[rank][index], end, free[rank], comm)
                if start is None:
                    break
                step = row[index]
                finish = start + _step_cost(step, cost_of, t_fb)
                times[rank].append((start, finish))
                for action in actions_of(step):
                    end[action] = finish
                free[rank] = finish
                progressed = True
    _raise_if_stuck(schedule, times, deps, end)
    return _summarise(schedule, times)


def _check_costs(**costs: float | None) -> None:
    for name, value in costs.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(name, f"op cost must be a finite number >= 0, got {value!r}")


def _step_deps(schedule: Schedule) -> list[list[list[Dependency]]]:
    """Per rank, per step: the dependencies of its actions on ops outside the step."""
    out: list[list[list[Dependency]]] = []
    for row in schedule.steps:
        per_step = []
        for step in row:
            inside = actions_of(step)
            per_step.append([d for a in inside for d in cross_deps(schedule, a) if d.action not in inside])
        out.append(per_step)
    return out


def _ready_time(deps: list[Dependency], end: dict[Action, float], free: float, comm: float) -> float | None:
    ready = free
    for dep in deps:
        finished = end.get(dep.action)
        if finished is None:
            return None
        ready = max(ready, finished + (comm if dep.crosses_ranks else 0.0))
    return ready


def _step_cost(step: Step, cost_of: dict[str, float], t_fb: float | None) -> float:
    if isinstance(step, Overlap) and t_fb is not None:
        return t_fb
    return sum(cost_of[a.kind] for a in actions_of(step))


class ScheduleDeadlockError(DeadlockError):
    """A schedule whose step orders contradict the dependencies; ``positions`` are the
    (rank, step index) cells where each stuck rank waits forever."""

    def __init__(self, stuck: list[str], positions: list[tuple[int, int]]) -> None:
        super().__init__(stuck)
        self.positions = positions


def _raise_if_stuck(
    schedule: Schedule, times: list[list[tuple[float, float]]], deps: list[list[list[Dependency]]], end: dict[Action, float]
) -> None:
    stuck, positions = [], []
    for rank, row in enumerate(schedule.steps):
        index = len(times[rank])
        if index < len(row):
            waiting = [str(d.action) for d in deps[rank][index] if d.action not in end]
            stuck.append(f"rank {rank} step {index} ({row[index]}) waits for {', '.join(waiting)}")
            positions.append((rank, index))
    if stuck:
        raise ScheduleDeadlockError(stuck, positions)


def _summarise(schedule: Schedule, times: list[list[tuple[float, float]]]) -> DryRunResult:
    makespan = max((row[-1][1] for row in times if row), default=0.0)
    busy = tuple(sum(e - s for s, e in row) for row in times)
    span = tuple(row[-1][1] - row[0][0] if row else 0.0 for row in times)
    return DryRunResult(
        makespan=makespan,
        busy=busy,
        idle=tuple(makespan - b for b in busy),
        span=span,
        peak_activations=tuple(peak_activations(row) for row in schedule.steps),
        step_times=tuple(tuple(row) for row in times),
    )


def peak_activations(row: tuple[Step, ...]) -> int:
    """Most microbatch-chunks whose F is done and B/BW is not, over one rank's step order.

    An overlapped pair counts its forward before its backward: while the pair runs, the new
    activation is being built and the old one is not yet freed.
    """
    live = peak = 0
    for step in row:
        for action in actions_of(step):
            live += 1 if action.kind == "F" else -1 if action.is_backward else 0
            peak = max(peak, live)
    return peak
