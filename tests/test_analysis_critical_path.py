"""Critical path: exact known answers on hand-built recorders, tiling properties on random ones."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.analysis import critical_path
from moesim.engine.recorder import Recorder, Span
from moesim.trace.synthetic import synthetic_recorder


def _span(rec: Recorder, task: int, rank: int, stream: str, name: str, cat: str, start: int, end: int,
          deps: tuple[int, ...] = ()) -> None:
    rec.add_span(Span(task, rank, 0, stream, name, cat, start, end, {}))
    rec.task_deps[task] = deps
    rec.task_names.setdefault(task, name)


def _summary(rec: Recorder) -> list[tuple[str, int, int, str, str | None, str]]:
    return [(s.kind, s.start_ns, s.end_ns, s.name, s.resource, s.via) for s in critical_path(rec).steps]


def test_chain_across_two_gpus_with_a_gap() -> None:
    rec = Recorder()
    _span(rec, 0, 0, "compute", "f0", "forward", 0, 100)
    _span(rec, 1, 0, "comm.pp_send", "send", "send", 100, 130, deps=(0,))
    _span(rec, 1, 1, "comm.pp_recv", "recv", "recv", 100, 130, deps=(0,))
    _span(rec, 4, 1, "compute", "other", "forward", 0, 50)
    _span(rec, 2, 1, "compute", "f1", "forward", 180, 300, deps=(1,))
    _span(rec, 3, 0, "compute", "f0b", "backward", 100, 160)
    cp = critical_path(rec)
    assert _summary(rec) == [
        ("compute", 0, 100, "f0", "gpu0 compute", "start"),
        ("communication", 100, 130, "send", "gpu0 comm.pp_send", "dependency"),
        ("waiting", 130, 180, "gap before f1 (after send, a dependency edge)", "gpu1 compute", "dependency"),
        ("compute", 180, 300, "f1", "gpu1 compute", "dependency"),
    ]
    assert cp.makespan_ns == 300
    assert cp.by_kind_ns == {"compute": 220, "waiting": 50, "communication": 30}
    assert cp.by_category_ns == {"forward": 220, "waiting": 50, "send": 30}
    assert cp.by_resource_ns == {"gpu1 compute": 120, "gpu0 compute": 100, "gpu0 comm.pp_send": 30}


def test_previous_task_on_the_stream_wins_when_it_ended_later() -> None:
    rec = Recorder()
    _span(rec, 0, 0, "compute", "early", "forward", 0, 100)
    _span(rec, 5, 1, "compute", "long", "forward", 0, 450)
    _span(rec, 6, 1, "compute", "after", "backward", 450, 600, deps=(0,))
    assert _summary(rec) == [("compute", 0, 450, "long", "gpu1 compute", "start"),
                             ("compute", 450, 600, "after", "gpu1 compute", "stream")]


def test_collective_waits_for_its_last_participant() -> None:
    rec = Recorder()
    _span(rec, 8, 0, "comm.dp", "a", "all_gather", 0, 200)
    _span(rec, 9, 1, "comm.dp", "b", "all_gather", 0, 250)
    _span(rec, 10, 0, "comm.dp", "ar", "all_reduce", 200, 300)
    _span(rec, 10, 1, "comm.dp", "ar", "all_reduce", 250, 300)
    assert _summary(rec) == [("communication", 0, 250, "b", "gpu1 comm.dp", "start"),
                             ("communication", 250, 300, "ar", "gpu1 comm.dp", "stream")]


def test_spanless_tasks_are_looked_through_and_leading_idle_is_waiting() -> None:
    rec = Recorder()
    _span(rec, 0, 0, "compute", "first", "forward", 40, 100)
    rec.task_deps[20] = (0,)  # a join task that produced no span
    _span(rec, 21, 1, "compute", "second", "forward", 100, 130, deps=(20,))
    steps = _summary(rec)
    assert steps == [("waiting", 0, 40, "gap before first (nothing earlier)", "gpu0 compute", "start"),
                     ("compute", 40, 100, "first", "gpu0 compute", "start"),
                     ("compute", 100, 130, "second", "gpu1 compute", "dependency")]


def test_empty_recorder_has_an_empty_path() -> None:
    cp = critical_path(Recorder())
    assert (cp.makespan_ns, cp.steps, cp.by_kind_ns) == (0, (), {})


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), num_ranks=st.integers(1, 5), num_tasks=st.integers(1, 50),
       latency_ns=st.sampled_from([0, 7, 300]))
def test_path_tiles_the_step_and_follows_real_edges(seed: int, num_ranks: int, num_tasks: int,
                                                    latency_ns: int) -> None:
    rec = synthetic_recorder(seed, num_ranks, num_tasks, dep_latency_ns=latency_ns)
    cp = critical_path(rec)
    assert cp.steps[0].start_ns == 0 and cp.steps[-1].end_ns == cp.makespan_ns == rec.end_ns
    assert all(a.end_ns == b.start_ns for a, b in zip(cp.steps, cp.steps[1:]))
    assert sum(cp.by_kind_ns.values()) == sum(cp.by_category_ns.values()) == cp.makespan_ns
    waits = [s.duration_ns for s in cp.steps if s.kind == "waiting"]
    assert all(0 < w <= latency_ns for w in waits)
    tasks = [s for s in cp.steps if s.task_id is not None]
    for before, after in zip(tasks, tasks[1:]):
        if after.via == "dependency":
            assert before.task_id in rec.task_deps[after.task_id]
        else:
            assert after.via == "stream"
            assert {sp.track for sp in rec.spans if sp.task_id == before.task_id} & \
                   {sp.track for sp in rec.spans if sp.task_id == after.task_id}
