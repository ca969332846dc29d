"""Critical path of a recorded step: the chain of tasks (and gaps) that decided the makespan.

The walk starts at the task that finished last and repeatedly steps back to whatever actually
delayed the current task's start: among its dependencies (``task_deps``; tasks without spans
are looked through to their own dependencies) and the previous span on each stream the task
occupies, the one that ended last (a dependency wins a tie). A task spanning several GPUs
starts, for this purpose, when its last participant started. Time between the predecessor's
end and the task's start is a *waiting* step. The steps tile [0, makespan] exactly, so the
summaries by kind, category and resource add up to the step time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moesim.analysis.timeline import KIND_WAIT, makespan_ns, resource_name, span_kind, tracks
from moesim.engine.recorder import Recorder, Span

VIA_DEPENDENCY = "dependency"
VIA_STREAM = "stream"
VIA_START = "start"


@dataclass(frozen=True)
class PathStep:
    """One interval of the critical path: a task's span, or a gap the path waited through.

    ``via`` says how the path reached the step before this one (earlier in time) from this one:
    ``dependency`` (a task_deps edge), ``stream`` (the previous task on the same stream) or
    ``start`` (nothing earlier: the path begins here).
    """

    kind: str
    start_ns: int
    end_ns: int
    name: str
    category: str
    rank: int | None
    stream: str | None
    task_id: int | None = None
    span_index: int | None = None
    via: str = VIA_START

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def resource(self) -> str | None:
        return None if self.rank is None or self.stream is None else resource_name(self.rank, self.stream)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "start_ns": self.start_ns, "end_ns": self.end_ns, "name": self.name,
                "category": self.category, "resource": self.resource, "task_id": self.task_id, "via": self.via}


@dataclass(frozen=True)
class CriticalPath:
    """Steps in time order plus where the step time went (each summary sums to the makespan)."""

    makespan_ns: int
    steps: tuple[PathStep, ...]
    by_kind_ns: dict[str, int] = field(default_factory=dict)
    by_category_ns: dict[str, int] = field(default_factory=dict)
    by_resource_ns: dict[str, int] = field(default_factory=dict)

    def share(self, duration_ns: int) -> float:
        """``duration_ns`` as a fraction of the makespan (0 for an empty step)."""
        return duration_ns / self.makespan_ns if self.makespan_ns else 0.0

    def to_dict(self, max_steps: int = 20) -> dict[str, Any]:
        """JSON-able summary with the ``max_steps`` longest steps (in time order)."""
        longest = sorted(range(len(self.steps)), key=lambda i: (-self.steps[i].duration_ns, i))[:max_steps]
        return {"makespan_ns": self.makespan_ns, "num_steps": len(self.steps),
                "by_kind_ns": dict(self.by_kind_ns), "by_category_ns": dict(self.by_category_ns),
                "by_resource_ns": dict(self.by_resource_ns),
                "longest_steps": [self.steps[i].to_dict() for i in sorted(longest)]}


@dataclass(frozen=True)
class _Task:
    task_id: int
    span_ids: tuple[int, ...]
    start_ns: int
    end_ns: int
    rep: int


def _tasks(recorder: Recorder) -> dict[int, _Task]:
    by_task: dict[int, list[int]] = {}
    for idx, span in enumerate(recorder.spans):
        by_task.setdefault(span.task_id, []).append(idx)
    out = {}
    spans = recorder.spans
    for task_id, ids in by_task.items():
        rep = min(ids, key=lambda i: (-spans[i].end_ns, -spans[i].start_ns, i))
        out[task_id] = _Task(task_id, tuple(ids), max(spans[i].start_ns for i in ids),
                             max(spans[i].end_ns for i in ids), rep)
    return out


def _stream_prev(recorder: Recorder) -> dict[int, int]:
    """For each span index, the span just before it on its (rank, stream) track."""
    prev: dict[int, int] = {}
    for ids in tracks(recorder).values():
        for before, after in zip(ids, ids[1:]):
            prev[after] = before
    return prev


class _Walker:
    """Chooses, for a task, the predecessor that ended last."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.tasks = _tasks(recorder)
        self.prev = _stream_prev(recorder)
        self._timed_deps: dict[int, tuple[int, ...]] = {}

    def timed_deps(self, task_id: int) -> tuple[int, ...]:
        """Dependencies that have spans, looking through span-less tasks (memoised, iterative)."""
        if task_id in self._timed_deps:
            return self._timed_deps[task_id]
        found: set[int] = set()
        seen: set[int] = {task_id}
        todo = list(self.recorder.task_deps.get(task_id, ()))
        while todo:
            dep = todo.pop()
            if dep in seen:
                continue
            seen.add(dep)
            if dep in self.tasks:
                found.add(dep)
            else:
                todo.extend(self.recorder.task_deps.get(dep, ()))
        self._timed_deps[task_id] = tuple(sorted(found))
        return self._timed_deps[task_id]

    def predecessor(self, task: _Task, visited: set[int]) -> tuple[_Task, str] | None:
        candidates: list[tuple[int, int, int, str]] = []
        for dep in self.timed_deps(task.task_id):
            candidates.append((self.tasks[dep].end_ns, 1, -dep, VIA_DEPENDENCY))
        for idx in task.span_ids:
            before = self.prev.get(idx)
            if before is not None:
                other = self.recorder.spans[before].task_id
                if other != task.task_id:
                    candidates.append((self.tasks[other].end_ns, 0, -other, VIA_STREAM))
        candidates = [c for c in candidates if -c[2] not in visited]
        if not candidates:
            return None
        best = max(candidates)
        return self.tasks[-best[2]], best[3]


