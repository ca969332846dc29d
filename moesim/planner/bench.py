"""Named baseline/optimized pairs: ``moesim bench list`` and ``moesim bench run``.

The lab's harness targets, re-expressed on the simulator. Each entry of :data:`BENCHES` builds
two sides from the presets, measures them (memory budget, coarse estimate or simulation, as the
question needs) and returns a :class:`BenchResult` with optimized / baseline ratios:

* ``memory_budget``: no recomputation and a replicated optimizer vs selective recomputation +
  ZeRO-1, the lab's 175B MoE on 16 DGX A100 (memory per GPU, fit);
* ``moe_grouping``: contiguous expert ids vs load-balanced placement (EPLB + one replica per
  GPU) under Zipf routing, Qwen3-30B-A3B on one DGX H200 (simulated);
* ``network_affinity``: the EP group across two DGX H100 vs inside one (rank order), Mixtral
  8x7B, fluid network (simulated, plus the affinity report's link-time bounds);
* ``parallelism_breakdown``: a naive plan (pipeline only) vs the planner's choice on the Qwen3
  preset (simulated);
* ``pipeline_schedule``: 1F1B vs ZB-H1 on four pipeline stages of Mixtral (simulated);
* ``preset:<name>``: each preset's own layout vs the planner's choice (simulated where the
  engine-task limit allows, else the coarse estimate, and the result says which).

Shapes are cut (fewer layers or microbatches) where the lesson survives it, so the whole suite
runs in minutes; every side lists what it ran.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from moesim.errors import ConfigError, unknown_name
from moesim.experiment.build import scenario_budget
from moesim.experiment.runner import run_scenario
from moesim.experiment.scenario import ParallelPlan
from moesim.memory import MemoryConfig
from moesim.planner import shapes
from moesim.planner.affinity import network_affinity
from moesim.planner.candidates import Candidate
from moesim.planner.context import PlanContext
from moesim.planner.estimate import estimate
from moesim.planner.presets import PRESETS, ScenarioPreset, get_preset

FORMATS = ("json", "markdown")


@dataclass(frozen=True)
class Side:
    """One side of a pair: what ran and its metrics."""

    label: str
    metrics: dict[str, float]
    source: str


@dataclass(frozen=True)
class BenchResult:
    """A pair's two sides and optimized / baseline ratios of their shared metrics."""

    target: str
    lesson: str
    baseline: Side
    optimized: Side
    notes: tuple[str, ...] = ()
    wall_s: float = 0.0

    @property
    def ratios(self) -> dict[str, float]:
        b, o = self.baseline.metrics, self.optimized.metrics
        return {k: o[k] / b[k] for k in b if k in o and b[k]}

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "lesson": self.lesson, "baseline": dataclasses.asdict(self.baseline),
                "optimized": dataclasses.asdict(self.optimized), "ratios": self.ratios, "notes": list(self.notes)}


@dataclass(frozen=True)
class Bench:
    """A named pair: what it compares and how to run it (``network`` picks the engine mode)."""

    description: str
    run: Callable[[str], BenchResult]


# -- measuring a side ---------------------------------------------------------------------------
def simulated_side(preset: ScenarioPreset, cand: Candidate, network: str, layers: int | None = None,
                   memory: MemoryConfig | None = None) -> Side:
    """Simulate ``cand`` on the preset (optionally with ``layers`` layers) and keep its figures."""
    spec = shapes.with_layers(preset.spec, layers) if layers else preset.spec
    scn = preset.scenario(plan=cand.plan, schedule=cand.schedule, placement=cand.placement,
                          num_redundant=cand.num_redundant, network=network, spec=spec, memory=memory)
    res, _ = run_scenario(scn, link_series=False)
    full = scenario_budget(dataclasses.replace(scn, model=preset.spec), preset.spec, preset.topo.gpu_kind)
    metrics = {"step_time_ms": res.step_time_ms, "tokens_per_s": res.tokens_per_s, "mfu": res.mfu,
               "bubble_fraction": res.bubble_fraction, "memory_gib": full.total_bytes / 2**30}
    if res.moe:
        metrics.update(gpu_max_over_mean=res.moe["gpu_max_over_mean"], cross_node_fraction=res.moe["cross_node_fraction"])
    what = f"simulated ({network}, {res.cost_model})" + (
        f", {layers} of {preset.spec.num_layers} layers (memory of the full model)" if layers else "")
    return Side(cand.label, metrics, what)


