"""Design-space sweeps: grid parsing, point ids, local runs streamed to results.jsonl, resume,
failures, the Pareto front and the `sweep` command, on a tiny model."""
from __future__ import annotations

import hashlib
import json
import sys
import textwrap

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from moesim.errors import ConfigError
from moesim.experiment import ParallelPlan, Scenario
from moesim.experiment import runner as experiment_runner
from moesim.sweep import (LocalExecutor, SweepPoint, expand, front_ids, make_executor, pareto_front, parse_grid,
                          plot_pareto, run_point, run_sweep, select_scenarios)
from moesim.sweep.cli import sweep
from moesim.sweep.store import ResultsStore
from moesim.workload.transformer import TransformerSpec

TINY = TransformerSpec(name="tiny", num_layers=8, hidden=1024, num_heads=16, num_kv_heads=4, head_dim=64,
                       ffn_hidden=4096, vocab=32000, seq_len=1024)
BASE = Scenario(name="tiny", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=2, pp=4, num_microbatches=8))
GRID_2X2 = {"plan.num_microbatches": ("8", "16"), "schedule": ("1f1b", "gpipe")}
EXPERIMENT_FILE = textwrap.dedent("""
    from moesim.experiment import Experiment, ParallelPlan, Scenario
    from moesim.workload.transformer import TransformerSpec
    TINY = TransformerSpec(name="tiny", num_layers=8, hidden=1024, num_heads=16, num_kv_heads=4, head_dim=64,
                           ffn_hidden=4096, vocab=32000, seq_len=1024)
    EXPERIMENT = Experiment(name="tiny_exp", scenarios=(
        Scenario(name="tiny", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=2, pp=4, num_microbatches=8)),
        Scenario(name="tiny_tp4", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=4, pp=2, num_microbatches=8)),
    ))
""")


def lines(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]


def forbid_simulation(monkeypatch) -> None:
    """Make any call of run_scenario fail the test (only skipping is allowed)."""
    def boom(scn):
        raise AssertionError(f"run_scenario called again for {scn.name}")
    monkeypatch.setattr(experiment_runner, "run_scenario", boom)


def stripped(records) -> list[dict]:
    """Records without the wall-clock field (the only part that varies between runs)."""
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


class InterruptAfter:
    """An executor that yields ``n`` records from a serial local run, then acts as if Ctrl-C was pressed."""

    name = "interrupting"

    def __init__(self, n: int) -> None:
        self.n = n

    def run(self, tasks):
        for i, record in enumerate(LocalExecutor(1).run(tasks)):
            if i == self.n:
                raise KeyboardInterrupt
            yield record


# --- grid and points -------------------------------------------------------------------------

def test_parse_grid_keeps_key_order_and_string_values():
    assert parse_grid(["schedule=1f1b, interleaved", "plan.vpp=1,2"]) == {
        "schedule": ("1f1b", "interleaved"), "plan.vpp": ("1", "2")}


@pytest.mark.parametrize("items, match", [
    (["plan.tp"], "is not key=v1,v2"),
    (["=1,2"], "is not key=v1,v2"),
    (["plan.tp=1,,2"], "empty value"),
    (["plan.tp="], "empty value"),
    (["plan.tp=1,2,1"], "given twice"),
    (["plan.tp=1", "plan.tp=2"], "key 'plan.tp' given twice"),
])
def test_bad_grid_syntax_names_the_field(items, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_grid(items)
    assert err.value.field == "--grid"


def test_point_id_is_a_hash_of_base_and_sorted_overrides():
    point = SweepPoint("tiny", (("plan.vpp", "2"), ("schedule", "1f1b")))
    text = '["tiny",[["plan.vpp","2"],["schedule","1f1b"]]]'
    assert point.id == hashlib.sha1(text.encode()).hexdigest()[:12]
    assert point.name == "tiny[plan.vpp=2, schedule=1f1b]"
    assert SweepPoint("other", point.overrides).id != point.id
    assert SweepPoint("tiny").name == "tiny"


def test_expand_is_the_cartesian_product_per_base_and_ids_do_not_depend_on_key_order():
    other = Scenario(name="other", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=8))
    pairs = expand([BASE, other], GRID_2X2)
    assert [p.name for p, _ in pairs[:4]] == [
        "tiny[plan.num_microbatches=8, schedule=1f1b]", "tiny[plan.num_microbatches=8, schedule=gpipe]",
        "tiny[plan.num_microbatches=16, schedule=1f1b]", "tiny[plan.num_microbatches=16, schedule=gpipe]"]
    assert [b.name for _, b in pairs] == ["tiny"] * 4 + ["other"] * 4
    flipped = expand([BASE], {"schedule": ["1f1b", "gpipe"], "plan.num_microbatches": [8, 16]})
    assert {p.id for p, _ in flipped} == {p.id for p, _ in pairs[:4]}
    assert len({p.id for p, _ in pairs}) == 8


