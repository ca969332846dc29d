"""``moesim plan``: search the layouts of a preset and print an actionable plan.

:func:`plan_scenario` runs the search in four tiers, cheapest first:

1. enumerate every valid (dp, tp, pp, ep, vpp, micro-batch size, schedule, rank order,
   placement) for the preset's world size and global batch (:mod:`moesim.planner.candidates`);
2. take each *shape* (all but rank order and placement) in its base form, drop it when its
   weights, gradients and optimizer states alone exceed HBM (a lower bound), else estimate it
   coarsely (:mod:`moesim.planner.estimate`; closed-form bubbles for deep pipelines);
3. walk the shapes fastest first through the full memory budget until ``keep_shapes`` fit, then
   estimate every variant of those with the schedule's dry run and budget them;
4. simulate ``max_candidates`` that fit (the estimate's best of each parallel mesh first,
   :func:`_shortlist`) with :func:`~moesim.experiment.runner.run_scenario`
   (reduced proxies when a full simulation exceeds the engine-task limit; see
   :mod:`moesim.planner.simulate`) and choose the fastest simulated one.

The :class:`PlanReport` says what was chosen and why the others lost (slower by X%, or over
memory by Y GiB), with the chosen layout's breakdown (experts per GPU, memory per GPU,
bandwidth needed per link kind, bottlenecks). No layout fitting raises ConfigError saying by
how much the closest one is over.

``plan_scenario(..., progress=fn)`` calls ``fn`` with a :class:`SearchStep` (what it is doing,
steps done of total) as it screens each layout shape and before and after each simulation, so a
command line can show the search's progress (``moesim plan`` draws a bar on stderr).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from moesim.errors import ConfigError
from moesim.memory.budget import GIB
from moesim.planner.breakdown import Breakdown, parallelism_breakdown
from moesim.planner.candidates import Candidate, Rejection, enumerate_candidates
from moesim.planner.context import PlanContext
from moesim.planner.estimate import Estimate, estimate
from moesim.planner.presets import ScenarioPreset, get_preset
from moesim.planner.simulate import DEFAULT_MAX_TASKS, Simulated, simulate

NETWORK_MODES = ("analytical", "fluid")


@dataclass(frozen=True)
class SearchStep:
    """Where the search is: ``description`` (e.g. ``"simulating TP2 PP4 DP2 EP4 mbs1 1f1b"``),
    ``done`` of ``total`` steps of its current stage (screening shapes, then simulations)."""

    description: str
    done: int
    total: int


ProgressFn = Callable[[SearchStep], None]


def _no_progress(step: SearchStep) -> None:
    """The default progress callback: show nothing."""


@dataclass
class Evaluated:
    """One candidate as far as the search took it."""

    cand: Candidate
    estimate: Estimate | None = None
    lower_bound_bytes: float = 0.0
    memory_bytes: float | None = None
    hbm_bytes: float = 0.0
    simulated: Simulated | None = None

    @property
    def fits(self) -> bool:
        return self.memory_bytes is not None and self.memory_bytes <= self.hbm_bytes

    @property
    def over_gib(self) -> float:
        """GiB over HBM (the full budget when computed, else the lower bound)."""
        used = self.memory_bytes if self.memory_bytes is not None else self.lower_bound_bytes
        return (used - self.hbm_bytes) / GIB

    @property
    def step_ms(self) -> float:
        """Simulated step time when simulated, else estimated."""
        if self.simulated:
            return self.simulated.step_ms
        return self.estimate.step_ms if self.estimate else float("inf")


@dataclass(frozen=True)
class Loser:
    """A runner-up and why it lost."""

    label: str
    step_ms: float
    source: str
    reason: str


@dataclass
class PlanReport:
    """What :func:`plan_scenario` found."""

    preset: ScenarioPreset
    chosen: Evaluated
    breakdown: Breakdown
    runners_up: list[Loser]
    over_memory: list[Loser]
    default: Evaluated | None
    counts: dict[str, int]
    rejected: dict[str, int]
    network: str
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        c = self.chosen
        return {
            "scenario": self.preset.name, "description": self.preset.description, "network": self.network,
            "chosen": {"label": c.cand.label, "schedule": c.cand.schedule, "placement": c.cand.placement,
                       "num_redundant": c.cand.num_redundant, "step_ms": c.step_ms,
                       "source": "simulated" if c.simulated else "estimate"},
            "breakdown": self.breakdown.to_dict(),
            "runners_up": [vars(x) for x in self.runners_up], "over_memory": [vars(x) for x in self.over_memory],
            "default": None if self.default is None else {
                "label": self.default.cand.label, "step_ms": self.default.step_ms, "fits": self.default.fits,
                "over_gib": self.default.over_gib},
            "counts": self.counts, "rejected": self.rejected, "notes": self.notes}


def plan_scenario(preset: ScenarioPreset | str, top: int = 3, max_candidates: int = 3, network: str = "analytical",
                  max_tasks: int = DEFAULT_MAX_TASKS, keep_shapes: int = 16,
                  progress: ProgressFn = _no_progress) -> PlanReport:
    """Search the preset's layouts; simulate the best ``max_candidates``; report (see module doc).
    ``progress`` is told each step of the search (:class:`SearchStep`)."""
    t0 = time.perf_counter()
    preset = get_preset(preset) if isinstance(preset, str) else preset
    _check_args(top, max_candidates, network, max_tasks)
    ctx = PlanContext(preset)
    cands, rejected = enumerate_candidates(preset)
    if not cands:
        raise _nothing_valid(preset, rejected)
    found = _search(ctx, cands, rejected, keep_shapes, need=max(max_candidates, top + 1), progress=progress)
    pool, walked, fitting = found.pool, found.walked, found.fitting
    if not fitting:
        raise _nothing_fits(ctx, pool)
    shortlist = _shortlist(fitting, max_candidates)
    notes = _simulate_best(ctx, shortlist, network, max_tasks, progress)
    chosen = min(shortlist, key=lambda e: (e.simulated is None, e.step_ms))
    if chosen.simulated is None:
        notes.append(f"no candidate simulated: every proxy exceeds {max_tasks:,} engine tasks (raise --max-tasks); "
                     "the choice rests on the coarse estimate")
    breakdown = parallelism_breakdown(preset, chosen.cand, ctx=ctx, simulate_it=False, simulated=chosen.simulated)
    report = PlanReport(
        preset=preset, chosen=chosen, breakdown=breakdown, runners_up=_runners_up(chosen, fitting, top),
        over_memory=_memory_losers(chosen, walked, top), default=_default(ctx, pool),
        counts={"enumerated": len(cands) + len(rejected), "valid": len(cands),
                "estimated": sum(e.estimate is not None for e in pool),
                "memory_checked": sum(e.memory_bytes is not None for e in pool), "fitting_found": len(fitting),
                "simulated": sum(e.simulated is not None for e in fitting)},
        rejected=dict(Counter(r.field for r in rejected)), network=network, notes=notes + breakdown.notes)
    report.wall_s = time.perf_counter() - t0
    return report


def _mesh(ev: Evaluated) -> tuple:
    p = ev.cand.plan
    return (p.tp, p.pp, p.ep, p.ep_layout)


def _shortlist(fitting: list[Evaluated], n: int) -> list[Evaluated]:
    """The ``n`` fitting candidates to simulate, in estimate order: the estimate's best of each
    parallel mesh (tp, pp, ep, EP layout) first, then the next best overall. The estimate ranks
    variants of one mesh (schedule, placement, micro-batch) on shared terms, but distinct meshes
    on its coarsest ones (communication volumes, bubble formulas), where a layout within its error
    of the best is otherwise never simulated."""
    best: dict[tuple, Evaluated] = {}
    for ev in fitting:   # fitting is in estimate order: the first of a mesh is its best
        best.setdefault(_mesh(ev), ev)
    taken = {id(ev) for ev in list(best.values())[:n]}
    taken |= {id(ev) for ev in [ev for ev in fitting if id(ev) not in taken][: n - len(taken)]}
    return [ev for ev in fitting if id(ev) in taken]


def _simulate_best(ctx: PlanContext, best: list[Evaluated], network: str, max_tasks: int,
                   progress: ProgressFn = _no_progress) -> list[str]:
    """Simulate each of ``best`` (a proxy when too big); a simulation the engine refuses is noted
    and its candidate keeps its estimate."""
    notes = []
    for i, ev in enumerate(best):
        progress(SearchStep(f"simulating {ev.cand.label}", i, len(best)))
        try:
            ev.simulated = simulate(ctx, ev.cand, network, max_tasks)
        except ConfigError as err:
            notes.append(f"could not simulate {ev.cand.label}: {err}")
    progress(SearchStep(f"simulated {len(best)} layout(s)", len(best), len(best)))
    return notes


def _check_args(top: int, max_candidates: int, network: str, max_tasks: int) -> None:
    if top < 0:
        raise ConfigError("--top", f"must be >= 0, got {top}")
    if max_candidates < 1:
        raise ConfigError("--max-candidates", f"must be >= 1, got {max_candidates}")
    if network not in NETWORK_MODES:
        raise ConfigError("--network", f"unknown mode {network!r}", f"use one of: {', '.join(NETWORK_MODES)}")
    if max_tasks < 1:
        raise ConfigError("--max-tasks", f"must be >= 1, got {max_tasks}")


def _base_key(c: Candidate) -> tuple:
    p = c.plan
    return (p.tp, p.dp, p.pp, p.vpp, p.ep, p.micro_batch_size, c.schedule)


def _try_estimate(ctx: PlanContext, ev: Evaluated, rejected: list[Rejection], exact: bool) -> bool:
    try:
        ev.estimate = estimate(ctx, ev.cand, exact=exact)
    except ConfigError as err:
        rejected.append(Rejection(ev.cand.label, err.field, err.problem))
        return False
    return True


@dataclass
class _Search:
    """The search's working sets (see the module docstring for the tiers)."""

    pool: list[Evaluated]
    walked: list[Evaluated]
    fitting: list[Evaluated]