def estimated_side(ctx: PlanContext, cand: Candidate) -> Side:
    """The coarse estimate and memory budget of ``cand`` (for layouts too big to simulate)."""
    e = estimate(ctx, cand)
    b = ctx.budget(cand)
    return Side(cand.label, {"step_time_ms": e.step_ms, "tokens_per_s": e.tokens_per_s, "memory_gib": b.total_bytes / 2**30,
                             "bubble_fraction": e.bubble_fraction}, "coarse estimate")


def _cand(preset: ScenarioPreset, **plan: Any) -> Candidate:
    schedule = plan.pop("schedule", "1f1b")
    placement = plan.pop("placement", "contiguous")
    redundant = plan.pop("num_redundant", 0)
    return Candidate(ParallelPlan(**plan), schedule, placement, redundant)


def _timed(fn: Callable[[str], BenchResult]) -> Callable[[str], BenchResult]:
    def run(network: str) -> BenchResult:
        t0 = time.perf_counter()
        result = fn(network)
        return dataclasses.replace(result, wall_s=time.perf_counter() - t0)
    return run


# -- the pairs ----------------------------------------------------------------------------------
def memory_budget_pair(network: str) -> BenchResult:
    """The lab's 175B MoE layout with every activation kept and gradients and Adam state replicated,
    vs Megatron's selective recompute of the modules that hold most activations (``moe_act``,
    ``layernorm``, ``mlp``) and gradients and optimizer state sharded over DP (ZeRO-2)."""
    preset = get_preset("moe-175b-dgx-a100")
    ctx = PlanContext(preset)
    cand = Candidate(preset.plan, preset.schedule)

    def side(memory: MemoryConfig, name: str) -> Side:
        budget = ctx.budget_with(cand, memory)
        parts = {f"{k}_gib": v / 2**30 for k, v in budget.parts.items()
                 if k in ("activations", "gradients", "optimizer_states")}
        return Side(f"{cand.label}, {name}", {"memory_gib": budget.total_bytes / 2**30,
                                              "margin_gib": budget.margin_bytes / 2**30, **parts}, "memory budget")

    base = side(MemoryConfig(recompute="none", zero_stage=0), "no recompute, ZeRO-0")
    opt = side(MemoryConfig(recompute="selective", recompute_modules=("moe_act", "layernorm", "mlp"), zero_stage=2),
               "recompute moe_act+layernorm+mlp, ZeRO-2")
    return BenchResult("memory_budget", "sharding gradients and Adam state over DP and recomputing the MoE "
                       "activation, norms and dense MLP (Megatron's --recompute-modules) make an MoE layout fit; "
                       "attention-only recompute frees nothing where FlashAttention keeps no score matrix "
                       "(recompute time is not simulated)", base, opt)


def moe_grouping_pair(network: str) -> BenchResult:
    """Contiguous vs load-balanced experts under Zipf(0.45) routing, Qwen3-30B-A3B, 8 H200 (EP8), 8 layers."""
    preset = get_preset("qwen3-30b-a3b-dgx-h200")
    plan = dict(tp=1, dp=8, pp=1, ep=8, num_microbatches=2)
    base = simulated_side(preset, _cand(preset, **plan), network, layers=8)
    opt = simulated_side(preset, _cand(preset, **plan, placement="load_balanced", num_redundant=8), network, layers=8)
    return BenchResult("moe_grouping", "EPLB with one replica slot per GPU removes the GPU that drew the hot "
                       "experts; every other GPU stops waiting for it at the combine", base, opt)


