"""The moesim command line (Typer). Each verb group lives next to the code it drives and is
mounted here; this module only wires them together and turns user errors into clean exits."""
from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import List, Optional

import typer

# The verbs that live in other modules: (verb, module, attribute, help). The attribute is a Typer
# app (a verb group) or a command function. Nothing is imported until its verb runs, so
# ``moesim --help`` loads typer alone; the help shown here is the command's own (a test checks).
_VERBS = [
    ("run", "moesim.experiment.cli", "run", "Run every scenario of an experiment; print the table; write results.json, "
     "summary.md, Perfetto traces and PNG plots."),
    ("sweep", "moesim.sweep.cli", "sweep", "Run every base scenario x every combination of the grid values; stream "
     "results to results.jsonl (a rerun resumes), then write summary.md and pareto.png."),
    ("plan", "moesim.planner.cli", "plan", "Search the layouts of a preset scenario and print an actionable plan: the "
     "layout, experts and memory per GPU, bandwidth needed per link kind, expected step time and tokens/s, the "
     "bottleneck, and why the runners-up lost."),
    ("topo", "moesim.topology.cli", "app", "Inspect fabrics: show, path, draw."),
    ("schedule", "moesim.schedules.cli", "app", "Pipeline schedules: show the grid and bubble figures."),
    ("calibrate", "moesim.calibrate.cli", "app", "Measure per-op costs on real GPUs and write a profile."),
    ("memory", "moesim.memory.cli", "app", "Per-GPU memory budget: weights, optimizer, activations, KV cache."),
    ("bench", "moesim.planner.cli", "bench_app", "Baseline/optimized bench pairs with JSON and Markdown summaries."),
    ("model", "moesim.importers.cli", "model_app", "Models from your files: from-hf reads a Hugging Face config.json."),
    ("trace", "moesim.importers.cli", "trace_app", "Real profiler traces: compare a PyTorch (Kineto) trace with a "
     "simulated one, per op class and per step."),
]
_LISTED_FIRST = ("run", "sweep", "plan", "layer", "validate")  # then the verb groups, as before
# Verbs (and the subcommand of a group) given ``--profile`` here: they build their scenarios and
# planning contexts deep inside moesim.planner, so the option sets the profile every cost model
# they build without one of its own follows (moesim.lowering.resolve.profile_scope).
# ``run`` and ``sweep`` take --profile themselves (a Scenario field).
_PROFILE_VERBS = {"plan": None, "bench": "run"}
PROFILE_HELP = ("calibration profile: a JSON path or a name in moesim/profiles, MOESIM_PROFILE_PATH or "
                "~/.config/moesim/profiles (default: the one shipped for the GPU, else the roofline)")


def load_verb(module: str, attr: str, name: str, help_text: str) -> typer.core.TyperCommand:
    """The click command of a verb, built as mounting it on the top-level app would: its
    module's Typer app (shown with ``help_text``) or its command function."""
    obj = getattr(importlib.import_module(module), attr)
    host = typer.Typer(add_completion=False)
    if isinstance(obj, typer.Typer):
        host.add_typer(obj, name=name, help=help_text)
    else:
        host.command(name)(obj)
    host.callback()(lambda: None)  # a group even with one verb, so the verb can be picked by name
    command = typer.main.get_command(host).commands[name]
    if name == "run":  # --megatron-args / --torchtitan build the scenario file it runs
        from moesim.importers.cli import add_import_options

        add_import_options(command)
    if name in _PROFILE_VERBS:
        sub = _PROFILE_VERBS[name]
        add_profile_option(command.commands[sub] if sub else command)  # type: ignore[attr-defined]
    return command


def _profile_param():  # type: ignore[no-untyped-def]
    """The ``--profile`` parameter object, built by typer (which carries its own click) from a
    one-option command."""
    def holder(profile: Optional[str] = typer.Option(None, "--profile", metavar="PATH|NAME", help=PROFILE_HELP)) -> None:
        """Holds the option."""

    one = typer.Typer(add_completion=False)
    one.command()(holder)
    return typer.main.get_command(one).params[0]


def add_profile_option(command) -> None:  # type: ignore[no-untyped-def]
    """Give ``command`` a ``--profile PATH|NAME`` option that runs it inside
    :func:`moesim.lowering.resolve.profile_scope` (checked first: a bad name exits 2, one line)."""
    if any(p.name == "profile" for p in command.params):
        return
    command.params.append(_profile_param())
    inner = command.callback

    def callback(*args, profile: Optional[str] = None, **kwargs):  # type: ignore[no-untyped-def]
        if profile is None:
            return inner(*args, **kwargs)
        from moesim.costs.profile import resolve_profile_path
        from moesim.errors import ConfigError
        from moesim.lowering.resolve import profile_scope

        try:
            resolve_profile_path(profile)
        except ConfigError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2)
        with profile_scope(profile):
            return inner(*args, **kwargs)

    command.callback = functools.update_wrapper(callback, inner) if inner else callback


