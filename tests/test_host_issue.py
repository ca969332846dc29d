"""The eager-host check of moesim run (moesim.analysis.host_issue): exact answers and a run."""
from __future__ import annotations

import dataclasses

from moesim.analysis.host_issue import RISK_RATIO, host_issue, host_issue_message
from moesim.engine.recorder import Recorder, Span
from moesim.lowering.host import HostPricing


def _rec(spans) -> Recorder:
    rec = Recorder()
    for i, (rank, stream, start, end, kernels) in enumerate(spans):
        rec.add_span(Span(i, rank, 0, stream, f"t{i}", "forward", start, end, {"kernels": kernels} if kernels else {}))
    return rec


def test_known_answer_picks_the_gpu_with_the_largest_launch_share() -> None:
    rec = _rec([(0, "compute", 0, 100_000, 10),      # GPU 0: 10 launches for 100 us
                (1, "compute", 0, 40_000, 8),        # GPU 1: 8 launches for 40 us
                (1, "comm.dp", 0, 500_000, 50),      # not a compute stream: ignored
                (2, "compute", 0, 10_000, 0)])       # no kernels counted: ignored
    r = host_issue(rec, HostPricing.flat(5_000.0, source="test"))
    assert (r["gpu"], r["kernels"], r["issue_ms"], r["gpu_busy_ms"], r["ratio"]) == (1, 8, 0.04, 0.04, 1.0)
    assert host_issue_message(r).startswith("eager host issue: GPU 1 launches 8 kernels")
    assert host_issue(rec, HostPricing.flat(0.0)) == {} and host_issue(_rec([]), HostPricing.flat(5_000.0)) == {}
    low = dict(r, ratio=RISK_RATIO / 2)
    assert host_issue_message(low) is None


def test_a_run_reports_it_and_flags_a_small_step() -> None:
    from moesim.experiment import ParallelPlan, Scenario
    from moesim.experiment.runner import run_scenario
    from moesim.workload.presets import get_model
    small = Scenario(name="small", schedule="1f1b", topology="dgx_h100",
                     model=dataclasses.replace(get_model("llama3-8b"), seq_len=256, num_layers=4),
                     plan=ParallelPlan(tp=8, pp=1, num_microbatches=2))
    r = run_scenario(small)[0]
    assert r.host_issue["kernels"] > 0 and "h100_sxm" in r.host_issue["launch_source"].lower()  # the run's own profile
    assert r.host_issue["ratio"] >= RISK_RATIO and any(b.startswith("eager host issue") for b in r.bottlenecks)
    big = dataclasses.replace(small, name="big", model=dataclasses.replace(get_model("llama3-8b"), seq_len=8192, num_layers=4))
    rb = run_scenario(big)[0]
    assert rb.host_issue["ratio"] < r.host_issue["ratio"] / 4   # 32x the tokens, the same launches
