"""``moesim calibrate``: measure a profile, measure validation workloads, merge runs, show a profile.

``run`` and ``workloads`` need torch (the ``calibrate`` extra) and, for real numbers, a GPU;
they import it only when called, so the rest of the CLI works without torch (without it they
print one line with the fix and exit 2). ``run`` shows the section and shape being measured and
ends with a table of what each section measured and skipped, what the profile leaves to the
roofline, and, when the budget was too small, how long a complete profile needs. ``merge`` and
``show`` need neither.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from moesim.errors import ConfigError, MoesimError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Measure per-op costs on real GPUs and write a profile.")


def _torch_module(name: str):
    """Import a measurement module; without torch, one line with the fix and exit 2."""
    import importlib

    try:
        return importlib.import_module(f"moesim.calibrate.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            _fail(ConfigError("torch", "not installed: moesim calibrate measures with PyTorch",
                              "pip install 'moesim[calibrate]' (or torch) first"))
        raise


def _fail(err: Exception) -> None:
    """Print ``error: ...`` on one line (stderr) and exit 2."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


@app.command("run")
def run(
    device: str = typer.Option("cuda", help="cuda (real measurements) or cpu (smoke test on a tiny grid)"),
    out: Path = typer.Option(Path("profile.json"), help="profile JSON to write"),
    quick: bool = typer.Option(False, help="a small grid (minutes less, coarser interpolation)"),
    budget_s: float = typer.Option(480.0, help="wall-clock budget; sections over budget skip shapes"),
    sections: str = typer.Option("", help="comma list of sections (default: all but host_megatron, which needs "
                                               "megatron-core)"),
    heat_ms: float = typer.Option(-1.0, help="GEMM load before each shape, ms (default 60 on cuda, 0 on cpu)"),
    preheat_s: float = typer.Option(0.0, help="seconds of GEMM load once before the first kernel section"),
    ranks: str = typer.Option("", help="comma list of rank counts for the collectives (default: all GPUs)"),
    cpu_ranks: int = typer.Option(0, help="gloo processes for collectives in cpu mode"),
) -> None:
    """Measure GEMMs, attention, memory ops, host costs, launch overhead and NCCL collectives into a profile."""
    measure = _torch_module("measure")
    # --flag=value: a value such as -inf must not read as an option
    argv = ["--device", device, f"--out={out}", f"--budget-s={budget_s}", f"--cpu-ranks={cpu_ranks}"]
    argv += ["--quick"] if quick else []
    argv += [f"--sections={sections}"] if sections else []
    argv += [f"--heat-ms={heat_ms}"] if heat_ms >= 0 or math.isnan(heat_ms) else []
    argv += [f"--preheat-s={preheat_s}"] if preheat_s != 0 else []
    argv += [f"--ranks={ranks}"] if ranks else []
    try:
        kwargs = measure.options(argv)
        profile = _with_progress(measure.run_calibration, kwargs)
    except SystemExit as exc:  # the measurement's own one-line refusals (no CUDA device, bad --sections)
        if isinstance(exc.code, str):
            _fail(ConfigError("calibrate run", exc.code))
        raise
    except MoesimError as err:
        _fail(err)
        return
    _report(profile, out)


