"""Profiles a user can follow, and one-line errors instead of tracebacks (issue 14).

The profile search path (a path as given, the shipped profiles, MOESIM_PROFILE_PATH, then
~/.config/moesim/profiles), the refusal of a profile measured on another device, the identity
every result carries (moesim version, results schema, profile name/device/date/source/sha256),
``--profile`` on the commands, what ``moesim calibrate run`` reports, and the errors that
used to be tracebacks.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moesim import __version__
from moesim.cli import app
from moesim.costs.profile import PROFILE_DIR, load_profile, resolve_profile_path
from moesim.errors import ConfigError
from moesim.experiment import Experiment, ParallelPlan, Scenario
from moesim.experiment.build import build_scenario
from moesim.experiment.report import RESULTS_SCHEMA_VERSION
from moesim.experiment.runner import run_experiment
from moesim.workload.transformer import TransformerSpec

TINY = TransformerSpec(name="tiny", num_layers=4, hidden=1024, num_heads=16, num_kv_heads=4, head_dim=64,
                       ffn_hidden=4096, vocab=32000, seq_len=1024)
H100 = "NVIDIA H100 80GB HBM3"
EXPERIMENT_FILE = textwrap.dedent("""
    from moesim.experiment import Experiment, ParallelPlan, Scenario
    from moesim.workload.transformer import TransformerSpec
    TINY = TransformerSpec(name="tiny", num_layers=4, hidden=1024, num_heads=16, num_kv_heads=4, head_dim=64,
                           ffn_hidden=4096, vocab=32000, seq_len=1024)
    EXPERIMENT = Experiment(name="tiny_exp", scenarios=(
        Scenario(name="first", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=2, pp=4, num_microbatches=4)),
        Scenario(name="second", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=4, pp=2, num_microbatches=4)),
    ))