def network_affinity_pair(network: str) -> BenchResult:
    """EP8 spread over two DGX H100 vs kept inside one (rank order), Mixtral 8x7B, PP2, 4 layers, fluid."""
    preset = get_preset("mixtral-8x7b-dgx-h100")
    plan = dict(tp=1, dp=8, pp=2, ep=8, num_microbatches=4)
    across = _cand(preset, **plan, order="tp-pp-dp")
    inside = _cand(preset, **plan, order="tp-dp-pp")
    base = simulated_side(preset, across, "fluid", layers=4)
    opt = simulated_side(preset, inside, "fluid", layers=4)
    report = network_affinity(preset, inside)
    bounds = {r.order: r.a2a_bound_ms for r in report.results if r.placement == "contiguous"}
    base.metrics["a2a_bound_ms"], opt.metrics["a2a_bound_ms"] = bounds["tp-pp-dp"], bounds["tp-dp-pp"]
    return BenchResult("network_affinity", "an EP group inside one NVSwitch domain moves its all-to-alls off the "
                       "50 GB/s NICs", base, opt, notes=(report.advice,))


def parallelism_breakdown_pair(network: str) -> BenchResult:
    """A naive pipeline-only layout (PP8, no EP) vs the planner's choice, Qwen3-30B-A3B on one DGX H200."""
    from moesim.planner.plan import plan_scenario

    preset = get_preset("qwen3-30b-a3b-dgx-h200")
    naive = _cand(preset, tp=1, dp=1, pp=8, ep=1, num_microbatches=32)
    report = plan_scenario(preset, top=0, max_candidates=1, network=network)
    base = simulated_side(preset, naive, network)
    opt = simulated_side(preset, report.chosen.cand, network)
    return BenchResult("parallelism_breakdown", "expert parallelism inside the NVSwitch domain beats a deep "
                       "pipeline that replicates every expert on every stage", base, opt)


def pipeline_schedule_pair(network: str) -> BenchResult:
    """1F1B vs ZB-H1 on four pipeline stages, Mixtral 8x7B on 2 DGX H100 (TP2 PP4 DP2 EP2), 8 layers."""
    preset = get_preset("mixtral-8x7b-dgx-h100")
    plan = dict(tp=2, dp=2, pp=4, ep=2, num_microbatches=8)
    base = simulated_side(preset, _cand(preset, **plan, schedule="1f1b"), network, layers=8)
    opt = simulated_side(preset, _cand(preset, **plan, schedule="zb-h1"), network, layers=8)
    return BenchResult("pipeline_schedule", "splitting the backward into B and W fills the 1F1B cool-down bubble "
                       "with weight-gradient work", base, opt)


def preset_pair(name: str) -> Callable[[str], BenchResult]:
    """The preset's own layout vs the planner's choice."""
    def run(network: str) -> BenchResult:
        from moesim.planner.plan import plan_scenario
        from moesim.planner.simulate import simulate

        preset = get_preset(name)
        report = plan_scenario(preset, top=0, max_candidates=1, network=network)
        ctx = PlanContext(preset)
        default = Candidate(preset.plan, preset.schedule, preset.placement, preset.num_redundant)
        base_sim, opt_sim = simulate(ctx, default, network), report.chosen.simulated
        if base_sim and opt_sim:
            base, opt = (Side(s.cand.label, {"step_time_ms": s.step_ms, "tokens_per_s": s.tokens_per_s, "mfu": s.mfu,
                                             "memory_gib": ctx.budget(s.cand).total_bytes / 2**30},
                              f"simulated ({network})" + (f", scaled from {s.reduced}" if s.reduced else ""))
                         for s in (base_sim, opt_sim))
        else:
            base, opt = estimated_side(ctx, default), estimated_side(ctx, report.chosen.cand)
        fits = ctx.budget(default).fits
        note = () if fits else (f"the preset's own layout does not fit: {ctx.budget(default).verdict()}",)
        return BenchResult(f"preset:{name}", "the planner's layout vs the preset's starting point", base, opt, note)
    return run


