"""Command line of the importers: ``moesim model from-hf`` and ``moesim trace compare``.

Bad input (a missing file, an unknown architecture or field, a truncated trace) is one line on
stderr and exit code 2, as everywhere in moesim.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from moesim.errors import ConfigError

model_app = typer.Typer(add_completion=False, no_args_is_help=True)
trace_app = typer.Typer(add_completion=False, no_args_is_help=True)


def _fail(err: ConfigError) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


@model_app.command("from-hf")
def from_hf(
    path: Path = typer.Argument(..., help="a Hugging Face config.json, or a directory holding one"),
    name: Optional[str] = typer.Option(None, "--name", help="spec name (default: the file's or directory's)"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="sequence length (default: the config's "
                                          "pre-training context)"),
    ignore_unknown: bool = typer.Option(False, "--ignore-unknown", help="list unknown fields as not modelled "
                                        "instead of refusing the file"),
    fmt: str = typer.Option("text", "--format", help="text or json"),
) -> None:
    """Read a Hugging Face config.json into moesim's model spec; show which config field set which
    spec field, which fields moesim does not model, and which carry no cost."""
    from rich.console import Console
    from rich.table import Table

    from moesim.importers.hf import import_config, shape_rows, summary_lines, to_json

    try:
        if fmt not in ("text", "json"):
            raise ConfigError("--format", f"unknown format {fmt!r}", "use text or json")
        imp = import_config(path, name=name, seq_len=seq_len, strict=not ignore_unknown)
    except ConfigError as err:
        _fail(err)
        return
    if fmt == "json":
        typer.echo(to_json(imp), nl=False)
        return
    console = Console()
    console.print("\n".join(summary_lines(imp)), highlight=False, soft_wrap=True)
    shape = Table(title="model spec")
    shape.add_column("field")
    shape.add_column("value", overflow="fold")
    for field, value in shape_rows(imp):
        shape.add_row(field, value)
    console.print(shape)
    used = Table(title="config field -> spec field")
    used.add_column("config.json")
    used.add_column("spec", overflow="fold")
    for key, target in imp.used:
        used.add_row(key, target)
    console.print(used)
    if imp.not_modelled:
        console.print("[bold]not modelled[/bold] (they change the cost; moesim approximates):", highlight=False)
        for key, why in imp.not_modelled:
            console.print(f"  {key}: {why}", highlight=False, soft_wrap=True)
    else:
        console.print("not modelled: none", highlight=False)
    console.print(f"no effect on time or memory: {', '.join(imp.no_cost) or 'none'}", highlight=False, soft_wrap=True)


@trace_app.command("compare")
def trace_compare(
    real: Path = typer.Argument(..., help="the real run: a torch.profiler (Kineto) Chrome trace, .json or .json.gz"),
    sim: Path = typer.Argument(..., help="the simulated run: a *.trace.json written by moesim layer -o or moesim run"),
    salvage: bool = typer.Option(False, "--salvage", help="read a truncated real trace up to its last complete event"),
    top: int = typer.Option(3, "--top", help="how many of the biggest misses to name"),
    fmt: str = typer.Option("text", "--format", help="text or json"),
) -> None:
    """Measured vs simulated GPU time per op class (GEMM, grouped GEMM, attention, norm, elementwise,
    permute & router, each NCCL kind) and per step, with the biggest misses; unclassified kernels
    are listed with their share of time."""
    from rich.console import Console

    from moesim.importers.compare import compare
    from moesim.importers.render import comparison_lines, comparison_tables

    try:
        if fmt not in ("text", "json"):
            raise ConfigError("--format", f"unknown format {fmt!r}", "use text or json")
        result = compare(real, sim, salvage=salvage)
    except ConfigError as err:
        _fail(err)
        return
    if fmt == "json":
        import json

        typer.echo(json.dumps(result.to_dict(), indent=1, sort_keys=True))
        return
    console = Console()
    for table in comparison_tables(result):
        console.print(table)
    console.print("\n".join(comparison_lines(result, top)), highlight=False, soft_wrap=True)