def _search(ctx: PlanContext, cands: list[Candidate], rejected: list[Rejection], keep_shapes: int,
            need: int, progress: ProgressFn = _no_progress) -> _Search:
    """Screen every shape in its base form (lower-bound memory, quick estimate), walk them fastest
    first through the full memory budget until ``keep_shapes`` fit, then estimate every variant
    of those exactly and keep the ones that fit, fastest first."""
    hbm = ctx.hbm_bytes
    groups: dict[tuple, list[Candidate]] = {}
    for c in cands:
        groups.setdefault(_base_key(c), []).append(c)
    pool: list[Evaluated] = []
    for i, members in enumerate(groups.values()):
        progress(SearchStep(f"estimating {members[0].label}", i, len(groups)))
        ev = Evaluated(members[0], lower_bound_bytes=ctx.static_lower_bound(members[0]), hbm_bytes=hbm)
        pool.append(ev)
        if ev.lower_bound_bytes <= hbm:
            _try_estimate(ctx, ev, rejected, exact=False)
    walked: list[Evaluated] = []
    kept: list[Evaluated] = []
    for ev in sorted((e for e in pool if e.estimate is not None), key=lambda e: e.estimate.step_ms):
        ev.memory_bytes = ctx.budget(ev.cand).total_bytes
        walked.append(ev)
        if ev.fits:
            kept.append(ev)
            if len(kept) >= max(keep_shapes, need):
                break
    fitting: list[Evaluated] = []
    for base in kept:
        for c in groups[_base_key(base.cand)]:
            ev = base if c == base.cand else Evaluated(c, lower_bound_bytes=ctx.static_lower_bound(c), hbm_bytes=hbm)
            if not _try_estimate(ctx, ev, rejected, exact=True):
                continue
            ev.memory_bytes = ctx.budget(c).total_bytes
            (fitting if ev.fits else walked).append(ev)
            if ev is not base:
                pool.append(ev)
    fitting.sort(key=lambda e: e.estimate.step_ms)
    return _Search(pool, walked, fitting)


