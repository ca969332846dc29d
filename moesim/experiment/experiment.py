"""Experiments: a named list of scenarios and the comparisons a reader cares about.

An experiment file (``experiments/*.py``) is plain Python that defines ``EXPERIMENT``, an
:class:`Experiment`, or a YAML / TOML scenario file (:mod:`moesim.experiment.scenario_files`);
``python -m moesim run FILE`` loads either with :func:`load_experiment`.
"""
from __future__ import annotations

import runpy
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from moesim.errors import ConfigError, MoesimError
from moesim.experiment.scenario import Scenario
from moesim.pathnames import check_file_stem


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
        bad = next((s for s in self.scenarios if not isinstance(s, Scenario)), None)
        if bad is not None:
            raise ConfigError("experiment.scenarios", f"holds {type(bad).__name__} {bad!r}, not a Scenario",
                              "list Scenario(...) objects")
        check_file_stem(self.name, "experiment.name")  # the default run directory is runs/<name>
        names = [check_file_stem(s.name, "scenario.name") for s in self.scenarios]  # <out>/<name>.trace.json
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError("experiment.scenarios", f"duplicate scenario names {dup}", "give each scenario its own name")
        for c in self.comparisons:
            for role, name in (("baseline", c.baseline), ("optimized", c.optimized)):
                if name not in names:
                    raise ConfigError(f"comparison.{role}", f"no scenario named {name!r}", f"use one of: {', '.join(names)}")

    def scenario(self, name: str) -> Scenario:
        return next(s for s in self.scenarios if s.name == name)


LOAD_LIMIT_S = 20.0  # an experiment file defines scenarios; one that loops must not hang moesim run


class _TooSlow(BaseException):
    """Raised by the alarm; a BaseException so the file's own ``except Exception`` cannot swallow it."""


def run_with_limit(path: str, limit_s: float) -> dict:
    """``runpy.run_path`` stopped after ``limit_s`` (SIGALRM, main thread only; an outer alarm
    is re-armed with what is left of it afterwards)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return runpy.run_path(path, run_name="moesim_experiment")

    def alarm(_signum: int, _frame: object) -> None:
        raise _TooSlow()

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, alarm)
    outer_left, _interval = signal.setitimer(signal.ITIMER_REAL, limit_s)
    if outer_left and outer_left < limit_s:  # an outer alarm due sooner keeps its time
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        signal.setitimer(signal.ITIMER_REAL, outer_left)
        return runpy.run_path(path, run_name="moesim_experiment")
    try:
        return runpy.run_path(path, run_name="moesim_experiment")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if outer_left:
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, outer_left - (time.monotonic() - start)))


def _where(err: BaseException, path: Path) -> str:
    """``path:line`` of the last frame of ``err``'s traceback inside the experiment file."""
    line = None
    tb = err.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{path}:{line}" if line else str(path)


def load_experiment(path: str | Path) -> Experiment:
    """Run an experiment file and return its ``EXPERIMENT``."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "is not a file" if p.exists() else "does not exist"
        raise ConfigError("experiment file", f"{str(p)!r} {what}", "pass a path like experiments/1f1b_vs_interleaved.py")
    if p.suffix.lower() in (".yaml", ".yml", ".toml"):  # a scenario file (a topology is refused there)
        from moesim.experiment.scenario_files import load_scenario_file

        parts = load_scenario_file(p)
        fields = {"baseline", "optimized", "lesson"}
        for c in parts["comparisons"]:
            if set(c) - fields or not {"baseline", "optimized"} <= set(c):
                raise ConfigError("comparisons", f"{c!r} needs baseline and optimized (and may have lesson)",
                                  source=str(p))
        return Experiment(**{**parts, "comparisons": tuple(Comparison(**c) for c in parts["comparisons"])})
    if p.suffix.lower() == ".json":
        raise ConfigError("experiment file", f"{str(p)!r} is a data file, not an experiment (a Python file defining "
                          "EXPERIMENT, or a YAML / TOML scenario file)",
                          "pass an experiment such as experiments/1f1b_vs_interleaved.py")
    try:
        namespace = run_with_limit(str(p), LOAD_LIMIT_S)
    except _TooSlow:
        raise ConfigError("experiment file", f"still running after {LOAD_LIMIT_S:g} s", "an experiment file only "
                          "defines scenarios: move long computations out of it", source=str(p)) from None
    except SyntaxError as err:
        raise ConfigError("experiment file", f"Python syntax error: {err.msg}",
                          "fix that line (an experiment file is Python defining EXPERIMENT)",
                          source=f"{err.filename or p}" + (f":{err.lineno}" if err.lineno else "")) from None
    except (ValueError, MemoryError) as err:  # runpy: null bytes in the source
        if isinstance(err, ConfigError):
            raise
        raise ConfigError("experiment file", f"cannot run it: {type(err).__name__}: {err}",
                          "fix the file (an experiment file is Python defining EXPERIMENT)", source=_where(err, p)) from None
    except MoesimError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's file raised: one line naming where, not a traceback
        raise ConfigError("experiment file", f"raised {type(err).__name__}: {err}",
                          "fix the file (an experiment file is Python defining EXPERIMENT)", source=_where(err, p)) from None
    exp = namespace.get("EXPERIMENT")
    if not isinstance(exp, Experiment):
        raise ConfigError("EXPERIMENT", f"{p} defines no Experiment named EXPERIMENT",
                          "end the file with EXPERIMENT = Experiment(name=..., scenarios=(...))")
    return exp
