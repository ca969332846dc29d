"""Plan parameters fuzzed end to end, and the pre-run size estimate checked against real runs.

Every combination of tp / dp / pp / vpp / ep / microbatches / micro-batch size / schedule (the
registry plus junk) on a tiny dense and a tiny MoE model on one DGX H100 either builds a
simulation or raises a ConfigError naming its field; for every scenario that builds, the
estimate (:mod:`moesim.experiment.estimate`) is within 2x of the tasks actually created. A few
valid scenarios also run, with finite positive results and estimated tasks and flows within 2x
of the real counts; a DeepSeek-V3-on-2048-GPUs scenario is refused in well under 2 s.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import pytest
from fuzzing import time_limit
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from moesim.errors import ConfigError
from moesim.experiment import MoEOptions, ParallelPlan, Scenario
from moesim.experiment.build import build_scenario
from moesim.experiment import estimate as estimate_module
from moesim.experiment.estimate import RunEstimate, RunParts, check_budget, estimate_run
from moesim.schedules import SCHEDULES
from moesim.workload.moe import MoESpec
from moesim.workload.transformer import TransformerSpec

DENSE = TransformerSpec(name="fuzz-dense", num_layers=8, hidden=256, num_heads=8, num_kv_heads=4, head_dim=32,
                        ffn_hidden=1024, vocab=1024, seq_len=128)
MOE = MoESpec(name="fuzz-moe", num_layers=8, hidden=256, num_heads=8, num_kv_heads=8, head_dim=32, ffn_hidden=512,
              vocab=1024, seq_len=128, num_experts=8, top_k=2, expert_ffn_hidden=128, num_shared_experts=1,
              first_k_dense=1)
JUNK = st.sampled_from([0, -1, 3, 16, "2", 2.0, None, True])
DIM = st.one_of(st.sampled_from([1, 1, 2, 2, 4, 8]), JUNK)
SCHEDULE = st.one_of(st.sampled_from(sorted(SCHEDULES)), st.sampled_from(["2f2b", "", "1F1B", "gpipe ", "zb-v2"]))




def config_or_value(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or None for a ConfigError naming its field; anything else fails the test."""
    with time_limit(20.0):
        try:
            return fn(*args)
        except ConfigError as err:
            assert err.field and err.field in str(err), f"message does not name the field: {err}"
            return None


