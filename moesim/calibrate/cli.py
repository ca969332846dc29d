"""``moesim calibrate``: measure a profile, measure validation workloads, merge runs, show a profile.

``run`` and ``workloads`` need torch (the ``calibrate`` extra) and, for real numbers, a GPU;
they import it only when called, so the rest of the CLI works without torch. ``merge`` and
``show`` need neither.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from moesim.errors import ConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Measure per-op costs on real GPUs and write a profile.")


def _torch_module(name: str):
    """Import a measurement module, with an actionable error if torch is missing."""
    import importlib

    try:
        return importlib.import_module(f"moesim.calibrate.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise ConfigError("torch", "not installed", "pip install 'moesim[calibrate]' (or torch) first") from None
        raise


@app.command("run")
def run(
    device: str = typer.Option("cuda", help="cuda (real measurements) or cpu (smoke test on a tiny grid)"),
    out: Path = typer.Option(Path("profile.json"), help="profile JSON to write"),
    quick: bool = typer.Option(False, help="a small grid (minutes less, coarser interpolation)"),
    budget_s: float = typer.Option(480.0, help="wall-clock budget; sections over budget skip shapes"),
    sections: str = typer.Option("", help="comma list of sections (default: all)"),
    heat_ms: float = typer.Option(-1.0, help="GEMM load before each shape, ms (default 60 on cuda, 0 on cpu)"),
    preheat_s: float = typer.Option(0.0, help="seconds of GEMM load once before the first kernel section"),
    ranks: str = typer.Option("", help="comma list of rank counts for the collectives (default: all GPUs)"),
    cpu_ranks: int = typer.Option(0, help="gloo processes for collectives in cpu mode"),
) -> None:
    """Measure GEMMs, attention, memory ops, host costs, launch overhead and NCCL collectives into a profile."""
    measure = _torch_module("measure")
    argv = ["--device", device, "--out", str(out), "--budget-s", str(budget_s), "--cpu-ranks", str(cpu_ranks)]
    argv += ["--quick"] if quick else []
    argv += ["--sections", sections] if sections else []
    argv += ["--heat-ms", str(heat_ms)] if heat_ms >= 0 else []
    argv += ["--preheat-s", str(preheat_s)] if preheat_s > 0 else []
    argv += ["--ranks", ranks] if ranks else []
    raise typer.Exit(measure.main(argv))


@app.command("workloads")
def workloads(
    device: str = typer.Option("cuda", help="cuda or cpu (tiny gloo versions)"),
    out: Path = typer.Option(Path("h200_measurements.json"), help="validation JSON to write"),
    budget_s: float = typer.Option(200.0, help="wall-clock budget"),
    heat_ms: float = typer.Option(0.0, help="GEMM load before each single-GPU entry, ms"),
    warm_s: float = typer.Option(0.0, help="seconds of GEMM load before the single-GPU entries"),
    parts: str = typer.Option("single,distributed", help="comma list of single, distributed"),
    cpu_ranks: int = typer.Option(0, help="gloo processes in cpu mode"),
) -> None:
    """Measure whole workloads (off-grid ops, collectives, pipelines, MoE layers) for validation."""
    validate = _torch_module("validate_workloads")
    raise typer.Exit(validate.main(["--device", device, "--out", str(out), "--budget-s", str(budget_s),
                                    "--heat-ms", str(heat_ms), "--warm-s", str(warm_s), "--parts", parts,
                                    "--cpu-ranks", str(cpu_ranks)]))


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


@app.command("show")
def show(profile: str = typer.Argument("h200_sxm", help="a shipped profile name or a JSON path"),
         as_json: bool = typer.Option(False, "--json", help="print the figures as JSON")) -> None:
    """Headline figures of a profile: peak FLOP/s, HBM bandwidth, NCCL bandwidth and latencies."""
    from moesim.costs.calibrated import CalibratedCostModel
    from moesim.costs.profile import load_profile

    figures = headline_figures(CalibratedCostModel(load_profile(profile)))
    if as_json:
        typer.echo(json.dumps(figures, indent=1))
        return
    for key, value in figures.items():
        typer.echo(f"{key:<44} {value}")


def headline_figures(model) -> dict[str, object]:
    """The numbers docs/calibration.md quotes, computed from a calibrated model."""
    p = model.profile
    figures: dict[str, object] = {
        "profile": model.name, "device": p.device, "driver / CUDA / NCCL / torch": f"{p.driver} / {p.cuda} / {p.nccl} / {p.torch}",
        "bf16 GEMM best achieved TFLOP/s": round(model.measured_peak_flops("bf16") / 1e12, 1),
        "bf16 GEMM 8192^3 TFLOP/s": round(2 * 8192**3 / model.gemm_ns(8192, 8192, 8192, "bf16", "fwd") / 1e3, 1),
        "HBM copy GB/s (read + write)": round(model.measured_hbm_gbps(), 1),
        "launch overhead, eager back-to-back (ns)": model.launch_overhead_ns(),
        "overlap slowdown of GEMMs under NCCL traffic": round(model.overlap_slowdown(), 3),
        "overlap slowdown of NCCL under GEMMs": round(model.collective_overlap_slowdown(), 3),
    }
    if any(s["op"] == "gemm" and s["dtype"] == "fp8" for s in p.samples):
        figures["fp8 GEMM best achieved TFLOP/s"] = round(model.measured_peak_flops("fp8") / 1e12, 1)
    if "collective" in p.ops():
        figures.update({
            "all_reduce bus bandwidth, fitted (GB/s)": round(model.bus_bandwidth_gbps("all_reduce"), 1),
            "all_reduce 1 GiB on 2 GPUs, busbw (GB/s)": _busbw(model, "all_reduce", 2, 2**30),
            "all_to_all 1 GiB on 2 GPUs, busbw (GB/s)": _busbw(model, "all_to_all", 2, 2**30),
            "NVLink efficiency (all_reduce busbw / datasheet)": round(model.link_efficiency("nvlink"), 3),
            "p2p latency, device (ns)": model.p2p_latency_ns("nvlink"),
            "all_reduce step latency at 2 / 8 ranks (ns)": [model.collective_step_latency_ns("all_reduce", n, "nvlink")
                                                         for n in (2, 8)],
            "host overhead of an eager all_reduce (ns)": model.host_overhead_ns("all_reduce"),
            "NVLink efficiency of all_reduce at 16 MiB / 64 MiB / 256 MiB / 1 GiB, 2 GPUs":
                [round(model.collective_efficiency("all_reduce", 2, 2**k), 3) for k in (24, 26, 28, 30)],
        })
    if "host" in p.ops():
        figures["host time per eager call (ns): " + " / ".join(HOST_SHOWN)] = [model.host_ns(c) for c in HOST_SHOWN]
    return figures


HOST_SHOWN = ("launch_add1", "mm", "index_select", "index_add_", "swiglu_ffn", "all_to_all_single_splits")


def _busbw(model, op: str, ranks: int, nbytes: int) -> float:
    from moesim.costs.fitting import bus_factor

    return round(nbytes / model.collective_ns(op, ranks, nbytes, mode="eager") * bus_factor(op, ranks), 1)