@pytest.mark.parametrize("key, match", [
    ("plan.microbatches", "ParallelPlan has no field 'microbatches'.*plan.num_microbatches"),
    ("shedule", "Scenario has no field 'shedule'"),
    ("faults.jitter_ns", "faults of scenario 'tiny' is a NoneType"),
])
def test_unknown_grid_keys_fail_before_anything_runs(key, match):
    with pytest.raises(ConfigError, match=match):
        expand([BASE], {key: ["1"]})


def test_select_scenarios_by_name():
    other = Scenario(name="other", topology="dgx_h100", model=TINY)
    assert select_scenarios([BASE, other], "other") == (other,)
    assert select_scenarios([BASE, other], None) == (BASE, other)
    with pytest.raises(ConfigError, match="--scenario: unknown name 'nope'.*other, tiny"):
        select_scenarios([BASE, other], "nope")


@pytest.mark.parametrize("kw, field", [
    (dict(name="dask"), "--executor"), (dict(name="local", workers=0), "--workers"),
    (dict(name="local", address="ray://head:10001"), "--address"),
    (dict(name="ray", workers=2, address="ray://head:10001"), "--workers"),
])
def test_bad_executor_choices_name_the_field(kw, field, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # the ray checks must not need Ray
    with pytest.raises(ConfigError) as err:
        make_executor(**kw)
    assert err.value.field == field


def test_ray_executor_without_ray_tells_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'moesim\[ray\]'"):
        make_executor("ray")


# --- running, streaming, resuming -----------------------------------------------------------

def test_local_pool_sweep_streams_every_point_and_a_rerun_skips_them_all(tmp_path, monkeypatch):
    tasks = expand([BASE], GRID_2X2)
    first = run_sweep(tasks, tmp_path, LocalExecutor(workers=2), title="t")
    recs = lines(tmp_path)
    assert len(recs) == 4 and {r["status"] for r in recs} == {"ok"}
    assert {r["id"] for r in recs} == {p.id for p, _ in tasks}
    assert (first.num_run, first.num_skipped, first.interrupted) == (4, 0, False)
    assert all("analysis" not in r["result"] and r["wall_s"] > 0 for r in recs)
    assert recs[0]["overrides"] == dict(next(p for p, _ in tasks if p.id == recs[0]["id"]).overrides)
    summary_before = (tmp_path / "summary.md").read_text()
    assert "tokens per step differ between points (8,192, 16,384)" in summary_before  # m=8 vs m=16

    forbid_simulation(monkeypatch)
    again = run_sweep(tasks, tmp_path, LocalExecutor(workers=1), title="t")
    assert (again.num_run, again.num_skipped) == (0, 4)
    assert len(lines(tmp_path)) == 4
    assert (tmp_path / "summary.md").read_text() == summary_before  # bytes depend on results only


def test_pool_results_equal_serial_results(tmp_path):
    tasks = expand([BASE], {"plan.num_microbatches": ["4", "8"]})
    pooled = run_sweep(tasks, tmp_path / "pool", LocalExecutor(workers=2))
    serial = run_sweep(tasks, tmp_path / "serial", LocalExecutor(workers=1))
    assert stripped(pooled.records) == stripped(serial.records)
    direct, _rec = experiment_runner.run_scenario(BASE.with_overrides({"plan.num_microbatches": "8"}))
    assert pooled.records[1]["result"]["step_time_ms"] == direct.step_time_ms


def test_invalid_combination_is_recorded_and_the_others_succeed(tmp_path):
    tasks = expand([BASE], {"plan.vpp": ["1", "2"], "schedule": ["1f1b", "interleaved"]})
    outcome = run_sweep(tasks, tmp_path, LocalExecutor(workers=1), title="vpp")
    by_name = {r["name"]: r for r in lines(tmp_path)}
    bad = by_name["tiny[plan.vpp=2, schedule=1f1b]"]
    assert bad["status"] == "error" and bad["error_type"] == "ConfigError"
    assert "only used by the 'interleaved' schedule" in bad["error"] and "result" not in bad
    plain = by_name["tiny[plan.vpp=1, schedule=interleaved]"]   # one chunk per GPU is 1F1B, not interleaving
    assert plain["status"] == "error" and "is plain 1F1B" in plain["error"]
    assert sorted(r["status"] for r in by_name.values()) == ["error", "error", "ok", "ok"]
    assert len(outcome.ok) == 2 and len(outcome.failed) == 2 and not outcome.unexpected
    summary = (tmp_path / "summary.md").read_text()
    assert "## Failures" in summary and "plan.vpp: vpp=2 is only used by the 'interleaved' schedule" in summary
    assert "4 points: 2 ok, 2 failed." in summary


def test_retry_failed_reruns_only_the_failures(tmp_path, monkeypatch):
    tasks = expand([BASE], {"plan.vpp": ["1", "2"], "schedule": ["1f1b"]})
    run_sweep(tasks, tmp_path, LocalExecutor(workers=1))
    calls = []
    real = experiment_runner.run_scenario
    monkeypatch.setattr(experiment_runner, "run_scenario", lambda scn, **kw: calls.append(scn.name) or real(scn, **kw))
    plain = run_sweep(tasks, tmp_path, LocalExecutor(workers=1))
    assert (plain.num_run, plain.num_skipped, calls) == (0, 2, [])
    retried = run_sweep(tasks, tmp_path, LocalExecutor(workers=1), retry_failed=True)
    assert (retried.num_run, retried.num_skipped) == (1, 1)
    assert calls == ["tiny[plan.vpp=2, schedule=1f1b]"]
    assert len(lines(tmp_path)) == 3 and len(ResultsStore(tmp_path).load()) == 2


def test_interrupted_sweep_resumes_from_the_lines_already_written(tmp_path, monkeypatch):
    tasks = expand([BASE], GRID_2X2)
    reference = run_sweep(tasks, tmp_path / "ref", LocalExecutor(workers=1))
    done = (tmp_path / "ref" / "results.jsonl").read_text().splitlines()[:2]
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    torn = done[0][: len(done[0]) // 2]  # a hard kill in the middle of a write
    (resumed_dir / "results.jsonl").write_text("\n".join(done) + "\n" + torn)
    calls = []
    real = experiment_runner.run_scenario
    monkeypatch.setattr(experiment_runner, "run_scenario", lambda scn, **kw: calls.append(scn.name) or real(scn, **kw))
    resumed = run_sweep(tasks, resumed_dir, LocalExecutor(workers=1))
    assert (resumed.num_run, resumed.num_skipped, len(calls)) == (2, 2, 2)
    assert stripped(resumed.records) == stripped(reference.records)
    store = ResultsStore(resumed_dir)
    assert len(store.load()) == 4 and store.num_bad_lines == 1  # the torn line is skipped, not glued


def test_ctrl_c_keeps_finished_points_and_the_rerun_finishes_the_rest(tmp_path):
    tasks = expand([BASE], GRID_2X2)
    cut = run_sweep(tasks, tmp_path, InterruptAfter(1))
    assert cut.interrupted and cut.num_run == 1 and len(lines(tmp_path)) == 1
    assert "3 not run yet (rerun the sweep to resume)" in (tmp_path / "summary.md").read_text()
    rest = run_sweep(tasks, tmp_path, LocalExecutor(workers=1))
    assert (rest.num_run, rest.num_skipped, rest.interrupted) == (3, 1, False)
    assert len(lines(tmp_path)) == 4 and len(rest.ok) == 4


def test_a_bug_in_one_point_is_recorded_with_its_traceback(monkeypatch):
    def broken(scn, **_kw):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(experiment_runner, "run_scenario", broken)
    record = run_point(SweepPoint("tiny"), BASE)
    assert record["status"] == "error" and record["unexpected"] is True
    assert record["error"] == "ZeroDivisionError: division by zero" and "Traceback" in record["traceback"]
    json.dumps(record)  # plain JSON


# --- Pareto front ----------------------------------------------------------------------------

def test_pareto_front_on_hand_made_points():
    points = [(10.0, 5.0), (8.0, 6.0), (12.0, 4.0), (9.0, 7.0), (10.0, 5.0), (12.0, 5.0), (7.0, 9.0), (13.0, 4.0)]
    # (9,7) is beaten by (8,6); (12,5) by (10,5); (13,4) by (12,4); the duplicate (10,5) stays twice.
    assert pareto_front(points) == [0, 1, 2, 4, 6]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def _dominated(p, q) -> bool:
    return q[0] <= p[0] and q[1] <= p[1] and (q[0] < p[0] or q[1] < p[1])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=25))