def mostly(valid: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` nineteen times in twenty, else junk."""
    return st.integers(0, 19).flatmap(lambda i: JUNK if i == 19 else valid)


TRIPLES = [(t, d, 8 // (t * d)) for t in (1, 2, 4, 8) for d in (1, 2, 4, 8) if 8 % (t * d) == 0]


@st.composite
def plan_fields(draw: st.DrawFn) -> dict[str, Any]:
    """Plan fields: mostly a (tp, dp, pp) split of the 8 GPUs with an ep dividing dp, sometimes junk."""
    if draw(st.integers(0, 9)) < 8:
        tp, dp, pp = draw(st.sampled_from(TRIPLES))
        ep = draw(st.sampled_from([e for e in (1, 2, 4, 8) if dp % e == 0]))
    else:
        tp, dp, pp, ep = draw(DIM), draw(DIM), draw(DIM), draw(DIM)
    return dict(tp=tp, dp=dp, pp=pp, ep=ep, vpp=draw(mostly(st.sampled_from([1, 1, 1, 2, 4]))),
                num_microbatches=draw(mostly(st.integers(1, 16))),
                micro_batch_size=draw(mostly(st.sampled_from([1, 2]))),
                order=draw(st.sampled_from(["tp-dp-pp", "pp-dp-tp", "dp-tp-pp"])),
                sequence_parallel=draw(st.booleans()), dp_overlap=draw(st.booleans()),
                p2p_overlap=draw(st.booleans()))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario | None:
    """A scenario on dgx_h100 with fuzzed plan fields (None when the plan or scenario is refused)."""
    fields = draw(plan_fields())
    plan = config_or_value(lambda: ParallelPlan(**fields))
    if plan is None:
        return None
    model = draw(st.sampled_from([DENSE, MOE]))
    schedule = draw(mostly(st.sampled_from(sorted(SCHEDULES))).flatmap(
        lambda v: SCHEDULE if not isinstance(v, str) else st.just(v)))
    network = draw(st.sampled_from(["fluid", "analytical"]))
    # a junk schedule (empty, not text) is refused when the Scenario is made: None, like a junk plan
    return config_or_value(lambda: Scenario(name="fuzz", topology="dgx_h100", model=model, plan=plan,
                                            schedule=schedule, network=network))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scn=scenarios())
def test_fuzzed_plans_build_or_name_the_field_and_the_estimate_is_close(scn: Scenario | None) -> None:
    if scn is None:
        event("plan refused")
        return
    estimate = config_or_value(estimate_run, scn)
    built = config_or_value(build_scenario, scn)
    event("built" if built else "build refused")
    if built is None:
        return
    tasks = len(built.sim.tasks)
    assert tasks > 0 and built.tokens_per_step > 0
    assert estimate is not None, "a scenario that builds must have an estimate"
    assert 0.5 <= estimate.tasks / tasks <= 2.0, (estimate, tasks)
    if tasks <= 800:  # small enough to run too: it must finish (no deadlock) with a sane step time
        with time_limit(20.0):
            result = built.sim.run()
        assert 0 < result.makespan_ns < 10**12 and result.num_tasks == tasks


# -- runs and the estimate against them ---------------------------------------------------------
RUNS = {
    "dense-1f1b-tp2": dict(model=DENSE, plan=ParallelPlan(tp=2, pp=4, num_microbatches=8)),
    "dense-interleaved": dict(model=DENSE, plan=ParallelPlan(dp=2, pp=4, vpp=2, num_microbatches=8),
                              schedule="interleaved"),
    "dense-zbv-dp2": dict(model=DENSE, plan=ParallelPlan(tp=2, dp=2, pp=2, num_microbatches=4), schedule="zb-v"),
    "moe-dualpipev-ep4": dict(model=MOE, plan=ParallelPlan(dp=4, pp=2, ep=4, num_microbatches=4), schedule="dualpipev"),
    "moe-eplb-ep8": dict(model=MOE, plan=ParallelPlan(dp=8, ep=8, num_microbatches=2), network="analytical",
                         moe=MoEOptions(placement="eplb", num_redundant=8)),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_valid_plans_run_and_the_estimate_is_within_2x(name: str) -> None:
    scn = Scenario(name=name, topology="dgx_h100", **RUNS[name])
    estimate = estimate_run(scn)
    with time_limit(30.0):
        result = build_scenario(scn).sim.run()
    assert 0 < result.makespan_ns < 10**12 and math.isfinite(result.bytes_moved) and result.bytes_moved > 0
    assert 0.5 <= estimate.tasks / result.num_tasks <= 2.0, (estimate, result.num_tasks)
    assert 0.5 <= estimate.flows / result.num_flows <= 2.0, (estimate, result.num_flows)
    assert estimate.memory_bytes > 0 and estimate.wall_s > 0 and estimate.events >= estimate.tasks


def test_the_estimate_counts_exactly_on_a_dense_plan() -> None:
    # 1f1b, pp=4, 8 microbatches, tp=2, dp=1, one layer chunk per stage:
    # compute: 8 mb x 4 stages x (F, B, W) x 2 TP GPUs = 192; TP all-reduces after F and B: 64,
    # plus W on stage 0 (embedding gradient): 8; sends: 8 mb x 3 boundaries x 2 directions x 2 = 96;
    # optimizer: 8 GPUs. Flows: 72 TP all-reduces x 2(2-1)x2 = 288, plus 96 sends.
    parts = RunParts(ParallelPlan(tp=2, pp=4, num_microbatches=8), "1f1b", DENSE, gpus_per_node=8)
    estimate = estimate_run(parts)
    assert (estimate.tasks, estimate.flows) == (192 + 64 + 8 + 96 + 8, 288 + 96)
    built = build_scenario(Scenario(name="exact", topology="dgx_h100", model=DENSE, plan=parts.plan))
    assert len(built.sim.tasks) == estimate.tasks


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_a_probe_schedule_gives_the_same_counts_as_the_full_one(schedule: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    vpp = 2 if schedule == "interleaved" else 1
    parts = RunParts(ParallelPlan(tp=2, dp=2, pp=4, vpp=vpp, ep=2, num_microbatches=32), schedule, MOE,
                     gpus_per_node=8)
    full = estimate_module.count_run(parts)
    monkeypatch.setattr(estimate_module, "PROBE_ACTION_LIMIT", 0)  # force the small probe schedule
    assert estimate_module.count_run(parts) == full


def deepseek_on_2048_gpus() -> Scenario:
    return Scenario(name="dsv3-2048", topology="dgx_h100", nodes=256, model="deepseek-v3", schedule="dualpipe",
                    plan=ParallelPlan(tp=1, dp=128, pp=16, ep=64, num_microbatches=120))


def test_a_runaway_scenario_is_refused_quickly_with_the_estimate() -> None:
    t0 = time.perf_counter()
    estimate = estimate_run(deepseek_on_2048_gpus())
    with pytest.raises(ConfigError) as err:
        check_budget(estimate)
    assert time.perf_counter() - t0 < 2.0
    message = str(err.value)
    assert f"{estimate.tasks:,} tasks" in message and "GiB" in message
    assert "plan.num_microbatches" in message and "analytical" in message and "--force" in message
    assert estimate.tasks > 10**7 and estimate.memory_bytes > 16 * 2**30


def test_check_budget_passes_small_runs_and_forced_ones() -> None:
    small = RunEstimate(tasks=1000, flows=1000, events=4000, memory_bytes=2e6, wall_s=0.1)
    check_budget(small)
    huge = RunEstimate(tasks=10**9, flows=10**9, events=4 * 10**9, memory_bytes=1e12, wall_s=1e5)
    check_budget(huge, force=True)
    with pytest.raises(ConfigError, match="tasks"):
        check_budget(small, max_tasks=999)
    with pytest.raises(ConfigError, match="GiB"):
        check_budget(small, max_memory_bytes=1e6)