def _runners_up(chosen: Evaluated, fitting: list[Evaluated], top: int) -> list[Loser]:
    others = sorted((e for e in fitting if e is not chosen), key=lambda e: (e.simulated is None, e.step_ms))
    out = []
    for e in others[:top]:
        source = "simulated" if e.simulated and chosen.simulated else "estimate"
        mine = e.step_ms if source == "simulated" else e.estimate.step_ms
        theirs = chosen.step_ms if source == "simulated" else chosen.estimate.step_ms
        reason = f"{100 * (mine / theirs - 1):.1f}% slower ({source}" + \
            (f"; the chosen layout's estimate is {theirs:,.1f} ms)" if source == "estimate" else ")")
        if source == "simulated" and mine < theirs:
            reason = f"{100 * (1 - mine / theirs):.1f}% faster but not simulated at full size"
        elif mine < theirs:   # a mesh's second best, not simulated, can beat the winner's estimate
            reason = (f"{100 * (1 - mine / theirs):.1f}% faster by the estimate, not simulated (the simulated "
                      "shortlist takes each mesh's best first; --max-candidates simulates more)")
        out.append(Loser(e.cand.label, mine, source, reason))
    return out


def _memory_losers(chosen: Evaluated, walked: list[Evaluated], top: int) -> list[Loser]:
    faster = sorted((e for e in walked if not e.fits and e.estimate.step_ms < chosen.estimate.step_ms),
                    key=lambda e: e.estimate.step_ms)
    return [Loser(e.cand.label, e.estimate.step_ms, "estimate",
                  f"{100 * (1 - e.estimate.step_ms / chosen.estimate.step_ms):.1f}% faster (estimate) but over "
                  f"memory by {e.over_gib:.1f} GiB") for e in faster[:top]]