def test_pareto_front_matches_the_definition(points):
    expected = [i for i, p in enumerate(points) if not any(_dominated(p, q) for q in points)]
    assert pareto_front(points) == expected


def _ok(pid, step_ms, mem_gib, fits=True, base="b", **overrides):
    return {"id": pid, "name": pid, "base": base, "overrides": overrides, "status": "ok",
            "result": {"step_time_ms": step_ms, "memory_gib": mem_gib, "fits": fits}}


def test_front_ignores_failures_and_points_over_the_memory_budget():
    records = [_ok("a", 10.0, 40.0), _ok("b", 8.0, 50.0), _ok("c", 5.0, 90.0, fits=False), _ok("d", 11.0, 45.0),
               {"id": "e", "name": "e", "base": "b", "overrides": {}, "status": "error", "error": "x"}]
    assert front_ids(records) == ["a", "b"]


def test_pareto_plot_is_a_png(tmp_path):
    records = [_ok("a", 10.0, 40.0, mb="8"), _ok("b", 8.0, 50.0, mb="16"), _ok("c", 5.0, 90.0, fits=False, mb="32")]
    path = plot_pareto(records, ["a", "b"], tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


# --- the command -----------------------------------------------------------------------------

def cli_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("sweep")(sweep)
    app.command("other")(lambda: None)  # two commands, so the verb is spelled out as when mounted
    return app


@pytest.fixture()
def exp_file(tmp_path):
    path = tmp_path / "tiny_exp.py"
    path.write_text(EXPERIMENT_FILE)
    return path


def test_sweep_command_runs_one_named_scenario_and_resumes(exp_file, tmp_path):
    out = tmp_path / "out"
    args = ["sweep", str(exp_file), "--scenario", "tiny", "--grid", "plan.num_microbatches=8,16",
            "schedule=1f1b,gpipe", "--workers", "1", "--out", str(out)]
    first = CliRunner().invoke(cli_app(), args)
    assert first.exit_code == 0, first.output
    assert "Pareto-optimal points" in first.output and "4 points: 4 ok, 0 failed; ran 4" in first.output
    assert {"results.jsonl", "summary.md", "pareto.png"} <= {p.name for p in out.iterdir()}
    assert {r["base"] for r in lines(out)} == {"tiny"}
    second = CliRunner().invoke(cli_app(), args)
    assert second.exit_code == 0 and "ran 0" in second.output and "skipped 4 already done" in second.output


@pytest.mark.parametrize("extra, field", [
    (["--grid", "plan.num_microbatches"], "--grid"),
    (["--grid", "plan.bogus=1,2"], "--grid"),
    (["--scenario", "nope"], "--scenario"),
    (["--executor", "dask"], "--executor"),
])
def test_sweep_command_rejects_bad_input_with_exit_2(exp_file, tmp_path, extra, field):
    result = CliRunner().invoke(cli_app(), ["sweep", str(exp_file), "--out", str(tmp_path / "o"), *extra])
    assert result.exit_code == 2, result.output
    assert f"error: {field}:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
