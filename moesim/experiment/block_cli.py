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


ROUTING_FORMS = ("balanced, uniform, zipf:S (S >= 0, 0 is uniform; e.g. zipf:1.2), dirichlet:A (A > 0, e.g. "
                 "dirichlet:0.5) or trace:PATH (a routing-trace .npz, docs/routing_traces.md)")


def parse_routing(text: str, tokens: int = 1) -> Any:
    """``balanced`` (None), ``uniform``, ``zipf:S`` (S >= 0), ``dirichlet:A`` (A > 0) or
    ``trace:PATH`` -> a RoutingConfig or None (``tokens`` per rank; the lowering sets the table's
    own; a trace carries its own token counts: ``tokens_per_rank`` None)."""
    import math

    from moesim.moe.routing import RoutingConfig

    kind, _, value = text.strip().partition(":")
    if kind == "balanced" and not value:
        return None
    if kind == "uniform" and not value:
        return RoutingConfig(kind="uniform", tokens_per_rank=max(1, tokens))
    if kind == "trace" and value.strip():
        path = Path(value.strip()).expanduser()
        if not path.is_file():
            raise ConfigError("--routing", f"trace file {str(path)!r} not found",
                              "give an existing routing-trace .npz: --routing trace:PATH")
        try:
            return RoutingConfig(kind="trace", trace_path=str(path), tokens_per_rank=None)
        except ConfigError as err:
            raise ConfigError("--routing", f"trace {str(path)!r}: {err.problem}", err.fix) from None
    if kind in ("zipf", "dirichlet") and value:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if math.isfinite(number) and (number >= 0 if kind == "zipf" else number > 0):
            return RoutingConfig(kind="zipf", zipf_s=number, tokens_per_rank=max(1, tokens)) if kind == "zipf" \
                else RoutingConfig(kind="dirichlet", dirichlet_alpha=number, tokens_per_rank=max(1, tokens))
    raise ConfigError("--routing", f"cannot read {text!r}", f"write {ROUTING_FORMS}")


# block_scenario's argument -> the command's flag, and the fix in the flag's words
FLAGS = {"layer": "--block", "passes": "--pass", "host": "--host", "tokens": "--tokens", "ranks": "--gpus",
         "iterations": "--iterations", "seq_len": "--seq-len", "layer_index": "--layer-index", "gpu": "--gpu"}
FLAG_FIXES = {"--block": "use --block decoder (attention + FFN/MoE), or --block moe with an MoE model",
              "--pass": "use --pass fwd or --pass fwd_bwd", "--host": "use --host eager or --host graphs",
              "--tokens": "give a whole number >= 1, e.g. --tokens 4096",
              "--iterations": "give a whole number >= 1, e.g. --iterations 1",
              "--seq-len": "give a --seq-len that divides --tokens (or leave it out)"}

# ``--set`` keys the command sets from its own flags: (keys, flag, fix)
FLAG_KEYS = ((("plan.num_microbatches",), "--iterations", "use --iterations"),
             (("plan.micro_batch_size", "model.seq_len"), "--tokens",
              "use --tokens (tokens per GPU) and --seq-len (the sequence length)"),
             (("mode",), "--pass", "use --pass fwd or --pass fwd_bwd"), (("plan.dp",), "--gpus", "use --gpus"),
             (("host",), "--host", "use --host"), (("cost_model",), "--cost-model", "use --cost-model"))


