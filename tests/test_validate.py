"""moesim validate against the stored H200 measurements: every case within its error bar.

The bars (``data/validation/error_bars.json``) are written by
``moesim validate --write-error-bars data/validation/error_bars.json`` and quoted in
docs/accuracy.md; a model change that moves any prediction past its bar fails here until the
bars and the docs are regenerated on purpose.
"""
from __future__ import annotations

import dataclasses
import json
import re
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from moesim.validate import build_context, load_measurements, predict_all
from moesim.validate.cli import app
from moesim.validate.report import ERROR_BAR_MARGIN, summarize

ROOT = Path(__file__).resolve().parents[1]
BARS = json.loads((ROOT / "data" / "validation" / "error_bars.json").read_text())
DOC = (ROOT / "docs" / "accuracy.md").read_text()


@pytest.fixture(scope="module")
def predictions():
    return predict_all(build_context(), load_measurements().cases)


def test_every_stored_measurement_is_predicted(predictions) -> None:
    ids = [p.case_id for p in predictions]
    assert len(ids) == len(set(ids)) == len(load_measurements().cases) >= 101
    assert set(ids) == set(BARS["cases"])


def test_every_case_stays_within_its_error_bar(predictions) -> None:
    over = {p.case_id: round(p.abs_error, 4) for p in predictions if p.abs_error > BARS["cases"][p.case_id]}
    assert not over, f"predictions moved past their error bars: {over}"


def test_median_error_stays_within_its_bar(predictions) -> None:
    assert statistics.median(p.abs_error for p in predictions) <= BARS["median_abs_error"]


def test_predictions_are_deterministic(predictions) -> None:
    again = predict_all(build_context(), [c for c in load_measurements().cases if c.kind == "pipeline"])
    first = {p.case_id: p.predicted_ns for p in predictions}
    assert all(first[p.case_id] == p.predicted_ns for p in again)


def test_docs_table_quotes_every_case_with_todays_error(predictions) -> None:
    """The table in docs/accuracy.md stays within the error-bar margin of today's predictions."""
    for p in predictions:
        row = re.search(rf"^\| `{re.escape(p.case_id)}` \|.*\| ([+-]\d+\.\d)% \|$", DOC, re.MULTILINE)
        assert row, f"{p.case_id} missing from docs/accuracy.md"
        assert float(row.group(1)) == pytest.approx(100 * p.error, abs=100 * ERROR_BAR_MARGIN + 0.051)


def test_every_prediction_names_what_produced_it(predictions) -> None:
    for p in predictions:
        assert "calibrated" in p.method or "engine" in p.method
        assert p.clock_state in ("boost", "sustained", "n/a") or re.fullmatch(r"\d+ MHz", p.clock_state)
    assert {p.method.split(" ")[0] for p in predictions if p.kind in ("collective", "pipeline", "moe_layer")} == {"engine"}


def test_summary_groups_by_kind(predictions) -> None:
    groups = summarize(predictions)
    assert groups[0].name == "all" and groups[0].count == len(predictions)
    assert sum(g.count for g in groups[1:]) == len(predictions)
    assert groups[0].max_abs == max(p.abs_error for p in predictions)


def test_cli_json_and_table() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["--kind", "collective", "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert len(doc["cases"]) == 24 and doc["measurements"]["device"] == "NVIDIA H200"
    res = runner.invoke(app, ["run", "--kind", "memory"])
    assert res.exit_code == 0 and "memory_copy_100000000" in res.output and "median |error|" in res.output


def test_cli_rejects_bad_input_with_the_field_and_fix(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["--format", "xml"])
    assert res.exit_code == 2 and "--format" in res.output and "table, markdown, json" in res.output
    res = runner.invoke(app, ["--kind", "fft"])
    assert res.exit_code == 2 and "--kind" in res.output
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"samples": [{"id": "x", "kind": "gemm", "description": {}, "measured": {"time_ns": -1}}]}))
    res = runner.invoke(app, ["--from", str(bad)])
    assert res.exit_code == 2 and "samples[0].measured.time_ns" in res.output