def _with_progress(run_calibration, kwargs: dict) -> dict:  # type: ignore[no-untyped-def]
    """Run the calibration under a rich status line naming the section and shape being measured."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(f"calibrating on {kwargs['device']}", total=None)

        def shown(section: str, shape: str) -> None:
            bar.update(task, description=f"[bold]{escape(section)}[/bold] {escape(shape)}")

        return run_calibration(**kwargs, progress=shown)


def _report(profile: dict, out: Path) -> None:
    """The table of what each section measured and skipped, what is left to the roofline and,
    for an incomplete profile, how long a complete one needs."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title=f"calibration: {out}")
    for col in ("section", "samples", "shapes", "skipped", "errors", "s", "first skipped"):
        table.add_column(col, justify="left" if col in ("section", "first skipped") else "right", overflow="fold")
    for s in profile.get("sections", []):
        first = (s.get("skipped_first") or [""])[0]
        table.add_row(escape(s["section"]), str(s["samples"]), str(s["measured"]), str(s["skipped"]), str(s["errors"]),
                      f"{s['elapsed_s']:.1f}", escape(first))
    console.print(table)
    console.print("shapes: measured (or failed) within the budget; skipped: left out once the section's budget ran out",
                  highlight=False)
    for label, why in (profile.get("not_measured") or {}).items():
        console.print(f"not measured: {label}: {escape(why)}", highlight=False)
    done = profile.get("completeness") or {}
    if done and not done.get("complete", True):
        console.print(f"[yellow]incomplete profile:[/yellow] {done['skipped_shapes']} shapes skipped over the "
                      f"{done['budget_s']:.0f} s budget. A complete one needs about {done['needed_s']:.0f} s of "
                      f"measuring ({done['wall_s']:.0f} s run + {done['extra_s']:.0f} s for the skipped shapes at each "
                      f"section's measured time per shape); with every section at its share of the budget: "
                      f"--budget-s {done['budget_s_for_complete']:.0f}", highlight=False)
    console.print(f"wrote {escape(str(out))}: {len(profile['samples'])} samples, {len(profile['errors'])} errors",
                  highlight=False)


@app.command("workloads")
def workloads(
    device: str = typer.Option("cuda", help="cuda or cpu (tiny gloo versions)"),
    out: Path = typer.Option(Path("h200_measurements.json"), help="validation JSON to write"),
    budget_s: float = typer.Option(200.0, help="wall-clock budget"),
    heat_ms: float = typer.Option(0.0, help="GEMM load before each single-GPU entry, ms"),
    warm_s: float = typer.Option(0.0, help="seconds of GEMM load before the single-GPU entries"),
    parts: str = typer.Option("single,distributed", help="comma list of single, distributed"),
    cpu_ranks: int = typer.Option(0, help="gloo processes in cpu mode"),
    shape_set: str = typer.Option("standard", "--shape-set",
                                  help="single-GPU shapes: standard, or holdout (public models' shapes off every grid)"),
) -> None:
    """Measure whole workloads (off-grid ops, collectives, pipelines, MoE layers) for validation."""
    validate = _torch_module("validate_workloads")
    raise typer.Exit(validate.main(["--device", device, "--out", str(out), "--budget-s", str(budget_s),
                                    "--heat-ms", str(heat_ms), "--warm-s", str(warm_s), "--parts", parts,
                                    "--cpu-ranks", str(cpu_ranks), "--shape-set", shape_set]))


@app.command("merge")
def merge(
    out: Path = typer.Argument(..., help="merged JSON to write"),
    inputs: list[Path] = typer.Argument(..., help="run files, oldest first (later runs win)"),
    validation: bool = typer.Option(False, help="merge validation files instead of profiles"),
    average: str = typer.Option("", help="comma list of ops whose rows from every run are kept and averaged"),
) -> None:
    """Merge calibration runs (or validation files) into one file."""
    from moesim.calibrate.merge import main as merge_main

    flags = ["--validation"] if validation else (["--average", average] if average else [])
    raise typer.Exit(merge_main(flags + [str(out)] + [str(p) for p in inputs]))