def _flag_error(err: ConfigError, *, seq_len: int | None, tokens: Any, model: str) -> ConfigError:
    """``err`` from :func:`block_scenario` (named by its arguments) named by the command's flags."""
    flag = FLAGS.get(err.field)
    if flag is None:
        return err
    if flag == "--seq-len" and seq_len is None:   # the sequence is the --tokens themselves
        return ConfigError("--tokens", f"{tokens!r} tokens as one sequence of {model!r}: {err.problem}",
                           "give fewer --tokens, or --seq-len dividing --tokens to split them into sequences")
    problem = err.problem.replace("tokens=", "--tokens ")
    if flag == "--layer-index":
        return ConfigError(flag, problem.replace("got ", "got --layer-index "), "give e.g. --layer-index 0")
    return ConfigError(flag, problem, FLAG_FIXES.get(flag, err.fix))


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
    sets_ = parse_sets(list(sets))
    try:
        scn = block_scenario(model_by_name_or_path(model, seq_len, field="--model"), layer=BLOCKS[block],
                             tokens=tokens, seq_len=seq_len, passes=passes, ranks=gpus, gpu=gpu, host=host,
                             iterations=iterations, moe=moe, cost_model=cost_model, layer_index=layer_index)
    except ConfigError as err:
        raise _flag_error(err, seq_len=seq_len, tokens=tokens, model=model) from None
    if (experts or rout is not None) and not hasattr(scn.model, "num_experts"):
        raise ConfigError("--experts/--routing" if experts and rout is not None else ("--experts" if experts else "--routing"),
                          f"model {scn.model.name!r} has no experts", "leave the flag out for a dense model")
    overrides = {"moe.experts": experts} if experts else {}
    overrides.update(sets_)
    try:
        out = scn.with_overrides(overrides)
    except ConfigError as err:
        if err.field.startswith("moe.routing.") and scn.moe.routing is None:   # a field of routing that is unset
            raise ConfigError(f"--set {err.field}", "moe.routing is not set (balanced routing), so it has no field "
                              f"{err.field.rsplit('.', 1)[1]!r}", "choose the routing with --routing (zipf:1.2, "
                              "dirichlet:0.5, uniform or trace:PATH), then --set its other fields, e.g. "
                              "--set moe.routing.seed=1") from None
        if err.field == "moe.routing.tokens_per_rank" or (err.field == "tokens_per_rank" and "trace" in err.problem):
            raise ConfigError(f"--set {err.field}", err.problem, "layer sets tokens_per_rank from --tokens; to "
                              "replay a routing trace use --routing trace:PATH") from None
        raise
    _check_flag_keys(scn, out, sets_)
    return out


