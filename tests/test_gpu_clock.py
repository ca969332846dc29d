"""``gpu_clock = "boost"``: compute-bound kernels at the maximum SM clock, from the profile's own
``clock`` rows; refused, naming the field, where they or the maximum are missing. The ``clock``
section itself needs a GPU: on CPU it records why it measured nothing."""
from __future__ import annotations

import pytest

from moesim.costs.calibrated import CalibratedCostModel
from moesim.costs.clock import boost_factors, sustained_clocks
from moesim.errors import ConfigError
from moesim.experiment.scenario import ParallelPlan, Scenario
from moesim.ops import Attention, Gemm, GroupedGemm, MemoryOp


def test_boost_scales_compute_bound_kernels_by_the_recorded_clock_ratio() -> None:
    sustained, boost = CalibratedCostModel("h200_sxm"), CalibratedCostModel("h200_sxm", gpu_clock="boost")
    clocks = sustained_clocks(sustained.profile.select("clock"))   # the profile's clock rows, median per class
    assert 1400 < clocks["gemm"] < clocks["attention"] < 1980
    gemm_f, attn_f = clocks["gemm"] / 1980.0, clocks["attention"] / 1980.0
    for op, f in ((Gemm(4096, 4096, 4096), gemm_f), (GroupedGemm((512,) * 8, 2048, 1024), gemm_f),
                  (Attention(1, 32, 8, 4096, 4096, 128), attn_f)):
        assert boost.compute_ns(op) == pytest.approx(sustained.compute_ns(op) * f, abs=1)
    mem = MemoryOp("copy", 1e8)
    assert boost.compute_ns(mem) == sustained.compute_ns(mem)   # HBM does not follow the SM clock
    assert "boost clock" in boost.name and "boost" not in sustained.name


def test_boost_is_refused_without_a_clock_record_or_a_known_maximum() -> None:
    import json

    from moesim.costs.profile import profile_from_dict, resolve_profile_path

    doc = json.loads(resolve_profile_path("h100_sxm").read_text())
    doc["samples"] = [r for r in doc["samples"] if r["op"] != "clock"]
    with pytest.raises(ConfigError) as e:
        CalibratedCostModel(profile_from_dict(doc, name="no clock rows"), gpu_clock="boost")
    assert e.value.field == "gpu_clock" and "--sections clock" in str(e.value)
    assert "boost clock" in CalibratedCostModel("h100_sxm", gpu_clock="boost").name   # its clock rows (H100)
    with pytest.raises(ConfigError):
        boost_factors({"gemm": 1500.0, "attention": 1700.0}, 0.0, "a device")
    with pytest.raises(ConfigError) as e:
        CalibratedCostModel("h200_sxm", gpu_clock="turbo")
    assert e.value.field == "gpu_clock"


def test_the_scenario_field_is_checked_and_reaches_the_cost_model() -> None:
    from moesim.experiment.build import build_scenario

    with pytest.raises(ConfigError) as e:
        Scenario(name="s", topology="dgx_h200", model="llama3-8b", gpu_clock="max")
    assert e.value.field == "scenario.gpu_clock"
    base = Scenario(name="s", topology="dgx_h200", model="llama3-8b", gpus_per_node=1)
    fast = Scenario(name="s", topology="dgx_h200", model="llama3-8b", gpus_per_node=1, gpu_clock="boost")
    assert "boost clock" in build_scenario(fast, force=True).cost_model.name
    assert "boost clock" not in build_scenario(base, force=True).cost_model.name


def test_the_clock_section_says_why_it_measures_nothing_on_cpu() -> None:
    pytest.importorskip("torch")   # calibration needs the optional torch extra
    from moesim.calibrate.clock_section import measure_clock
    from moesim.calibrate.timing import Budget, Timer

    sec = measure_clock(Timer("cpu"), None, "cpu", Budget(5.0))
    assert not sec.samples and "needs a CUDA GPU" in sec.errors[0]


