"""Bad scenario-file input: one ConfigError naming the field and the fix, never a Python
internal (a traceback, "__init__() missing ...", "'>' not supported ..."); relative paths in a
scenario file are read from the file's own directory."""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from moesim.cli import app
from moesim.errors import ConfigError
from moesim.experiment.experiment import load_experiment
from moesim.experiment.faults import Faults
from moesim.experiment.scenario import Scenario
from moesim.experiment.scenario_files import load_scenario_file
from moesim.workload.moe import MoESpec
from moesim.workload.transformer import TransformerSpec

ROOT = Path(__file__).parent.parent
BASE = yaml.safe_load((ROOT / "tests" / "data" / "scenarios" / "qwen3_ep8.yaml").read_text())
INTERNALS = ("__init__", "not supported between", "unhashable", "object has no attribute", "unpack",
             "cannot build", "Traceback")


def _variant(tmp_path: Path, change, name: str = "scn.yaml") -> Path:
    data = copy.deepcopy(BASE)
    change(data["scenarios"][0] if "scenarios" in data else data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_scenario_file(path)
    msg = str(info.value)
    assert not any(s in msg for s in INTERNALS), msg
    assert "(fix: " in msg or info.value.field.startswith("faults."), msg
    return info.value


def _set(key: str, value):
    def change(s):
        node = s
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return change


# -- defect 1: no tracebacks from the model's and faults' shapes ---------------------------------
@pytest.mark.parametrize("model, field", [
    ({"spec": {"foo": 1}}, "model.spec"),
    ({"spec": ["MoESpec"]}, "model.spec"),
    ({"hf": 5}, "model.hf"),
    ({"preset": ["qwen3-30b-a3b"]}, "model.preset"),
    ({"hf": str(ROOT / "moesim" / "configs" / "deepseek-v3.json"), "seq_len": "x"}, "model.seq_len"),
])
def test_model_head_of_wrong_type_names_its_field(tmp_path, model, field):
    err = _error(_variant(tmp_path, _set("model", model)))
    assert err.field == field, str(err)


@pytest.mark.parametrize("faults, field, problem", [
    ({"slow_gpus": [3]}, "faults.slow_gpus", "must be a mapping of GPU rank -> multiplier, got [3]"),
    ({"slow_gpus": {3: "x"}}, "faults.slow_gpus", "3: 'x' is not rank: multiplier in [1, 1000]"),
    ({"slow_gpus": {-1: 1.2}}, "faults.slow_gpus", "key -1 is not a GPU rank"),
    ({"slow_nics": [1]}, "faults.slow_nics", "must be a mapping of GPU rank -> fraction"),
    ({"failed_links": [["a", "b", "c"]]}, "faults.failed_links", "('a', 'b', 'c') is not (node, node)"),
    ({"failed_links": 5}, "faults.failed_links", "must be a list of (node, node), got 5"),
    ({"degraded_links": [["a", "b"]]}, "faults.degraded_links", "is not (node, node, fraction)"),
    ({"degraded_links": [["a", "b", "half"]]}, "faults.degraded_links", "is not (node, node, fraction"),
])
def test_faults_of_wrong_type_name_their_field(tmp_path, faults, field, problem):
    err = _error(_variant(tmp_path, _set("faults", faults)))
    assert err.field == field and problem in err.problem, str(err)
    assert err.fix, str(err)


def test_faults_check_their_own_types():
    with pytest.raises(ConfigError, match=r"^faults\.failed_links: must be a list of \(node, node\), got 'ab'"):
        Faults(failed_links="ab")
    with pytest.raises(ConfigError, match=r"^faults\.slow_gpus: cannot read '3' as rank:multiplier"):
        Faults(slow_gpus="3")
    assert Faults(failed_links=[["a", "b"]]).failed_links == (("a", "b"),)


def test_set_of_a_whole_faults_field():
    """--set parses the documented rank:number text of a mapping field and refuses a link list
    with a fix that says where to give it."""
    scn = Scenario(name="a", topology="dgx_h100", model="qwen3-30b-a3b", faults=Faults(slow_gpus={1: 1.1}))
    assert scn.with_overrides({"faults.slow_gpus": "3:1.3,5:1.2"}).faults.slow_gpus == {3: 1.3, 5: 1.2}
    assert scn.with_overrides({"faults.slow_nics": "2:0.5"}).faults.slow_nics == {2: 0.5}
    assert scn.with_overrides({"faults.slow_gpus": ""}).faults.slow_gpus == {}
    with pytest.raises(ConfigError, match=r"^faults\.slow_gpus: cannot read 'x:1' as rank:multiplier "
                                          r"\(fix: .*--set faults\.slow_gpus=3:1\.3,5:1\.2\)$"):
        scn.with_overrides({"faults.slow_gpus": "x:1"})
    with pytest.raises(ConfigError, match=r"^faults\.failed_links: .*'ab'.*\(fix: .*scenario file.*failed_links"):
        scn.with_overrides({"faults.failed_links": "ab"})


def test_cli_set_faults_gives_one_line_and_exit_2(tmp_path):
    file = _variant(tmp_path, lambda s: None)
    out = CliRunner().invoke(app, ["run", str(file), "--no-trace", "--no-plots", "--out", str(tmp_path / "o"),
                                   "--set", "faults.failed_links=ab"])
    assert out.exit_code == 2, out.output
    assert "faults.failed_links: must be a list of (node, node), got 'ab'" in out.output
    assert "Traceback" not in out.output


# -- defect 2: missing fields and non-integer sizes ----------------------------------------------
@pytest.mark.parametrize("field", ["name", "model", "topology"])
def test_missing_scenario_field_is_named(tmp_path, field):
    def drop(s):
        s.pop(field, None)
    data = copy.deepcopy(BASE)
    data.pop("defaults", None) if field == "topology" else None
    if field == "topology":
        data["scenarios"][0].pop("topology", None)
    drop(data["scenarios"][0])
    path = tmp_path / "scn.yaml"
    path.write_text(yaml.safe_dump(data))
    err = _error(path)
    assert err.field == f"scenario.{field}" and err.problem == "missing", str(err)
    assert f"{field}:" in err.fix, str(err)


@pytest.mark.parametrize("name, text", [("empty.toml", ""), ("empty.yaml", "{}\n")])
def test_empty_file_says_what_to_write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    err = _error(path)
    assert err.field == "experiment file" and "is empty" in err.problem and "scenarios:" in err.fix


def test_blank_yaml_file_is_a_config_error(tmp_path):
    path = tmp_path / "blank.yaml"
    path.write_text("")
    _error(path)


def test_missing_spec_field_is_named(tmp_path):
    err = _error(_variant(tmp_path, _set("model", {"spec": "MoESpec", "num_layers": 2})))
    assert err.field == "model.name" and err.problem.startswith("missing (so are hidden"), str(err)


@pytest.mark.parametrize("key, value", [
    ("num_layers", "two"), ("num_layers", [2]), ("num_layers", 2.0), ("num_experts", "x"), ("seq_len", "4k"),
    ("top_k", True), ("num_shared_experts", 1.5),
])
def test_spec_sizes_must_be_integers(tmp_path, key, value):
    err = _error(_variant(tmp_path, _set(f"model.{key}", value)))
    bound = ">= 0" if key == "num_shared_experts" else ">= 1"
    assert str(err).endswith(f"model.{key}: must be an integer {bound}, got {value!r} "
                             f"(fix: give a whole number {bound}, e.g. {0 if bound == '>= 0' else 2})"), str(err)


def test_spec_classes_type_check_before_comparing():
    base = dict(name="m", num_layers=2, hidden=64, num_heads=4, num_kv_heads=4, head_dim=16, ffn_hidden=128,
                vocab=1000, seq_len=128)
    with pytest.raises(ConfigError, match=r"^num_layers: must be an integer >= 1, got 'two'"):
        TransformerSpec(**{**base, "num_layers": "two"})
    with pytest.raises(ConfigError, match=r"^dtype: must be a name \(text\), got \['bf16'\]"):
        TransformerSpec(**{**base, "dtype": ["bf16"]})
    with pytest.raises(ConfigError, match=r"^num_experts: must be an integer >= 1, got 'x'"):
        MoESpec(**base, num_experts="x", top_k=1, expert_ffn_hidden=64)
    with pytest.raises(ConfigError, match=r"^moe_layer_freq: must be an integer >= 1"):
        MoESpec(**base, num_experts=4, top_k=1, expert_ffn_hidden=64, moe_layer_freq="x")
    with pytest.raises(ConfigError, match=r"^num_layers: must be > 0, got 0"):   # range message unchanged
        TransformerSpec(**{**base, "num_layers": 0})


# -- defect 3: relative paths from the scenario file's directory ---------------------------------
def _far_away(tmp_path: Path, monkeypatch) -> Path:
    d = tmp_path / "scenarios"
    d.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return d


def test_paths_resolve_next_to_the_scenario_file(tmp_path, monkeypatch):
    d = _far_away(tmp_path, monkeypatch)
    shutil.copy(ROOT / "topologies" / "dgx_h100.yaml", d / "mytopo.yaml")
    shutil.copy(ROOT / "moesim" / "profiles" / "h100_sxm.json", d / "myprof.json")
    (d / "good.npz").write_bytes(b"")
    data = copy.deepcopy(BASE)
    data["defaults"]["topology"] = "mytopo.yaml"                # in defaults
    s = data["scenarios"][0]
    s["profile"] = "myprof.json"
    s["moe"]["routing"] = {"kind": "trace", "trace_path": "good.npz"}
    (d / "scn.yaml").write_text(yaml.safe_dump(data))
    scn = load_scenario_file(d / "scn.yaml")["scenarios"][0]
    assert Path(scn.topology) == d / "mytopo.yaml"
    assert Path(scn.profile) == d / "myprof.json"
    assert Path(scn.moe.routing.trace_path) == d / "good.npz"


def test_shipped_names_and_missing_files_are_kept(tmp_path, monkeypatch):
    d = _far_away(tmp_path, monkeypatch)
    data = copy.deepcopy(BASE)
    data["scenarios"][0]["profile"] = "h100_sxm"
    (d / "scn.yaml").write_text(yaml.safe_dump(data))
    scn = load_scenario_file(d / "scn.yaml")["scenarios"][0]
    assert scn.topology == "dgx_h100" and scn.profile == "h100_sxm"
    data["defaults"]["topology"] = "nowhere.yaml"
    (d / "scn.yaml").write_text(yaml.safe_dump(data))
    assert load_scenario_file(d / "scn.yaml")["scenarios"][0].topology == "nowhere.yaml"


def test_run_from_another_directory_finds_topology_and_profile(tmp_path, monkeypatch):
    d = _far_away(tmp_path, monkeypatch)
    shutil.copy(ROOT / "topologies" / "dgx_h100.yaml", d / "mytopo.yaml")
    shutil.copy(ROOT / "moesim" / "profiles" / "h100_sxm.json", d / "myprof.json")
    data = copy.deepcopy(BASE)
    data["defaults"]["topology"] = "mytopo.yaml"
    data["scenarios"][0]["profile"] = "myprof.json"
    (d / "scn.yaml").write_text(yaml.safe_dump(data))
    exp = load_experiment(d / "scn.yaml")
    assert Path(exp.scenarios[0].topology) == d / "mytopo.yaml"
    out = CliRunner().invoke(app, ["run", str(d / "scn.yaml"), "--no-trace", "--no-plots", "--out", "o"])
    assert out.exit_code == 0, out.output
