"""``host_speed``: the eager host priced at the mean of a profile's host runs, or at its slowest or
fastest run (:func:`moesim.costs.host_classes.run_speeds`)."""
from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.costs.calibrated import CalibratedCostModel
from moesim.costs.host_classes import MIN_RUN_CLASSES, run_speeds, speed_factor
from moesim.errors import ConfigError
from moesim.experiment.block import block_scenario, simulate_block
from moesim.experiment.scenario import MoEOptions, Scenario
from moesim.lowering.resolve import resolve_cost_model
from moesim.ops import Gemm


def _rows(factors: dict[int, float], classes: int = MIN_RUN_CLASSES) -> list[dict]:
    """Rows of every run for ``classes`` classes: class i at (i + 1) us times the run's factor."""
    return [{"call": f"c{i}", "phase": "fwd", "time_ns": 1000.0 * (i + 1) * f, "run": run}
            for run, f in factors.items() for i in range(classes)]


def test_run_speeds_are_each_runs_factor_on_the_geometric_mean() -> None:
    got = run_speeds(_rows({1: 1.0, 2: 2.0, 3: 4.0}))
    assert got == pytest.approx({1: 0.5, 2: 1.0, 3: 2.0})
    # a run with too few shared classes says little about its host: left out
    few = _rows({1: 1.0, 2: 2.0}) + [{"call": "c0", "phase": "fwd", "time_ns": 9e9, "run": 9}]
    assert set(run_speeds(few)) == {1, 2}


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(0, 20), st.floats(0.2, 5.0), min_size=2, max_size=6))
def test_run_speeds_recover_any_runs_relative_speeds(factors: dict[int, float]) -> None:
    """Runs whose every class is the same multiple of a base: the speeds are those multiples over
    their geometric mean, the slowest is their max, and the speeds' geometric mean is 1."""
    got = run_speeds(_rows(factors))
    mean = math.exp(sum(math.log(f) for f in factors.values()) / len(factors))
    assert got == pytest.approx({r: f / mean for r, f in factors.items()})
    assert speed_factor(got, "slowest", "x") == pytest.approx(max(factors.values()) / mean)
    assert speed_factor(got, "fastest", "x") <= 1.0 + 1e-9 <= speed_factor(got, "slowest", "x") + 2e-9
    assert speed_factor(got, "mean", "x") == 1.0


def test_every_host_issue_figure_scales_and_the_device_copy_does_not() -> None:
    mean = CalibratedCostModel("h100_sxm")
    slow = CalibratedCostModel("h100_sxm", host_speed="slowest")
    f = max(mean.host_speeds().values())
    assert 1.1 < f < 2.0 and "host speed slowest" in slow.name
    op = Gemm(4096, 4096, 4096)
    assert slow.host_op_ns(op, "fwd") == pytest.approx(mean.host_op_ns(op, "fwd") * f, rel=1e-3)
    assert slow.host_call_ns("linear", "bwd") == pytest.approx(mean.host_call_ns("linear", "bwd") * f)
    assert slow.launch_overhead_ns() == pytest.approx(mean.launch_overhead_ns() * f, abs=1)
    assert slow.sync_ns(4096) == mean.sync_ns(4096)
    assert slow.compute_ns(op) == mean.compute_ns(op)   # the GPU side is untouched


def test_a_host_bound_block_moves_with_the_host_and_a_gpu_bound_one_barely() -> None:
    base = block_scenario("qwen3-30b-a3b", layer="moe_block", tokens=1024, passes="fwd", gpu="H100", host="eager",
                          moe=MoEOptions(experts="loop"))
    t = {s: simulate_block(dataclasses.replace(base, host_speed=s)).time_per_iteration_ns
         for s in ("fastest", "mean", "slowest")}
    assert t["fastest"] < t["mean"] < t["slowest"]
    speeds = CalibratedCostModel("h100_sxm").host_speeds()
    assert t["slowest"] / t["mean"] > 0.8 * max(speeds.values())   # host-bound: nearly the host's factor
    band = simulate_block(base).host_band   # a host-bound block carries both ends
    assert band == pytest.approx((t["fastest"], t["slowest"]))
    big = block_scenario("llama3-8b", tokens=16384, passes="fwd_bwd", gpu="H100", host="eager")
    a, b = (simulate_block(dataclasses.replace(big, host_speed=s)).time_per_iteration_ns for s in ("mean", "slowest"))
    assert b / a < 1.05
    assert simulate_block(big).host_band is None   # GPU-bound: no band