@app.command("from-trace")
def from_trace(
    trace: Path = typer.Argument(..., help="a torch.profiler (Kineto) Chrome trace of your run, .json or .json.gz"),
    profile: str = typer.Option(None, "--profile", help="the profile to check (default: the shipped one of the "
                                "trace's GPU)"),
    out: Path = typer.Option(None, "--out", "-o", help="write the fitted rows here as a profile fragment "
                             "(then: moesim calibrate merge NEW.json PROFILE.json FRAGMENT.json)"),
    salvage: bool = typer.Option(False, "--salvage", help="read a truncated trace up to its last complete event"),
) -> None:
    """Which kernel classes of a profile a real trace can fill in: every kernel named by its aten op,
    the classes the profile lacks, and rows fitted for them where the trace recorded shapes."""
    from moesim.calibrate.from_trace import fragment
    from moesim.calibrate.from_trace import from_trace as check

    try:
        result = check(trace, profile, salvage=salvage)
    except ConfigError as err:
        _fail(err)
        return
    typer.echo(f"{result.trace.path}: {len(result.trace.events)} GPU events on {result.trace.device_name or '?'}; "
               f"profile {result.profile_path}")
    typer.echo(f"{'class':<36} {'kernels':>8} {'GPU ms':>9}  profile")
    for c in result.classes:
        state = "has rows" if c.in_profile else (f"MISSING: fitted {len(c.rows)} row(s)" if c.rows
                                                  else f"MISSING, not fitted: {c.why_not}")
        typer.echo(f"{c.label:<36} {c.kernels:>8} {c.time_ns / 1e6:>9.3f}  {state}")
    for name, kernels, ns in result.unmapped:
        typer.echo(f"{'(no profile class) ' + name[:60]:<36} {kernels:>8} {ns / 1e6:>9.3f}  not a class moesim prices")
    missing = [c.label for c in result.missing]
    typer.echo(f"missing from the profile: {', '.join(missing) or 'none'}; rows fitted: {len(result.fitted_rows)}")
    for note in result.trace.notes:
        typer.echo(f"note: {note}")
    if out is not None:
        out.write_text(json.dumps(fragment(result), indent=1, sort_keys=True) + "\n")
        typer.echo(f"wrote {out} ({len(result.fitted_rows)} rows)")


@app.command("show")
def show(profile: str = typer.Argument("h200_sxm", help="a shipped profile name or a JSON path"),
         as_json: bool = typer.Option(False, "--json", help="print the figures as JSON")) -> None:
    """Headline figures of a profile: peak FLOP/s, HBM bandwidth, NCCL bandwidth and latencies.
    A partial profile (e.g. memory or collectives only) shows the figures of the sections it has
    and names the ones it lacks."""
    from moesim.costs.calibrated import CalibratedCostModel
    from moesim.costs.profile import load_profile

    try:
        figures = headline_figures(CalibratedCostModel(load_profile(profile)))
    except ConfigError as err:  # a bad file or name: one line, not a traceback
        _fail(err)
        return
    if as_json:
        typer.echo(json.dumps(figures, indent=1))
        return
    for key, value in figures.items():
        typer.echo(f"{key:<44} {value}")


# headline groups: (label, op, match) -- a group is shown when the profile has a row of ``op`` matching ``match``
SHOW_GROUPS: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("bf16 GEMMs", "gemm", {"dtype": "bf16"}), ("memory (HBM copy)", "memory", {"kind": "copy"}),
    ("launch overhead", "launch", {}), ("overlap", "overlap", {}), ("fp8 GEMMs", "gemm", {"dtype": "fp8"}),
    ("collectives", "collective", {}), ("host costs", "host", {}),
)


def _figure(fn):  # type: ignore[no-untyped-def]
    """One figure; a figure the profile cannot give reads ``n/a: why`` instead of failing the whole show."""
    try:
        return fn()
    except (ConfigError, KeyError, ValueError, ZeroDivisionError) as err:
        return f"n/a: {err}"


def section_rows(sections: object) -> list[dict[str, object]]:
    """The profile's per-section records, one row per section name (rows of the same name, e.g. the
    forward and backward GEMM passes of older profiles, are added up)."""
    rows: dict[str, dict[str, object]] = {}
    for rec in sections if isinstance(sections, list) else []:
        if not isinstance(rec, dict) or not isinstance(rec.get("section"), str):
            continue
        row = rows.setdefault(rec["section"], {"section": rec["section"], "samples": 0, "measured": 0, "skipped": 0})
        for key in ("samples", "measured", "skipped"):
            value = rec.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                row[key] = int(row[key]) + value  # type: ignore[call-overload]
    return list(rows.values())