class _LazyVerb(typer.core.TyperCommand):
    """A verb listed by name and help; its module is imported when the verb is invoked."""

    def __init__(self, name: str, module: str, attr: str, help_text: str) -> None:
        super().__init__(name=name, help=help_text, callback=None)
        self.target = (module, attr)

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[no-untyped-def]
        real = load_verb(*self.target, self.name, self.help)
        return real.make_context(info_name, args, parent=parent, **extra)


class _Verbs(typer.core.TyperGroup):
    """The top-level group: the commands defined here, plus the lazily imported verbs."""

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        for name, module, attr, help_text in _VERBS:
            self.commands.setdefault(name, _LazyVerb(name, module, attr, help_text))
        order = [n for n in _LISTED_FIRST if n in self.commands]
        self.commands = {n: self.commands[n] for n in order + [n for n in self.commands if n not in order]}


app = typer.Typer(
    name="moesim",
    help="Discrete-event simulator for Mixture-of-Experts GPU clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Verbs,
)


@app.command("layer")
def layer(
    model: str = typer.Option(..., "--model", help="preset name (e.g. qwen3-30b-a3b, llama3-8b) or a Hugging "
                              "Face config.json (or its directory)"),
    block: str = typer.Option("decoder", "--block", help="decoder (attention + FFN/MoE) or moe (the MoE block alone)"),
    tokens: int = typer.Option(..., "--tokens", help="tokens per GPU in one iteration"),
    passes: str = typer.Option("fwd_bwd", "--pass", help="fwd or fwd_bwd"),
    gpus: int = typer.Option(1, "--gpus", help="GPUs (data parallel; an MoE block's experts spread over them)"),
    gpu: str = typer.Option("H200", "--gpu", help="H200, H100 or a topology name"),
    host: str = typer.Option("eager", "--host", help="eager (PyTorch host thread) or graphs (CUDA graphs)"),
    iterations: int = typer.Option(1, "--iterations", help="iterations back to back (grad adds after the first)"),
    seq_len: int = typer.Option(0, "--seq-len", help="sequence length (0: the model's where it divides tokens)"),
    layer_index: int = typer.Option(0, "--layer-index", help="the model layer whose attention kind the block takes "
                                    "(models whose layers differ, e.g. GPT-OSS's window / full)"),
    experts: str = typer.Option("", "--experts", help="grouped, loop or padded (moe.experts)"),
    routing: str = typer.Option("balanced", "--routing", help="balanced, uniform, zipf:S, dirichlet:A or trace:PATH (a recorded routing trace)"),
    cost_model: str = typer.Option("auto", "--cost-model", help="auto, calibrated or roofline"),
    set_: List[str] = typer.Option([], "--set", help="override a scenario field: key=value"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="directory for the Perfetto trace and block.json"),
) -> None:
    """Simulate one decoder layer or MoE block through moesim run's lowering and engine: time per
    op class, the critical path and a Perfetto trace."""
    from moesim.experiment.block_cli import run_layer

    run_layer(model=model, block=block, tokens=tokens, passes=passes, gpus=gpus, gpu=gpu, host=host,
              iterations=iterations, seq_len=seq_len or None, experts=experts, routing=routing,
              cost_model=cost_model, sets=set_, out=out, layer_index=layer_index)


@app.command("validate")
def validate(
    layers: List[Path] = typer.Option([], "--layers", help="layer-workloads file (repeatable; default data/validation/layers/*.json)"),
    kernels: List[Path] = typer.Option([], "--kernels", help="single-kernel file (repeatable; default data/validation/h200_measurements.json and h100_measurements.json)"),
    no_kernels: bool = typer.Option(False, "--no-kernels", help="leave the single-kernel cases out"),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="H200 or H100 for layer files not measured on one (e.g. a CPU smoke)"),
    cost_model: str = typer.Option("auto", "--cost-model", help="auto, calibrated or roofline"),
    fmt: str = typer.Option("table", "--format", help="table, markdown or json"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the report here instead of stdout"),
) -> None:
    """Compare predictions with real GPU measurements (no GPU needed): every stored layer, block and
    single kernel predicted through moesim run's own path; median and max |error| per workload class."""
    from moesim.validate.cli import run_validate

    code = run_validate(layers, kernels, no_kernels, gpu, cost_model, fmt, out)
    if code:
        raise typer.Exit(code)


def main() -> None:
    """Entry point of the ``moesim`` console script and ``python -m moesim``."""
    app()
