"""Run scenarios and experiments; write the run directory.

:func:`run_scenario` builds one scenario (``build.py``), runs the engine and condenses the
Recorder into a :class:`ScenarioResult`. :func:`run_experiment` runs every scenario of an
experiment with a progress bar and writes ``results.json``, ``summary.md``, one Perfetto trace
per scenario (``<name>.trace.json``) and PNG plots (``<name>.timeline.png``,
``<name>.utilization.png``). Output bytes depend only on the inputs and seed: wall-clock
figures go to the console, never into the files. ``results.json`` names the moesim version and
its own format (:data:`RESULTS_SCHEMA_VERSION`); each scenario's result names the calibration
profile that priced it (``profile``: name, device, date, source, short sha256; None for the
roofline).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from moesim.analysis import summarize
from moesim.analysis.utilization import pipeline_bubble
from moesim.analysis.host_issue import host_issue, host_issue_message
from moesim import __version__
from moesim.costs.base import cost_sources, profile_identity
from moesim.costs.devices import gemm_peak_ratio
from moesim.errors import ConfigError
from moesim.experiment.build import Built, build_scenario
from moesim.experiment.experiment import Experiment
from moesim.experiment.report import RESULTS_SCHEMA_VERSION, comparisons, mfu_rows
from moesim.experiment.scenario import Scenario
from moesim.pathnames import check_output_names
from moesim.workload.layers import gemm_precision


@dataclass(frozen=True)
class ScenarioResult:
    """The figures a person compares, plus the full analysis summary."""

    name: str
    description: str
    schedule: str
    plan: dict[str, Any]
    topology: str
    num_gpus: int
    step_time_ms: float
    tokens_per_step: int
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    mfu: float
    bubble_fraction: float
    peak_activation_gib: float
    memory_gib: float
    fits: bool
    bottlenecks: list[str]
    cost_model: str
    calibrated: bool
    network_mode: str
    num_tasks: int
    num_flows: int
    moe: dict[str, Any] = field(default_factory=dict)
    host_issue: dict[str, Any] = field(default_factory=dict)
    cost_sources: dict[str, str] = field(default_factory=dict)
    profile: dict[str, str] | None = None
    analysis: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_scenario(scn: Scenario, force: bool = False, reduced_cache: Any = None, *, trace: bool = False,
                 plots: bool = False, link_series: bool = True) -> tuple[ScenarioResult, Any]:
    """Simulate one scenario; return its result and the Recorder (``force`` runs past the
    size budget; ``trace`` / ``plots``: the caller will export them, so the budget counts them;
    ``link_series=False``: the Recorder keeps each link's utilisation integral, not its samples,
    for a caller that draws no trace from it).
    ``scn.engine == "reduced"`` runs :mod:`moesim.scale` instead of lowering every GPU,
    sharing ``reduced_cache`` (a :class:`~moesim.scale.cache.ReducedCache`) with the other scenarios
    of the experiment."""
    if scn.engine == "reduced":
        return run_reduced_scenario(scn, reduced_cache)
    return run_built(scn, build_at_duty(scn, force=force, trace=trace, plots=plots, link_series=link_series))


def build_at_duty(scn: Scenario, **build: Any) -> Built:
    """:func:`~moesim.experiment.build.build_scenario`; with ``gpu_clock="duty"`` the scenario is
    first built and run at the burst clock (GEMM duty 0), its GEMM duty read from that run (the
    GEMM kernels' share of the makespan, mean over GPUs:
    :func:`moesim.lowering.op_classes.gemm_duty`), and the run built again
    at that duty (:mod:`moesim.costs.clock`). Deterministic: both runs are."""
    built = build_scenario(scn, **build)
    if scn.gpu_clock != "duty":
        return built
    from moesim.lowering.op_classes import gemm_duty

    first = built.sim.run().recorder
    return build_scenario(scn, **build, gemm_duty=gemm_duty(first, built.cost_model))


def run_built(scn: Scenario, built: Built) -> tuple[ScenarioResult, Any]:
    """Run a scenario :func:`~moesim.experiment.build.build_scenario` built (the full engine) and
    condense it: :func:`run_scenario` for a caller that also needs what was built (its cost model)."""
    sim_result = built.sim.run()
    rec = sim_result.recorder
    rec.meta.update({"scenario": scn.name, "cost_model": built.cost_model.name})
    summary = summarize(rec, top=5)
    step_ns = sim_result.makespan_ns
    step_s = step_ns / 1e9
    total_flops = sum(s.args.get("flops", 0.0) for s in rec.spans if s.stream == "compute")
    # MFU against the datasheet peak of the precision the model's GEMMs run in (FP8: the FP8 peak)
    ratio = gemm_peak_ratio(built.topology.gpu_kind, gemm_precision(resolve_spec(scn)))
    peak = built.cost_model.peak_flops * ratio * built.topology.num_gpus * step_s
    issue = host_issue(rec, built.host, mode=scn.host)
    bottlenecks = [b["message"] for b in summary["bottlenecks"][:3]]
    if host_issue_message(issue):
        bottlenecks.append(host_issue_message(issue))
    result = ScenarioResult(
        name=scn.name, description=scn.description, schedule=scn.schedule, plan=asdict(scn.plan),
        topology=built.topology.name, num_gpus=built.topology.num_gpus,
        step_time_ms=round(step_ns / 1e6, 6), tokens_per_step=built.tokens_per_step,
        tokens_per_s=round(built.tokens_per_step / step_s, 3) if step_s else 0.0,
        tokens_per_s_per_gpu=round(built.tokens_per_step / step_s / built.topology.num_gpus, 3) if step_s else 0.0,
        mfu=round(total_flops / peak, 6) if peak else 0.0,
        bubble_fraction=round(pipeline_bubble(rec), 6),
        peak_activation_gib=round(built.peak_activation_bytes / 2**30, 4),
        memory_gib=round(built.budget.total_bytes / 2**30, 4), fits=bool(built.budget.fits),
        bottlenecks=bottlenecks,
        cost_model=built.cost_model.name, calibrated=bool(built.cost_model.calibrated),
        network_mode=sim_result.mode, num_tasks=sim_result.num_tasks, num_flows=sim_result.num_flows,
        moe=moe_summary(built, rec), host_issue=issue, cost_sources=cost_sources(built.cost_model),
        profile=profile_identity(built.cost_model), analysis=summary,
    )
    return result, rec


def run_reduced_scenario(scn: Scenario, cache: Any = None) -> tuple[ScenarioResult, Any]:
    """Simulate with :mod:`moesim.scale` (one lane per pipeline rank; see its ``reductions``);
    ``cache``: a :class:`~moesim.scale.cache.ReducedCache` shared by an experiment's scenarios."""
    from moesim.experiment.build import scenario_budget
    from moesim.scale.reduced import ReducedOptions, simulate_reduced

    r, rec = simulate_reduced(scn, ReducedOptions(), cache)
    budget = scenario_budget(scn, resolve_spec(scn), r["gpu_kind"])
    engine = r["engine"]
    return ScenarioResult(
        name=scn.name, description=scn.description, schedule=scn.schedule, plan=asdict(scn.plan),
        topology=str(scn.topology), num_gpus=r["num_gpus"], step_time_ms=r["step_time_ms"],
        tokens_per_step=r["tokens_per_step"], tokens_per_s=round(r["tokens_per_s_per_gpu"] * r["num_gpus"], 3),
        tokens_per_s_per_gpu=r["tokens_per_s_per_gpu"], mfu=r["mfu"], bubble_fraction=r["bubble_fraction"],
        peak_activation_gib=round(budget.parts.get("activations", 0.0) / 2**30, 4),
        memory_gib=round(budget.total_bytes / 2**30, 4), fits=bool(budget.fits), bottlenecks=r["bottlenecks"],
        cost_model=r["cost_model"], calibrated=r["calibrated"], network_mode="fluid (reduced: moesim.scale)",
        num_tasks=engine["tasks"], num_flows=engine["flows"],
        moe=_reduced_moe(scn, r), host_issue=r["host_issue"], cost_sources=r.get("cost_sources", {}),
        profile=r.get("profile"), analysis=r["analysis"]), rec