""")


def write_profile(folder: Path, name: str, device: str = H100, date: str = "2026-12-01T00:00:00Z") -> Path:
    """A small valid profile (the shipped profile's GEMM rows) measured on ``device``."""
    doc = json.loads((PROFILE_DIR / "h200_sxm.json").read_text())
    doc.update(device=device, date=date, samples=[r for r in doc["samples"] if r["op"] == "gemm"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture()
def user_dirs(tmp_path, monkeypatch) -> tuple[Path, Path, Path]:
    """Two MOESIM_PROFILE_PATH directories and a home whose ~/.config/moesim/profiles is the third."""
    first, second, home = tmp_path / "first", tmp_path / "second", tmp_path / "home"
    for d in (first, second, home / ".config" / "moesim" / "profiles"):
        d.mkdir(parents=True)
    monkeypatch.setenv("MOESIM_PROFILE_PATH", f"{first}{os.pathsep}{second}")
    monkeypatch.setenv("HOME", str(home))
    return first, second, home / ".config" / "moesim" / "profiles"


def one_line_error(result) -> str:
    """The output of a refused command: exit 2, one non-empty line, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# --- the search path ---------------------------------------------------------------------------

def test_search_path_order_path_then_shipped_then_env_dirs_then_home(user_dirs, tmp_path) -> None:
    first, second, home = user_dirs
    write_profile(second, "mine", date="2026-01-02T00:00:00Z")
    write_profile(home, "mine", date="2026-01-03T00:00:00Z")
    assert load_profile("mine").date.startswith("2026-01-02")  # MOESIM_PROFILE_PATH before ~/.config
    write_profile(first, "mine", date="2026-01-01T00:00:00Z")
    assert load_profile("mine").date.startswith("2026-01-01")  # its directories in order
    assert load_profile("mine.json").date.startswith("2026-01-01")  # a name may carry .json
    write_profile(home, "only_home")
    assert resolve_profile_path("only_home") == home / "only_home.json"
    write_profile(first, "h200_sxm")  # the shipped profile comes before every user directory
    assert resolve_profile_path("h200_sxm") == PROFILE_DIR / "h200_sxm.json"
    given = write_profile(tmp_path / "elsewhere", "mine", date="2026-01-09T00:00:00Z")
    assert load_profile(str(given)).date.startswith("2026-01-09")  # a path as given, first of all


def test_an_unknown_name_says_where_it_looked(user_dirs) -> None:
    first, second, home = user_dirs
    with pytest.raises(ConfigError) as err:
        resolve_profile_path("nope")
    text = str(err.value)
    assert "'nope'" in text and str(PROFILE_DIR) in text and str(first) in text and str(second) in text
    assert str(home) in text and "h200_sxm" in text
    with pytest.raises(ConfigError, match="not found"):
        resolve_profile_path("some/dir/nope.json")


def test_a_loaded_profile_knows_its_identity(user_dirs) -> None:
    path = write_profile(user_dirs[0], "mine")
    ident = load_profile("mine").identity()
    assert ident == {"name": "mine", "device": H100, "date": "2026-12-01T00:00:00Z", "source": str(path.resolve()),
                     "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:12]}
    assert load_profile("h200_sxm").identity()["source"] == "moesim/profiles/h200_sxm.json"  # same on every machine


# --- a profile on a scenario -------------------------------------------------------------------

def scn(**kw) -> Scenario:
    base = dict(name="s", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=2, pp=4, num_microbatches=4))
    return Scenario(**{**base, **kw})


def test_a_profile_of_another_device_is_refused_naming_both(user_dirs) -> None:
    with pytest.raises(ConfigError) as err:
        build_scenario(scn(profile="h200_sxm"))
    text = str(err.value)
    assert "scenario.profile" in text and "NVIDIA H200" in text and "H100" in text
    assert "cost_model='calibrated'" in text  # how to override
    built = build_scenario(scn(profile="h200_sxm", cost_model="calibrated"))  # the explicit override
    assert built.cost_model.profile.name == "h200_sxm"
    with pytest.raises(ConfigError, match="cost_model='roofline'"):
        build_scenario(scn(profile="h200_sxm", cost_model="roofline"))


def test_a_profile_of_the_topologys_gpu_prices_the_run(user_dirs) -> None:
    write_profile(user_dirs[1], "my_h100")
    built = build_scenario(scn().with_overrides({"profile": "my_h100"}))  # --set profile=my_h100
    assert built.cost_model.profile.name == "my_h100" and built.cost_model.calibrated
    assert build_scenario(scn()).cost_model.profile.name == "h100_sxm"  # auto without a profile: the shipped one
    with pytest.raises(ConfigError, match="scenario.profile"):
        scn(profile=3)


def test_results_carry_version_schema_and_profile_identity(user_dirs, tmp_path) -> None:
    path = write_profile(user_dirs[0], "my_h100")
    exp = Experiment(name="e", scenarios=(scn(name="calibrated", profile="my_h100"),
                                          scn(name="roofline", cost_model="roofline")))
    started: list[str] = []
    run_experiment(exp, tmp_path / "out", on_start=started.append)
    assert started == ["calibrated", "roofline"]  # what the progress bar names
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["moesim_version"] == __version__ and doc["schema_version"] == RESULTS_SCHEMA_VERSION
    first, second = doc["scenarios"]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert first["profile"] == {"name": "my_h100", "device": H100, "date": "2026-12-01T00:00:00Z",
                                "source": str(path.resolve()), "sha256": sha}
    assert second["profile"] is None
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"my_h100 ({H100}, measured 2026-12-01, sha256 {sha}" in summary and "roofline" in summary
    assert f"moesim {__version__}, results schema {RESULTS_SCHEMA_VERSION}" in summary


# --- --profile on the commands -----------------------------------------------------------------

@pytest.fixture()
def exp_file(tmp_path) -> Path:
    path = tmp_path / "tiny_exp.py"
    path.write_text(EXPERIMENT_FILE)
    return path


def test_run_profile_option_reaches_every_scenario(user_dirs, exp_file, tmp_path) -> None:
    write_profile(user_dirs[0], "my_h100")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(exp_file), "--profile", "my_h100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert [s["profile"]["name"] for s in doc["scenarios"]] == ["my_h100", "my_h100"]
    refused = CliRunner().invoke(app, ["run", str(exp_file), "--profile", "h200_sxm", "--out", str(tmp_path / "r2")])
    assert "measured on NVIDIA H200" in one_line_error(refused)


def test_sweep_profile_option_is_part_of_each_point(user_dirs, exp_file, tmp_path) -> None:
    write_profile(user_dirs[0], "my_h100")
    out = tmp_path / "sweep"
    result = CliRunner().invoke(app, ["sweep", str(exp_file), "-g", "plan.num_microbatches=4", "--profile", "my_h100",
                                      "--workers", "1", "--out", str(out), "--scenario", "first"])
    assert result.exit_code == 0, result.output
    (rec,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rec["overrides"]["profile"] == "my_h100" and rec["result"]["profile"]["name"] == "my_h100"
    assert rec["moesim_version"] == __version__ and "my_h100 (" in (out / "summary.md").read_text()
    unknown = CliRunner().invoke(app, ["sweep", str(exp_file), "-g", "plan.num_microbatches=4", "--profile", "nope",
                                       "--out", str(tmp_path / "s2")])
    assert "no profile named 'nope'" in one_line_error(unknown)


@pytest.mark.parametrize("args", [["plan", "-s", "qwen3-30b-a3b-dgx-h200"], ["bench", "run", "--targets", "moe_grouping"]])
def test_plan_and_bench_take_a_profile_and_refuse_an_unknown_one(user_dirs, args) -> None:
    verb = args[:2] if args[0] == "bench" else args[:1]
    help_text = CliRunner().invoke(app, [*verb, "--help"]).output
    assert "--profile" in help_text
    assert "no profile named 'nope'" in one_line_error(CliRunner().invoke(app, [*args, "--profile", "nope"]))


def test_a_profile_scope_reaches_cost_models_built_without_one(user_dirs) -> None:
    from moesim.lowering.resolve import profile_scope, resolve_cost_model

    write_profile(user_dirs[0], "my_h100")
    with profile_scope("my_h100"):
        assert resolve_cost_model("auto", "H100").profile.name == "my_h100"
        assert resolve_cost_model("roofline", "H100").name.startswith("roofline")  # an explicit roofline stays
        with pytest.raises(ConfigError, match="measured on NVIDIA H100"):
            resolve_cost_model("auto", "H200")
    assert resolve_cost_model("auto", "H100").profile.name == "h100_sxm"   # outside the scope: the shipped one


# --- one-line errors ---------------------------------------------------------------------------

def test_a_yaml_passed_as_the_experiment(tmp_path) -> None:
    line = one_line_error(CliRunner().invoke(app, ["run", "topologies/dgx_h100.yaml", "--out", str(tmp_path / "o")]))
    assert "is a topology, not an experiment" in line and "experiments/" in line


def test_an_experiment_file_with_a_syntax_error(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\ny = (\n")
    for verb in (["run"], ["sweep", "-g", "plan.num_microbatches=4"]):
        line = one_line_error(CliRunner().invoke(app, [*verb, str(bad), "--out", str(tmp_path / "o")]))
        assert "syntax error" in line and "bad.py:2" in line


def test_an_unwritable_out(exp_file, tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for verb in (["run"], ["sweep", "-g", "plan.num_microbatches=4"]):
        line = one_line_error(CliRunner().invoke(app, [*verb, str(exp_file), "--out", str(blocker / "out")]))
        assert line.startswith("error: --out: cannot write to") and "a_file" in line


def test_a_results_jsonl_line_without_result(exp_file, tmp_path) -> None:
    from moesim.sweep.grid import SweepPoint

    out = tmp_path / "sweep"
    out.mkdir()
    point = SweepPoint("first", (("plan.num_microbatches", "4"),))
    (out / "results.jsonl").write_text(json.dumps({**point.record(), "status": "ok"}) + "\n")
    line = one_line_error(CliRunner().invoke(app, ["sweep", str(exp_file), "-g", "plan.num_microbatches=4",
                                                   "--scenario", "first", "--workers", "1", "--out", str(out)]))
    assert "results.jsonl:1" in line and "no result" in line and "delete that line" in line


def test_calibrate_without_torch(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails as if not installed
    for name in [m for m in sys.modules if m.startswith("moesim.calibrate.") and m != "moesim.calibrate.cli"]:
        monkeypatch.delitem(sys.modules, name)
    for verb in ("run", "workloads"):
        line = one_line_error(CliRunner().invoke(app, ["calibrate", verb, "--device", "cpu"]))
        assert "torch: not installed" in line and "pip install 'moesim[calibrate]'" in line


# --- what moesim calibrate run reports ---------------------------------------------------------

def test_completeness_estimates_a_complete_run_from_time_per_shape() -> None:
    pytest.importorskip("torch")
    from moesim.calibrate.measure import completeness

    sections = [{"section": "gemm", "measured": 10, "skipped": 0, "elapsed_s": 5.0, "budget_s": 10.0},
                {"section": "attention", "measured": 4, "skipped": 6, "elapsed_s": 8.0, "budget_s": 8.0},
                {"section": "memory", "measured": 0, "skipped": 3, "elapsed_s": 0.0, "budget_s": 1.0}]
    done = completeness(sections, budget_s=100.0, wall_s=20.0)
    # attention: 2 s per shape x 6; memory measured none: the run's mean, 13 s / 14 shapes, x 3
    assert done["complete"] is False and done["skipped_shapes"] == 9
    assert done["extra_s"] == pytest.approx(12 + 3 * 13 / 14, abs=0.05)
    assert done["needed_s"] == pytest.approx(20 + 12 + 3 * 13 / 14, abs=0.05)
    # memory needs 2.8 s of its 1 s budget: the budget that gives it that at the same share
    assert done["budget_s_for_complete"] == 280.0
    assert completeness(sections[:1], 100.0, 5.0) == {"complete": True, "skipped_shapes": 0, "wall_s": 5.0,
                                                      "budget_s": 100.0}


def test_calibrate_run_shows_a_table_and_what_a_one_rank_profile_leaves_to_the_roofline(tmp_path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "p.json"
    result = CliRunner().invoke(app, ["calibrate", "run", "--device", "cpu", "--out", str(out), "--budget-s", "20",
                                      "--sections", "gemm,attention"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert [s["section"] for s in doc["sections"]] == ["gemm_bf16", "attention"]
    assert all(s["measured"] + s["skipped"] > 0 for s in doc["sections"])
    assert set(doc["not_measured"]) == {"collectives", "overlap"}
    assert "gemm_bf16" in result.output and "not measured: collectives" in result.output
    assert ("incomplete profile" in result.output) == (not doc["completeness"]["complete"])
    from moesim.costs.calibrated import CalibratedCostModel

    sources = CalibratedCostModel(load_profile(out)).sources()  # every result repeats these
    assert sources["collectives"] == "roofline" and sources["compute/comm overlap"] == "roofline"
    assert sources["gemm"] == "measured (cpu)"
