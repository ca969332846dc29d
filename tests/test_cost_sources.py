"""Every result says, per op class, where its costs came from: measured, borrowed or roofline."""
from __future__ import annotations

import json

from moesim.calibrate.merge import borrow_rows
from moesim.costs.base import cost_sources
from moesim.costs.calibrated import CalibratedCostModel
from moesim.costs.profile import PROFILE_DIR, profile_from_dict
from moesim.costs.roofline import make_cost_model


def _h200() -> dict:
    return json.loads((PROFILE_DIR / "h200_sxm.json").read_text())


def test_roofline_says_roofline_for_every_class() -> None:
    assert cost_sources(make_cost_model("H100")) == {"all op classes": "roofline (H100 datasheet, uncalibrated)"}


def test_profile_without_collectives_says_its_communication_is_roofline() -> None:
    doc = _h200()
    doc["samples"] = [r for r in doc["samples"] if r["op"] not in ("collective", "overlap")]
    src = CalibratedCostModel(profile_from_dict(doc, name="one_gpu")).sources()
    assert src["collectives"] == "roofline" and src["gemm"] == "measured (NVIDIA H200)"


def test_borrowed_collectives_are_named_with_their_donor() -> None:
    donor = _h200()
    one_gpu = {**donor, "samples": [r for r in donor["samples"] if r["op"] == "gemm"]}
    merged = borrow_rows(one_gpu, donor, ("collective",), "same NVLink generation")
    assert all(r["borrowed_from"] == "NVIDIA H200 profile of 2026-11-28" for r in merged["samples"]
               if r["op"] == "collective")
    assert merged["borrowed"] == [{"op": "collective", "from": "NVIDIA H200 profile of 2026-11-28",
                                   "why": "same NVLink generation"}]
    src = CalibratedCostModel(profile_from_dict(merged, name="borrowing")).sources()
    assert src["collectives"] == "measured on NVIDIA H200 profile of 2026-11-28 (borrowed)"
    assert src["attention"] == "roofline"


def test_merge_keeps_a_merged_inputs_runs_and_rows() -> None:
    from moesim.calibrate.merge import merge_profiles

    shipped = _h200()
    extra = {k: shipped[k] for k in ("schema_version", "device", "driver", "cuda", "nccl", "torch")}
    extra.update(date="2026-12-06T00:00:00Z", command="new section", gpu_count=1,
                 samples=[{"op": "sync", "variant": "idle", "nbytes": 12345, "time_ns": 20000.0, "repeats": 5}])
    merged = merge_profiles([shipped, extra])
    assert len(merged["runs"]) == len(shipped["runs"]) + 1
    assert len(merged["samples"]) == len(shipped["samples"]) + 1
    before = sorted(r["run"] for r in shipped["samples"])
    new = [r for r in merged["samples"] if r["op"] == "sync" and r["nbytes"] == 12345]   # a shape no run measured
    assert sorted(r["run"] for r in merged["samples"] if r not in new) == before
    assert [r["run"] for r in new] == [len(shipped["runs"])]
    drifted = {**extra, "torch": "2.99"}
    import pytest
    with pytest.raises(SystemExit, match="--mixed-versions"):
        merge_profiles([shipped, drifted])
    mixed = merge_profiles([shipped, drifted], mixed_versions=True)
    assert mixed["runs"][-1]["torch"] == "2.99" and mixed["torch"] == shipped["torch"]


def test_topology_yaml_with_a_complex_key_is_a_config_error(tmp_path) -> None:
    import pytest

    from moesim.errors import ConfigError
    from moesim.topology.loader import load_topology

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n? - a\n: 3\n")
    with pytest.raises(ConfigError, match="mapping key is not plain"):
        load_topology(bad)


def test_a_profile_time_under_a_nanosecond_is_refused_naming_the_row() -> None:
    import pytest

    from moesim.errors import ConfigError

    doc = _h200()
    doc["samples"] = [dict(doc["samples"][0], time_ns=1e-300), *doc["samples"][1:]]
    with pytest.raises(ConfigError, match=r"samples\[0\].time_ns"):
        profile_from_dict(doc, name="tiny_times")


def test_borrowed_rows_index_the_donors_run_records() -> None:
    donor = _h200()
    one_gpu = {**donor, "runs": donor["runs"][:1], "samples": [r for r in donor["samples"] if r["op"] == "gemm"]}
    merged = borrow_rows(one_gpu, donor, ("collective",), "same NVLink generation")
    assert len(merged["runs"]) == 1 + len(donor["runs"])
    for r in merged["samples"]:
        if r["op"] == "collective":
            run = merged["runs"][r["run"]]
            assert run["borrowed_from"] == r["borrowed_from"] and run["command"] == donor["runs"][r["run"] - 1]["command"]


def test_merging_a_profile_with_borrowed_rows_keeps_its_borrowed_record() -> None:
    from moesim.calibrate.merge import merge_profiles

    donor = _h200()
    one_gpu = {**donor, "runs": donor["runs"][:1], "samples": [r for r in donor["samples"] if r["op"] == "gemm"]}
    borrowed = borrow_rows(one_gpu, donor, ("collective",), "same NVLink generation")
    later = {**donor, "runs": [], "samples": [r for r in donor["samples"] if r["op"] == "attention"][:4]}
    merged = merge_profiles([borrowed, later])
    assert [b["op"] for b in merged["borrowed"]] == ["collective"]
    remeasured = {**donor, "runs": [], "samples": [r for r in donor["samples"] if r["op"] == "collective"]}
    assert "borrowed" not in merge_profiles([borrowed, remeasured])   # measured rows retire the record
