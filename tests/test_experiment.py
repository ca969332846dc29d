"""Scenarios, the runner, the run directory and the `run` command, on tiny models."""
from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest
from typer.testing import CliRunner

from moesim.cli import app
from moesim.errors import ConfigError
from moesim.experiment import Comparison, Experiment, ParallelPlan, Scenario
from moesim.experiment.build import build_scenario
from moesim.experiment.runner import run_experiment, run_scenario
from moesim.workload.transformer import TransformerSpec

TINY = TransformerSpec(name="tiny", num_layers=8, hidden=1024, num_heads=16, num_kv_heads=4, head_dim=64,
                       ffn_hidden=4096, vocab=32000, seq_len=1024)


def scn(**kw):
    base = dict(name="s", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=2, dp=1, pp=4, num_microbatches=8))
    base.update(kw)
    return Scenario(**base)


def test_scenario_runs_and_reports_consistent_figures():
    res, rec = run_scenario(scn())
    assert res.step_time_ms > 0 and 0 < res.mfu < 1 and 0 <= res.bubble_fraction < 1
    assert res.tokens_per_step == 8 * 1024
    assert res.tokens_per_s == pytest.approx(res.tokens_per_step / (res.step_time_ms / 1e3), rel=1e-4)
    assert res.cost_model.startswith("h100_sxm profile") and res.calibrated is True  # auto: the shipped H100 profile
    assert res.network_mode == "fluid" and len(res.bottlenecks) in (3, 4)
    # the analyses' top three, then the eager-host line when launches reach half the GPU work
    assert res.bottlenecks[:3] == [b["message"] for b in res.analysis["bottlenecks"][:3]]
    assert (len(res.bottlenecks) == 4) == (res.host_issue["ratio"] >= 0.5)


def test_more_microbatches_shrink_the_1f1b_bubble():
    small = run_scenario(scn(plan=ParallelPlan(tp=2, pp=4, num_microbatches=4)))[0]
    big = run_scenario(scn(plan=ParallelPlan(tp=2, pp=4, num_microbatches=32)))[0]
    assert big.bubble_fraction < small.bubble_fraction


def test_analytical_mode_is_labelled_and_never_slower():
    fluid = run_scenario(scn())[0]
    ana = run_scenario(scn(network="analytical"))[0]
    assert ana.network_mode == "analytical"
    assert ana.step_time_ms <= fluid.step_time_ms


@pytest.mark.parametrize("kw, match", [
    (dict(plan=ParallelPlan(tp=2, dp=2, pp=4)), r"16 GPUs but topology 'dgx_h100' has 8"),
    (dict(plan=ParallelPlan(tp=1, dp=1, pp=8, vpp=3), schedule="interleaved"), "cannot fill 24 virtual"),
    (dict(plan=ParallelPlan(tp=2, pp=4, vpp=2)), "only used by the 'interleaved' schedule"),
    (dict(plan=ParallelPlan(tp=2, pp=4, vpp=2, num_microbatches=6), schedule="interleaved"), "multiple of the pipeline size"),
    (dict(schedule="2f2b"), "unknown name '2f2b'"),
    (dict(model="llama-9000"), "unknown name 'llama-9000'"),
    (dict(topology="dgx_z900"), "dgx_z900"),
])
def test_bad_scenarios_fail_with_the_field_and_fix(kw, match):
    with pytest.raises(ConfigError, match=match):
        build_scenario(scn(**kw))


def test_plan_and_scenario_validation():
    with pytest.raises(ConfigError, match="plan.tp"):
        ParallelPlan(tp=0)
    with pytest.raises(ConfigError, match="plan.order"):
        ParallelPlan(order="tp-pp")
    with pytest.raises(ConfigError, match="scenario.network"):
        scn(network="psychic")
    with pytest.raises(ConfigError, match="unknown field 'microbatches'"):
        scn().with_overrides({"plan.microbatches": "3"})
    assert scn().with_overrides({"plan.num_microbatches": "16", "schedule": "gpipe"}).plan.num_microbatches == 16
    # a config's own check names its field alone; --set names the whole path it was given
    with pytest.raises(ConfigError, match=r"^model\.hidden: must be > 0, got -1 \(fix: give a number > 0\)$"):
        scn().with_overrides({"model.hidden": "-1"})


