"""``moesim bench``: the registry, the files a run writes, ratios, and bad input."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from moesim.errors import ConfigError
from moesim.planner.bench import BENCHES, BenchResult, Side, markdown, resolve_targets, run_benches
from moesim.planner.presets import PRESETS


def _cli():
    import typer

    from moesim.planner.cli import bench_app

    app = typer.Typer(pretty_exceptions_enable=False)
    app.add_typer(bench_app, name="bench")
    return app


def test_registry_has_the_lab_pairs_and_one_per_preset():
    for name in ("memory_budget", "moe_grouping", "network_affinity", "parallelism_breakdown", "pipeline_schedule"):
        assert name in BENCHES
    assert {f"preset:{p}" for p in PRESETS} <= set(BENCHES)


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        resolve_targets("memory_budget,nope")
    assert "nope" in str(err.value) and "moe_grouping" in str(err.value)
    assert resolve_targets(None) == list(BENCHES) and resolve_targets("all") == list(BENCHES)
    assert resolve_targets("memory_budget,memory_budget") == ["memory_budget"]
    with pytest.raises(ConfigError, match="names no target"):
        resolve_targets(",")


def test_ratios_are_optimized_over_baseline():
    r = BenchResult("t", "lesson", Side("a", {"step_time_ms": 200.0, "x": 0.0}, "s"),
                    Side("b", {"step_time_ms": 150.0, "x": 1.0}, "s"))
    assert r.ratios == {"step_time_ms": 0.75}
    table = markdown([r])
    assert "| step_time_ms | 200.0 | 150.0 | 0.750 |" in table and "| x | 0.0000 | 1.0000 | - |" in table


def test_run_writes_json_and_markdown_with_ratios(tmp_path):
    results = run_benches(["memory_budget", "moe_grouping"], tmp_path)
    for stem in ("memory_budget", "moe_grouping"):
        data = json.loads((tmp_path / f"{stem}.json").read_text())
        assert data["ratios"] and "optimized / baseline" in (tmp_path / f"{stem}.md").read_text()
    mem, grouping = results
    assert mem.ratios["memory_gib"] < 1 and mem.optimized.metrics["margin_gib"] > mem.baseline.metrics["margin_gib"]
    # the lesson holds: the optimized side fits in the A100's 80 GB, and each of its options freed memory
    assert mem.optimized.metrics["margin_gib"] > 0 > mem.baseline.metrics["margin_gib"]
    for part in ("activations_gib", "gradients_gib", "optimizer_states_gib"):
        assert mem.optimized.metrics[part] < mem.baseline.metrics[part]
    # load-balanced placement flattens the per-GPU expert load of the Zipf routing
    assert grouping.ratios["gpu_max_over_mean"] < 1
    assert grouping.optimized.metrics["gpu_max_over_mean"] < 1.1
    summary = json.loads((tmp_path / "results.json").read_text())
    assert [s["target"] for s in summary] == ["memory_budget", "moe_grouping"]
    assert "## moe_grouping" in (tmp_path / "summary.md").read_text()


def test_cli_list_and_run(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(_cli(), ["bench", "list"])
    assert listed.exit_code == 0 and "network_affinity" in listed.output and "preset:deepseek-v3-h800" in listed.output
    ran = runner.invoke(_cli(), ["bench", "run", "--targets", "memory_budget", "--format", "json", "--out", str(tmp_path)])
    assert ran.exit_code == 0, ran.output
    assert (tmp_path / "memory_budget.json").is_file() and (tmp_path / "summary.md").is_file()


@pytest.mark.parametrize("args,needle", [
    (["bench", "run", "--targets", "nope"], "memory_budget"),
    (["bench", "run", "--targets", "memory_budget", "--format", "xml"], "--format"),
    (["bench", "run", "--targets", "memory_budget", "--network", "pigeons"], "--network"),
])
def test_cli_bad_input_exits_2(args, needle, tmp_path):
    result = CliRunner().invoke(_cli(), args + ["--out", str(tmp_path)])
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output