def _reduced_moe(scn: Scenario, r: dict[str, Any]) -> dict[str, Any]:
    """The reduced run's MoE figures in the report's terms (forward, whole step, all EP groups)."""
    m, plan = r["moe"], scn.plan
    groups = plan.tp * plan.dp // plan.ep   # EP groups per pipeline rank (strided: one set per TP index)
    per_step = m["a2a_bytes_per_group_microbatch"] * plan.num_microbatches * groups
    return {**m, "placement": scn.moe.placement, "num_redundant": scn.moe.num_redundant,
            "routing": repr(scn.moe.routing) if scn.moe.routing else "balanced",
            "gpu_max_over_mean": m["busiest_over_mean_expert_time"].get("mean", 1.0),
            "expert_max_over_mean": m["busiest_over_mean_expert_tokens"].get("mean", 1.0),
            "a2a_bytes": per_step, "cross_node_bytes": per_step * m["cross_node_fraction"],
            "dropped_tokens": 0, "layer_time_ms": {}, "reductions": r["reductions"], "dp": r["dp"],
            "critical_path_ms": r["critical_path_ms"]}


def resolve_spec(scn: Scenario):
    from moesim.experiment.build import resolve_model

    return resolve_model(scn.model)


def moe_layer_times_ms(rec) -> dict[str, float]:
    """Forward MoE block time per layer: from the first dispatch of a (layer, microbatch) on any
    GPU to the last combine, averaged over microbatches (ms)."""
    first: dict[tuple[str, str], int] = {}
    last: dict[tuple[str, str], int] = {}
    for s in rec.spans:
        kind, _, rest = s.name.partition(".")
        if kind not in ("dispatch", "combine") or not rest.startswith("L") or ".F" not in rest:
            continue
        layer, _, action = rest.partition(".")
        key = (layer, action)
        if kind == "dispatch":
            first[key] = min(first.get(key, s.start_ns), s.start_ns)
        else:
            last[key] = max(last.get(key, s.end_ns), s.end_ns)
    per: dict[str, list[int]] = {}
    for key, start in first.items():
        if key in last:
            per.setdefault(key[0], []).append(last[key] - start)
    return {layer: round(sum(v) / len(v) / 1e6, 4) for layer, v in sorted(per.items(), key=lambda kv: int(kv[0][1:]))}


