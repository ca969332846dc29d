"""The schedule validator, separate from generation (reference section 6, invariants 1-3).

:func:`validate` checks, in order, and stops at the first broken rule:

1. every action names a stage, microbatch and path that exist, and runs on the rank that owns
   its stage;
2. every (path, stage, microbatch) has exactly one F and exactly one full backward: a BW, or a
   B plus one W;
3. on each rank F(s, j) comes before the backward of (s, j), and B(s, j) before W(s, j); each
   stage runs its forwards, its backwards and its W's in increasing microbatch order;
4. a dependency-only run finishes (no deadlock).

The :class:`ConfigError` it raises carries a step-by-rank grid with the bad step in brackets.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from moesim.errors import ConfigError
from moesim.schedules.dry_run import ScheduleDeadlockError, dry_run
from moesim.schedules.grid import render_grid
from moesim.schedules.model import Action, Schedule, actions_of

_CONTEXT_STEPS = 6
_MAX_WINDOW = 40


def validate(schedule: Schedule) -> None:
    """Raise :class:`ConfigError` if ``schedule`` breaks a structural rule or deadlocks."""
    _check_placement(schedule)
    _check_counts(schedule)
    _check_order(schedule)
    try:
        dry_run(schedule, 1.0, 1.0, 1.0)
    except ScheduleDeadlockError as err:
        _fail(schedule, "the step orders deadlock:\n  " + "\n  ".join(err.stuck), err.positions,
              "reorder the steps so every op's dependencies can finish first")


def _fail(schedule: Schedule, problem: str, marks: list[tuple[int, int]], fix: str = "") -> None:
    grid = render_grid(schedule, marks=marks, steps=_window(schedule, marks))
    raise ConfigError(f"schedule {schedule.name!r}", f"{problem}\n{grid}", fix)


def _window(schedule: Schedule, marks: list[tuple[int, int]]) -> range:
    """Step columns around the marked cells, so long schedules stay readable."""
    longest = max((len(row) for row in schedule.steps), default=0)
    if not marks:
        return range(min(longest, _MAX_WINDOW))
    low, high = min(i for _, i in marks), max(i for _, i in marks)
    if high - low > _MAX_WINDOW:
        high = low
    return range(max(0, low - _CONTEXT_STEPS), min(longest, high + _CONTEXT_STEPS + 1))


def _positions(schedule: Schedule) -> Iterator[tuple[int, int, Action]]:
    for rank, row in enumerate(schedule.steps):
        for index, step in enumerate(row):
            for action in actions_of(step):
                yield rank, index, action


def _check_placement(schedule: Schedule) -> None:
    limits = (("path", schedule.num_paths), ("stage", schedule.num_stages),
              ("microbatch", schedule.microbatches_per_path))
    for rank, index, action in _positions(schedule):
        for field, limit in limits:
            if getattr(action, field) >= limit:
                _fail(schedule, f"rank {rank} step {index} ({action}) has {field} {getattr(action, field)}, "
                      f"but the schedule has only {limit}", [(rank, index)])
        owner = schedule.rank_of(action.path, action.stage)
        if owner != rank:
            _fail(schedule, f"rank {rank} step {index} runs {action}, but stage {action.stage} of path "
                  f"{action.path} belongs to rank {owner}", [(rank, index)], f"move it to rank {owner}")


def _check_counts(schedule: Schedule) -> None:
    seen: dict[tuple[str, tuple[int, int, int]], list[tuple[int, int]]] = defaultdict(list)
    for rank, index, action in _positions(schedule):
        seen[(action.kind, action.key)].append((rank, index))
    for (kind, key), where in sorted(seen.items()):
        if len(where) > 1:
            _fail(schedule, f"{kind} of (path, stage, microbatch) {key} appears {len(where)} times", where)
    for key in _all_keys(schedule):
        count = {kind: len(seen.get((kind, key), ())) for kind in ("F", "B", "W", "BW")}
        backward_ok = (count["BW"], count["B"], count["W"]) in ((1, 0, 0), (0, 1, 1))
        if count["F"] != 1 or not backward_ok:
            path, stage, microbatch = key
            marks = [pos for kind in count for pos in seen.get((kind, key), ())]
            _fail(schedule, f"path {path} stage {stage} microbatch {microbatch} (rank "
                  f"{schedule.rank_of(path, stage)}) needs one F and one BW or B+W, has {_describe(count)}", marks)


def _all_keys(schedule: Schedule) -> Iterator[tuple[int, int, int]]:
    for path in range(schedule.num_paths):
        for stage in range(schedule.num_stages):
            for microbatch in range(schedule.microbatches_per_path):
                yield (path, stage, microbatch)


def _describe(count: dict[str, int]) -> str:
    parts = [f"{n} {kind}" for kind, n in count.items() if n]
    return ", ".join(parts) or "no ops"


def _check_order(schedule: Schedule) -> None:
    for rank, row in enumerate(schedule.steps):
        done: set[tuple[str, tuple[int, int, int]]] = set()
        last: dict[tuple[str, int, int], int] = {}
        for index, step in enumerate(row):
            for action in actions_of(step):
                _check_prerequisite(schedule, rank, index, action, done)
                _check_fifo(schedule, rank, index, action, last)
            done.update((a.kind if a.kind != "BW" else "B", a.key) for a in actions_of(step))


def _check_prerequisite(schedule: Schedule, rank: int, index: int, action: Action, done: set) -> None:
    needs = "F" if action.is_backward else "B" if action.kind == "W" else None
    if needs and (needs, action.key) not in done:
        _fail(schedule, f"rank {rank} step {index} runs {action} before {needs} of the same microbatch "
              f"and stage", [(rank, index)], f"put {needs} first")


def _check_fifo(schedule: Schedule, rank: int, index: int, action: Action, last: dict) -> None:
    group = "F" if action.kind == "F" else "backward" if action.is_backward else "W"
    slot = (group, action.path, action.stage)
    previous = last.get(slot, -1)
    if action.microbatch <= previous:
        _fail(schedule, f"rank {rank} step {index} runs {group} of microbatch {action.microbatch} on stage "
              f"{action.stage} after microbatch {previous}; each stage runs them in increasing order",
              [(rank, index)])
    last[slot] = action.microbatch
