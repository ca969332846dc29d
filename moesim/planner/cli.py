"""The planner's command line: ``moesim plan`` and ``moesim bench``.

Exports :func:`plan` (one Typer command; mount it with ``app.command("plan")(plan)``, or
:data:`plan_app` with ``app.add_typer(plan_app, name="plan")``) and :data:`bench_app`
(``moesim bench list`` / ``moesim bench run``). ``moesim plan --scenario NAME
--breakdown`` prints the breakdown and network affinity of the preset's own layout (or of the
layout given with ``--tp/--pp/--dp/--ep/...``) without searching. Bad input (an unknown preset,
a world size the layout cannot fill, a layout over memory) prints the error naming the field and
exits with code 2, no traceback. While it searches, ``moesim plan`` draws a progress bar on stderr
(when stderr is a terminal; it is cleared at the end) naming the layout being estimated or
simulated and the count done of total.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape

from moesim.errors import ConfigError, MoesimError
from moesim.planner.presets import PRESETS, get_preset

bench_app = typer.Typer(help="Named baseline/optimized pairs: memory, grouping, affinity, parallelism, schedules.",
                        no_args_is_help=True)


# Bounds checked before any search: beyond them the search or its simulations run for hours
# (a 10^12 global batch, --top 10^9 estimated every layout, --max-candidates 10^6 simulated them).
# DeepSeek-V3 trained with 15,360 sequences per step; the search keeps at most a few dozen layouts.
MAX_GLOBAL_BATCH = 1 << 20
MAX_TOP = 100
MAX_CANDIDATES = 32
MAX_TASKS = 5_000_000  # the run budget of moesim run (moesim.experiment.estimate.check_budget)


def check_plan_sizes(top: int, max_candidates: int, max_tasks: int, global_batch: Optional[int]) -> None:
    """Refuse option values whose search would not finish, naming the option and its limit."""
    for option, value, limit in (("--top", top, MAX_TOP), ("--max-candidates", max_candidates, MAX_CANDIDATES),
                                 ("--max-tasks", max_tasks, MAX_TASKS), ("--global-batch", global_batch, MAX_GLOBAL_BATCH)):
        if value is not None and value > limit:
            raise ConfigError(option, f"{value:,} is more than the {limit:,} moesim plan searches with",
                              f"give at most {limit:,}")
    if global_batch is not None and global_batch < 1:
        raise ConfigError("--global-batch", f"must be an integer >= 1, got {global_batch}")


def _fail(err: Exception) -> None:
    Console(stderr=True).print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _preset(name: str, nodes: Optional[int], global_batch: Optional[int], model: Optional[str]):
    preset = get_preset(name)
    changes: dict = {}
    if nodes is not None:
        if nodes < 1:
            raise ConfigError("--nodes", f"must be an integer >= 1, got {nodes}")
        changes["nodes"] = nodes
    if model is not None:   # a preset name or a Hugging Face config.json (its directory)
        from moesim.workload.presets import model_by_name_or_path

        changes["model"] = model_by_name_or_path(model, field="--model")
    if global_batch is not None:
        changes["global_batch"] = global_batch
    if not changes:
        return preset
    preset = preset.with_overrides(**changes)
    if nodes is not None and global_batch is None:
        _ = preset.num_gpus  # loads the fabric: a bad node count fails here, naming the field
    said = ([f"{nodes} node(s), {preset.num_gpus} GPUs"] if nodes is not None else []) \
        + ([f"model {_model_label(preset.spec)}"] if model is not None else []) \
        + ([f"global batch {global_batch}"] if global_batch is not None else [])
    # the preset's description names its own fabric and model: say what the options replaced
    return preset.with_overrides(description=f"{preset.description} [replaced: {'; '.join(said)}]")


def _model_label(spec) -> str:
    experts = getattr(spec, "num_experts", 0)
    return f"{spec.name} ({experts} experts top-{spec.top_k})" if experts else spec.name


def plan(
    scenario: str = typer.Option(..., "--scenario", "-s", help=f"preset: {', '.join(PRESETS)}"),
    top: int = typer.Option(3, "--top", help="runners-up to show"),
    max_candidates: int = typer.Option(3, "--max-candidates", help="best estimated layouts to simulate"),
    network: str = typer.Option("analytical", "--network", help="engine network mode: analytical (fast) or fluid "
                                "(link contention, slower)"),
    nodes: Optional[int] = typer.Option(None, "--nodes", help="override the preset's node count"),
    global_batch: Optional[int] = typer.Option(None, "--global-batch", help="override sequences per step"),
    model: Optional[str] = typer.Option(None, "--model", help="override the preset's model: a model preset name or a Hugging Face config.json (or its directory)"),
    max_tasks: int = typer.Option(120_000, "--max-tasks", help="largest simulation (engine tasks) before proxies"),
    breakdown: bool = typer.Option(False, "--breakdown", help="no search: break down one layout (the preset's, or "
                                   "the one given with --tp/--pp/--dp/--ep/--ep-layout/--vpp/--mbs/--schedule/"
                                   "--placement)"),
    tp: Optional[int] = typer.Option(None, "--tp"), pp: Optional[int] = typer.Option(None, "--pp"),
    dp: Optional[int] = typer.Option(None, "--dp"), ep: Optional[int] = typer.Option(None, "--ep"),
    vpp: Optional[int] = typer.Option(None, "--vpp"), mbs: Optional[int] = typer.Option(None, "--mbs"),
    order: Optional[str] = typer.Option(None, "--order", help="rank order, innermost first, e.g. tp-dp-pp"),
    ep_layout: Optional[str] = typer.Option(None, "--ep-layout", help="strided (EP inside each TP index's DP) or "
                                            "folded (EP over TP x DP, Megatron's expert TP 1)"),
    schedule: Optional[str] = typer.Option(None, "--schedule"),
    placement: Optional[str] = typer.Option(None, "--placement"),
    redundant: Optional[int] = typer.Option(None, "--redundant", help="redundant expert slots per EP group"),
    simulate: bool = typer.Option(True, "--simulate/--no-simulate", help="with --breakdown: also simulate"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Search the layouts of a preset scenario and print an actionable plan: the layout, experts
    and memory per GPU, bandwidth needed per link kind, expected step time and tokens/s, the
    bottleneck, and why the runners-up lost."""
    from moesim.planner import render

    console = Console(width=170)
    try:
        check_plan_sizes(top, max_candidates, max_tasks, global_batch)
        preset = _preset(scenario, nodes, global_batch, model)
        layout = dict(tp=tp, pp=pp, dp=dp, ep=ep, vpp=vpp, micro_batch_size=mbs, order=order, ep_layout=ep_layout)
        fixed = {**layout, "schedule": schedule, "placement": placement, "redundant": redundant}
        if not breakdown and any(v is not None for v in fixed.values()):
            flags = ", ".join(f"--{_FLAG.get(k, k)}" for k, v in fixed.items() if v is not None)
            raise ConfigError(flags, "describe one layout; the search does not take them (it would ignore them)",
                              "add --breakdown to break down that layout, or leave them out to search every layout")
        if breakdown:
            _print_breakdown(console, preset, layout, schedule, placement, redundant, simulate, network, max_tasks,
                             as_json)
            return
        from moesim.planner.plan import plan_scenario

        with _search_progress() as show:
            report = plan_scenario(preset, top=top, max_candidates=max_candidates, network=network,
                                   max_tasks=max_tasks, progress=show)
    except MoesimError as err:
        _fail(err)
        return
    if as_json:
        console.print_json(json.dumps(report.to_dict(), default=float))
        return
    for part in render.plan_lines(report):
        console.print(part, highlight=False)


