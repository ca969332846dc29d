"""``moesim validate``: compare moesim's predictions with stored real-GPU measurements.

No GPU needed: every prediction is recomputed from the measurement file's descriptions with the
calibrated cost model and the engine. ``moesim validate [OPTIONS]`` and ``moesim validate run
[OPTIONS]`` are the same command.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from moesim.errors import ConfigError, MoesimError
from lab.legacy_validate.context import build_context
from moesim.validate.measurements import DEFAULT_PATH, load_measurements
from lab.legacy_validate.predict import predict_all
from lab.legacy_validate.report import error_bars, render_markdown, render_table, to_json

FORMATS = ("table", "markdown", "json")

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  help="Compare moesim's predictions with real GPU measurements (no GPU needed).")

From = Annotated[Path, typer.Option("--from", help="measurement file written by moesim calibrate workloads")]
Out = Annotated[Optional[Path], typer.Option("--out", help="write the report here instead of stdout")]
Format = Annotated[str, typer.Option("--format", help="table, markdown or json")]
Profile = Annotated[str, typer.Option("--profile", help="calibrated profile: a shipped name or a JSON path")]
Mode = Annotated[str, typer.Option("--mode", help="engine network mode: fluid or analytical")]
Probe = Annotated[Optional[Path], typer.Option("--power-probe", help="power-probe JSON for the clock model "
                                                                     "(default data/validation/h200_power_probe.json)")]
Kinds = Annotated[Optional[list[str]], typer.Option("--kind", help="only this kind (repeatable)")]
Bars = Annotated[Optional[Path], typer.Option("--write-error-bars", help="also write per-case error bounds (JSON)")]


def command_line(source: Path, fmt: str, profile: str, mode: str, power_probe: Optional[Path],
                 kinds: Optional[list[str]]) -> str:
    """The canonical command that reproduces a report (options that differ from the defaults)."""
    parts = ["moesim validate"]
    if source.resolve() != DEFAULT_PATH:
        parts.append(f"--from {source}")
    parts += [f"--format {fmt}"] if fmt != "table" else []
    parts += [f"--profile {profile}"] if profile != "h200_sxm" else []
    parts += [f"--mode {mode}"] if mode != "fluid" else []
    parts += [f"--power-probe {power_probe}"] if power_probe else []
    parts += [f"--kind {k}" for k in kinds or []]
    return " ".join(parts)


def validate(source: Path = DEFAULT_PATH, out: Optional[Path] = None, fmt: str = "table", profile: str = "h200_sxm",
             mode: str = "fluid", power_probe: Optional[Path] = None, kinds: Optional[list[str]] = None,
             write_error_bars: Optional[Path] = None) -> str:
    """Run the validation and return the rendered report (written to ``out`` when given)."""
    if fmt not in FORMATS:
        raise ConfigError("--format", f"unknown format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
    measurements = load_measurements(source)
    ctx = build_context(profile, mode, str(power_probe) if power_probe else None)
    preds = predict_all(ctx, measurements.cases, kinds or None)
    command = command_line(source, fmt, profile, mode, power_probe, kinds)
    if fmt == "json":
        text = json.dumps(to_json(preds, measurements, ctx.label), indent=1) + "\n"
    elif fmt == "markdown":
        text = render_markdown(preds, measurements, command)
    else:
        text = render_table(preds) + "\n"
    if out is not None:
        out.write_text(text)
    if write_error_bars is not None:
        bars_command = command_line(source, "table", profile, mode, power_probe, kinds)
        write_error_bars.write_text(json.dumps(error_bars(preds, f"{bars_command} --write-error-bars "
                                                                 f"{write_error_bars}"), indent=1) + "\n")
    return text


def _run(source: Path, out: Optional[Path], fmt: str, profile: str, mode: str, power_probe: Optional[Path],
         kinds: Optional[list[str]], write_error_bars: Optional[Path]) -> None:
    try:
        text = validate(source, out, fmt, profile, mode, power_probe, kinds, write_error_bars)
    except MoesimError as err:  # bad input: the message names the field and the fix
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {out}" if out is not None else text, nl=out is not None)
    if write_error_bars is not None:
        typer.echo(f"wrote {write_error_bars}")


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context, source: From = DEFAULT_PATH, out: Out = None, fmt: Format = "table",
         profile: Profile = "h200_sxm", mode: Mode = "fluid", power_probe: Probe = None, kinds: Kinds = None,
         write_error_bars: Bars = None) -> None:
    """Predict every stored measurement; print measured, predicted and error per case and a summary."""
    if ctx.invoked_subcommand is None:
        _run(source, out, fmt, profile, mode, power_probe, kinds, write_error_bars)


@app.command("run")
def run(source: From = DEFAULT_PATH, out: Out = None, fmt: Format = "table", profile: Profile = "h200_sxm",
        mode: Mode = "fluid", power_probe: Probe = None, kinds: Kinds = None, write_error_bars: Bars = None) -> None:
    """Predict every stored measurement; print measured, predicted and error per case and a summary."""
    _run(source, out, fmt, profile, mode, power_probe, kinds, write_error_bars)
