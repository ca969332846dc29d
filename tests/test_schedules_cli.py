"""The ``moesim schedule`` sub-app: output on good input, exit code 2 and no traceback on bad."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from moesim.schedules.cli import app

runner = CliRunner()


def test_show_prints_grid_and_figures() -> None:
    result = runner.invoke(app, ["show", "1f1b", "--stages", "4", "--microbatches", "8"])
    assert result.exit_code == 0, result.output
    assert "rank 3 | 3F0   3BW0  3F1" in result.output
    assert "makespan             33" in result.output
    assert "bubble / ideal       0.3750" in result.output  # (p-1)/m
    assert "bubble / makespan    0.2727" in result.output  # (p-1)/(m+p-1)


def test_show_timeline_with_overlap_cost() -> None:
    result = runner.invoke(app, ["show", "dualpipe", "-p", "4", "-m", "8", "--tfb", "2", "--timeline"])
    assert result.exit_code == 0, result.output
    assert "0F3&3BW1@1" in result.output
    assert "makespan             22" in result.output


def test_show_interleaved_with_chunks_and_costs() -> None:
    result = runner.invoke(app, ["show", "interleaved", "-p", "2", "-m", "4", "--chunks", "2", "--tf", "0.5",
                                 "--tb", "0.5", "--tw", "0.5", "--comm", "0.1"])
    assert result.exit_code == 0, result.output
    assert "2BW0" in result.output


def test_list_names_every_schedule() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    assert result.output.split() == ["gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "dualpipe", "dualpipev"]


@pytest.mark.parametrize("args, message", [
    (["show", "interleaved", "-p", "4", "-m", "6"], "multiple of the pipeline size"),
    (["show", "pipedream", "-p", "4", "-m", "6"], "use one of: 1f1b, dualpipe"),
    (["show", "dualpipe", "-p", "3", "-m", "12"], "even number of ranks"),
    (["show", "1f1b", "-p", "4", "-m", "8", "--tw", "-1"], "op cost must be a finite number >= 0"),
    (["show", "1f1b", "-p", "0", "-m", "8"], "needs an integer >= 1"),
])
def test_bad_input_exits_2_with_message_and_no_traceback(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
