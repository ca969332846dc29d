"""The ``moesim schedule`` command group: draw a pipeline schedule and its dry-run figures.

``show NAME --stages p --microbatches m`` generates, validates and dry-runs one schedule with
abstract op costs, then prints the step grid and the figures (makespan, per-rank busy / idle /
span / peak activations, bubble fractions). Bad input prints one clear line and exits with 2.
"""
from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from moesim.errors import ConfigError, MoesimError
from moesim.schedules.dry_run import DryRunResult, dry_run
from moesim.schedules.grid import render_grid
from moesim.schedules.registry import SCHEDULES, generate
from moesim.schedules.validate import validate

# Largest schedule drawn: ranks x microbatches x chunks. Generating, validating, dry-running and
# drawing cost ~0.1 ms per cell (1F1B, p=8, m=10,000: 7.5 s), and no one reads a bigger grid;
# 10^9 microbatches or 100,000 stages ran out of memory instead of answering.
MAX_SHOW_CELLS = 50_000
MAX_WIDTH = 10_000


def check_show_size(stages: int, microbatches: int, chunks: int | None, width: int) -> None:
    """Refuse, before any work, a schedule too big to draw (the limit named); counts below 1 are
    the registry's to refuse."""
    cells = max(stages, 1) * max(microbatches, 1) * max(chunks or 1, 1)
    if cells > MAX_SHOW_CELLS:
        raise ConfigError("--stages x --microbatches x --chunks", f"{stages} x {microbatches} x {chunks or 1} = "
                          f"{cells:,} cells is more than the {MAX_SHOW_CELLS:,} 'schedule show' draws",
                          "draw a smaller instance: the pattern repeats with more microbatches")
    if not 40 <= width <= MAX_WIDTH:
        raise ConfigError("--width", f"must be in 40..{MAX_WIDTH}, got {width}")


app = typer.Typer(help="Pipeline schedules: generate, validate, dry-run and draw them.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Pipeline schedules: generate, validate, dry-run and draw them."""


@app.command("list")
def list_schedules() -> None:
    """List the schedule names."""
    Console().print("\n".join(SCHEDULES))


@app.command()
def show(
    name: str = typer.Argument(..., help=f"Schedule name: {', '.join(SCHEDULES)}."),
    stages: int = typer.Option(..., "--stages", "-p", help="Pipeline ranks (devices), p."),
    microbatches: int = typer.Option(..., "--microbatches", "-m", help="Microbatches per iteration, m."),
    chunks: Optional[int] = typer.Option(None, "--chunks", "-v", help="Model chunks per rank (interleaved)."),
    tf: float = typer.Option(1.0, "--tf", help="Forward cost of one chunk."),
    tb: float = typer.Option(1.0, "--tb", help="Input-gradient backward (B) cost of one chunk."),
    tw: float = typer.Option(1.0, "--tw", help="Weight-gradient backward (W) cost of one chunk."),
    comm: float = typer.Option(0.0, "--comm", help="Time added to every cross-rank dependency."),
    tfb: Optional[float] = typer.Option(None, "--tfb", help="Cost of an overlapped F&B pair (default F+B+W)."),
    timeline: bool = typer.Option(False, "--timeline", help="Draw the grid over time instead of steps."),
    width: int = typer.Option(120, "--width", help="Grid width in characters."),
) -> None:
    """Draw schedule NAME and print its dry-run figures."""
    try:
        check_show_size(stages, microbatches, chunks, width)
        console = Console(width=width)
        schedule = generate(name, stages, microbatches, chunks)
        validate(schedule)
        result = dry_run(schedule, tf, tb, tw, comm=comm, t_fb=tfb)
    except MoesimError as err:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=2) from None
    console.print(f"[bold]{schedule.name}[/bold]: p={schedule.num_ranks} m={schedule.num_microbatches} "
                  f"chunks/rank={schedule.num_chunks} stages/path={schedule.num_stages}")
    console.print(escape(render_grid(schedule, result if timeline else None, width=width)), soft_wrap=True)
    console.print(_rank_table(result))
    console.print(escape(_figures(result)))


def _rank_table(result: DryRunResult) -> Table:
    table = Table(title="per rank")
    for column in ("rank", "busy", "idle", "span", "idle in span", "peak activations"):
        table.add_column(column, justify="right")
    for rank in range(len(result.busy)):
        table.add_row(str(rank), f"{result.busy[rank]:.4g}", f"{result.idle[rank]:.4g}", f"{result.span[rank]:.4g}",
                      f"{result.span_idle[rank]:.4g}", str(result.peak_activations[rank]))
    return table


def _figures(result: DryRunResult) -> str:
    return "\n".join([
        f"makespan             {result.makespan:.6g}",
        f"ideal time           {result.ideal_time:.6g}   (busiest rank's compute)",
        f"bubble / ideal       {result.bubble_fraction_ideal:.4f}   (Megatron)",
        f"bubble / makespan    {result.bubble_fraction_total:.4f}",
        f"bubble / max span    {result.bubble_fraction_span:.4f}   (ZB bubble rate)",
    ])