def test_overrides_are_checked_together_in_any_order():
    """plan.dp=4 with the base's ep=8 alone is invalid; with plan.ep=4 in the same set it is not,
    whichever key comes first (a sweep applies its grid keys in sorted order)."""
    base = scn(plan=ParallelPlan(tp=1, dp=8, pp=1, ep=8, num_microbatches=8))
    for keys in (("plan.dp", "plan.pp", "plan.ep"), ("plan.ep", "plan.dp", "plan.pp")):
        values = {"plan.dp": "4", "plan.pp": "2", "plan.ep": "4"}
        got = base.with_overrides({k: values[k] for k in keys}).plan
        assert (got.dp, got.pp, got.ep) == (4, 2, 4)
    with pytest.raises(ConfigError, match=r"^plan\.ep: ep=8 must divide dp=3"):
        base.with_overrides({"plan.dp": "3"})
    with pytest.raises(ConfigError, match="unknown field 'dpp' of ParallelPlan"):
        base.with_overrides({"plan.dp": "4", "plan.dpp": "2"})


def test_interleaved_with_one_chunk_per_gpu_is_refused_not_run_as_1f1b():
    with pytest.raises(ConfigError, match=r"plan\.vpp: vpp=1 with the 'interleaved' schedule is plain 1F1B"):
        build_scenario(scn(schedule="interleaved"))


def test_rank_order_puts_tp_innermost():
    plan = ParallelPlan(tp=2, dp=2, pp=2, order="tp-dp-pp")
    assert [plan.rank(t, 0, 0) for t in range(2)] == [0, 1]
    assert plan.rank(0, 1, 0) == 2 and plan.rank(0, 0, 1) == 4
    assert ParallelPlan(tp=2, dp=2, pp=2, order="pp-tp-dp").rank(1, 0, 0) == 2


def experiment():
    return Experiment(name="tiny", scenarios=(scn(name="a"), scn(name="b", schedule="interleaved",
                      plan=ParallelPlan(tp=2, pp=4, vpp=2, num_microbatches=8))),
                      comparisons=(Comparison("a", "b", "lesson"),))


