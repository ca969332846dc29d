"""The cross-op dependency rules every pipeline schedule obeys (reference section 1.1).

For microbatch j on virtual stage s of one path:

1. F(s, j) needs F(s-1, j).
2. B or BW(s, j) needs F(s, j) and, except on the last stage, the backward of (s+1, j).
3. W(s, j) needs B(s, j).

:func:`cross_deps` returns these as :class:`Dependency` records, each saying whether it
crosses ranks, so the lowering knows where a send/recv pair goes and the dry run where to add
communication time. Ordering between ops of the same rank is the schedule's step order and is
not repeated here.
"""
from __future__ import annotations

from dataclasses import dataclass

from moesim.schedules.model import Action, Schedule


@dataclass(frozen=True)
class Dependency:
    """``action`` must finish before the dependent op starts; ``crosses_ranks`` marks a P2P."""

    action: Action
    crosses_ranks: bool


def cross_deps(schedule: Schedule, action: Action) -> list[Dependency]:
    """The ops that must finish before ``action`` may start (rules 1-3 above)."""
    needed: list[Action] = []
    if action.kind == "F":
        if action.stage > 0:
            needed.append(Action("F", action.stage - 1, action.microbatch, action.path))
    elif action.is_backward:
        needed.append(Action("F", action.stage, action.microbatch, action.path))
        if not schedule.is_last_stage(action.stage):
            needed.append(_backward_of(schedule, action.path, action.stage + 1, action.microbatch))
    else:
        needed.append(Action("B", action.stage, action.microbatch, action.path))
    here = schedule.rank_of(action.path, action.stage)
    return [Dependency(dep, schedule.rank_of(dep.path, dep.stage) != here) for dep in needed]


def _backward_of(schedule: Schedule, path: int, stage: int, microbatch: int) -> Action:
    """The backward op (B or BW, whichever the schedule runs) of one (path, stage, microbatch)."""
    kind = schedule.backward_kind.get((path, stage, microbatch), "BW")
    return Action(kind, stage, microbatch, path)
