"""Simulated eager host threads (Scenario.host = "eager", moesim.lowering.host): exact answers,
a property against the issue recurrence, a scenario run, and bad input."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from fabrics import chain
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.engine import Simulation
from moesim.engine.sim import HOST_STREAM
from moesim.errors import ConfigError
from moesim.lowering.host import add_eager_host


def _chain_on_gpu0(durations: list[int], kernels: list[int], launch_ns: float, **sim_kw) -> Simulation:
    sim = Simulation(chain([100.0]), **sim_kw)
    prev = None
    for i, (d, k) in enumerate(zip(durations, kernels)):
        prev = sim.compute(0, d, f"k{i}", deps=[prev] if prev else [], args={"kernels": k})
    add_eager_host(sim, launch_ns, lambda category: 0.0)
    return sim


def test_host_bound_chain_known_answer() -> None:
    # issues end at 15, 30, 45 us; each 10 us task starts at its issue: the last ends at 55 us
    sim = _chain_on_gpu0([10_000] * 3, [1] * 3, 15_000)
    res = sim.run()
    assert res.makespan_ns == 55_000
    gpu = [(s.start_ns, s.end_ns) for s in res.recorder.spans if s.stream == "compute"]
    assert gpu == [(15_000, 25_000), (30_000, 40_000), (45_000, 55_000)]


def test_gpu_bound_chain_known_answer() -> None:
    # issues end at 5, 10, 15 us: only the first task waits; then the GPU sets the pace
    res = _chain_on_gpu0([10_000] * 3, [1] * 3, 5_000).run()
    assert res.makespan_ns == 35_000
    host = [(s.start_ns, s.end_ns) for s in res.recorder.spans if s.stream == HOST_STREAM]
    assert host == [(0, 5_000), (5_000, 10_000), (10_000, 15_000)]


def test_a_task_of_several_kernels_issues_each() -> None:
    assert _chain_on_gpu0([1_000], [4], 2_000).run().makespan_ns == 9_000


def test_a_collective_waits_for_every_rank_to_issue_it() -> None:
    sim = Simulation(chain([100.0]))
    work = sim.compute(0, 10_000, "work", args={"kernels": 1})
    coll = sim.collective("all_reduce", [0, 1], 1e6, "ar", deps=[work])
    add_eager_host(sim, 1_000, lambda category: 20_000.0 if category == "all_reduce" else 0.0)
    res = sim.run()
    # rank 0 issues work (0-1 us) then the call (1-21 us); rank 1 the call (0-20 us)
    assert coll.start_ns == 21_000 and work.start_ns == 1_000
    assert sorted((s.rank, s.start_ns, s.end_ns) for s in res.recorder.spans if s.stream == HOST_STREAM) == \
        [(0, 0, 1_000), (0, 1_000, 21_000), (1, 0, 20_000)]


def test_host_tasks_are_not_slowed_by_gpu_faults_or_overlap() -> None:
    res = _chain_on_gpu0([10_000] * 2, [1] * 2, 3_000, compute_scale={0: 2.0}, overlap_slowdown=1.5).run()
    host = [s.end_ns - s.start_ns for s in res.recorder.spans if s.stream == HOST_STREAM]
    gpu = [s.end_ns - s.start_ns for s in res.recorder.spans if s.stream == "compute"]
    assert host == [3_000, 3_000] and gpu == [20_000, 20_000]


def test_negative_host_time_is_refused() -> None:
    sim = Simulation(chain([100.0]))
    with pytest.raises(ConfigError, match="duration_ns"):
        sim.host(0, -1, "bad")
    with pytest.raises(ConfigError, match="rank"):
        sim.host(5, 10, "bad")


@settings(max_examples=80, deadline=None)
@given(tasks=st.lists(st.tuples(st.integers(0, 50_000), st.integers(1, 6)), min_size=1, max_size=12),
       launch=st.integers(0, 20_000))
def test_a_chain_follows_the_issue_recurrence(tasks: list[tuple[int, int]], launch: int) -> None:
    """start_k = max(end_(k-1), issued_k), issued_k = launch x (kernels up to k)."""
    durations, kernels = [d for d, _ in tasks], [k for _, k in tasks]
    res = _chain_on_gpu0(durations, kernels, launch).run()
    end, issued = 0, 0
    for d, k in tasks:
        issued += k * launch
        end = max(end, issued) + d
    assert res.makespan_ns == max(end, issued)


@pytest.fixture(scope="module")
def small():
    from moesim.experiment import ParallelPlan, Scenario
    from moesim.workload.presets import get_model
    return Scenario(name="small", schedule="1f1b", topology="dgx_h100",
                    model=dataclasses.replace(get_model("llama3-8b"), seq_len=256, num_layers=4),
                    plan=ParallelPlan(tp=2, pp=4, num_microbatches=4))


def test_eager_host_in_a_scenario(small) -> None:
    from moesim.experiment.runner import run_scenario
    ahead, _ = run_scenario(small)
    eager, rec = run_scenario(dataclasses.replace(small, host="eager"))
    again, _ = run_scenario(dataclasses.replace(small, host="eager"))
    assert eager.step_time_ms >= ahead.step_time_ms and eager.step_time_ms == again.step_time_ms
    assert eager.num_tasks > ahead.num_tasks and eager.host_issue["mode"] == "eager"
    assert 0 < eager.host_issue["host_busy_ms"] < eager.step_time_ms
    assert "host_busy_ms" not in ahead.host_issue
    issued = {s.args["issues"] for s in rec.spans if s.stream == HOST_STREAM}
    assert issued == {s.task_id for s in rec.spans if s.stream != HOST_STREAM}  # every GPU task was issued
    slow, _ = run_scenario(dataclasses.replace(small, host="eager", host_launch_us=500.0))
    assert slow.host_issue["launch_source"].startswith("scenario.host_launch_us") and slow.host_issue["launch_us"] == 500.0
    assert slow.host_issue["pricing"] == "per counted kernel"   # the flat figure replaces per-op costs
    assert slow.step_time_ms > 2 * ahead.step_time_ms
    assert any(b.startswith("eager host: GPU") for b in slow.bottlenecks)


@pytest.mark.parametrize("change, field", [({"host": "lazy"}, "scenario.host"),
                                           ({"host_launch_us": -1.0}, "scenario.host_launch_us"),
                                           ({"host_launch_us": "fast"}, "scenario.host_launch_us")])
def test_bad_host_settings_name_the_field(small, change: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(small, **change)
    assert err.value.field == field


def test_set_override_switches_the_host(small) -> None:
    assert small.with_overrides({"host": "eager"}).host == "eager"
    with pytest.raises(ConfigError):
        small.with_overrides({"host": "sometimes"})


def test_a_host_bound_step_names_the_host_on_its_critical_path(small) -> None:
    from moesim.analysis import summarize
    from moesim.experiment.runner import run_scenario
    _, rec = run_scenario(dataclasses.replace(small, host="eager", host_launch_us=500.0))
    found = {b["kind"]: b for b in summarize(rec, top=8)["bottlenecks"]}
    assert found["critical_host"]["share"] > 0.5
    assert found["critical_host"]["message"].startswith("eager host issue on critical path")


def test_the_size_estimate_bounds_an_eager_run(small) -> None:
    from moesim.experiment.estimate import estimate_run
    from moesim.experiment.runner import run_scenario
    ahead, eager = small, dataclasses.replace(small, host="eager")
    assert estimate_run(ahead).tasks == run_scenario(ahead)[0].num_tasks
    assert run_scenario(eager)[0].num_tasks <= estimate_run(eager).tasks <= 3 * estimate_run(ahead).tasks


def test_a_bad_eager_host_record_is_refused() -> None:
    from moesim.costs.profile import profile_from_dict
    path = Path(__file__).resolve().parents[1] / "moesim" / "profiles" / "h200_sxm.json"
    doc = json.loads(path.read_text())
    for bad in ({"per_kernel_ns": -5}, {"per_kernel_ns": "fast"}, [1, 2]):
        with pytest.raises(ConfigError) as err:
            profile_from_dict(dict(doc, eager_host=bad))
        assert err.value.field == "eager_host.per_kernel_ns"


def test_eager_mode_charges_the_profiles_per_op_class_figures(small) -> None:
    """The H200 profile measured host_op rows (2026-12-06): eager issue is priced per op class,
    its in-program per-kernel figure stays the fallback for ops without a class."""
    from moesim.costs.calibrated import CalibratedCostModel
    from moesim.experiment.runner import run_scenario
    r, _ = run_scenario(dataclasses.replace(small, host="eager", cost_model="calibrated", topology="dgx_h200"))
    assert r.host_issue["launch_us"] == round(CalibratedCostModel("h200_sxm").eager_host_ns() / 1e3, 2)
    assert "h200_sxm profile" in r.host_issue["launch_source"]
    assert "host time per op class" in r.host_issue["launch_source"]


def test_the_trace_shows_each_gpus_host_thread_and_is_deterministic(small) -> None:
    from moesim.experiment.runner import run_scenario
    from moesim.trace import dumps_chrome_trace, to_chrome_trace, validate_chrome_trace
    eager = dataclasses.replace(small, host="eager")
    first, second = (dumps_chrome_trace(to_chrome_trace(run_scenario(eager)[1])) for _ in range(2))
    assert first == second  # same inputs, same trace bytes
    doc = json.loads(first)
    validate_chrome_trace(doc)
    names = {e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "thread_name"}
    assert {f"gpu{g} host" for g in range(8)} <= names
    host_rows = {(e["pid"], e["tid"]) for e in doc["traceEvents"] if e.get("ph") == "M" and e.get("name") == "thread_name"
                 and e["args"]["name"].endswith(" host")}
    assert any(e.get("ph") == "X" and (e["pid"], e["tid"]) in host_rows for e in doc["traceEvents"])


def test_program_order_issues_a_send_after_its_producer_and_before_its_consumer() -> None:
    from moesim.lowering.host import program_order
    sim = Simulation(chain([100.0]))
    a = sim.compute(0, 1_000, "A")
    sim.compute(0, 1_000, "B")
    c = sim.compute(1, 1_000, "C")
    send = sim.send(0, 1, 1e6, "A->1", deps=[a])   # made last, as the pipeline lowering wires sends
    sim.add_dep(c, send)
    order = program_order(sim.tasks)
    assert [t.name for t in order[0]] == ["A", "A->1", "B"]
    assert [t.name for t in order[1]] == ["A->1", "C"]


def test_a_pipeline_with_a_fast_enough_host_loses_little(small) -> None:
    """PP4 x DP2 at 4,096 tokens: the host thread is busy a third of the step or less, and issuing
    each send where the program makes it keeps the eager step within 2% of the host-ahead one."""
    from moesim.experiment.runner import run_scenario
    from moesim.workload.presets import get_model
    pp = dataclasses.replace(small, model=dataclasses.replace(get_model("llama3-8b"), seq_len=4096, num_layers=8),
                             plan=dataclasses.replace(small.plan, tp=1, dp=2, pp=4, num_microbatches=8))
    ahead, eager = run_scenario(pp)[0], run_scenario(dataclasses.replace(pp, host="eager"))[0]
    assert eager.host_issue["host_busy_fraction"] < 0.4
    assert ahead.step_time_ms <= eager.step_time_ms < 1.02 * ahead.step_time_ms
