"""Present results: the Markdown summary and the console table (rich)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from moesim.experiment.experiment import Experiment

if TYPE_CHECKING:
    from moesim.experiment.runner import ScenarioResult

RESULTS_SCHEMA_VERSION = 2  # results.json: 2 adds moesim_version, schema_version, each scenario's profile
COLUMNS = ("scenario", "schedule", "step ms", "tokens/s", "MFU", "bubble", "act GiB", "mem GiB", "top bottlenecks")


def _row(r) -> list[str]:
    return [r.name, r.schedule, f"{r.step_time_ms:.2f}", f"{r.tokens_per_s:,.0f}", f"{100 * r.mfu:.1f}%",
            f"{100 * r.bubble_fraction:.1f}%", f"{r.peak_activation_gib:.1f}",
            f"{r.memory_gib:.1f}" + ("" if r.fits else " (over)"), " / ".join(r.bottlenecks)]


MOE_COLUMNS = ("scenario", "placement", "GPU max/mean", "expert max/mean", "cross-node GB", "dropped", "MoE layer ms")


def _moe_row(r) -> list[str]:
    m = r.moe
    layers = m.get("layer_time_ms") or {}
    mean_layer = sum(layers.values()) / len(layers) if layers else 0.0
    return [r.name, f"{m['placement']}" + (f" +{m['num_redundant']}" if m["num_redundant"] else ""),
            f"{m['gpu_max_over_mean']:.2f}", f"{m['expert_max_over_mean']:.2f}",
            f"{m['cross_node_bytes'] / 1e9:.1f} ({100 * m['cross_node_fraction']:.0f}%)", str(m["dropped_tokens"]),
            f"{mean_layer:.2f}" if layers else "n/a"]


def comparisons(exp: Experiment, results: list[ScenarioResult]) -> list[dict[str, Any]]:
    """Optimized / baseline ratios for every comparison of the experiment."""
    by = {r.name: r for r in results}
    out = []
    for c in exp.comparisons:
        b, o = by[c.baseline], by[c.optimized]
        out.append({"baseline": c.baseline, "optimized": c.optimized, "lesson": c.lesson,
                    "step_time_ratio": round(o.step_time_ms / b.step_time_ms, 4) if b.step_time_ms else None,
                    "tokens_per_s_ratio": round(o.tokens_per_s / b.tokens_per_s, 4) if b.tokens_per_s else None,
                    "bubble_delta": round(o.bubble_fraction - b.bubble_fraction, 4),
                    "peak_activation_ratio": round(o.peak_activation_gib / b.peak_activation_gib, 4)
                    if b.peak_activation_gib else None})
    return out


def summary_markdown(exp: Experiment, results: Sequence) -> str:
    """The table a person reads, with the optimized/baseline ratios."""
    lines = [f"# {exp.name}", "", exp.description, ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _row(r)) + " |" for r in results]
    comps = comparisons(exp, list(results))
    if comps:
        lines += ["", "## Baseline vs optimized", "", "| baseline | optimized | step time ratio | tokens/s ratio | bubble change | lesson |",
                  "|---|---|---|---|---|---|"]
        for c in comps:
            lines.append(f"| {c['baseline']} | {c['optimized']} | {c['step_time_ratio']:.3f} | "
                         f"{c['tokens_per_s_ratio']:.3f} | {100 * c['bubble_delta']:+.1f} pt | {c['lesson']} |")
    moe = [r for r in results if r.moe]
    if moe:
        lines += ["", "## Expert parallelism (forward passes)", "", "| " + " | ".join(MOE_COLUMNS) + " |",
                  "|" + "---|" * len(MOE_COLUMNS)]
        lines += ["| " + " | ".join(_moe_row(r)) + " |" for r in moe]
    first = results[0] if results else None
    if first is not None:
        lines += ["", f"Costs: {first.cost_model}. Network model: {first.network_mode}."]
        for r in results:
            if r.cost_sources:
                lines.append(f"- {r.name}: " + "; ".join(f"{k}: {v}" for k, v in r.cost_sources.items()))
        lines += ["", *profile_lines(results)]
    mfu = mfu_rows(exp, results)
    if mfu:
        lines += ["", "## MFU two ways", "", "| scenario | GEMM precision | datasheet peak TFLOP/s | model FLOPs MFU | "
                  "executed FLOPs MFU |", "|---|---|---|---|---|"]
        lines += [f"| {m['scenario']} | {m['gemm_dtype']} | {m['peak_tflops']:,.0f} ({m['gpu']}) | "
                  f"{100 * m['mfu_model']:.1f}% | {100 * m['mfu_executed']:.1f}% |" for m in mfu]
        lines += ["", "Model FLOPs: forward + backward of the model per token (MTP included), no recomputation; "
                  "executed FLOPs: the simulated compute, recomputation included. Both against the datasheet "
                  "peak of the precision the linear GEMMs run in. The MFU column above is the executed FLOPs "
                  "figure."]
        lines += [f"- {m['scenario']}: {m['note']}" for m in mfu if m["note"]]
    lines += ["", *_reductions(results, "What the reduced engine did not simulate GPU by GPU:")] \
        if _reductions(results, "") else []
    lines += [f"- {n}" for n in exp.notes]
    return "\n".join(lines) + "\n"


def mfu_rows(exp: Experiment, results: Sequence) -> list[dict[str, Any]]:
    """MFU two ways per scenario, against the datasheet peak of the GEMM precision used:
    model FLOPs (:func:`moesim.workload.layers.model_flops_per_token` x tokens/s per GPU) and
    executed FLOPs (the result's compute FLOPs, recomputation included: ``r.mfu``, over the same
    peak). Scenarios whose GPU has no datasheet entry are left out."""
    from moesim.costs.devices import DEVICES, get_device
    from moesim.experiment.build import resolve_model
    from moesim.topology.loader import load_topology
    from moesim.workload.layers import gemm_precision, model_flops_per_token

    scenarios = {s.name: s for s in exp.scenarios}
    kinds: dict[tuple, str] = {}
    rows = []
    for r in results:
        scn = scenarios.get(r.name)
        if scn is None:
            continue
        key = (str(scn.topology), scn.nodes, scn.gpus_per_node)
        if key not in kinds:
            kinds[key] = load_topology(scn.topology, nodes=scn.nodes, gpus_per_node=scn.gpus_per_node).gpu_kind
        if kinds[key] not in DEVICES:
            continue
        device, spec = get_device(kinds[key]), resolve_model(scn.model)
        dtype = gemm_precision(spec)
        peak = device.peak_flops.get(dtype, device.peak_flops["bf16"])
        mtp = getattr(spec, "num_nextn_predict_layers", 0)
        rows.append({"scenario": r.name, "gpu": device.name, "gemm_dtype": dtype if dtype in device.peak_flops else "bf16",
                     "peak_tflops": peak / 1e12, "mfu_model": model_flops_per_token(spec) * r.tokens_per_s_per_gpu / peak,
                     "mfu_executed": r.mfu,   # the run's MFU is against the same peak
                     "note": f"model FLOPs count {mtp} MTP module(s) a forward-only run does not run"
                     if mtp and scn.mode == "forward" else ""})
    return rows


def profile_lines(results: Sequence) -> list[str]:
    """Which calibration profile priced the scenarios (each distinct one once), and the version."""
    from moesim import __version__

    seen: dict[str, list[str]] = {}
    for r in results:
        p = r.profile
        key = (f"{p['name']} ({p['device']}, measured {p['date'][:10]}, sha256 {p['sha256']}, {p['source']})"
               if p else "none: roofline (datasheet figures)")
        seen.setdefault(key, []).append(r.name)
    lines = [f"Profile: {key}" + ("" if len(seen) == 1 else f" for {', '.join(names)}") for key, names in seen.items()]
    return lines + [f"moesim {__version__}, results schema {RESULTS_SCHEMA_VERSION}."]


def console_report(exp: Experiment, results: Sequence, walls: dict[str, float]) -> list:
    """Rich renderables: the results table, the optimized/baseline ratios and the bottlenecks."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=exp.name)
    for c in COLUMNS[:-1]:
        t.add_column(c, justify="left" if c in ("scenario", "schedule") else "right", overflow="fold")
    t.add_column("wall s", justify="right")
    for r in results:
        t.add_row(*_row(r)[:-1], f"{walls.get(r.name, 0):.1f}")
    ratios = Table(title="optimized / baseline")
    for c in ("baseline", "optimized", "step time", "tokens/s", "bubble"):
        ratios.add_column(c, overflow="fold")
    lessons = []
    for c in comparisons(exp, list(results)):
        ratios.add_row(c["baseline"], c["optimized"], f"{c['step_time_ratio']:.3f}x", f"{c['tokens_per_s_ratio']:.3f}x",
                       f"{100 * c['bubble_delta']:+.1f} pt")
        lessons.append(f"  {c['optimized']} vs {c['baseline']}: {c['lesson']}")
    extra = []
    moe = [r for r in results if r.moe]
    if moe:
        mt = Table(title="expert parallelism (forward passes)")
        for c in MOE_COLUMNS:
            mt.add_column(c, justify="left" if c in ("scenario", "placement") else "right", overflow="fold")
        for r in moe:
            mt.add_row(*_moe_row(r))
        extra.append(mt)
    lines = ["[bold]top bottlenecks[/bold]"]
    for r in results:
        lines.append(f"  [bold]{r.name}[/bold]")
        lines += [f"    {i + 1}. {b}" for i, b in enumerate(r.bottlenecks)]
    lines += _reductions(results, "[bold]what the reduced engine did not simulate GPU by GPU[/bold]")
    mfu = mfu_rows(exp, results)
    if mfu:
        lines += ["[bold]MFU two ways[/bold] (model FLOPs / executed FLOPs incl. recompute, of the GEMM precision's "
                  "datasheet peak)"]
        lines += [f"  {m['scenario']}: {100 * m['mfu_model']:.1f}% / {100 * m['mfu_executed']:.1f}% of "
                  f"{m['gemm_dtype']} {m['peak_tflops']:,.0f} TFLOP/s ({m['gpu']})" for m in mfu]
    from rich.markup import escape

    lines += [f"note: {escape(n)}" for n in exp.notes]
    pairs = [ratios, Text("\n".join(lessons))] if lessons else []   # no comparisons: no empty table
    return [t, *extra, *pairs, "\n".join(lines)]


def _reductions(results: Sequence, title: str) -> list[str]:
    """The reductions of reduced-engine runs (the same for every scenario of an experiment)."""
    found = next((r.moe["reductions"] for r in results if r.moe and r.moe.get("reductions")), None)
    return [title, *[f"  - {x}" for x in found]] if found else []