def test_boost_with_burst_rows_scales_by_the_measured_time_ratio() -> None:
    """Clock rows that hold ``cool_time_ns`` (a short burst on a cool GPU) set the factor: the median
    over a class's rows of burst time / the profile's price of the same shape, at most 1."""
    import json

    from moesim.costs.profile import profile_from_dict, resolve_profile_path

    doc = json.loads(resolve_profile_path("h100_sxm").read_text())
    sustained = CalibratedCostModel(profile_from_dict(doc, name="h100"))
    rows = [r for r in doc["samples"] if r["op"] == "clock"]
    shares = {"gemm": (0.80, 0.85, 0.90), "attention": (0.95, 1.2)}   # a burst slower than the profile: capped at 1
    for cls, fs in shares.items():
        for r, f in zip([r for r in rows if r["class"] == cls], fs * 10):
            op = (Gemm(r["m"], r["n"], r["k"]) if cls == "gemm" else
                  Attention(r["batch"], r["heads"], r["heads"], r["seq"], r["seq"], r["head_dim"], causal=True,
                            backward=r["direction"] == "bwd"))
            r["cool_time_ns"] = f * sustained.compute_ns(op)
    boost = CalibratedCostModel(profile_from_dict(doc, name="h100 burst"), gpu_clock="boost")
    gemm_f = sorted([0.80, 0.85, 0.90, 0.80, 0.85])[2]   # the five GEMM rows' ratios
    op = Gemm(8192, 8192, 4096)
    assert boost.compute_ns(op) == pytest.approx(sustained.compute_ns(op) * gemm_f, rel=1e-3)
    attn = Attention(1, 32, 8, 4096, 4096, 128)
    assert boost.compute_ns(attn) == sustained.compute_ns(attn)   # median of 0.95 / 1.2 alternating: 1.0 capped
    assert "x0.850" in boost.name
    for r in rows:   # burst times of one class only: refused, naming the field
        if r["class"] == "attention":
            r.pop("cool_time_ns")
    with pytest.raises(ConfigError) as e:
        CalibratedCostModel(profile_from_dict(doc, name="h100 half"), gpu_clock="boost")
    assert e.value.field == "gpu_clock" and "attention" in str(e.value)


def test_the_duty_curve_interpolates_the_measured_rows_and_never_beats_a_cool_gpu() -> None:
    from moesim.costs.clock import duty_curve, duty_multiplier

    rows = [{"shape": "a", "run": 0, "duty": d, "time_ns": t, "cool_time_ns": 100.0}
            for d, t in ((0.25, 100.0), (0.7, 110.0), (1.0, 120.0))]
    rows += [{"shape": "b", "run": 0, "duty": d, "time_ns": t, "cool_time_ns": 100.0}   # another shape: its own base
             for d, t in ((0.4, 50.0), (1.0, 58.0))]
    curve = duty_curve(rows, "a profile")
    assert curve == [(0.25, 1.0), (0.4, 1.0), (0.7, 1.1), (1.0, pytest.approx(1.18))]
    assert duty_multiplier(curve, 0.0) == duty_multiplier(curve, 0.3) == 1.0     # held at a cool GPU's time
    assert duty_multiplier(curve, 0.85) == pytest.approx(1.14)
    assert duty_multiplier(curve, 1.0) == pytest.approx(1.18)
    with pytest.raises(ConfigError) as e:
        duty_curve([], "a profile")
    assert e.value.field == "gpu_clock"
    with pytest.raises(ConfigError) as e:
        duty_multiplier(curve, 1.5)
    assert e.value.field == "gemm_duty"


def test_duty_prices_gemms_at_the_burst_clock_times_the_held_multiplier() -> None:
    boost = CalibratedCostModel("h100_sxm", gpu_clock="boost")
    low, high = (CalibratedCostModel("h100_sxm", gpu_clock="duty", gemm_duty=d) for d in (0.2, 0.95))
    op, attn = Gemm(8192, 8192, 4096), Attention(1, 32, 8, 4096, 4096, 128)
    assert low.compute_ns(op) == boost.compute_ns(op) < high.compute_ns(op)
    assert high.compute_ns(op) == pytest.approx(1.16 * boost.compute_ns(op), rel=0.02)
    assert low.compute_ns(attn) == high.compute_ns(attn) == boost.compute_ns(attn)
    with pytest.raises(ConfigError) as e:   # the H200 profile has no burst times
        CalibratedCostModel("h200_sxm", gpu_clock="duty")
    assert e.value.field == "gpu_clock"


