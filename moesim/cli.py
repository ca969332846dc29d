"""The moesim command line (Typer). Each verb group lives next to the code it drives and is
mounted here; this module only wires them together and turns user errors into clean exits."""
from __future__ import annotations

import importlib

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
    ("moesim.validate.cli", "validate", "Compare predictions with real GPU measurements (no GPU needed)."),
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


def main() -> None:
    """Entry point of the ``moesim`` console script and ``python -m moesim``."""
    app()