def _check_flag_keys(scn: Any, out: Any, sets: dict[str, str]) -> None:
    """Refuse a ``--set`` of what a flag of the command sets (the label and the printed figures
    would name the flag's value while the run used the other): ``plan.num_microbatches`` is
    --iterations, ``plan.micro_batch_size`` and ``model.seq_len`` make --tokens, ``mode`` is
    --pass, ``plan.dp`` is --gpus, ``host`` is --host, ``cost_model`` is --cost-model. A value
    equal to the flag's is no contradiction and passes."""
    def tokens(s: Any) -> tuple[int, int]:
        return s.plan.micro_batch_size * s.model.seq_len, s.model.seq_len

    flag_value = {"--iterations": (scn.plan.num_microbatches, out.plan.num_microbatches),
                  "--tokens": (tokens(scn), tokens(out)), "--pass": (scn.mode, out.mode),
                  "--gpus": (scn.plan.dp, out.plan.dp), "--host": (scn.host, out.host),
                  "--cost-model": (scn.cost_model, out.cost_model)}
    shown = {"--iterations": scn.plan.num_microbatches, "--tokens": tokens(scn)[0],
             "--pass": "fwd" if scn.mode == "forward" else "fwd_bwd", "--gpus": scn.plan.dp, "--host": scn.host,
             "--cost-model": scn.cost_model}
    for keys, flag, fix in FLAG_KEYS:
        given = [k for k in keys if k in sets]
        before, after = flag_value[flag]
        if given and before != after:
            raise ConfigError(f"--set {given[0]}", f"layer sets it from {flag} ({flag} {shown[flag]}; "
                              f"{given[0]}={sets[given[0]]} would run something else under that label)", fix)


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
        try:
            result = simulate_block(scn)
        except ConfigError as err:
            raise _too_large(err) from None
    except ConfigError as err:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2)
    except MoesimError as err:
        Console(stderr=True).print(f"[red]simulation failed:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    for part in report(result, notes=layer_notes(**flags)):
        console.print(part)
    if out is not None:
        written = write_outputs(result, out)
        console.print(f"wrote {written[0]} (open in ui.perfetto.dev) and {written[1]}")


def _too_large(err: ConfigError) -> ConfigError:
    """The size refusal of :func:`~moesim.experiment.runner.build_at_duty` with what this command can
    do (it has no --force, and a block runs the full engine only)."""
    if err.field != "scenario" or "too large" not in err.problem:
        return err
    return ConfigError("scenario", err.problem, "simulate less: fewer --gpus, fewer --iterations or fewer --tokens "
                       "(layer runs the full engine and has no --force; `moesim run` has both for larger runs)")


def layer_notes(*, model: str, block: str, layer_index: int = 0, seq_len: int | None = None, **_: Any) -> list[str]:
    """What the output must say beside the figures: --layer-index picks the attention kind only, so
    a dense layer of an MoE model (``first_k_dense``, ``moe_layer_freq``) is simulated as an MoE layer."""
    from moesim.experiment.build import resolve_model
    from moesim.workload.moe import MoESpec
    from moesim.workload.presets import model_by_name_or_path

    try:
        spec = resolve_model(model_by_name_or_path(model, seq_len, field="--model"))
    except Exception:   # noqa: BLE001 - the run itself read the model; a note is never worth an error
        return []
    if not isinstance(spec, MoESpec) or spec.is_moe_layer(layer_index):
        return []
    return [f"note: layer {layer_index} of {spec.name} is a dense layer (first_k_dense={spec.first_k_dense}), but "
            f"--layer-index picks the attention kind only: this is an MoE "
            f"{'layer' if BLOCKS.get(block) == 'decoder' else 'block'} with that layer's attention; for a dense "
            "layer's cost, simulate a dense model of the same shape"]


def report(result: Any, notes: Sequence[str] = ()) -> list:
    """Rich renderables: the op-class table, the critical path and the summary lines."""
    from rich.markup import escape
    from rich.table import Table

    per_iter = result.time_per_iteration_ns
    exposed = getattr(result, "comm_exposed", {}) or {}
    table = Table(title=f"{result.scenario.name}: GPU time per op class (per iteration, mean over GPUs; the rows "
                        "split the iteration: compute, communication no compute overlaps, idle)")
    for name, justify in (("op class", "left"), ("ms", "right"), ("% of iteration", "right"), ("costs from", "left")):
        table.add_column(name, justify=justify, overflow="fold")

    def pct(ns: float) -> str:
        return f"{100 * ns / per_iter:.1f}%" if per_iter else "n/a"

    gpu = [c for c in result.op_classes if c.name != "host"]
    compute = [c for c in gpu if c.name not in exposed]
    comm = sorted((c for c in gpu if c.name in exposed), key=lambda c: (-exposed[c.name], c.name))
    for c in compute:
        table.add_row(escape(c.name), f"{c.time_ns / 1e6:.3f}", pct(c.time_ns), escape(c.provenance))
    for c in comm:
        table.add_row(escape(f"{c.name} (not overlapped)"), f"{exposed[c.name] / 1e6:.3f}", pct(exposed[c.name]),
                      escape(c.provenance))
    busy = sum(c.time_ns for c in compute) + sum(exposed[c.name] for c in comm)
    if per_iter:
        table.add_row("idle (GPU waits)", f"{max(0.0, per_iter - busy) / 1e6:.3f}", pct(max(0.0, per_iter - busy)), "")
    path = result.critical_path or {}
    total = path.get("makespan_ns") or result.step_time_ns
    cp = Table(title="critical path (whole run, by task category)")
    for name, justify in (("category", "left"), ("ms", "right"), ("share", "right")):
        cp.add_column(name, justify=justify)
    for cat, ns in (path.get("by_category_ns") or {}).items():
        cp.add_row(cat, f"{ns / 1e6:.3f}", f"{100 * ns / total:.1f}%" if total else "n/a")
    scn = result.scenario
    lines = list(notes)
    overlap = [f"{c.name.removeprefix('comm: ')} {c.time_ns / 1e6:.3f} ms ({(c.time_ns - exposed[c.name]) / 1e6:.3f} "
               "ms under compute)" for c in comm]
    if overlap:
        lines.append("communication streams busy per iteration: " + "; ".join(overlap))
    host_row = next((c for c in result.op_classes if c.name == "host"), None)
    if host_row is not None:
        lines.append(f"host thread (its own lane, runs alongside the GPU; not in the table): issues kernels for "
                     f"{host_row.time_ns / 1e6:.3f} ms per iteration ({pct(host_row.time_ns)} of it); "
                     f"costs from: {host_row.provenance}")
    lines += [f"time per iteration: {per_iter / 1e6:.3f} ms ({result.iterations} iteration(s), "
             f"{result.step_time_ns / 1e6:.3f} ms in all) on {scn.plan.dp} GPU(s), host {scn.host}, "
             f"{'forward only' if scn.mode == 'forward' else 'forward + backward'}",
             f"costs: {result.cost_model}" + _profile_text(getattr(result, "profile", None))]
    sources = getattr(result, "cost_sources", {}) or {}
    if sources:
        lines.append("cost sources: " + "; ".join(f"{k}: {v}" for k, v in sources.items()))
    if result.host_band:
        lo, hi = result.host_band
        lines.append(f"host-bound: {lo / 1e6:.3f} - {hi / 1e6:.3f} ms per iteration at the profile's fastest and "
                     f"slowest host runs (priced: host_speed={scn.host_speed}; --set host_speed=slowest|fastest)")
    lines += [f"bottleneck: {b}" for b in (result.result.bottlenecks if result.result else [])]
    return [table, cp, escape("\n".join(lines))]


def _profile_text(profile: "dict[str, str] | None") -> str:
    return f"; profile {profile.get('name')}, sha256 {profile.get('sha256') or 'n/a'}" if profile else ""


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
