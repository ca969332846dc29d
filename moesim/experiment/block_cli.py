"""``moesim layer``: simulate one block (:mod:`moesim.experiment.block`) and print where its time goes.

The command builds the block's Scenario, applies ``--experts``/``--routing``/``--set``, runs it
through the same lowering and engine as ``moesim run``, prints the time per op class (with where
each class's costs come from: a measured profile, the roofline, or a roofline fallback of a
calibrated profile), the critical path and the time per iteration, and writes a Perfetto trace
and ``block.json`` into ``--out`` only. Bad input is one line on stderr and exit code 2.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import typer

from moesim.errors import ConfigError, MoesimError

BLOCKS = {"decoder": "decoder", "moe": "moe_block", "moe_block": "moe_block"}


def parse_routing(text: str, tokens: int = 1) -> Any:
    """``balanced`` (None), ``uniform``, ``zipf:S`` or ``dirichlet:A`` -> a RoutingConfig or None
    (``tokens`` per rank; the lowering sets the table's own)."""
    from moesim.moe.routing import RoutingConfig

    kind, _, value = text.strip().partition(":")
    if kind == "balanced" and not value:
        return None
    if kind == "uniform" and not value:
        return RoutingConfig(kind="uniform", tokens_per_rank=max(1, tokens))
    if kind in ("zipf", "dirichlet") and value:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if number == number and number > 0:
            return RoutingConfig(kind="zipf", zipf_s=number, tokens_per_rank=max(1, tokens)) if kind == "zipf" \
                else RoutingConfig(kind="dirichlet", dirichlet_alpha=number, tokens_per_rank=max(1, tokens))
    raise ConfigError("--routing", f"cannot read {text!r}",
                      "write balanced, uniform, zipf:S (e.g. zipf:1.2) or dirichlet:A (e.g. dirichlet:0.5)")


def layer_scenario(*, model: str, block: str, tokens: int, passes: str, gpus: int, gpu: str, host: str,
                   iterations: int, seq_len: int | None, experts: str, routing: str, cost_model: str,
                   sets: Sequence[str], layer_index: int = 0) -> Any:
    """The command's Scenario: :func:`~moesim.experiment.block.block_scenario` plus the flags."""
    import dataclasses

    from moesim.experiment.block import block_scenario
    from moesim.experiment.cli import parse_sets
    from moesim.experiment.scenario import MoEOptions
    from moesim.workload.presets import model_by_name_or_path

    if block not in BLOCKS:
        raise ConfigError("--block", f"unknown block {block!r}", "use decoder or moe")
    rout = parse_routing(routing, tokens if isinstance(tokens, int) else 1)
    moe = dataclasses.replace(MoEOptions(), routing=rout) if rout is not None else None
    scn = block_scenario(model_by_name_or_path(model, seq_len, field="--model"), layer=BLOCKS[block], tokens=tokens,
                         seq_len=seq_len, passes=passes, ranks=gpus, gpu=gpu, host=host, iterations=iterations, moe=moe,
                         cost_model=cost_model, layer_index=layer_index)
    if (experts or rout is not None) and not hasattr(scn.model, "num_experts"):
        raise ConfigError("--experts/--routing" if experts and rout is not None else ("--experts" if experts else "--routing"),
                          f"model {scn.model.name!r} has no experts", "leave the flag out for a dense model")
    overrides = {"moe.experts": experts} if experts else {}
    overrides.update(parse_sets(list(sets)))
    return scn.with_overrides(overrides)


def run_layer(*, out: Path | None, **flags: Any) -> None:
    """Run the command (see the module docstring)."""
    from rich.console import Console
    from rich.markup import escape

    from moesim.experiment.block import simulate_block

    console = Console()
    try:
        if out is not None:  # an unwritable --out fails now, in one line, not after the run
            from moesim.experiment.runner import prepare_out_dir

            prepare_out_dir(out)
        scn = layer_scenario(**flags)
        result = simulate_block(scn)
    except ConfigError as err:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2)
    except MoesimError as err:
        Console(stderr=True).print(f"[red]simulation failed:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    for part in report(result):
        console.print(part)
    if out is not None:
        written = write_outputs(result, out)
        console.print(f"wrote {written[0]} (open in ui.perfetto.dev) and {written[1]}")


def report(result: Any) -> list:
    """Rich renderables: the op-class table, the critical path and the summary lines."""
    from rich.table import Table

    per_iter = result.time_per_iteration_ns
    table = Table(title=f"{result.scenario.name}: GPU time per op class (per iteration, mean over GPUs)")
    for name, justify in (("op class", "left"), ("ms", "right"), ("% of iteration", "right"), ("costs from", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for c in result.op_classes:
        table.add_row(c.name, f"{c.time_ns / 1e6:.3f}", f"{100 * c.time_ns / per_iter:.1f}%" if per_iter else "n/a",
                      c.provenance)
    path = result.critical_path or {}
    total = path.get("makespan_ns") or result.step_time_ns
    cp = Table(title="critical path (whole run, by task category)")
    for name, justify in (("category", "left"), ("ms", "right"), ("share", "right")):
        cp.add_column(name, justify=justify)
    for cat, ns in (path.get("by_category_ns") or {}).items():
        cp.add_row(cat, f"{ns / 1e6:.3f}", f"{100 * ns / total:.1f}%" if total else "n/a")
    scn = result.scenario
    lines = [f"time per iteration: {per_iter / 1e6:.3f} ms ({result.iterations} iteration(s), "
             f"{result.step_time_ns / 1e6:.3f} ms in all) on {scn.plan.dp} GPU(s), host {scn.host}, "
             f"{'forward only' if scn.mode == 'forward' else 'forward + backward'}",
             f"costs: {result.cost_model}"]
    if result.host_band:
        lo, hi = result.host_band
        lines.append(f"host-bound: {lo / 1e6:.3f} - {hi / 1e6:.3f} ms per iteration at the profile's fastest and "
                     f"slowest host runs (priced: host_speed={scn.host_speed}; --set host_speed=slowest|fastest)")
    lines += [f"bottleneck: {b}" for b in (result.result.bottlenecks if result.result else [])]
    return [table, cp, "\n".join(lines)]


def write_outputs(result: Any, out: Path) -> tuple[Path, Path]:
    """``<scenario>.trace.json`` (Perfetto) and ``block.json`` in ``out``."""
    from moesim.trace import write_chrome_trace

    out.mkdir(parents=True, exist_ok=True)
    from moesim.pathnames import safe_file_stem

    # the label holds the model's name, which may be an 'Org/Model' path: keep the file inside out
    trace = write_chrome_trace(result.recorder, out / f"{safe_file_stem(result.scenario.name)}.trace.json")
    summary = out / "block.json"
    summary.write_text(json.dumps(result.to_dict(), indent=1, sort_keys=True) + "\n")
    return trace, summary