def _default(ctx: PlanContext, pool: list[Evaluated]) -> Evaluated | None:
    """The preset's own layout, evaluated like the candidates (None if its schedule rejects it)."""
    p = ctx.preset
    if p.plan.world_size != ctx.topo.num_gpus or p.plan.dp * p.plan.micro_batch_size * p.plan.num_microbatches != p.global_batch:
        return None  # --nodes or --global-batch changed the world the preset's layout was written for
    cand = Candidate(p.plan, p.schedule, p.placement, p.num_redundant)
    found = next((e for e in pool if e.cand == cand and e.estimate is not None), None)
    try:
        ev = found or Evaluated(cand, lower_bound_bytes=ctx.static_lower_bound(cand), hbm_bytes=ctx.hbm_bytes)
        ev.estimate = ev.estimate or estimate(ctx, cand)
    except ConfigError:
        return None   # the layout does not suit the model (--model with experts its EP does not divide)
    if ev.memory_bytes is None:
        ev.memory_bytes = ctx.budget(cand).total_bytes
    return ev


def _nothing_valid(preset: ScenarioPreset, rejected: list[Rejection]) -> ConfigError:
    fields = Counter(r.field for r in rejected).most_common(3)
    example = rejected[0].reason if rejected else "no layout enumerated"
    return ConfigError("scenario", f"no valid layout of {preset.num_gpus} GPUs for global batch {preset.global_batch}: "
                       f"rejected by {', '.join(f'{f} ({n})' for f, n in fields)}; e.g. {example}",
                       "change --nodes or --global-batch", source=preset.name)


def _nothing_fits(ctx: PlanContext, pool: list[Evaluated]) -> ConfigError:
    """The error when no layout fits: the closest one and by how much it is over."""
    best = sorted(pool, key=lambda e: e.lower_bound_bytes)[:8]
    for ev in best:
        ev.memory_bytes = ctx.budget(ev.cand).total_bytes
    closest = min(best, key=lambda e: e.memory_bytes)
    return ConfigError("memory", f"no layout of {ctx.topo.num_gpus} {ctx.topo.gpu_kind} fits in "
                       f"{ctx.hbm_bytes / GIB:.0f} GiB: the closest, {closest.cand.label}, needs "
                       f"{closest.memory_bytes / GIB:.1f} GiB per GPU, over by {closest.over_gib:.1f} GiB",
                       "add nodes (--nodes), recompute more or shard the optimizer (memory settings), "
                       "or shorten the sequence", source=ctx.preset.name)