# -- the SM clock recorded per case (moesim.validate.clocks, moesim.calibrate.clock_timer) -------------
def test_scale_to_clock_known_answers() -> None:
    from moesim.validate.clocks import clock_of_profile, scale_to_clock
    assert scale_to_clock(100.0, 0.0, 1500.0, 2000.0) == 100.0            # memory-bound: no change
    assert scale_to_clock(100.0, 1.0, 1500.0, 2000.0) == pytest.approx(75.0)
    assert scale_to_clock(100.0, 0.5, 1500.0, 1500.0) == pytest.approx(100.0)
    assert clock_of_profile(100.0, 1.0, 75.0, 2000.0) == pytest.approx(1500.0)
    assert clock_of_profile(100.0, 0.0, 75.0, 2000.0) is None


@given(st.floats(50, 5000), st.floats(0.0, 1.0), st.floats(1000, 2100), st.floats(1000, 2100))
@settings(max_examples=100, deadline=None)
def test_clock_scaling_round_trips(profile_ns: float, phi: float, ref_mhz: float, case_mhz: float) -> None:
    from moesim.validate.clocks import clock_of_profile, scale_to_clock
    t = scale_to_clock(profile_ns, phi, ref_mhz, case_mhz)
    assert t <= profile_ns * (1 + 1e-12) if case_mhz >= ref_mhz else t >= profile_ns * (1 - 1e-12)
    if phi > 0.05:
        assert clock_of_profile(profile_ns, phi, t, case_mhz) == pytest.approx(ref_mhz, rel=1e-3)


def test_reference_clocks_come_from_grid_shapes_not_cases() -> None:
    ctx = build_context()
    assert ctx.has_clock_reference()
    gemm, attention = ctx.ref_clocks.for_kind("gemm"), ctx.ref_clocks.for_kind("attention")
    assert 1300 < gemm < 1700 and 1300 < attention < 1900
    shapes = {(r[0], r[1]) for r in ctx.ref_clocks.per_shape}
    assert ("gemm", "") in shapes and ("attention", "fwd") in shapes and ("attention", "bwd") in shapes


def test_cases_with_a_recorded_clock_are_predicted_at_it(predictions) -> None:
    cases = {c.case_id: c for c in load_measurements().cases}
    clocked = [p for p in predictions if "clock" in cases[p.case_id].extra]
    assert len(clocked) == 72
    for p in clocked:
        assert p.clock_state == f"{cases[p.case_id].extra['clock']['sm_mhz']:.0f} MHz"
    attention = [p.abs_error for p in clocked if p.kind == "attention"]
    assert len(attention) == 18 and max(attention) < 0.10


def test_a_higher_recorded_clock_predicts_a_faster_attention_kernel() -> None:
    from moesim.validate.single import predict_single
    ctx = build_context()
    case = next(c for c in load_measurements().cases if c.case_id == "attention_fwd_b2_h40_s6144_d64@steady#r5")
    fast = predict_single(ctx, case)
    slow = predict_single(ctx, dataclasses.replace(case, extra={"clock": {"sm_mhz": 1400.0}}))
    assert slow.predicted_ns > fast.predicted_ns * 1.2


def test_append_session_keeps_every_stored_entry() -> None:
    from moesim.calibrate.append_session import append_session, dumps
    stored = json.loads((ROOT / "data" / "validation" / "h200_measurements.json").read_text())
    new = {"date": "d", "command": "c", "samples": [{"id": "gemm_1x1x1", "kind": "gemm", "description": {},
                                                      "measured": {"time_ns": 1.0}}]}
    out = append_session(stored, new, "t9")
    assert out["samples"][:-1] == stored["samples"] and out["samples"][-1]["id"] == "gemm_1x1x1#t9"
    assert out["samples"][-1]["session"] == len(stored["sessions"]) and out["sessions"][-1]["command"] == "c"
    assert json.loads(dumps(out)) == out
    with pytest.raises(ValueError):
        append_session(out, new, "t9")
