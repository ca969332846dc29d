"""Run a sweep: skip what ``results.jsonl`` already holds, stream new records to it, then
write ``summary.md`` and ``pareto.png``.

:func:`run_sweep` is the one entry point (the CLI and Python callers use it). Ctrl-C stops
the executor, keeps every finished point on disk, still writes the summary of what finished,
and returns with ``interrupted=True``: rerunning the same sweep resumes it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from moesim.sweep.executors import Executor, Task
from moesim.sweep.pareto import front_ids, plot_pareto
from moesim.sweep.report import summary_markdown
from moesim.sweep.store import ResultsStore

SUMMARY_FILE = "summary.md"
PARETO_FILE = "pareto.png"


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep run did. ``records`` holds the latest record of each point of this sweep
    that has one (run now or earlier), in point order; ``front`` the Pareto-optimal ids."""

    out_dir: Path
    records: tuple[dict[str, Any], ...]
    num_points: int
    num_run: int
    num_skipped: int
    interrupted: bool
    front: tuple[str, ...]
    wall_s: float
    bad_lines: tuple[int, ...] = ()  # lines of results.jsonl that could not be read (their points ran again)

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") == "ok"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") != "ok"]

    @property
    def unexpected(self) -> list[dict[str, Any]]:
        """Failures that were bugs rather than invalid combinations."""
        return [r for r in self.failed if r.get("unexpected")]


def split_done(tasks: Sequence[Task], previous: dict[str, dict[str, Any]],
               retry_failed: bool) -> tuple[list[Task], list[Task]]:
    """(to run, to skip): a point is skipped when it has a record, unless that record is a
    failure and ``retry_failed``."""
    todo, skipped = [], []
    for task in tasks:
        rec = previous.get(task[0].id)
        done = rec is not None and (rec.get("status") == "ok" or not retry_failed)
        (skipped if done else todo).append(task)
    return todo, skipped


def run_sweep(tasks: Sequence[Task], out_dir: str | Path, executor: Executor, *, title: str = "sweep",
              retry_failed: bool = False, on_start: Callable[[int, int], None] | None = None,
              on_record: Callable[[dict[str, Any]], None] | None = None,
              on_todo: Callable[[Sequence[Task]], None] | None = None) -> SweepOutcome:
    """Run the points of ``tasks`` not yet in ``out_dir/results.jsonl``; write the summary and plot.

    ``on_start(num_to_run, num_skipped)`` is called once before running, ``on_record(record)``
    after each finished point (for a progress bar), ``on_todo(tasks)`` once with the points to run.
    """
    out = Path(out_dir)
    ids = [point.id for point, _base in tasks]
    assert len(set(ids)) == len(ids), "duplicate sweep points"
    store = ResultsStore(out)
    previous = store.load()
    todo, skipped = split_done(tasks, previous, retry_failed)
    if on_start:
        on_start(len(todo), len(skipped))
    if on_todo:
        on_todo(todo)
    fresh, interrupted, t0 = {}, False, time.perf_counter()
    with store:
        try:
            for record in executor.run(todo):
                store.append(record)
                fresh[record["id"]] = record
                if on_record:
                    on_record(record)
        except KeyboardInterrupt:
            interrupted = True
    latest = {**previous, **fresh}
    records = tuple(latest[i] for i in ids if i in latest)
    front = tuple(write_outputs(out, title, records, len(tasks)))
    return SweepOutcome(out, records, len(tasks), len(fresh), len(skipped), interrupted, front,
                        time.perf_counter() - t0, tuple(store.bad_lines))


def write_outputs(out: Path, title: str, records: Sequence[dict[str, Any]], num_points: int) -> list[str]:
    """Write ``summary.md`` and ``pareto.png``; return the Pareto-optimal ids."""
    front = front_ids(records)
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_FILE).write_text(summary_markdown(title, records, front, num_points), encoding="utf-8")
    plot_pareto(records, front, out / PARETO_FILE, title=f"{title}: step time vs memory per GPU")
    return front