@contextmanager
def _search_progress() -> Iterator[Callable]:
    """A transient rich progress bar on stderr; yields the callback :func:`plan_scenario` feeds
    (a :class:`~moesim.planner.plan.SearchStep` per step). Nothing is drawn when stderr is not a
    terminal, so piped and --json output stay as they were."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda step: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("enumerating layouts", total=None)

        def show(step) -> None:
            bar.update(task, description=escape(step.description), completed=step.done, total=step.total)

        yield show


_FLAG = {"micro_batch_size": "mbs", "ep_layout": "ep-layout"}   # layout keys -> their option names


def _layout(preset, layout: dict, schedule, placement, redundant, notes: "list[str] | None" = None):
    """The candidate the --breakdown options describe (defaults: the preset's own); what was
    chosen for the user is appended to ``notes``."""
    import dataclasses
    import math

    notes = [] if notes is None else notes

    from moesim.planner.candidates import Candidate

    given = {k: v for k, v in layout.items() if v is not None}
    for key, value in given.items():
        if isinstance(value, int) and value < 1:
            raise ConfigError(f"--{_FLAG.get(key, key)}", f"must be >= 1, got {value}", "give a positive size")
    base = preset.plan
    if given and "dp" not in given:
        world = preset.num_gpus
        tp, pp = given.get("tp", base.tp), given.get("pp", base.pp)
        if world % (tp * pp):
            raise ConfigError("--tp/--pp", f"tp*pp = {tp * pp} does not divide the {world} GPUs",
                              "choose tp and pp whose product divides the GPU count")
        given["dp"] = world // (tp * pp)
    if given:
        dp, mbs = given.get("dp", base.dp), given.get("micro_batch_size", base.micro_batch_size)
        if preset.global_batch % (dp * mbs):
            raise ConfigError("--dp/--mbs", f"dp*mbs = {dp * mbs} does not divide the global batch {preset.global_batch}",
                              "choose dp and mbs dividing the global batch, or set --global-batch")
        given["num_microbatches"] = preset.global_batch // (dp * mbs)
        if "ep" not in given and base.ep_layout != "folded" and given.get("ep_layout") != "folded" and dp % base.ep:
            given["ep"] = math.gcd(dp, base.ep)
            notes.append(f"--ep not given and the preset's EP{base.ep} does not divide DP{dp}: "
                         f"EP{given['ep']}, the largest that does")
    plan = dataclasses.replace(base, **given)
    return Candidate(plan, schedule or preset.schedule, placement or preset.placement,
                     preset.num_redundant if redundant is None else redundant)


def _print_breakdown(console, preset, layout, schedule, placement, redundant, simulate, network, max_tasks,
                     as_json) -> None:
    from moesim.planner import render
    from moesim.planner.affinity import network_affinity
    from moesim.planner.breakdown import parallelism_breakdown
    from moesim.planner.context import PlanContext

    notes: list[str] = []
    cand = _layout(preset, layout, schedule, placement, redundant, notes)
    ctx = PlanContext(preset)
    b = parallelism_breakdown(preset, cand, ctx=ctx, simulate_it=simulate, network=network, max_tasks=max_tasks)
    aff = network_affinity(preset, cand, ctx) if cand.plan.ep > 1 else None
    if as_json:
        console.print_json(json.dumps({"breakdown": b.to_dict(), "affinity": aff.to_dict() if aff else None, "notes": notes},
                                      default=float))
        return
    for note in notes:
        console.print(f"note: {escape(note)}", highlight=False)
    for part in render.breakdown_lines(b):
        console.print(part, highlight=False)
    if aff:
        console.print(render.affinity_table(aff))
        console.print(f"[bold]where experts should live:[/bold] {escape(aff.advice)}", highlight=False)
    if not b.fits:
        console.print(f"[red]this layout does not fit:[/red] {escape(b.memory_verdict)}", highlight=False)


@bench_app.callback()
def _bench() -> None:
    """Named baseline/optimized pairs: memory, grouping, affinity, parallelism, schedules."""


@bench_app.command("list")
def bench_list() -> None:
    """List the bench targets."""
    from moesim.planner.bench import BENCHES

    console = Console(width=170)
    for name, bench in BENCHES.items():
        console.print(f"{name:34s} {escape(bench.description)}", highlight=False)


@bench_app.command("run")
def bench_run(
    targets: Optional[str] = typer.Option(None, "--targets", help="comma-separated targets (default: all)"),
    fmt: str = typer.Option("markdown", "--format", help="console output: json or markdown (both are written)"),
    out: Path = typer.Option(Path("runs/bench"), "--out", "-o", help="directory for the JSON and Markdown files"),
    network: str = typer.Option("analytical", "--network", help="engine network mode for simulated sides"),
) -> None:
    """Run bench targets; write <target>.json / <target>.md, results.json and summary.md to --out."""
    from moesim.planner.bench import FORMATS, markdown, resolve_targets, run_benches

    console = Console(width=170)
    try:
        if fmt not in FORMATS:
            raise ConfigError("--format", f"unknown format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
        names = resolve_targets(targets)
        from moesim.experiment.runner import prepare_out_dir

        prepare_out_dir(out)  # an unwritable --out fails now, in one line, not after the benches ran
        results = run_benches(names, out, network,
                              on_done=lambda r: console.print(f"done {r.target} ({r.wall_s:.1f} s)", highlight=False))
    except MoesimError as err:
        _fail(err)
        return
    if fmt == "json":
        console.print_json(json.dumps([r.to_dict() for r in results], default=float))
    else:
        console.print(markdown(results), highlight=False, markup=False)
    console.print(f"wrote {out}/results.json, summary.md and one .json/.md per target", highlight=False)


# The same command as a Typer app, for ``app.add_typer(plan_app, name="plan")``.
plan_app = typer.Typer(help="Search parallel layouts for a preset scenario and print an actionable plan.")
plan_app.callback(invoke_without_command=True)(plan)
