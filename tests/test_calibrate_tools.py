"""Calibration tools that need no torch: pipeline action orders and merging runs."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.calibrate.merge import merge_profiles, merge_validation, sample_key
from moesim.calibrate.pipeline_orders import (
    dry_run,
    format_action,
    gpipe_order,
    interleaved_order,
    one_f_one_b_order,
    orders_for,
)
from moesim.costs.profile import profile_from_dict

SHAPE = {"op": "gemm", "dtype": "bf16", "m": 64, "n": 1024, "k": 1024}
HEADER = {"schema_version": 1, "device": "NVIDIA H200", "gpu_count": 1, "driver": "580", "cuda": "13.0",
          "nccl": "2.28.9", "torch": "2.11", "date": "2026-01-01T00:00:00Z", "command": "run A", "notes": "n"}


def test_one_f_one_b_known_answer() -> None:
    text = [" ".join(format_action(a) for a in one_f_one_b_order(2, 4, r)) for r in range(2)]
    assert text == ["F0.0 F0.1 B0.0 F0.2 B0.1 F0.3 B0.2 B0.3", "F1.0 B1.0 F1.1 B1.1 F1.2 B1.2 F1.3 B1.3"]
    assert gpipe_order(2, 2, 1) == [("F", 1, 0), ("F", 1, 1), ("B", 1, 0), ("B", 1, 1)]


def test_interleaved_known_answer_for_two_ranks() -> None:
    rank0 = " ".join(format_action(a) for a in interleaved_order(2, 2, 4, 0))
    assert rank0 == "F0.0 F0.1 F2.0 F2.1 F0.2 B2.0 F0.3 B2.1 F2.2 B0.0 F2.3 B0.1 B2.2 B2.3 B0.2 B0.3"


@settings(max_examples=60, deadline=None)
@given(ranks=st.integers(1, 6), groups=st.integers(1, 4), chunks=st.integers(1, 3),
       schedule=st.sampled_from(["gpipe", "1f1b", "interleaved"]))
def test_every_order_is_complete_and_deadlock_free(ranks: int, groups: int, chunks: int, schedule: str) -> None:
    microbatches = ranks * groups
    orders = orders_for(schedule, ranks, microbatches, chunks)
    stages = ranks * (chunks if schedule == "interleaved" else 1)
    for rank, order in enumerate(orders):
        counts = Counter(order)
        assert set(counts.values()) == {1}
        assert {s for _, s, _ in order} == set(range(rank, stages, ranks))
        assert len(order) == 2 * microbatches * stages // ranks
    assert dry_run(orders, stages) >= 2 * microbatches


def test_dry_run_reports_a_deadlock() -> None:
    bad = [[("B", 0, 0), ("F", 0, 0)], [("F", 1, 0), ("B", 1, 0)]]
    with pytest.raises(RuntimeError, match="deadlock"):
        dry_run(bad, 2)


def _doc(command: str, gpus: int, samples: list[dict]) -> dict:
    return {**HEADER, "command": command, "gpu_count": gpus, "samples": samples}


def test_merge_later_runs_win_and_keep_provenance() -> None:
    a = _doc("run A", 2, [{**SHAPE, "time_ns": 10.0, "repeats": 5},
                          {"op": "launch", "variant": "eager_back_to_back", "time_ns": 7.0, "repeats": 5}])
    b = _doc("run B", 4, [{**SHAPE, "layout": "fwd", "time_ns": 12.0, "repeats": 5}])
    merged = merge_profiles([a, b])
    assert merged["gpu_count"] == 4
    assert merged["command"] == "run A ; run B"
    assert [r["command"] for r in merged["runs"]] == ["run A", "run B"]
    gemm = [s for s in merged["samples"] if s["op"] == "gemm"]
    assert len(gemm) == 1 and gemm[0]["time_ns"] == 12.0 and gemm[0]["run"] == 1
    assert profile_from_dict(merged).select("launch")[0]["run"] == 0
    assert sample_key({**SHAPE, "time_ns": 1.0}) == sample_key({**SHAPE, "layout": "fwd", "time_ns": 2.0})


def test_merge_average_keeps_rows_of_runs_with_the_same_heating() -> None:
    attn = {"op": "attention", "dtype": "bf16", "direction": "fwd", "causal": True, "batch": 1, "heads": 8, "seq": 512,
            "head_dim": 64, "repeats": 5}
    cold = {**_doc("run A", 1, [{**attn, "time_ns": 50.0}, {**SHAPE, "time_ns": 9.0, "repeats": 5}]), "heat_ms": None}
    hot1 = {**_doc("run B", 1, [{**attn, "time_ns": 40.0}, {**SHAPE, "time_ns": 10.0, "repeats": 5}]), "heat_ms": 60.0}
    hot2 = {**_doc("run C", 1, [{**attn, "time_ns": 90.0}, {**SHAPE, "time_ns": 11.0, "repeats": 5}]), "heat_ms": 60.0}
    merged = merge_profiles([cold, hot1, hot2], average_ops=("attention",))
    rows = [s for s in merged["samples"] if s["op"] == "attention"]
    assert sorted((r["run"], r["time_ns"]) for r in rows) == [(1, 40.0), (2, 90.0)]  # run A: other protocol
    assert [s["time_ns"] for s in merged["samples"] if s["op"] == "gemm"] == [11.0]   # not averaged: later wins
    model_rows = profile_from_dict(merged).select("attention")
    assert len(model_rows) == 2


def test_merge_average_into_a_merged_profile_reads_each_rows_own_heating() -> None:
    """A merged profile's header states no heat_ms; its rows answer for their own runs (the run
    record's heat_ms, else the --heat-ms of its command), so a new run of the same protocol adds to
    them instead of replacing them."""
    attn = {"op": "attention", "dtype": "bf16", "direction": "fwd", "causal": True, "batch": 1, "heads": 8, "seq": 512,
            "head_dim": 64, "repeats": 5}
    one = {**_doc("measure --heat-ms 20 --sections attention", 1, [{**attn, "time_ns": 40.0}]), "heat_ms": 20.0}
    two = {**_doc("measure --heat-ms 20 --sections attention", 1, [{**attn, "time_ns": 50.0}]), "heat_ms": 20.0}
    merged = merge_profiles([one, two], average_ops=("attention",))
    assert merged.get("heat_ms") is None
    later = {**_doc("measure --heat-ms 20 --sections attention", 1, [{**attn, "time_ns": 60.0}]), "heat_ms": 20.0}
    again = merge_profiles([merged, later], average_ops=("attention",))
    assert sorted(r["time_ns"] for r in again["samples"] if r["op"] == "attention") == [40.0, 50.0, 60.0]
    other = {**_doc("measure --heat-ms 60 --sections attention", 1, [{**attn, "time_ns": 70.0}]), "heat_ms": 60.0}
    assert [r["time_ns"] for r in merge_profiles([merged, other], average_ops=("attention",))["samples"]] == [70.0]


def test_merge_refuses_runs_from_different_software() -> None:
    a = _doc("run A", 2, [{**SHAPE, "time_ns": 10.0, "repeats": 5}])
    b = {**_doc("run B", 2, [{**SHAPE, "time_ns": 10.0, "repeats": 5}]), "nccl": "2.21"}
    with pytest.raises(SystemExit, match="nccl"):
        merge_profiles([a, b])


def test_merge_validation_tags_sessions_and_thermal_state() -> None:
    entry = {"id": "gemm_1", "kind": "gemm", "description": {"m": 1}, "measured": {"time_ns": 5.0}}
    hot = {**entry, "id": "gemm_1@hot", "description": {"m": 1, "thermal": "hot"}}
    merged = merge_validation([_doc("a", 2, [entry]), _doc("b", 1, [hot])])
    by_id = {e["id"]: e for e in merged["samples"]}
    assert by_id["gemm_1"]["description"]["thermal"] == "as_found" and by_id["gemm_1"]["session"] == 0
    assert by_id["gemm_1@hot"]["description"]["thermal"] == "hot" and by_id["gemm_1@hot"]["session"] == 1


def test_shipped_validation_file_describes_every_workload() -> None:
    path = Path(__file__).resolve().parents[1] / "data" / "validation" / "h200_measurements.json"
    doc = json.loads(path.read_text())
    kinds = Counter(e["kind"] for e in doc["samples"])
    assert {"gemm", "swiglu_ffn", "attention", "memory", "collective", "pipeline", "moe_layer"} <= set(kinds)
    for e in doc["samples"]:
        assert e["measured"]["time_ns"] > 0 and e["description"]
    pipes = [e for e in doc["samples"] if e["kind"] == "pipeline"]
    assert {e["description"]["schedule"] for e in pipes} == {"gpipe", "1f1b", "interleaved"}
    for e in pipes:
        stages = e["description"]["num_stages"]
        assert dry_run([[_parse(a) for a in o] for o in e["description"]["orders"]], stages) > 0
    checks = doc["checks"]["0"]
    for rank in checks.values():
        assert max(rank["pipeline_grad_rel_error"].values()) < 1e-2
        assert max(rank["moe_output_rel_error"].values()) < 1e-2


def _parse(text: str) -> tuple[str, int, int]:
    stage, mb = text[1:].split(".")
    return text[0], int(stage), int(mb)


def test_cli_show_prints_the_headline_figures() -> None:
    from typer.testing import CliRunner

    from moesim.calibrate.cli import app
    from moesim.costs.profile import PROFILE_DIR

    result = CliRunner().invoke(app, ["show", str(PROFILE_DIR / "h200_sxm.json"), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["device"] == "NVIDIA H200"
    assert 600 < figures["bf16 GEMM best achieved TFLOP/s"] < 989
    assert 0 < figures["NVLink efficiency (all_reduce busbw / datasheet)"] <= 1


def test_merge_reads_a_run_without_heat_ms_by_its_command_not_by_the_merged_header() -> None:
    """A run record keeps its heat_ms; one without (older profiles) answers by its own command: its
    --heat-ms, else the measure command's cuda default (60 ms). The merged header's command joins
    every run's, so a '--heat-ms 20' of another run must not decide the protocol of this one."""
    attn = {"op": "attention", "dtype": "bf16", "direction": "fwd", "causal": True, "batch": 1, "heads": 8, "seq": 512,
            "head_dim": 64, "repeats": 5}
    hot20 = {**_doc("python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --sections gemm", 1,
                    [{**SHAPE, "time_ns": 9.0, "repeats": 5}]), "heat_ms": 20.0}
    dflt = {**_doc("python3 -m moesim.calibrate.measure --device cuda --sections attention", 1,
                   [{**attn, "time_ns": 40.0}]), "heat_ms": 60.0}
    merged = merge_profiles([hot20, dflt], average_ops=("attention",))
    assert [r.get("heat_ms") for r in merged["runs"]] == [20.0, 60.0]
    legacy = {**merged, "runs": [{k: v for k, v in r.items() if k != "heat_ms"} for r in merged["runs"]]}
    later = {**_doc("python3 -m moesim.calibrate.measure --device cuda --sections attention", 1,
                    [{**attn, "time_ns": 50.0}]), "heat_ms": 60.0}
    for base in (merged, legacy):
        again = merge_profiles([base, later], average_ops=("attention",))
        assert sorted(r["time_ns"] for r in again["samples"] if r["op"] == "attention") == [40.0, 50.0]