def test_bad_host_speeds_get_clear_errors() -> None:
    with pytest.raises(ConfigError) as e:
        Scenario(name="s", topology="dgx_h100", model="llama3-8b", host_speed="slow")
    assert e.value.field == "scenario.host_speed"
    with pytest.raises(ConfigError) as e:
        Scenario(name="s", topology="dgx_h100", model="llama3-8b", host_launch_us=40.0, host_speed="slowest")
    assert e.value.field == "scenario.host_speed" and "host_launch_us" in str(e.value)
    with pytest.raises(ConfigError) as e:   # one host run: no spread to pick an end of
        CalibratedCostModel("h200_sxm", host_speed="fastest")
    assert e.value.field == "host_speed" and "two or more runs" in str(e.value)
    with pytest.raises(ConfigError) as e:   # the roofline has no host rows
        resolve_cost_model("roofline", "H100", host_speed="slowest")
    assert e.value.field == "scenario.host_speed"


def test_validation_counts_the_cases_measured_inside_their_host_band() -> None:
    from moesim.validate.compare import Comparison, summarize
    from moesim.validate.layers import _issue_band
    cases = [Comparison("a", "host issue: x", "fwd", "H100", 120.0, 100.0, band=(80.0, 130.0)),
             Comparison("b", "host issue: x", "fwd", "H100", 150.0, 100.0, band=(80.0, 130.0)),
             Comparison("c", "host issue: x", "fwd", "H100", 100.0, 100.0)]
    (s,) = summarize(cases)
    assert (s.cases, s.banded, s.in_band) == (3, 2, 1)
    assert s.to_dict()["host_band"] == {"cases": 2, "measured_inside": 1}
    rec = {"host_speed": {"priced": "slowest", "runs": 6, "fastest": 0.5, "slowest": 1.25}}
    assert _issue_band(rec, 1000.0) == pytest.approx((400.0, 1000.0))   # priced at the slowest: it is the top
    assert _issue_band({}, 1000.0) is None


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["llama3-8b", "qwen3-30b-a3b"]), st.sampled_from([256, 1024, 4096]),
       st.sampled_from(["fwd", "fwd_bwd"]), st.sampled_from(["grouped", "loop"]))
def test_a_block_is_never_faster_on_a_slower_host(model: str, tokens: int, passes: str, experts: str) -> None:
    """Whatever the block, the time per iteration is monotone in the host's speed."""
    moe = MoEOptions(experts=experts) if model == "qwen3-30b-a3b" else None
    scn = block_scenario(model, layer="moe_block" if moe else "decoder", tokens=tokens, passes=passes, gpu="H100",
                         host="eager", moe=moe)
    t = [simulate_block(dataclasses.replace(scn, host_speed=s), host_band=False).time_per_iteration_ns
         for s in ("fastest", "mean", "slowest")]
    assert t[0] <= t[1] <= t[2]


def test_models_of_one_profile_share_its_tables_but_not_their_labels() -> None:
    """The grids are built once per profile file; each model keeps its own fallback labels."""
    a, b = CalibratedCostModel("h100_sxm"), CalibratedCostModel("h100_sxm", host_speed="slowest")
    assert a._gemm is b._gemm and a._host_classes is b._host_classes
    assert a.fallback_ops is not b.fallback_ops and a._cache is not b._cache
    a.fallback_ops.add("x")
    assert "x" not in b.fallback_ops


def test_an_unmeasured_device_copy_is_not_scaled_by_the_host_speed_either() -> None:
    """A profile without ``sync`` rows prices the copy at one back-to-back launch of the mean host,
    the same at every ``host_speed``: the copy is a device-to-host read, like the measured ones."""
    import json

    from moesim.costs.profile import PROFILE_DIR, profile_from_dict

    doc = json.loads((PROFILE_DIR / "h100_sxm.json").read_text())
    doc["samples"] = [r for r in doc["samples"] if r["op"] != "sync"]
    mean = CalibratedCostModel(profile_from_dict(doc, name="no_sync"))
    slow = CalibratedCostModel(profile_from_dict(doc, name="no_sync"), host_speed="slowest")
    assert slow.launch_overhead_ns() > mean.launch_overhead_ns() > 0
    assert slow.sync_ns(4096) == mean.sync_ns(4096) == mean.launch_overhead_ns()
    assert any(s.startswith("sync (not measured") for s in slow.fallback_ops)
