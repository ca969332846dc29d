"""Bad ``moesim calibrate run`` input is refused up front with one line naming the flag; profiles
stay strict JSON; ``calibrate show`` shows what a partial profile has and names what it lacks."""
from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from moesim.calibrate import measure  # noqa: E402
from moesim.calibrate.section import Section  # noqa: E402
from moesim.cli import app  # noqa: E402

runner = CliRunner()


def _refused(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        measure.options(["--device", "cpu", "--sections", "collectives", *argv])
    assert isinstance(exc.value.code, str)
    return exc.value.code


@pytest.mark.parametrize("ranks", ["100000", str(measure.max_cpu_ranks() + 1), "-3", "1"])
def test_cpu_ranks_out_of_range_is_refused_before_any_process_starts(ranks):
    msg = _refused(["--cpu-ranks", ranks])
    assert msg.startswith("--cpu-ranks:") and "fix:" in msg and "\n" not in msg


def test_cpu_ranks_limit_is_sane():
    assert 2 <= measure.max_cpu_ranks() <= 64
    assert measure.options(["--device", "cpu", "--cpu-ranks", "2"])["cpu_ranks"] == 2
    assert measure.options(["--device", "cpu", "--cpu-ranks", "0"])["cpu_ranks"] == 0  # no gloo collectives


@pytest.mark.parametrize("argv", [["--ranks", "x"], ["--ranks", "1"], ["--cpu-ranks", "2", "--ranks", "4"],
                                  ["--ranks", "2"]])  # --ranks in cpu mode without --cpu-ranks
def test_bad_ranks_are_refused(argv):
    assert _refused(argv).startswith("--ranks:")


def test_ranks_are_deduplicated():
    assert measure.options(["--device", "cpu", "--cpu-ranks", "4", "--ranks", "2,4,2"])["rank_counts"] == (2, 4)


@pytest.mark.parametrize("budget", ["-1", "0", "nan", "inf", "-inf"])
def test_budget_must_be_finite_and_positive(budget):
    msg = _refused([f"--budget-s={budget}"])
    assert msg.startswith("--budget-s:") and "fix:" in msg


@pytest.mark.parametrize("flag", ["--heat-ms", "--preheat-s"])
def test_heat_flags_must_be_finite(flag):
    assert _refused([flag, "nan"]).startswith(flag)


def test_cli_refusal_is_one_line_exit_2(tmp_path):
    out = tmp_path / "p.json"
    for argv in (["--cpu-ranks", "100000"], ["--budget-s", "nan"], ["--budget-s", "-inf"], ["--preheat-s", "-1"]):
        result = runner.invoke(app, ["calibrate", "run", "--device", "cpu", "--sections", "collectives",
                                     "--out", str(out), *argv])
        assert result.exit_code == 2
        assert result.output.strip().count("\n") == 0 and argv[0] in result.output
        assert "Traceback" not in result.output
    assert not out.exists()


def _strict(text: str) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-strict JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_nan_measurement_is_dropped_as_an_error_row(tmp_path):
    out = tmp_path / "p.json"
    profile = {"schema_version": 1, "errors": [], "samples": []}
    sec = Section("memory", samples=[{"op": "memory", "time_ns": float("nan")}, {"op": "memory", "time_ns": 5.0},
                                     {"op": "memory", "time_ns": 3.0, "extra": [1.0, float("inf")]}])
    measure._record(profile, sec, out, 1.0)
    doc = _strict(out.read_text())
    assert [s["time_ns"] for s in doc["samples"]] == [5.0]
    assert doc["sections"][0]["samples"] == 1
    assert any("dropped 2 sample(s)" in e for e in doc["errors"])


def test_a_nan_header_is_never_written(tmp_path):
    out = tmp_path / "p.json"
    with pytest.raises(Exception, match="NaN"):
        measure._dump({"schema_version": 1, "budget_s": math.nan, "samples": []}, out)
    assert not out.exists()


def test_sections_sharing_a_function_get_one_row_each(tmp_path):
    profile = {"schema_version": 1, "errors": [], "samples": []}
    for key in ("gemm", "gemm_bwd"):
        measure._record(profile, Section("gemm_bf16"), tmp_path / "p.json", 1.0, key=key)
    assert [s["section"] for s in profile["sections"]] == ["gemm_bf16", "gemm_bwd"]


HEADER = {"schema_version": 1, "device": "cpu", "gpu_count": 1, "driver": "unavailable", "cuda": "unavailable",
          "nccl": "unavailable", "torch": "x", "date": "2026-01-01T00:00:00Z", "command": "test", "notes": "",
          "errors": []}
MEMORY = {"op": "memory", "kind": "copy", "variant": "copy", "dtype": "bf16", "cache": "cold", "nbytes": 4096,
          "time_ns": 800.0, "repeats": 5}


def test_show_a_memory_only_profile(tmp_path):
    path = tmp_path / "mem.json"
    path.write_text(json.dumps({**HEADER, "samples": [MEMORY],
                                "sections": [{"section": "memory", "samples": 1, "measured": 1, "skipped": 0}]}))
    result = runner.invoke(app, ["calibrate", "show", str(path), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["HBM copy GB/s (read + write)"] == round(4096 / 800.0, 1)
    assert figures["sections present"] == "memory (HBM copy)"
    assert "bf16 GEMMs" in figures["sections absent"] and "collectives" in figures["sections absent"]
    assert not any("GEMM" in k for k in figures)          # nothing made up for an absent section


def test_show_lists_each_section_once(tmp_path):
    path = tmp_path / "g.json"
    sections = [{"section": "gemm_bf16", "samples": 8, "measured": 8, "skipped": 0},
                {"section": "gemm_bf16", "samples": 16, "measured": 16, "skipped": 0},
                {"section": "memory", "samples": 1, "measured": 1, "skipped": 0}]
    path.write_text(json.dumps({**HEADER, "samples": [MEMORY], "sections": sections}))
    result = runner.invoke(app, ["calibrate", "show", str(path)])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("measured sections"))
    assert line.count("gemm_bf16") == 1 and "gemm_bf16 24" in line


def test_validation_workloads_bound_their_gloo_ranks_and_budget(capsys) -> None:
    """``calibrate workloads`` starts --cpu-ranks processes: bounded as ``measure``'s, before any starts."""
    import pytest as _pytest

    from moesim.calibrate import validate_workloads

    for argv, needle in ((["--device", "cpu", "--cpu-ranks", "100000"], "--cpu-ranks must be 0"),
                         (["--device", "cpu", "--budget-s", "nan"], "--budget-s must be a finite")):
        with _pytest.raises(SystemExit) as err:
            validate_workloads.main(argv + ["--out", "/nonexistent/never-written.json"])
        assert err.value.code == 2 and needle in capsys.readouterr().err
