"""The profile loader: accepts the shipped profile, rejects bad ones naming the field."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from moesim.costs.profile import (
    PROFILE_DIR,
    available_profiles,
    load_profile,
    profile_from_dict,
)
from moesim.errors import ConfigError

SHIPPED = PROFILE_DIR / "h200_sxm.json"


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(SHIPPED.read_text())


def test_shipped_profile_loads_with_provenance() -> None:
    p = load_profile("h200_sxm")
    assert p.name == "h200_sxm"
    assert p.device == "NVIDIA H200" and p.device_kind == "H200"
    assert p.gpu_count >= 2
    for field in (p.driver, p.cuda, p.nccl, p.torch, p.date, p.command):
        assert field and field != "unavailable"
    assert {"gemm", "attention", "memory", "collective", "overlap", "launch", "host"} <= p.ops()
    assert "h200_sxm" in available_profiles()


def test_shipped_profile_is_small_and_measured_by_the_shipped_commands() -> None:
    assert SHIPPED.stat().st_size < 2 * 2**20
    p = load_profile(SHIPPED)
    assert "moesim.calibrate.measure" in p.command
    assert all(s["time_ns"] > 0 and s["repeats"] >= 1 for s in p.samples)


def test_load_by_path_equals_load_by_name() -> None:
    assert load_profile(SHIPPED).samples == load_profile("h200_sxm").samples


def test_optional_fields_get_their_defaults(raw: dict) -> None:
    doc = copy.deepcopy(raw)
    gemm = next(s for s in doc["samples"] if s["op"] == "gemm")
    gemm.pop("layout")
    coll = next(s for s in doc["samples"] if s["op"] == "collective")
    coll.pop("mode")
    p = profile_from_dict(doc)
    assert p.select("gemm")[0]["layout"] == "fwd"
    assert p.select("collective")[0]["mode"] == "eager"


def test_unknown_name_lists_the_shipped_profiles() -> None:
    with pytest.raises(ConfigError, match="h200_sxm") as err:
        load_profile("no_such_gpu")
    assert err.value.field == "profile"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_profile(tmp_path / "absent.json")
    assert err.value.field == "profile"


def test_invalid_json_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_profile(bad)


def _broken(raw: dict, mutate) -> dict:
    doc = copy.deepcopy(raw)
    mutate(doc)
    return doc


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("driver"), "driver"),
        (lambda d: d.pop("samples"), "samples"),
        (lambda d: d.update(samples=[]), "samples"),
        (lambda d: d.update(schema_version=99), "schema_version"),
        (lambda d: d.update(gpu_count=0), "gpu_count"),
        (lambda d: d["samples"][0].update(time_ns=-5.0), "samples[0].time_ns"),
        (lambda d: d["samples"][0].update(time_ns=float("nan")), "samples[0].time_ns"),
        (lambda d: d["samples"][0].pop("repeats"), "samples[0].repeats"),
        (lambda d: d["samples"][0].update(op="fft"), "samples[0].op"),
        (lambda d: d["samples"][0].update(p25_ns=-1.0), "samples[0].p25_ns"),
        (lambda d: d["samples"].__setitem__(0, {"op": "host_mix", "phase": "fwd", "time_ns": 9.0, "repeats": 3}),
         "samples[0].classes"),
        (lambda d: d["samples"].__setitem__(0, {"op": "host_mix", "phase": "fwd", "classes": [],
                                                "time_ns": 9.0, "repeats": 3}), "samples[0].classes"),
    ],
)
def test_bad_profiles_name_the_field(raw: dict, mutate, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        profile_from_dict(_broken(raw, mutate))
    assert err.value.field == field


def test_bad_op_fields_name_the_sample_and_field(raw: dict) -> None:
    doc = copy.deepcopy(raw)
    i = next(i for i, s in enumerate(doc["samples"]) if s["op"] == "gemm")
    doc["samples"][i]["dtype"] = "fp64"
    with pytest.raises(ConfigError, match="fp64") as err:
        profile_from_dict(doc)
    assert err.value.field == f"samples[{i}].dtype"
    doc["samples"][i]["dtype"] = "bf16"
    doc["samples"][i].pop("k")
    with pytest.raises(ConfigError) as err:
        profile_from_dict(doc)
    assert err.value.field == f"samples[{i}].k"


def test_unknown_enum_values_list_the_valid_ones(raw: dict) -> None:
    doc = copy.deepcopy(raw)
    i = next(i for i, s in enumerate(doc["samples"]) if s["op"] == "collective")
    doc["samples"][i]["collective"] = "all_scatter"
    with pytest.raises(ConfigError, match="all_reduce"):
        profile_from_dict(doc)


def test_host_rows_and_memory_cache_state_are_validated(raw: dict) -> None:
    doc = copy.deepcopy(raw)
    mem = next(s for s in doc["samples"] if s["op"] == "memory" and "cache" in s)
    mem.pop("cache")
    assert profile_from_dict(doc).select("memory")[0]["cache"] in ("cold", "warm")
    assert any(s["cache"] == "warm" for s in profile_from_dict(doc).select("memory"))
    i = next(i for i, s in enumerate(doc["samples"]) if s["op"] == "memory")
    doc["samples"][i]["cache"] = "lukewarm"
    with pytest.raises(ConfigError, match="cold, warm") as err:
        profile_from_dict(doc)
    assert err.value.field == f"samples[{i}].cache"
    doc = copy.deepcopy(raw)
    j = next(j for j, s in enumerate(doc["samples"]) if s["op"] == "host")
    doc["samples"][j].pop("call")
    with pytest.raises(ConfigError) as err:
        profile_from_dict(doc)
    assert err.value.field == f"samples[{j}].call"


def test_shipped_profile_keeps_every_runs_provenance() -> None:
    p = load_profile("h200_sxm")
    runs = p.extra["runs"]
    assert len(runs) == 10 and all(r["date"] and r["command"] for r in runs)
    assert "clock_reference" in runs[9]["command"] and {s["run"] for s in p.select("clock")} == {9}
    assert "--sections host_ops,attention,memory,collectives,collectives_graph" in runs[3]["command"]
    assert "moesim.calibrate.probes" in runs[4]["command"]
    for i, section in enumerate(("grouped_gemm_v", "fp8_scaled", "moe_kernels,host_classes", "attention_gqa"), 5):
        assert f"--sections {section}" in runs[i]["command"] and runs[i]["date"].startswith("2026-12-06")
    assert {s["run"] for s in p.select("host_op")} == {7}
    assert {s["run"] for s in p.select("host")} == {3}
