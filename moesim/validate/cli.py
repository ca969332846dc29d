"""``moesim validate``: stored real-GPU measurements against ``moesim run``'s own predictions.

By default the layer-workloads files in ``data/validation/layers/`` (layers and MoE blocks as
torchtitan, Megatron and Llama code runs them, predicted by :func:`moesim.experiment.block.simulate_block`)
and the single-GPU kernels of ``data/validation/h200_measurements.json`` and
``h100_measurements.json`` (the cost model alone).
``moesim.cli`` imports this module only when the command runs.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from moesim.errors import ConfigError
from moesim.validate.report import (KERNELS_FILES, Progress, Report, build_report, case_rows, default_layer_files,
                                    footer_lines, summary_rows, to_json, to_markdown)

FORMATS = ("table", "markdown", "json")
COST_MODELS = ("auto", "calibrated", "roofline")


def command_line(layers: Sequence[Path], kernels: Sequence[Path], no_kernels: bool, gpu: Optional[str],
                 cost_model: str, fmt: str) -> str:
    """The command that reproduces a report (options that differ from the defaults)."""
    parts = ["moesim validate"]
    parts += [f"--layers {p}" for p in layers]
    parts += [f"--kernels {p}" for p in kernels]
    parts += ["--no-kernels"] if no_kernels else []
    parts += [f"--gpu {gpu}"] if gpu else []
    parts += [f"--cost-model {cost_model}"] if cost_model != "auto" else []
    parts += [f"--format {fmt}"] if fmt != "table" else []
    return " ".join(parts)


def validate(layers: Sequence[Path] = (), kernels: "Sequence[Path] | Path | None" = None, no_kernels: bool = False,
             gpu: Optional[str] = None, cost_model: str = "auto", fmt: str = "table",
             progress: Optional[Progress] = None) -> tuple[Report, str]:
    """Build the report and render it (``fmt``: table, markdown or json)."""
    if fmt not in FORMATS:
        raise ConfigError("--format", f"unknown format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
    if cost_model not in COST_MODELS:
        raise ConfigError("--cost-model", f"unknown cost model {cost_model!r}", f"use one of: {', '.join(COST_MODELS)}")
    named = [Path(kernels)] if isinstance(kernels, (str, Path)) else list(kernels or ())
    command = command_line(layers, named, no_kernels, gpu, cost_model, fmt)
    layer_files = list(layers) or default_layer_files()
    # named files must exist (load_measurements says so); of the defaults, those stored
    kernel_files = [] if no_kernels else (named or [p for p in KERNELS_FILES if p.is_file()])
    missing = not no_kernels and not named and not kernel_files
    report = build_report(layer_files, kernel_files, gpu, cost_model, command, progress)
    if missing:  # an install without the stored data: say so, never fail on a default
        where = ", ".join(str(p) for p in KERNELS_FILES)
        report = replace(report, notes=report.notes + (f"no single-kernel file at {where}: kernels not validated",))
    if fmt == "json":
        return report, json.dumps(to_json(report), indent=1) + "\n"
    if fmt == "markdown":
        return report, to_markdown(report)
    return report, render_table(report)


def render_table(report: Report) -> str:
    """The console report (rich): the layer cases one per row, the summary per class, sources and notes.
    Single-kernel cases appear in the summary only (per case: ``--format markdown`` or ``json``)."""
    import io

    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=False, color_system=None)
    layer_cases = [c for c in report.cases if not c.workload_class.startswith("kernel")]
    if layer_cases:
        console.print(_table("Layers and blocks", case_rows(layer_cases), {4, 5, 6}, Table))
    if report.cases:
        console.print(_table("Summary per workload class", summary_rows(report), {4, 5, 6, 7, 8}, Table))
    for line in footer_lines(report):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    return buf.getvalue()


def _table(title: str, rows: list[list[str]], right: set[int], table_cls) -> object:
    table = table_cls(title=title, title_justify="left")
    for i, name in enumerate(rows[0]):
        table.add_column(name, justify="right" if i in right else "left", overflow="fold", no_wrap=i == 0)
    for row in rows[1:]:
        table.add_row(*row)
    return table


def run_validate(layers: Sequence[Path], kernels: Sequence[Path], no_kernels: bool, gpu: Optional[str],
                 cost_model: str, fmt: str, out: Optional[Path]) -> int:
    """The command: print (or write ``out``) the report; a one-line error and exit status 2 on bad input."""
    import typer

    from moesim.errors import MoesimError

    try:
        _, text = validate(layers, kernels, no_kernels, gpu, cost_model, fmt, _stderr_progress())
    except MoesimError as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    if out is not None:
        try:
            out.write_text(text)
        except OSError as err:  # a directory that does not exist, no permission: one line, not a traceback
            typer.echo(f"error: --out: cannot write {str(out)!r} ({err.strerror or err})", err=True)
            return 2
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text, nl=False)
    return 0


def _stderr_progress() -> Progress:
    """One overwritten stderr line naming the case being simulated (the console report is on stdout)."""
    import sys

    def show(case_id: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            end = "\n" if done + 1 == total else ""
            sys.stderr.write(f"\r\033[Ksimulating {done + 1}/{total}: {case_id}{end}")
            sys.stderr.flush()
    return show
