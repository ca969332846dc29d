"""Bottleneck ranking and the JSON summary, on recorders whose shares are known exactly."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.analysis import bottlenecks, summarize
from moesim.analysis.bottlenecks import MIN_SHARE
from moesim.engine.recorder import Recorder, Span
from moesim.errors import ConfigError
from moesim.trace.synthetic import synthetic_recorder


def pipeline_recorder() -> Recorder:
    """Two stages: f0 (gpu0) -> send (100 ns) -> f1 (gpu1); the link is 90% busy during the send."""
    rec = Recorder(meta={"num_ranks": 2, "scenario": "pp2", "mode": "analytical",
                         "links": {"link:n0->n1": {"kind": "ib", "bandwidth_gbps": 50.0}}})
    rec.add_span(Span(0, 0, 0, "compute", "f0", "forward", 0, 400, {"stage": 0}))
    rec.add_span(Span(1, 0, 0, "comm.pp_send", "send", "send", 400, 500, {}))
    rec.add_span(Span(1, 1, 1, "comm.pp_recv", "send", "recv", 400, 500, {}))
    rec.add_span(Span(2, 1, 1, "compute", "f1", "forward", 500, 1000, {"stage": 1}))
    rec.task_deps.update({0: (), 1: (0,), 2: (1,)})
    rec.add_counter("link:n0->n1", 400, 0.9)
    rec.add_counter("link:n0->n1", 500, 0.0)
    return rec


def test_ranked_by_share_with_computed_messages() -> None:
    found = bottlenecks(pipeline_recorder(), top=10)
    assert [(b.kind, b.subject) for b in found] == [
        ("pipeline_bubble", "gpu0"), ("critical_comm", "send on comm.pp_send"),
        ("link", "n0->n1 (ib)"), ("stage_imbalance", "gpu1 compute")]
    assert [b.share for b in found] == pytest.approx([0.5, 0.1, 0.09, 0.05])
    assert found[0].message == ("pipeline bubble: gpu0 has nothing running for 50% of the step (its compute stream "
                                "idles 60%: 0% before its first compute, 60% after its last, 0% in gaps; 10% of the "
                                "step under its own communication); mean over 2 GPUs 45%")
    assert found[1].message == "send on comm.pp_send stream on critical path for 10% of the step"
    assert found[2].message.startswith("link n0->n1 (ib) busy 9% of the step")
    assert found[3].message.startswith("gpu1 compute 11% above the median GPU's: stage imbalance, not a slow GPU: "
                                       "pipeline stage 1 carries more compute than the others on all 1 of its GPUs")
    assert [b.kind for b in bottlenecks(pipeline_recorder())] == ["pipeline_bubble", "critical_comm", "link"]
    slow = pipeline_recorder()   # the same step with gpu1 configured slow (faults.slow_gpus): a straggler
    slow.meta["slow_gpus"] = {1: 1.25}
    (found,) = [b for b in bottlenecks(slow, top=10) if b.subject == "gpu1 compute"]
    assert (found.kind, found.message) == ("straggler", "gpu1 compute 11% slower than the median "
                                                        "(straggler: faults.slow_gpus x1.25)")


def test_a_heavier_stage_is_told_from_one_slow_gpu_of_it() -> None:
    """Two GPUs per stage: both of stage 1 heavier is a stage imbalance; one of them alone a straggler."""
    def rec(durations: dict[int, int]) -> Recorder:
        r = Recorder()
        for rank, dur in durations.items():
            r.add_span(Span(rank, rank, 0, "compute", f"f{rank}", "forward", 0, dur, {"stage": rank // 2}))
        return r
    kinds = {b.subject: b.kind for b in bottlenecks(rec({0: 100, 1: 100, 2: 150, 3: 150}), top=10)}
    assert kinds["gpu2 compute"] == "stage_imbalance"
    kinds = {b.subject: b.kind for b in bottlenecks(rec({0: 100, 1: 100, 2: 100, 3: 150}), top=10)}
    assert kinds["gpu3 compute"] == "straggler"


def test_hot_expert_is_named_when_expert_compute_is_the_excess() -> None:
    rec = Recorder()
    for rank, dur in ((0, 100), (1, 100), (2, 300)):
        rec.add_span(Span(rank, rank, 0, "compute", f"experts{rank}", "expert", 0, dur, {"expert": rank}))
    hot = [b for b in bottlenecks(rec, top=10) if b.kind == "hot_expert"]
    assert len(hot) == 1
    assert hot[0].subject == "gpu2 compute"
    assert hot[0].share == pytest.approx(200 / 300)
    assert hot[0].message == ("gpu2 compute 200% slower than the median "
                              "(expert compute 0.2 us above the median: hot expert)")


def test_collective_on_several_streams_is_one_finding_naming_them() -> None:
    rec = Recorder()
    rec.add_span(Span(0, 0, 0, "comm.send>1", "s0", "send", 0, 300, {}))
    rec.add_span(Span(0, 1, 0, "comm.recv<0", "s0", "send", 0, 300, {}))
    rec.add_span(Span(1, 1, 0, "comm.send>2", "s1", "send", 300, 400, {}))
    rec.add_span(Span(2, 2, 0, "compute", "tiny", "forward", 400, 401, {}))
    rec.task_deps.update({1: (0,), 2: (1,)})
    found = bottlenecks(rec, top=10)
    comm = [b for b in found if b.kind == "critical_comm"]
    assert [(b.subject, b.message) for b in comm] == [
        ("send", "send on comm.send>1, comm.send>2 streams on critical path for 100% of the step")]
    assert all(b.share >= MIN_SHARE for b in found)  # the 1 ns compute step is below the noise floor


def test_bad_top_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="top"):
        bottlenecks(pipeline_recorder(), top=0)


def test_empty_recorder_has_no_bottlenecks() -> None:
    assert bottlenecks(Recorder()) == []
    summary = summarize(Recorder())
    assert (summary["makespan_ns"], summary["bottlenecks"], summary["critical_path"]["num_steps"]) == (0, [], 0)


def test_summary_is_json_and_consistent() -> None:
    summary = json.loads(json.dumps(summarize(pipeline_recorder()), allow_nan=False))
    assert (summary["scenario"], summary["mode"], summary["makespan_ns"], summary["num_spans"]) == (
        "pp2", "analytical", 1000, 4)
    assert summary["critical_path"]["by_kind_ns"] == {"compute": 900, "communication": 100}
    assert summary["bubbles"]["ranks"]["gpu0"]["idle_ns"] == 600
    assert summary["utilization"]["links"]["link:n0->n1"]["mean_utilization"] == pytest.approx(0.09)
    assert summary["bottlenecks"][0]["kind"] == "pipeline_bubble"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), num_ranks=st.integers(1, 5), num_tasks=st.integers(0, 40),
       top=st.integers(1, 6))
def test_ranking_is_sorted_and_bounded(seed: int, num_ranks: int, num_tasks: int, top: int) -> None:
    found = bottlenecks(synthetic_recorder(seed, num_ranks, num_tasks, dep_latency_ns=20), top=top)
    assert len(found) <= top
    assert all(a.share >= b.share for a, b in zip(found, found[1:]))
    assert all(MIN_SHARE <= b.share <= 1.0 + 1e-12 and b.message for b in found)
