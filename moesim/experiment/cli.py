"""``moesim run FILE``: run an experiment file and write its run directory."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from moesim.errors import ConfigError, MoesimError


def parse_sets(items: list[str]) -> dict[str, str]:
    """``["plan.tp=4", "schedule=zb-h1"]`` -> ``{"plan.tp": "4", "schedule": "zb-h1"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", f"{item!r} is not key=value", "write e.g. --set plan.num_microbatches=16")
        out[key.strip()] = value.strip()
    return out


def with_profile(overrides: dict[str, str], profile: str | None) -> dict[str, str]:
    """``overrides`` plus ``profile=...`` from ``--profile`` (refused when ``--set profile=`` differs)."""
    if profile is None:
        return overrides
    if overrides.get("profile", profile) != profile:
        raise ConfigError("--profile", f"{profile!r} differs from --set profile={overrides['profile']}", "give one of them")
    return {**overrides, "profile": profile}


def run(
    file: Path = typer.Argument(..., help="experiment file, e.g. experiments/1f1b_vs_interleaved.py"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run directory (default runs/<experiment>)"),
    set_: List[str] = typer.Option([], "--set", help="override a scenario field for every scenario: key=value"),
    force: bool = typer.Option(False, "--force", help="run even when the size estimate (tasks, or memory "
                               "against what this machine has available) exceeds its limit"),
    profile: Optional[str] = typer.Option(None, "--profile", help="calibration profile for every scenario: a JSON path "
                                          "or a name in moesim/profiles, MOESIM_PROFILE_PATH or ~/.config/moesim/profiles "
                                          "(same as --set profile=...)"),
    no_trace: bool = typer.Option(False, "--no-trace", help="write no Perfetto traces (*.trace.json)"),
    no_plots: bool = typer.Option(False, "--no-plots", help="draw no PNG plots"),
) -> None:
    """Run every scenario of an experiment; print the table; write results.json, summary.md,
    Perfetto traces and PNG plots."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from moesim.experiment.experiment import load_experiment
    from moesim.experiment.report import console_report
    from moesim.experiment.runner import prepare_out_dir, run_experiment

    console = Console()
    out_dir = None
    try:
        overrides = with_profile(parse_sets(set_), profile)
        exp = load_experiment(file)
        target = out or Path("runs") / exp.name
        for scn in exp.scenarios:   # bad --set values fail here, before the run directory exists
            scn.with_overrides(overrides)
        created = not target.exists()
        out_dir = prepare_out_dir(target)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            bar = progress.add_task(f"simulating {exp.name}", total=len(exp.scenarios))

            def started(name: str) -> None:
                progress.update(bar, description=f"simulating {escape(exp.name)}: {escape(name)}")

            results, walls = run_experiment(exp, out_dir, overrides, on_progress=lambda _n: progress.advance(bar),
                                            force=force, on_start=started, trace=not no_trace, plots=not no_plots)
    except ConfigError as err:
        _drop_if_empty(out_dir, out_dir is not None and created)
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2)
    except MoesimError as err:  # e.g. a DeadlockError: the simulation could not finish
        _drop_if_empty(out_dir, out_dir is not None and created)
        console.print(f"[red]simulation failed:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    for part in console_report(exp, results, walls):
        console.print(part)
    console.print(costs_line(results))
    wrote = ([f"{len(results)} Perfetto traces (*.trace.json; open in ui.perfetto.dev)"] if not no_trace else []) \
        + (["PNG plots"] if not no_plots else [])
    console.print(f"wrote {out_dir}/results.json, summary.md" + "".join(f", {w}" for w in wrote))


def costs_line(results: list) -> str:
    """What priced the run: one cost model and network mode, or each with the scenarios it priced."""
    by: dict[tuple[str, str], list[str]] = {}
    for r in results:
        by.setdefault((r.cost_model, r.network_mode), []).append(r.name)
    if len(by) == 1:
        (model, network), = by
        return f"costs: {model}; network model: {network}"
    return "costs: " + "; ".join(f"{model}, network model {network} ({', '.join(names)})"
                                 for (model, network), names in by.items())


def _drop_if_empty(out_dir: "Path | None", created: bool) -> None:
    """Remove a run directory this command created if a failed run left it empty."""
    if created and out_dir is not None and out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
