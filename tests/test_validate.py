"""moesim validate against the stored H200 measurements: every case within its error bar.

The bars (``data/validation/error_bars.json``) are written by
``moesim validate --write-error-bars data/validation/error_bars.json`` and quoted in
docs/accuracy.md; a model change that moves any prediction past its bar fails here until the
bars and the docs are regenerated on purpose.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
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
    assert len(ids) == len(set(ids)) == 101
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
        assert p.clock_state in ("boost", "sustained", "n/a")
    assert {p.method.split(" ")[0] for p in predictions if p.kind in ("collective", "pipeline", "moe_layer")} == {"engine"}


def test_summary_groups_by_kind(predictions) -> None:
    groups = summarize(predictions)
    assert groups[0].name == "all" and groups[0].count == 101
    assert sum(g.count for g in groups[1:]) == 101
    assert groups[0].max_abs == max(p.abs_error for p in predictions)


def test_cli_json_and_table() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["--kind", "collective", "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert len(doc["cases"]) == 12 and doc["measurements"]["device"] == "NVIDIA H200"
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