BENCHES: dict[str, Bench] = {
    "memory_budget": Bench("no recompute + replicated Adam vs selective recompute + ZeRO-1 (175B MoE, 128 A100)",
                           _timed(memory_budget_pair)),
    "moe_grouping": Bench("contiguous vs load_balanced experts under Zipf routing (Qwen3-30B-A3B, 8 H200)",
                          _timed(moe_grouping_pair)),
    "network_affinity": Bench("EP across two nodes vs inside one (Mixtral 8x7B, 16 H100, fluid network)",
                              _timed(network_affinity_pair)),
    "parallelism_breakdown": Bench("naive PP8 layout vs the planner's choice (Qwen3-30B-A3B, 8 H200)",
                                   _timed(parallelism_breakdown_pair)),
    "pipeline_schedule": Bench("1F1B vs ZB-H1 on 4 stages (Mixtral 8x7B, 16 H100)", _timed(pipeline_schedule_pair)),
    **{f"preset:{n}": Bench(f"preset {n}: its own layout vs the planner's choice", _timed(preset_pair(n)))
       for n in PRESETS},
}


def resolve_targets(targets: str | None) -> list[str]:
    """Comma-separated target names (None or "all": every target); unknown names list the valid ones."""
    if targets is None or targets.strip() in ("", "all"):
        return list(BENCHES)
    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names:
        raise ConfigError("--targets", f"{targets!r} names no target", "give target names (moesim bench list) or all")
    for n in names:
        if n not in BENCHES:
            raise unknown_name("--targets", n, list(BENCHES))
    return list(dict.fromkeys(names))   # a target named twice runs once


def run_benches(names: list[str], out_dir: str | Path, network: str = "analytical",
                on_done: Callable[[BenchResult], None] | None = None) -> list[BenchResult]:
    """Run the named pairs; write ``<target>.json`` / ``<target>.md`` per pair plus ``results.json``
    and ``summary.md`` to ``out_dir``."""
    if network not in ("analytical", "fluid"):
        raise ConfigError("--network", f"unknown mode {network!r}", "use analytical or fluid")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        result = BENCHES[name].run(network)
        stem = name.replace(":", "_")
        (out / f"{stem}.json").write_text(json.dumps(result.to_dict(), indent=1, sort_keys=True) + "\n")
        (out / f"{stem}.md").write_text(markdown([result]))
        results.append(result)
        if on_done:
            on_done(result)
    (out / "results.json").write_text(json.dumps([r.to_dict() for r in results], indent=1, sort_keys=True) + "\n")
    (out / "summary.md").write_text(markdown(results))
    return results


def markdown(results: list[BenchResult]) -> str:
    """One table per pair: each metric's baseline, optimized and ratio; then the lesson."""
    lines = ["# moesim bench", ""]
    for r in results:
        lines += [f"## {r.target}", "", f"- baseline: `{r.baseline.label}` ({r.baseline.source})",
                  f"- optimized: `{r.optimized.label}` ({r.optimized.source})", "",
                  "| metric | baseline | optimized | optimized / baseline |", "|---|---|---|---|"]
        ratios = r.ratios
        for k, b in r.baseline.metrics.items():
            o = r.optimized.metrics.get(k)
            ratio = f"{ratios[k]:.3f}" if k in ratios else "-"
            lines.append(f"| {k} | {_num(b)} | {_num(o)} | {ratio} |")
        lines += ["", f"Lesson: {r.lesson}."] + [f"Note: {n}" for n in r.notes] + [""]
    return "\n".join(lines)


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.4f}" if abs(x) < 10 else f"{x:,.1f}"