def _task_step(recorder: Recorder, task: _Task, start_ns: int, end_ns: int, via: str) -> PathStep:
    span: Span = recorder.spans[task.rep]
    name = recorder.task_names.get(task.task_id, span.name)
    return PathStep(span_kind(span), start_ns, end_ns, name, span.category, span.rank, span.stream,
                    task.task_id, task.rep, via)


def _wait_step(recorder: Recorder, blocked: _Task, start_ns: int, end_ns: int, cause: str, via: str) -> PathStep:
    spans = recorder.spans
    waiter = spans[max(blocked.span_ids, key=lambda i: (spans[i].start_ns, -i))]
    return PathStep(KIND_WAIT, start_ns, end_ns, f"gap before {waiter.name} ({cause})", KIND_WAIT,
                    waiter.rank, waiter.stream, None, None, via)


def _walk(recorder: Recorder) -> list[PathStep]:
    walker = _Walker(recorder)
    if not walker.tasks:
        return []
    task = max(walker.tasks.values(), key=lambda t: (t.end_ns, t.start_ns, -t.task_id))
    cursor, visited, steps = task.end_ns, set(), []
    while True:
        visited.add(task.task_id)
        seg_end = min(task.end_ns, cursor)
        seg_start = min(task.start_ns, seg_end)
        found = walker.predecessor(task, visited)
        via = found[1] if found else VIA_START
        steps.append(_task_step(recorder, task, seg_start, seg_end, via))
        cursor = seg_start
        if found is None:
            if cursor > 0:
                steps.append(_wait_step(recorder, task, 0, cursor, "nothing earlier", VIA_START))
            break
        pred, _ = found
        if pred.end_ns < cursor:
            pred_name = recorder.task_names.get(pred.task_id, recorder.spans[pred.rep].name)
            steps.append(_wait_step(recorder, task, pred.end_ns, cursor, f"after {pred_name}, a {via} edge", via))
            cursor = pred.end_ns
        task = pred
    steps.reverse()
    return steps


def _add(table: dict[str, int], key: str, value: int) -> None:
    if value:
        table[key] = table.get(key, 0) + value


def critical_path(recorder: Recorder) -> CriticalPath:
    """Walk the critical path of ``recorder`` (see the module docstring for the rule)."""
    steps = _walk(recorder)
    by_kind: dict[str, int] = {}
    by_category: dict[str, int] = {}
    by_resource: dict[str, int] = {}
    for step in steps:
        _add(by_kind, step.kind, step.duration_ns)
        _add(by_category, step.category, step.duration_ns)
        if step.kind != KIND_WAIT and step.resource is not None:
            _add(by_resource, step.resource, step.duration_ns)
    return CriticalPath(makespan_ns(recorder), tuple(steps), _largest_first(by_kind),
                        _largest_first(by_category), _largest_first(by_resource))


def _largest_first(table: dict[str, int]) -> dict[str, int]:
    return dict(sorted(table.items(), key=lambda kv: (-kv[1], kv[0])))