def headline_figures(model) -> dict[str, object]:
    """The numbers docs/calibration.md quotes, computed from a calibrated model; only those of the
    sections the profile has (``sections absent`` names the others)."""
    p = model.profile
    has = {label: bool(p.select(op, **match)) for label, op, match in SHOW_GROUPS}
    figures: dict[str, object] = {
        "profile": model.name, "device": p.device, "driver / CUDA / NCCL / torch": f"{p.driver} / {p.cuda} / {p.nccl} / {p.torch}",
        "sections present": ", ".join(label for label, ok in has.items() if ok) or "none",
        "sections absent": ", ".join(label for label, ok in has.items() if not ok) or "none",
    }
    rows = section_rows(p.extra.get("sections"))
    if rows:
        figures["measured sections (samples)"] = ", ".join(f"{r['section']} {r['samples']}" for r in rows)
    if has["bf16 GEMMs"]:
        figures["bf16 GEMM best achieved TFLOP/s"] = _figure(lambda: round(model.measured_peak_flops("bf16") / 1e12, 1))
        if p.select("gemm", dtype="bf16", layout="fwd"):
            figures["bf16 GEMM 8192^3 TFLOP/s"] = _figure(
                lambda: round(2 * 8192**3 / model.gemm_ns(8192, 8192, 8192, "bf16", "fwd") / 1e3, 1))
    if has["memory (HBM copy)"]:
        figures["HBM copy GB/s (read + write)"] = _figure(lambda: round(model.measured_hbm_gbps(), 1))
    if has["launch overhead"]:
        figures["launch overhead, eager back-to-back (ns)"] = _figure(model.launch_overhead_ns)
    if has["overlap"]:
        figures["overlap slowdown of GEMMs under NCCL traffic"] = _figure(lambda: round(model.overlap_slowdown(), 3))
        figures["overlap slowdown of NCCL under GEMMs"] = _figure(lambda: round(model.collective_overlap_slowdown(), 3))
    if has["fp8 GEMMs"]:
        figures["fp8 GEMM best achieved TFLOP/s"] = _figure(lambda: round(model.measured_peak_flops("fp8") / 1e12, 1))
    if has["collectives"]:
        figures.update({
            "all_reduce bus bandwidth, fitted (GB/s)": _figure(lambda: round(model.bus_bandwidth_gbps("all_reduce"), 1)),
            "all_reduce 1 GiB on 2 GPUs, busbw (GB/s)": _figure(lambda: _busbw(model, "all_reduce", 2, 2**30)),
            "all_to_all 1 GiB on 2 GPUs, busbw (GB/s)": _figure(lambda: _busbw(model, "all_to_all", 2, 2**30)),
            "NVLink efficiency (all_reduce busbw / datasheet)": _figure(lambda: round(model.link_efficiency("nvlink"), 3)),
            "p2p latency, device (ns)": _figure(lambda: model.p2p_latency_ns("nvlink")),
            "all_reduce step latency at 2 / 8 ranks (ns)": _figure(
                lambda: [model.collective_step_latency_ns("all_reduce", n, "nvlink") for n in (2, 8)]),
            "host overhead of an eager all_reduce (ns)": _figure(lambda: model.host_overhead_ns("all_reduce")),
            "NVLink efficiency of all_reduce at 16 MiB / 64 MiB / 256 MiB / 1 GiB, 2 GPUs": _figure(
                lambda: [round(model.collective_efficiency("all_reduce", 2, 2**k), 3) for k in (24, 26, 28, 30)]),
        })
    if has["host costs"]:
        figures["host time per eager call (ns): " + " / ".join(HOST_SHOWN)] = _figure(
            lambda: [model.host_ns(c) for c in HOST_SHOWN])
    return figures


HOST_SHOWN = ("launch_add1", "mm", "index_select", "index_add_", "swiglu_ffn", "all_to_all_single_splits")


def _busbw(model, op: str, ranks: int, nbytes: int) -> float:
    from moesim.costs.fitting import bus_factor

    return round(nbytes / model.collective_ns(op, ranks, nbytes, mode="eager") * bus_factor(op, ranks), 1)
