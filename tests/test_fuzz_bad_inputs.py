"""The corpus of bad inputs (tests/bad_inputs/cases.json): each case runs the moesim command
line in this process and must get its outcome class.

* ``clear_error``: exit code 1 or 2, no traceback, and one output line that says ``error`` and
  holds the expected words (what the user reads);
* ``correct_result``: exit code 0 and no traceback.

Either way nothing may appear outside the case's own directory (``--set name=../../x``).

Every case runs under a 30 s alarm (a hang fails it). The files are in tests/bad_inputs/files;
two are made here (a 2 MB YAML, a sweep directory whose results.jsonl has an ``ok`` line
without its result). docs/robustness.md counts the cases per surface.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from fuzzing import time_limit
from typer.testing import CliRunner

from moesim.cli import app

CORPUS = Path(__file__).parent / "bad_inputs"
CASES: list[dict[str, Any]] = json.loads((CORPUS / "cases.json").read_text())
CASE_LIMIT_S = 30.0


def _setup(name: str, tmp: Path) -> None:
    if name == "big_yaml":
        (tmp / "big.yaml").write_text("name: x\n" + "#" * 2_000_000 + "\n")
    elif name == "results_without_result":
        (tmp / "sweep").mkdir()
        shutil.copy(CORPUS / "files" / "results_ok_without_result.jsonl", tmp / "sweep" / "results.jsonl")


def _outside(tmp: Path) -> set[str]:
    """Files a case could write to by escaping its output directory: the corpus, the working
    directory and the temporary directory's parents (two levels up)."""
    places = [CORPUS / "files", Path.cwd(), tmp.parent, tmp.parent.parent]
    other_sessions = re.compile(r"pytest-\d+$")   # basetemps of pytest runs beside this one
    return {str(p) for place in places for p in place.iterdir()
            if not (place == tmp.parent.parent and other_sessions.match(p.name))}


def _args(case: dict[str, Any], tmp: Path) -> list[str]:
    return [a.replace("{files}", str(CORPUS / "files")).replace("{tmp}", str(tmp)) for a in case["args"]]


def test_the_corpus_covers_every_surface_with_both_outcome_classes() -> None:
    surfaces = {c["surface"] for c in CASES}
    assert {"topology", "experiment file", "--set / --out", "schedule show", "plan", "sweep"} <= surfaces
    assert {c["outcome"] for c in CASES} == {"clear_error", "correct_result"}
    assert len({(c["surface"], c["id"]) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c['surface']}:{c['id']}" for c in CASES])
def test_bad_input_gets_its_outcome_class(case: dict[str, Any], tmp_path: Path) -> None:
    if case.get("setup"):
        _setup(case["setup"], tmp_path)
    before = _outside(tmp_path)
    with time_limit(CASE_LIMIT_S):
        result = CliRunner().invoke(app, _args(case, tmp_path), catch_exceptions=True)
    assert _outside(tmp_path) == before, f"{case['id']} wrote outside its directory"
    output = result.output
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not crashed and "Traceback" not in output, f"{case['id']}: {result.exception!r}\n{output[-2000:]}"
    if case["outcome"] == "correct_result":
        assert result.exit_code == 0, output[-2000:]
        return
    assert result.exit_code in (1, 2), f"{case['id']} exited {result.exit_code}:\n{output[-2000:]}"
    lines = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and case["message"] in lines[0], f"{case['id']}: expected one error line with " \
        f"{case['message']!r}, got:\n{output[-2000:]}"