def moe_summary(built, rec) -> dict[str, Any]:
    """Expert-parallel figures of the forward passes: load per GPU and per expert, imbalance,
    bytes crossing nodes, dropped tokens, MoE layer time (empty for dense models)."""
    ex = built.exchange
    if ex is None:
        return {}
    st = ex.stats
    gpu = st.gpu_tokens
    loads = list(gpu.values())
    mean = sum(loads) / len(loads) if loads else 0.0
    experts: dict[int, int] = {}
    for per in st.expert_tokens.values():
        for e, n in per.items():
            experts[e] = experts.get(e, 0) + n
    emean = sum(experts.values()) / len(experts) if experts else 0.0
    return {
        "placement": built.scenario.moe.placement, "num_redundant": built.scenario.moe.num_redundant,
        "routing": repr(built.scenario.moe.routing) if built.scenario.moe.routing else "balanced",
        "gpu_tokens": {str(k): v for k, v in sorted(gpu.items())},
        "gpu_max_over_mean": round(max(loads) / mean, 4) if mean else 0.0,
        "expert_tokens": {str(k): v for k, v in sorted(experts.items())},
        "expert_max_over_mean": round(max(experts.values()) / emean, 4) if emean else 0.0,
        "a2a_bytes": st.total_bytes, "cross_node_bytes": st.cross_node_bytes,
        "cross_node_fraction": round(st.cross_node_bytes / st.total_bytes, 4) if st.total_bytes else 0.0,
        "dropped_tokens": st.dropped_tokens,
        "layer_time_ms": moe_layer_times_ms(rec),
    }


