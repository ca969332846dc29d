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
    from rich.markup import escape
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
    console.print(escape("\n".join(summary_lines(imp))), highlight=False, soft_wrap=True)
    shape = Table(title="model spec")
    shape.add_column("field")
    shape.add_column("value", overflow="fold")
    for field, value in shape_rows(imp):
        shape.add_row(escape(field), escape(value))
    console.print(shape)
    used = Table(title="config field -> spec field")
    used.add_column("config.json")
    used.add_column("spec", overflow="fold")
    for key, target in imp.used:
        used.add_row(escape(key), escape(target))
    console.print(used)
    if imp.not_modelled:
        console.print("[bold]not modelled[/bold] (they change the cost; moesim approximates):", highlight=False)
        for key, why in imp.not_modelled:
            console.print(escape(f"  {key}: {why}"), highlight=False, soft_wrap=True)
    else:
        console.print("not modelled: none", highlight=False)
    console.print(escape(f"no effect on time or memory: {', '.join(imp.no_cost) or 'none'}"), highlight=False,
                  soft_wrap=True)
    console.print(escape(f"in a scenario file: model: {{hf: {path}, seq_len: {imp.spec.seq_len}}}"), highlight=False,
                  soft_wrap=True)


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


# -- moesim run --megatron-args / --torchtitan --------------------------------------------------
def _import_params() -> list:  # type: ignore[type-arg]
    """The click parameters ``moesim run`` gains (built by typer from a holder command)."""
    def holder(
        megatron_args: Optional[str] = typer.Option(None, "--megatron-args", metavar="FILE|\"ARGS\"",
                                                    help="Megatron-LM arguments (a file, or the flags in quotes) "
                                                         "instead of FILE"),
        torchtitan: Optional[Path] = typer.Option(None, "--torchtitan", metavar="FILE.toml",
                                                  help="a torchtitan training TOML instead of FILE"),
        topology: str = typer.Option("dgx_h100", "--topology", help="with --megatron-args/--torchtitan: the fabric"),
        nodes: Optional[int] = typer.Option(None, "--nodes", help="with --megatron-args/--torchtitan: nodes"),
        gpus: Optional[int] = typer.Option(None, "--gpus", help="with --megatron-args/--torchtitan: GPUs in all"),
        model: Optional[str] = typer.Option(None, "--model", help="with --megatron-args/--torchtitan: a preset or "
                                            "a config.json (else the model the arguments describe)"),
        import_only: bool = typer.Option(False, "--import-only", help="print the import report and the scenario "
                                         "file, and run nothing"),
    ) -> None:
        """Holds the options."""

    one = typer.Typer(add_completion=False)
    one.command()(holder)
    return list(typer.main.get_command(one).params)


_IMPORT_NAMES = ("megatron_args", "torchtitan", "topology", "nodes", "gpus", "model", "import_only")


def add_import_options(command) -> None:  # type: ignore[no-untyped-def]
    """Give ``moesim run`` the importers' options: FILE becomes optional, and ``--megatron-args`` /
    ``--torchtitan`` build the scenario, print what became of every flag, write it as a YAML
    scenario file (``<run dir>/scenario.yaml``) and run that file through the unchanged command."""
    for param in command.params:
        if param.name == "file":
            param.required = False
            param.default = None
    command.params.extend(_import_params())
    inner = command.callback

    def callback(*args, **kwargs):  # type: ignore[no-untyped-def]
        opts = {k: kwargs.pop(k) for k in _IMPORT_NAMES}
        try:
            kwargs["file"] = _imported_file(kwargs.get("file"), kwargs.get("out"), opts)
        except ConfigError as err:
            _fail(err)
        if kwargs["file"] is None:
            return None
        return inner(*args, **kwargs)

    import functools

    command.callback = functools.update_wrapper(callback, inner)


def _imported_file(file: Optional[Path], out: Optional[Path], opts: dict) -> Optional[Path]:
    """FILE itself, or the scenario file the importer wrote (None after --import-only)."""
    sources = [k for k in ("megatron_args", "torchtitan") if opts[k] is not None]
    flags = {"megatron_args": "--megatron-args", "torchtitan": "--torchtitan"}
    if len(sources) > 1 or (sources and file is not None):
        given = [flags[k] for k in sources] + (["FILE"] if file is not None else [])
        raise ConfigError(" and ".join(given), "describe the run twice", "give one of FILE, --megatron-args, --torchtitan")
    if not sources:
        extra = [f"--{k.replace('_', '-')}" for k in _IMPORT_NAMES[2:] if opts[k] not in (None, False, "dgx_h100")]
        if extra:
            raise ConfigError(", ".join(extra), "apply only with --megatron-args or --torchtitan",
                              "drop them, or import a run")
        if file is None:
            raise ConfigError("FILE", "missing", "give an experiment or scenario file, --megatron-args or --torchtitan")
        return file
    return _write_import(sources[0], out, opts)


def _write_import(source: str, out: Optional[Path], opts: dict) -> Optional[Path]:
    import yaml

    from moesim.experiment.scenario_files import build_scenario, scenario_to_dict

    where = dict(topology=opts["topology"], nodes=opts["nodes"], gpus=opts["gpus"], model=opts["model"])
    if source == "megatron_args":
        from moesim.importers.megatron import read_megatron_args

        report = read_megatron_args(opts["megatron_args"], **where)
    else:
        from moesim.importers.torchtitan import read_torchtitan

        report = read_torchtitan(opts["torchtitan"], **where)
    scenario = build_scenario(report.scenario, source=report.framework)
    text = f"# written by moesim from {report.framework} settings; moesim run this file to rerun it\n" + \
        yaml.safe_dump(scenario_to_dict(scenario), sort_keys=False)
    typer.echo("\n".join(report.lines()))
    if opts["import_only"]:
        typer.echo(text, nl=False)
        return None
    run_dir = out or Path("runs") / scenario.name
    path = run_dir / "scenario.yaml"   # inside the run directory: nothing is written outside --out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    typer.echo(f"scenario written to {path}")
    return path
