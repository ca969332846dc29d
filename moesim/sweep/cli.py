"""``moesim sweep FILE --grid key=v1,v2 ...``: a design-space sweep over an experiment's scenarios.

The lead mounts :func:`sweep` as a command (``app.command("sweep")(sweep)``). Bad input (grid
syntax, unknown key, scenario or executor) prints one line naming the field and exits 2.
Exit 130 after Ctrl-C (the sweep resumes when rerun), 1 when a point hit a bug or the
executor failed, else 0: points that are invalid combinations are results, not errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

import typer

from moesim.errors import ConfigError, MoesimError

if TYPE_CHECKING:  # the sweep machinery imports the simulator: load it only when a sweep runs
    from rich.console import Console

    from moesim.sweep.executors import Executor, Task
    from moesim.sweep.runner import SweepOutcome


def sweep(
    file: Path = typer.Argument(..., help="experiment file, e.g. experiments/1f1b_vs_interleaved.py"),
    grid_args: Optional[List[str]] = typer.Argument(None, metavar="[KEY=V1,V2]...",
                                                    help="more grid axes, same as --grid"),
    grid: List[str] = typer.Option([], "--grid", "-g", help="a swept scenario field and its values, e.g. "
                                   "plan.num_microbatches=8,16,32 (repeat for more axes)"),
    executor: str = typer.Option("local", "--executor", "-e", help="local (process pool) or ray"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray instance "
                                          "listening on 127.0.0.1 only); refused within 10 s when nothing answers"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="processes (local; default: CPU count) or "
                                          "CPUs of the local Ray instance"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="sweep directory (default runs/<experiment>_sweep)"),
    scenario: Optional[str] = typer.Option(None, "--scenario", "-s", help="sweep only this base scenario"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="re-run points recorded as failed"),
    profile: Optional[str] = typer.Option(None, "--profile", help="calibration profile for every point (a JSON path or a "
                                          "name in moesim/profiles, MOESIM_PROFILE_PATH or ~/.config/moesim/profiles); "
                                          "a grid axis of one value, so it is part of each point's id and name"),
) -> None:
    """Run every base scenario x every combination of the grid values; stream results to
    results.jsonl (a rerun resumes), then write summary.md and pareto.png."""
    from rich.console import Console
    from rich.markup import escape

    from moesim.experiment.experiment import load_experiment
    from moesim.experiment.runner import prepare_out_dir
    from moesim.sweep.executors import make_executor
    from moesim.sweep.grid import expand, parse_grid, select_scenarios

    console = Console()
    try:
        axes = _with_profile(parse_grid([*grid, *(grid_args or [])]), profile)
        runner = make_executor(executor, workers=workers, address=address)
        exp = load_experiment(file)
        tasks = expand(select_scenarios(exp.scenarios, scenario), axes)
        out_dir = prepare_out_dir(out or Path("runs") / f"{exp.name}_sweep")
        outcome = _run_with_progress(console, tasks, out_dir, runner, exp.name, retry_failed)
    except ConfigError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2)
    except MoesimError as err:
        console.print(f"[red]sweep stopped:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    _print_outcome(console, outcome)
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.unexpected:
        raise typer.Exit(1)


def _with_profile(axes: dict[str, tuple[str, ...]], profile: str | None) -> dict[str, tuple[str, ...]]:
    """The grid with ``--profile`` as a one-value axis (so a point's id tells profiles apart)."""
    if profile is None:
        return axes
    if "profile" in axes:
        raise ConfigError("--profile", "profile is also a --grid axis", "give the profiles as --grid profile=a,b only")
    from moesim.costs.profile import resolve_profile_path

    resolve_profile_path(profile)  # an unknown name fails now, not once per point
    return {**axes, "profile": (profile,)}


def _run_with_progress(console: Console, tasks: Sequence[Task], out_dir: Path, runner: Executor, title: str,
                       retry_failed: bool) -> SweepOutcome:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from moesim.sweep.runner import run_sweep

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        head = f"sweeping {escape(title)} ({runner.name})"
        bar = progress.add_task(head, total=None, failed=0)
        failed = 0
        running: list[str] = []  # points not yet finished, in the order the executor starts them
        slots = max(1, int(getattr(runner, "workers", None) or getattr(runner, "num_cpus", None) or 1))

        def describe() -> None:
            shown = running[:slots]
            more = f" (+{len(shown) - 1} more)" if len(shown) > 1 else ""
            progress.update(bar, description=f"{head}: {escape(shown[0])}{escape(more)}" if shown else head)

        def on_todo(todo: Sequence[Task]) -> None:
            running.extend(point.name for point, _base in todo)
            describe()

        def on_start(num_todo: int, num_skipped: int) -> None:
            if num_skipped:
                console.print(f"{num_skipped} of {num_todo + num_skipped} points already in "
                              f"{out_dir}/results.jsonl: skipped")
            progress.update(bar, total=num_todo)

        def on_record(record: dict[str, Any]) -> None:
            nonlocal failed
            failed += record.get("status") != "ok"
            if record.get("name") in running:
                running.remove(record["name"])
            describe()
            progress.update(bar, advance=1, failed=failed)

        return run_sweep(tasks, out_dir, runner, title=title, retry_failed=retry_failed,
                         on_start=on_start, on_record=on_record, on_todo=on_todo)


def _print_outcome(console: Console, outcome: SweepOutcome) -> None:
    from rich.markup import escape
    from rich.table import Table

    by_id = {r["id"]: r for r in outcome.records}
    table = Table(title="Pareto-optimal points (step time vs memory per GPU)")
    for col in ("point", "step ms", "tokens/s", "mem GiB", "id"):
        table.add_column(col, justify="left" if col in ("point", "id") else "right", overflow="fold")
    for pid in sorted(outcome.front, key=lambda i: by_id[i]["result"]["memory_gib"]):
        res = by_id[pid]["result"]
        table.add_row(escape(by_id[pid]["name"]), f"{res['step_time_ms']:.3f}", f"{res['tokens_per_s']:,.0f}",
                      f"{res['memory_gib']:.2f}", pid)
    if outcome.front:
        console.print(table)
    elif not outcome.ok:
        console.print(f"no point succeeded ({len(outcome.failed)} failed, see summary.md): no Pareto front")
    else:
        console.print(f"none of the {len(outcome.ok)} successful point(s) fits in HBM: no Pareto front")
    for r in outcome.unexpected:
        console.print(f"[red]unexpected error (bug) in {escape(r['name'])}:[/red] {escape(r['error'])}", highlight=False)
    if outcome.bad_lines:
        shown = ", ".join(map(str, outcome.bad_lines[:10])) + (" ..." if len(outcome.bad_lines) > 10 else "")
        console.print(f"skipped {len(outcome.bad_lines)} unreadable line(s) of {outcome.out_dir}/results.jsonl "
                      f"(line {shown}): a torn or edited record; its point ran again", highlight=False)
    state = "interrupted: rerun the same command to resume. " if outcome.interrupted else ""
    console.print(f"{state}{outcome.num_points} points: {len(outcome.ok)} ok, {len(outcome.failed)} failed; "
                  f"ran {outcome.num_run} in {outcome.wall_s:.1f} s, skipped {outcome.num_skipped} already done",
                  highlight=False)
    console.print(f"wrote {outcome.out_dir}/results.jsonl, summary.md, pareto.png", highlight=False)