def run_experiment(exp: Experiment, out_dir: str | Path, overrides: Mapping[str, Any] | None = None,
                   on_progress: Callable[[str], None] | None = None,
                   force: bool = False, on_start: Callable[[str], None] | None = None,
                   trace: bool = True, plots: bool = True,
                   ) -> tuple[list[ScenarioResult], dict[str, float]]:
    """Run every scenario; write the run directory; return results and wall seconds per scenario.
    ``on_start(name)`` is called as a scenario starts, ``on_progress(name)`` as it ends.
    ``trace=False`` / ``plots=False`` skip the Perfetto traces / PNG plots (``moesim run
    --no-trace`` / ``--no-plots``); results.json and summary.md are written either way. Reduced-engine
    scenarios share one :class:`~moesim.scale.cache.ReducedCache` (routing, phase solves, expert costs)."""
    from moesim.scale.cache import ReducedCache

    out = prepare_out_dir(out_dir)
    results: list[ScenarioResult] = []
    walls: dict[str, float] = {}
    cache = ReducedCache()
    scenarios = [scn.with_overrides(overrides or {}) for scn in exp.scenarios]
    check_output_names(s.name for s in scenarios)  # before any runs: names become file names in out
    for scn in scenarios:
        if on_start:
            on_start(scn.name)
        t0 = time.perf_counter()
        res, rec = run_scenario(scn, force=force, reduced_cache=cache, trace=trace, plots=plots, link_series=trace)
        walls[scn.name] = time.perf_counter() - t0
        write_outputs(out, scn.name, res, rec, trace=trace, plots=plots)
        results.append(res)
        if on_progress:
            on_progress(scn.name)
    payload = {"moesim_version": __version__, "schema_version": RESULTS_SCHEMA_VERSION,
               "experiment": exp.name, "description": exp.description, "overrides": dict(overrides or {}),
               "scenarios": [r.to_dict() for r in results], "comparisons": comparisons(exp, results),
               "mfu": mfu_rows(exp, results)}
    (out / "results.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    from moesim.experiment.report import summary_markdown
    (out / "summary.md").write_text(summary_markdown(exp, results))
    return results, walls


def write_outputs(out: Path, name: str, res: ScenarioResult, rec: Any, *, trace: bool = True,
                  plots: bool = True) -> list[Path]:
    """One scenario's trace (``<name>.trace.json``) and plots (timeline, utilization, and for MoE
    the expert and GPU load); return the paths written."""
    written: list[Path] = []
    if trace:
        from moesim.trace import write_chrome_trace

        write_chrome_trace(rec, out / f"{name}.trace.json")
        written.append(out / f"{name}.trace.json")
    if not plots:
        return written
    from moesim.plots import plot_expert_load, plot_timeline, plot_utilization

    plot_timeline(rec, out / f"{name}.timeline.png")
    plot_utilization(rec, out / f"{name}.utilization.png")
    written += [out / f"{name}.timeline.png", out / f"{name}.utilization.png"]
    if res.moe.get("expert_tokens"):
        experts = {int(e): n for e, n in res.moe["expert_tokens"].items()}
        gpus = {int(g): n for g, n in res.moe["gpu_tokens"].items()}
        plot_expert_load(experts, out / f"{name}.expert_load.png", title="tokens per expert (forward)")
        plot_expert_load(gpus, out / f"{name}.gpu_load.png", title="expert tokens computed per GPU (forward)")
        written += [out / f"{name}.expert_load.png", out / f"{name}.gpu_load.png"]
    return written


def prepare_out_dir(out_dir: str | Path, field_name: str = "--out") -> Path:
    """Create ``out_dir`` (and parents) and check a file can be written there, before anything
    runs; ConfigError naming ``field_name`` otherwise (a path under a file, no permission...)."""
    out = Path(out_dir)
    probe = out / ".moesim_write_check"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(field_name, f"cannot write to {str(out)!r} ({err.strerror or err})",
                          "give a directory you can write to") from None
    return out
