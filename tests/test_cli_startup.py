"""``moesim --help`` stays cheap: the top-level CLI imports no verb's module, and the help it lists
for each lazily loaded verb is that verb's own. (The CPU time is measured by
``benchmarks/cli_startup.py``, not asserted here.)"""
from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from moesim.cli import _VERBS, app, load_verb

HEAVY = ("matplotlib", "numpy", "simpy", "networkx", "yaml", "moesim.engine", "moesim.experiment", "moesim.validate",
         "moesim.planner", "moesim.topology", "moesim.memory", "moesim.calibrate", "moesim.sweep")


def test_importing_the_cli_and_printing_its_help_loads_no_verb_module() -> None:
    code = ("import sys; from moesim.cli import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.splitlines())
    assert "run" in out and "calibrate" in out  # the help listed the lazy verbs
    assert sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)) == []


@pytest.mark.parametrize("verb", _VERBS, ids=[v[0] for v in _VERBS])
def test_each_lazy_verb_loads_and_lists_its_own_help(verb: tuple[str, str, str, str]) -> None:
    name, module, attr, listed = verb
    real = load_verb(module, attr, name, listed)
    assert real.name == name
    assert " ".join((real.help or "").split()) == listed  # a command function's docstring, or the group's help


def test_a_lazy_verb_runs_with_its_options() -> None:
    result = CliRunner().invoke(app, ["schedule", "list"])
    assert result.exit_code == 0 and "1f1b" in result.output.split()