def test_run_directory_is_complete_and_deterministic(tmp_path):
    run_experiment(experiment(), tmp_path / "one")
    run_experiment(experiment(), tmp_path / "two")
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(["results.json", "summary.md"] + [f"{n}.{k}" for n in "ab"
                                                              for k in ("trace.json", "timeline.png", "utilization.png")])
    for name in ("results.json", "summary.md", "a.trace.json", "b.trace.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    data = json.loads((tmp_path / "one" / "results.json").read_text())
    assert data["comparisons"][0]["baseline"] == "a"
    assert "| a | 1f1b |" in (tmp_path / "one" / "summary.md").read_text()
    mfu = {row["scenario"]: row for row in data["mfu"]}   # MFU two ways, as summary.md prints them
    assert set(mfu) == {"a", "b"} and all(0 < row["mfu_model"] < 1 and row["peak_tflops"] > 0 for row in mfu.values())
    a = next(r for r in data["scenarios"] if r["name"] == "a")
    assert mfu["a"]["gemm_dtype"] == "bf16" and mfu["a"]["gpu"] == "H100"   # bf16 GEMMs: the bf16 peak
    assert mfu["a"]["mfu_executed"] == pytest.approx(a["mfu"], rel=1e-6)


def test_run_command_writes_the_run_directory_and_rejects_bad_sets(tmp_path):
    exp_file = tmp_path / "exp.py"
    exp_file.write_text(textwrap.dedent("""
        from moesim.experiment import Experiment, ParallelPlan, Scenario
        from moesim.workload.transformer import TransformerSpec
        TINY = TransformerSpec(name="tiny", num_layers=4, hidden=512, num_heads=8, num_kv_heads=8, head_dim=64,
                               ffn_hidden=2048, vocab=32000, seq_len=512)
        EXPERIMENT = Experiment(name="cli", scenarios=(
            Scenario(name="only", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=2, pp=4, num_microbatches=4)),))
    """))
    runner = CliRunner()
    ok = runner.invoke(app, ["run", str(exp_file), "--out", str(tmp_path / "out"), "--set", "plan.num_microbatches=8"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "out" / "results.json").is_file() and "top bottlenecks" in ok.output and "only" in ok.output
    assert json.loads((tmp_path / "out" / "results.json").read_text())["scenarios"][0]["plan"]["num_microbatches"] == 8
    bad = runner.invoke(app, ["run", str(exp_file), "--out", str(tmp_path / "x"), "--set", "plan.tp=two"])
    assert bad.exit_code == 2 and "plan.tp" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x").exists()   # a run refused before it started leaves no directory behind
    late = runner.invoke(app, ["run", str(exp_file), "--out", str(tmp_path / "y"), "--set", "plan.pp=3"])
    assert late.exit_code == 2 and not (tmp_path / "y").exists()   # refused while building the scenario
    missing = runner.invoke(app, ["run", str(tmp_path / "nope.py")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_uneven_layer_split_gives_the_first_stages_one_more_layer():
    from moesim.lowering.stage_costs import stage_layer_ranges

    assert [len(r) for r in stage_layer_ranges(61, 16)] == [4] * 13 + [3] * 3
    assert [r.start for r in stage_layer_ranges(10, 4)] == [0, 3, 6, 8]
    res, _ = run_scenario(scn(model=dataclasses.replace(TINY, num_layers=10)))
    assert res.step_time_ms > 0


def test_custom_block_model_runs_end_to_end():
    from moesim.workload.custom import custom_model_from_dict

    spec = custom_model_from_dict({
        "name": "my-block", "num_layers": 8, "seq_len": 1024, "hidden": 2048,
        "layer": {"gemms": [{"name": "proj_in", "m": "tokens", "n": 8192, "k": 2048, "tp": "column"},
                            {"name": "proj_out", "m": "tokens", "n": 2048, "k": 8192, "tp": "row"}],
                  "elementwise": [{"name": "act", "bytes_per_token": 32768, "tp_sharded": True}]}})
    res, rec = run_scenario(Scenario(name="custom", topology="dgx_h100", model=spec,
                                     plan=ParallelPlan(tp=2, pp=4, num_microbatches=8, sequence_parallel=False)))
    # 8 layers x (2 forward GEMMs + 4 backward GEMMs) of 2*1024*8192*2048 FLOPs over 8 microbatches, / tp
    gemm = 2 * 1024 * 8192 * 2048
    assert sum(s.args.get("flops", 0) for s in rec.spans if s.stream == "compute") == pytest.approx(
        8 * 8 * 6 * gemm / 2 * 2, rel=1e-9)
    assert res.step_time_ms > 0


def test_recomputation_trades_step_time_for_activation_memory():
    from moesim.memory import MemoryConfig

    none, _ = run_scenario(scn())
    full, _ = run_scenario(scn(memory=MemoryConfig(recompute="full")))
    assert full.step_time_ms > none.step_time_ms * 1.1
    assert full.peak_activation_gib < none.peak_activation_gib / 2


def test_runaway_scenario_is_refused_before_building_with_the_estimate():
    from moesim.workload.presets import get_model

    big = Scenario(name="dsv3", topology="h800_cluster", nodes=256, model=get_model("deepseek-v3"),
                   schedule="dualpipe", plan=ParallelPlan(dp=128, pp=16, ep=64, num_microbatches=120))
    with pytest.raises(ConfigError, match="scenario") as err:
        build_scenario(big)
    assert "tasks" in str(err.value) and "force" in str(err.value)


def test_every_shipped_experiment_loads_and_its_comparisons_name_its_scenarios() -> None:
    from pathlib import Path

    from moesim.experiment import load_experiment
    files = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.py"))
    assert any(f.name == "1f1b_vs_interleaved.py" for f in files) and any(f.name == "eager_host.py" for f in files)
    for f in files:
        exp = load_experiment(f)
        names = {s.name for s in exp.scenarios}
        assert len(names) == len(exp.scenarios), f.name
        assert all(c.baseline in names and c.optimized in names for c in exp.comparisons), f.name


def test_set_fills_in_unset_faults():
    """faults None and Faults() are the same scenario: --set faults.slow_gpus needs no Faults first."""
    got = scn().with_overrides({"faults.slow_gpus": "3:1.3"})
    assert dict(got.faults.slow_gpus) == {3: 1.3}
