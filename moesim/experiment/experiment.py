"""Experiments: a named list of scenarios and the comparisons a reader cares about.

An experiment file (``experiments/*.py``) is plain Python that defines ``EXPERIMENT``, an
:class:`Experiment`, or a YAML / TOML scenario file (:mod:`moesim.experiment.scenario_files`);
``python -m moesim run FILE`` loads either with :func:`load_experiment`.
"""
from __future__ import annotations

import runpy
from dataclasses import dataclass, field
from pathlib import Path

from moesim.errors import ConfigError
from moesim.experiment.scenario import Scenario


@dataclass(frozen=True)
class Comparison:
    """Baseline versus optimized: two scenario names and what the pair teaches."""

    baseline: str
    optimized: str
    lesson: str = ""


@dataclass(frozen=True)
class Experiment:
    """Scenarios to run and the baseline/optimized pairs to compare."""

    name: str
    scenarios: tuple[Scenario, ...]
    comparisons: tuple[Comparison, ...] = ()
    description: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.scenarios:
            raise ConfigError("experiment.scenarios", "is empty", "define at least one Scenario")
        names = [s.name for s in self.scenarios]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError("experiment.scenarios", f"duplicate scenario names {dup}", "give each scenario its own name")
        for c in self.comparisons:
            for role, name in (("baseline", c.baseline), ("optimized", c.optimized)):
                if name not in names:
                    raise ConfigError(f"comparison.{role}", f"no scenario named {name!r}", f"use one of: {', '.join(names)}")

    def scenario(self, name: str) -> Scenario:
        return next(s for s in self.scenarios if s.name == name)


def load_experiment(path: str | Path) -> Experiment:
    """Run an experiment file and return its ``EXPERIMENT``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("experiment file", f"{str(p)!r} does not exist", "pass a path like experiments/1f1b_vs_interleaved.py")
    if p.suffix.lower() in (".yaml", ".yml", ".toml"):  # a scenario file (a topology is refused there)
        from moesim.experiment.scenario_files import load_scenario_file

        return load_scenario_file(p)
    if p.suffix.lower() == ".json":
        raise ConfigError("experiment file", f"{str(p)!r} is a data file, not an experiment (a Python file defining "
                          "EXPERIMENT, or a YAML / TOML scenario file)",
                          "pass an experiment such as experiments/1f1b_vs_interleaved.py")
    try:
        namespace = runpy.run_path(str(p), run_name="moesim_experiment")
    except SyntaxError as err:
        raise ConfigError("experiment file", f"Python syntax error: {err.msg}",
                          "fix that line (an experiment file is Python defining EXPERIMENT)",
                          source=f"{err.filename or p}:{err.lineno}") from None
    exp = namespace.get("EXPERIMENT")
    if not isinstance(exp, Experiment):
        raise ConfigError("EXPERIMENT", f"{p} defines no Experiment named EXPERIMENT",
                          "end the file with EXPERIMENT = Experiment(name=..., scenarios=(...))")
    return exp