def test_duty_prices_attention_at_the_clock_the_gemms_hold_where_attention_duty_rows_exist() -> None:
    """One SM clock per GPU: attention ``duty`` rows (flash attention timed between the GEMMs) give
    attention its own measured multiplier at the run's GEMM duty; the GEMM curve ignores them."""
    import json

    from moesim.costs.profile import profile_from_dict, resolve_profile_path

    doc = json.loads(resolve_profile_path("h100_sxm").read_text())
    doc["samples"] = [r for r in doc["samples"] if not (r["op"] == "duty" and r.get("class") == "attention")]
    plain = profile_from_dict(json.loads(json.dumps(doc)), name="no attention duty rows")
    doc["samples"] += [{"op": "duty", "class": "attention", "shape": "sdpa_fwd", "run": 99, "duty": d,
                        "time_ns": t, "cool_time_ns": 200.0, "repeats": 40} for d, t in ((0.25, 200.0), (0.55, 220.0), (0.8, 240.0))]
    rows = profile_from_dict(doc, name="with attention duty rows")
    attn, op = Attention(1, 32, 8, 4096, 4096, 128), Gemm(8192, 8192, 4096)
    for duty, mult in ((0.2, 1.0), (0.55, 1.1), (0.95, 1.2)):
        a, b = (CalibratedCostModel(p, gpu_clock="duty", gemm_duty=duty) for p in (plain, rows))
        assert b.compute_ns(op) == a.compute_ns(op)                 # GEMMs: their own curve only
        assert b.compute_ns(attn) == pytest.approx(mult * a.compute_ns(attn), rel=1e-3)
        assert "no attention duty rows" in a.name and f"x{mult:.3f}" in b.name


def test_a_duty_run_reads_its_gemm_share_from_a_first_run_and_is_deterministic() -> None:
    import dataclasses

    from moesim.experiment.block import block_scenario, simulate_block
    from moesim.experiment.runner import build_at_duty
    from moesim.scale.reduced import build_reduced
    from moesim.workload.presets import get_model

    dense = dataclasses.replace(block_scenario("llama3-8b", tokens=8192, passes="fwd", gpu="H100"), gpu_clock="duty")
    a, b = simulate_block(dense), simulate_block(dense)
    assert a.time_per_iteration_ns == b.time_per_iteration_ns
    duty = float(a.cost_model.split("GEMM duty ")[1].split(" ")[0])
    assert 0.5 < duty < 0.95                                   # a dense layer is mostly GEMMs
    burst = simulate_block(dataclasses.replace(dense, gpu_clock="boost"))
    assert burst.time_per_iteration_ns < a.time_per_iteration_ns   # its own GEMM share slows its clock
    # the reduced engine reads its lanes' GEMM duty the same way, as the full engine does its GPUs'
    spec = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=4)
    scn = Scenario(name="r", topology="dgx_h100", nodes=2, model=spec, gpu_clock="duty",
                   plan=ParallelPlan(tp=1, dp=8, pp=2, ep=8, num_microbatches=4))
    red = build_reduced(scn)
    red_duty = float(red["cost"].name.split("GEMM duty ")[1].split(" ")[0])
    full_duty = float(build_at_duty(scn, force=True).cost_model.name.split("GEMM duty ")[1].split(" ")[0])
    assert 0 < red_duty < 0.6 and abs(red_duty - full_duty) < 0.05
    assert build_reduced(scn)["cost"].name == red["cost"].name    # deterministic


def test_the_duty_section_says_why_it_measures_nothing_on_cpu() -> None:
    pytest.importorskip("torch")
    from moesim.calibrate.duty_section import measure_duty
    from moesim.calibrate.timing import Budget, Timer

    sec = measure_duty(Timer("cpu"), None, "cpu", Budget(5.0))
    assert not sec.samples and "needs a CUDA GPU" in sec.errors[0]
