"""The moesim command line (Typer). Each verb group lives next to the code it drives and is
mounted here; this module only wires them together and turns user errors into clean exits."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    name="moesim",
    help="Discrete-event simulator for Mixture-of-Experts GPU clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module with a Typer `app`, verb name, help). Mounted only when the module exists, so a
# partially installed tree still gives a working CLI.
_SUBAPPS = [
    ("moesim.topology.cli", "topo", "Inspect fabrics: show, path, draw."),
    ("moesim.schedules.cli", "schedule", "Pipeline schedules: show the grid and bubble figures."),
    ("moesim.calibrate.cli", "calibrate", "Measure per-op costs on real GPUs and write a profile."),
    ("moesim.memory.cli", "memory", "Per-GPU memory budget: weights, optimizer, activations, KV cache."),
]

for _module, _name, _help in _SUBAPPS:
    try:
        _sub = importlib.import_module(_module).app
    except ModuleNotFoundError as exc:  # pragma: no cover - only while a part is missing
        if exc.name and exc.name.startswith("moesim"):
            continue
        raise
    app.add_typer(_sub, name=_name, help=_help)


from moesim.experiment.cli import run as _run  # noqa: E402
from moesim.planner.cli import bench_app as _bench_app  # noqa: E402
from moesim.planner.cli import plan as _plan  # noqa: E402
from moesim.sweep.cli import sweep as _sweep  # noqa: E402

app.command("run")(_run)
app.command("sweep")(_sweep)
app.command("plan")(_plan)
app.add_typer(_bench_app, name="bench", help="Baseline/optimized bench pairs with JSON and Markdown summaries.")


@app.command("layer")
def layer(
    model: str = typer.Option(..., "--model", help="preset name, e.g. qwen3-30b-a3b or llama3-8b"),
    block: str = typer.Option("decoder", "--block", help="decoder (attention + FFN/MoE) or moe (the MoE block alone)"),
    tokens: int = typer.Option(..., "--tokens", help="tokens per GPU in one iteration"),
    passes: str = typer.Option("fwd_bwd", "--pass", help="fwd or fwd_bwd"),
    gpus: int = typer.Option(1, "--gpus", help="GPUs (data parallel; an MoE block's experts spread over them)"),
    gpu: str = typer.Option("H200", "--gpu", help="H200, H100 or a topology name"),
    host: str = typer.Option("eager", "--host", help="eager (PyTorch host thread) or graphs (CUDA graphs)"),
    iterations: int = typer.Option(1, "--iterations", help="iterations back to back (grad adds after the first)"),
    seq_len: int = typer.Option(0, "--seq-len", help="sequence length (0: the model's where it divides tokens)"),
    experts: str = typer.Option("", "--experts", help="grouped, loop or padded (moe.experts)"),
    routing: str = typer.Option("balanced", "--routing", help="balanced, uniform, zipf:S or dirichlet:A"),
    cost_model: str = typer.Option("auto", "--cost-model", help="auto, calibrated or roofline"),
    set_: List[str] = typer.Option([], "--set", help="override a scenario field: key=value"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="directory for the Perfetto trace and block.json"),
) -> None:
    """Simulate one decoder layer or MoE block through moesim run's lowering and engine: time per
    op class, the critical path and a Perfetto trace."""
    from moesim.experiment.block_cli import run_layer

    run_layer(model=model, block=block, tokens=tokens, passes=passes, gpus=gpus, gpu=gpu, host=host,
              iterations=iterations, seq_len=seq_len or None, experts=experts, routing=routing,
              cost_model=cost_model, sets=set_, out=out)


@app.command("validate")
def validate(
    layers: List[Path] = typer.Option([], "--layers", help="layer-workloads file (repeatable; default data/validation/layers/*.json)"),
    kernels: Optional[Path] = typer.Option(None, "--kernels", help="single-kernel file (default data/validation/h200_measurements.json)"),
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
