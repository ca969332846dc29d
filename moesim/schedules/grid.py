"""Step-by-rank text grids of a schedule, for people (CLI output and error messages).

Without a dry-run result the columns are step indices; marked cells are drawn in brackets (the
validator uses this to point at the bad step). With a :class:`DryRunResult` the columns are
time slots one shortest-op long: a step's label sits in the slot where it starts, "-" fills the
rest of its run and "." is idle. Either way columns wrap into blocks that fit ``width``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from moesim.schedules.dry_run import DryRunResult
from moesim.schedules.model import Schedule

_MAX_SLOTS = 400


def render_grid(
    schedule: Schedule,
    result: DryRunResult | None = None,
    width: int = 120,
    marks: Iterable[tuple[int, int]] = (),
    steps: range | None = None,
) -> str:
    """Rows = ranks; columns = steps, or time slots when ``result`` is given.

    ``marks`` are (rank, step index) cells to bracket; ``steps`` limits the step columns shown.
    """
    if result is not None:
        headers, rows = _time_cells(schedule, result)
        return _render(headers, rows, width, set())
    longest = max((len(row) for row in schedule.steps), default=0)
    shown = list(steps if steps is not None else range(longest))
    rows = [[str(row[i]) if i < len(row) else "" for i in shown] for row in schedule.steps]
    marked = {(rank, shown.index(i)) for rank, i in marks if i in shown}
    return _render([str(i) for i in shown], rows, width, marked)


def _time_cells(schedule: Schedule, result: DryRunResult) -> tuple[list[str], list[list[str]]]:
    durations = [end - start for row in result.step_times for start, end in row if end > start]
    unit = min(durations, default=1.0)
    if result.makespan / unit > _MAX_SLOTS:
        unit = result.makespan / _MAX_SLOTS
    slots = max(1, math.ceil(result.makespan / unit - 1e-9))
    rows = []
    for rank, row in enumerate(schedule.steps):
        cells = ["."] * slots
        for step, (start, end) in zip(row, result.step_times[rank]):
            first = min(slots - 1, round(start / unit))
            last = min(slots, max(first + 1, round(end / unit)))
            cells[first] = str(step)
            for i in range(first + 1, last):
                if cells[i] == ".":
                    cells[i] = "-"
        rows.append(cells)
    return [f"{i * unit:.4g}" for i in range(slots)], rows


def _render(headers: Sequence[str], rows: list[list[str]], width: int, marks: set[tuple[int, int]]) -> str:
    label = "rank {:>%d} |" % len(str(max(len(rows) - 1, 0)))
    label_width = len(label.format(0))
    cell = 2 + max([len(h) for h in headers] + [len(t) for row in rows for t in row] + [1])
    per_block = max(1, (width - label_width) // cell)
    lines: list[str] = []
    for low in range(0, max(len(headers), 1), per_block):
        block = range(low, min(len(headers), low + per_block))
        lines.append((" " * label_width + "".join(f"{headers[i]:^{cell}}" for i in block)).rstrip())
        for rank, row in enumerate(rows):
            cells = "".join(_cell(row[i], (rank, i) in marks, cell) for i in block)
            lines.append((label.format(rank) + cells).rstrip())
    return "\n".join(lines)


def _cell(token: str, marked: bool, cell: int) -> str:
    text = f"[{token}]" if marked else f" {token} "
    return f"{text:<{cell}}"
