"""YAML / TOML scenario files: equal to the Python form, every shipped experiment round-trips,
--set applies, bad keys are named."""
from __future__ import annotations

import dataclasses
import glob
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from moesim.cli import app
from moesim.errors import ConfigError
from moesim.experiment.experiment import load_experiment
from moesim.experiment.faults import Faults
from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario
from moesim.experiment.scenario_files import build_scenario, scenario_to_dict
from moesim.lowering.overlap import OverlapOptions
from moesim.memory.config import MemoryConfig
from moesim.moe.routing import RoutingConfig
from moesim.workload.presets import get_model

DATA = Path(__file__).parent / "data" / "scenarios"
ROOT = Path(__file__).parent.parent


def _python_form() -> Scenario:
    return Scenario(
        name="ep8-zipf", topology="dgx_h100", cost_model="calibrated",
        model=dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=2),
        plan=ParallelPlan(dp=8, ep=8, num_microbatches=2, sequence_parallel=False),
        moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=1.2), placement="load_balanced", num_redundant=8),
        memory=MemoryConfig(recompute="selective", recompute_modules=("core_attn", "moe_act")),
        overlap=OverlapOptions(overlap_grad_reduce=True), faults=Faults(slow_gpus={3: 1.2}))


@pytest.mark.parametrize("name", ["qwen3_ep8.yaml", "qwen3_ep8.toml"])
def test_file_equals_python_form(name: str) -> None:
    exp = load_experiment(DATA / name)
    assert exp.name == "qwen3-ep8" and len(exp.scenarios) == 1
    assert exp.scenarios[0] == _python_form()


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "experiments" / "*.py"))))
def test_every_shipped_experiment_round_trips(path: str, tmp_path: Path) -> None:
    for scn in load_experiment(path).scenarios:
        file = tmp_path / f"{scn.name}.yaml"
        file.write_text(yaml.safe_dump(scenario_to_dict(scn), sort_keys=False))
        assert load_experiment(file).scenarios[0] == scn


def test_set_applies_to_a_file_scenario() -> None:
    scn = load_experiment(DATA / "qwen3_ep8.yaml").scenarios[0]
    changed = scn.with_overrides({"plan.num_microbatches": "4", "moe.routing.zipf_s": "0.8"})
    assert changed.plan.num_microbatches == 4 and changed.moe.routing.zipf_s == 0.8


def test_hf_model_in_a_scenario(tmp_path: Path) -> None:
    cfg = ROOT / "moesim" / "configs" / "mixtral-8x7b.json"
    scn = build_scenario({"name": "m", "topology": "dgx_h100", "model": {"hf": str(cfg), "seq_len": 4096}})
    assert scn.model == get_model("mixtral-8x7b").__class__(**{
        **{f.name: getattr(get_model("mixtral-8x7b"), f.name) for f in dataclasses.fields(scn.model)},
        "source": scn.model.source})


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="plan.tpp: unknown field of ParallelPlan"):
        build_scenario({"name": "x", "topology": "dgx_h100", "model": "llama3-8b", "plan": {"tpp": 2}})
    with pytest.raises(ConfigError, match="exactly one of hf, preset or spec"):
        build_scenario({"name": "x", "topology": "dgx_h100", "model": {"preset": "llama3-8b", "hf": "c.json"}})
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[plan\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_experiment(bad)
    with pytest.raises(ConfigError, match="is a topology, not an experiment"):
        load_experiment(ROOT / "topologies" / "dgx_h100.yaml")
    extra = tmp_path / "extra.yaml"
    extra.write_text("name: x\nscenarios: [{name: a, topology: dgx_h100, model: llama3-8b}]\nplans: {}\n")
    with pytest.raises(ConfigError, match="unknown experiment key"):
        load_experiment(extra)


def test_cli_runs_a_yaml_scenario(tmp_path: Path) -> None:
    file = tmp_path / "tiny.yaml"
    file.write_text("name: tiny\ntopology: dgx_h100\ngpus_per_node: 2\n"
                    "model: {preset: llama3-8b, num_layers: 2, seq_len: 1024}\nplan: {dp: 2, num_microbatches: 2}\n")
    out = CliRunner().invoke(app, ["run", str(file), "--out", str(tmp_path / "run"), "--set", "plan.num_microbatches=3"])
    assert out.exit_code == 0, out.output
    assert '"num_microbatches": 3' in (tmp_path / "run" / "results.json").read_text()


def test_a_file_without_notes_has_none_and_notes_are_read(tmp_path: Path) -> None:
    """A scenario file with no ``notes`` printed a spurious ``note: ()``."""
    assert load_experiment(DATA / "qwen3_ep8.yaml").notes == ()
    text = (DATA / "qwen3_ep8.yaml").read_text()
    (tmp_path / "n.yaml").write_text(text + "notes: [first, 2]\n")
    assert load_experiment(tmp_path / "n.yaml").notes == ("first", "2")
