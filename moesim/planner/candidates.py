"""The planner's search space: :class:`Candidate` layouts and the rules that make one valid.

A candidate is a :class:`~moesim.experiment.ParallelPlan` (tp, dp, pp, vpp, ep, micro-batch
size, microbatches, rank order), a pipeline schedule and an expert placement. The rules, each
rejection naming the field it violates:

* world size: ``tp * dp * pp`` equals the fabric's GPUs;
* tp divides the attention heads and fits in one host (tensor parallelism needs NVLink);
  under sequence parallelism it also divides the tokens of a microbatch;
* pp (x vpp, x 2 for V schedules) divides the layers (unless the preset allows uneven splits);
* ep divides dp (or, folded over TP x DP with tp > 1, is a multiple of tp dividing tp x dp) and the
  routed experts; dense models have ep = 1;
* microbatches = global batch / (dp * micro-batch size), a whole number;
* the schedule's own rules (:func:`moesim.schedules.generate` raises ConfigError);
* placements other than contiguous only where routing is skewed (they cannot help balanced
  routing); ``load_balanced`` gets one redundant expert slot per GPU of the EP group.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

from moesim.errors import ConfigError
from moesim.experiment.scenario import ParallelPlan
from moesim.planner.presets import ScenarioPreset
from moesim.planner.shapes import stages_of
from moesim.schedules import generate
from moesim.schedules.model import Schedule
from moesim.workload.moe import MoESpec

SCHEDULES = ("1f1b", "interleaved", "zb-h1", "dualpipe")
VPP_CHOICES = (2, 4)
MBS_CHOICES = (1, 2)
ORDERS = ("tp-dp-pp", "tp-pp-dp")
PLACEMENT_CHOICES = ("contiguous", "load_balanced")
# Deeper pipelines are not searched: their bubbles and p2p chains rarely pay, and each costs a
# dry run of pp x 2pp steps to estimate.
MAX_PP = 32


def ep_label(ep: int, layout: str) -> str:
    """``EP<n>``, with `` folded`` for EP folded over TP x DP."""
    return f"EP{ep}" + (" folded" if layout == "folded" else "")


@dataclass(frozen=True)
class Candidate:
    """One point of the search: a plan, its schedule and the expert placement."""

    plan: ParallelPlan
    schedule: str
    placement: str = "contiguous"
    num_redundant: int = 0

    @property
    def label(self) -> str:
        p = self.plan
        parts = [f"TP{p.tp}", f"PP{p.pp}", f"DP{p.dp}", ep_label(p.ep, p.ep_layout)]
        if p.vpp > 1:
            parts.append(f"vpp{p.vpp}")
        parts += [f"mbs{p.micro_batch_size}", f"m{p.num_microbatches}", self.schedule]
        if p.order != "tp-dp-pp":
            parts.append(f"order {p.order}")
        if p.ep > 1:
            parts.append(self.placement + (f"+{self.num_redundant}" if self.num_redundant else ""))
        return " ".join(parts)

    @property
    def shape_key(self) -> tuple:
        """What the memory budget depends on (not the rank order or, without replicas, the placement)."""
        p = self.plan
        return (p.tp, p.dp, p.pp, p.vpp, p.ep, p.ep_layout, p.micro_batch_size, p.num_microbatches, self.schedule,
                self.num_redundant)

    def schedule_obj(self, num_microbatches: int | None = None) -> Schedule:
        """The generated schedule (ConfigError when the schedule's rules reject the plan), with
        ``num_microbatches`` in place of the plan's when given."""
        p = self.plan
        m = num_microbatches or p.num_microbatches
        return generate(self.schedule, p.pp, m, p.vpp if self.schedule == "interleaved" else None)

    def short_microbatches(self) -> tuple[int, int] | None:
        """Two smaller microbatch counts the schedule accepts when the plan's count is larger:
        1, 2 per pipeline rank for 1F1B, 2 and 4 for the others. The schedule's in-flight
        activations have peaked by the first and its makespan grows linearly (steady state)
        from the first to the second, so memory is read at the first and the step time
        extrapolated (``tests/test_planner.py`` checks both). None for short counts and for
        GPipe, whose memory grows with every microbatch."""
        pp, m = self.plan.pp, self.plan.num_microbatches
        if self.schedule == "gpipe":
            return None
        lo = pp if self.schedule == "1f1b" else 2 * pp
        return (lo, 2 * lo) if m > 2 * lo else None

    def probe_microbatches(self) -> int:
        """A microbatch count the schedule rules treat as the plan's: the count itself when short,
        else ``2*pp + m mod 2*pp`` (the rules are lower bounds met by both, evenness and
        multiples of pp, which the residue mod 2*pp preserves), so validity is checked without
        generating a schedule of thousands of microbatches."""
        pp, m = self.plan.pp, self.plan.num_microbatches
        return m if m <= 4 * pp else 2 * pp + m % (2 * pp)


@dataclass(frozen=True)
class Rejection:
    """A layout the rules exclude, and why."""

    label: str
    field: str
    reason: str


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def tp_problem(spec, tp: int, gpus_per_host: int, mbs: int) -> str:
    """Why tensor parallelism ``tp`` is invalid for ``spec`` ('' when valid)."""
    if tp > gpus_per_host:
        return f"tp={tp} exceeds the {gpus_per_host} GPUs of one host (TP needs the NVLink domain)"
    if spec.num_heads % tp:
        return f"tp={tp} does not divide num_heads={spec.num_heads}"
    if isinstance(spec, MoESpec) and tp > 1 and (mbs * spec.seq_len) % tp:
        return f"tp={tp} does not divide the {mbs * spec.seq_len} tokens of a microbatch (sequence parallelism)"
    return ""


def stage_problem(num_layers: int, stages: int, uneven_ok: bool) -> str:
    """Why ``stages`` virtual stages are invalid for ``num_layers`` layers ('' when valid)."""
    if stages > num_layers:
        return f"{stages} virtual stages exceed the {num_layers} layers"
    if num_layers % stages and not uneven_ok:
        return f"{stages} virtual stages do not divide the {num_layers} layers"
    return ""


def _schedules(pp: int, preset_schedule: str) -> list[tuple[str, int]]:
    """(schedule, vpp) pairs worth trying on ``pp`` pipeline ranks."""
    if pp == 1:
        return [("1f1b", 1)]
    names = list(dict.fromkeys((preset_schedule, *SCHEDULES)))
    out = []
    for name in names:
        if name == "interleaved":
            out += [(name, v) for v in VPP_CHOICES]
        else:
            out.append((name, 1))
    return out


def _placements(preset: ScenarioPreset, ep: int) -> list[tuple[str, int]]:
    if ep < 2:
        return [("contiguous", 0)]
    skewed = preset.routing is not None and preset.routing.kind != "uniform"
    names = dict.fromkeys((preset.placement, *PLACEMENT_CHOICES)) if skewed else {preset.placement: None}
    return [(n, ep if n in ("load_balanced", "eplb") else 0) for n in names]


def enumerate_candidates(preset: ScenarioPreset, orders: tuple[str, ...] | None = None,
                         mbs_choices: tuple[int, ...] = MBS_CHOICES) -> tuple[list[Candidate], list[Rejection]]:
    """Every valid candidate of the preset's world size and global batch, and the rejected ones."""
    spec, topo = preset.spec, preset.topo
    world, per_host = topo.num_gpus, topo.gpus_per_host
    orders = orders or (ORDERS if topo.num_hosts > 1 else ORDERS[:1])
    out: list[Candidate] = []
    rejected: list[Rejection] = []
    for shape in _shapes(preset, world, per_host, mbs_choices, rejected):
        tp, pp, dp, ep, layout, mbs, m = shape
        for sched, vpp in _schedules(pp, preset.schedule):
            label = f"TP{tp} PP{pp} DP{dp} {ep_label(ep, layout)} mbs{mbs} {sched}" + (f" vpp{vpp}" if vpp > 1 else "")
            problem = stage_problem(spec.num_layers, stages_of(sched, pp, vpp), preset.uneven_layers)
            if problem:
                rejected.append(Rejection(label, "plan.pp", problem))
                continue
            base = ParallelPlan(tp=tp, dp=dp, pp=pp, vpp=vpp, ep=ep, micro_batch_size=mbs, num_microbatches=m,
                                order=preset.plan.order, ep_layout=layout)
            try:
                _check_schedule(Candidate(base, sched))
            except ConfigError as err:
                rejected.append(Rejection(label, f"schedule.{err.field}", err.problem))
                continue
            for order in dict.fromkeys((preset.plan.order, *orders)):
                if order != base.order and _same_ranks(base, order):
                    continue
                plan = ParallelPlan(**{**_fields(base), "order": order})
                out += [Candidate(plan, sched, pl, red) for pl, red in _placements(preset, ep)]
    return out, rejected


@lru_cache(maxsize=None)
def _schedule_ok(name: str, pp: int, num_microbatches: int, vpp: int) -> str:
    try:
        generate(name, pp, num_microbatches, vpp if name == "interleaved" else None)
    except ConfigError as err:
        return f"{err.field}\0{err.problem}"
    return ""


def _check_schedule(cand: Candidate) -> None:
    """ConfigError when the candidate's schedule rejects its plan (checked on the probe count)."""
    p = cand.plan
    probe = cand.probe_microbatches()
    problem = _schedule_ok(cand.schedule, p.pp, probe, p.vpp)
    if problem:
        field, text = problem.split("\0")
        if probe != p.num_microbatches:
            text += f" [checked at m={probe}, which the schedule rules treat as m={p.num_microbatches}]"
        raise ConfigError(field, text)


def check_candidate(preset: ScenarioPreset, cand: Candidate) -> None:
    """ConfigError naming the field when ``cand`` breaks a rule of this module (for plans a user
    gives rather than the enumeration)."""
    spec, topo, p = preset.spec, preset.topo, cand.plan
    if p.world_size != topo.num_gpus:
        raise ConfigError("plan", f"tp*dp*pp = {p.world_size} GPUs but the fabric has {topo.num_gpus}",
                          f"make tp*dp*pp equal {topo.num_gpus}", source=preset.name)
    problem = tp_problem(spec, p.tp, topo.gpus_per_host, p.micro_batch_size)
    if problem:
        raise ConfigError("plan.tp", problem, "choose a tp dividing the heads, at most the GPUs of one host",
                          source=preset.name)
    problem = stage_problem(spec.num_layers, stages_of(cand.schedule, p.pp, p.vpp), preset.uneven_layers)
    if problem:
        raise ConfigError("plan.pp", problem, "choose pp (x vpp) dividing the layer count", source=preset.name)
    if isinstance(spec, MoESpec) and spec.num_experts % p.ep:
        raise ConfigError("plan.ep", f"ep={p.ep} does not divide the {spec.num_experts} experts",
                          "choose ep dividing num_experts", source=preset.name)
    if not isinstance(spec, MoESpec) and p.ep > 1:
        raise ConfigError("plan.ep", f"ep={p.ep} but {spec.name} has no experts", "set ep=1", source=preset.name)
    _check_schedule(cand)


def _same_ranks(plan: ParallelPlan, order: str) -> bool:
    """True when ``order`` maps every GPU of ``plan`` to the rank its own order does."""
    other = ParallelPlan(**{**_fields(plan), "order": order})
    return all(plan.rank(t, d, p) == other.rank(t, d, p)
               for p in range(plan.pp) for d in range(plan.dp) for t in range(plan.tp))


def _fields(plan: ParallelPlan) -> dict:
    from dataclasses import asdict

    return asdict(plan)


def _shapes(preset: ScenarioPreset, world: int, per_host: int, mbs_choices: tuple[int, ...],
            rejected: list[Rejection]) -> Iterator[tuple[int, int, int, int, str, int, int]]:
    """(tp, pp, dp, ep, ep layout, mbs, microbatches) satisfying the divisibility rules: EP inside
    each TP index's DP (strided, ep dividing dp) and, with tp > 1, folded over TP x DP (ep a
    multiple of tp dividing tp x dp, Megatron's expert TP 1)."""
    spec = preset.spec
    moe = isinstance(spec, MoESpec)
    for tp in divisors(world):
        for mbs in mbs_choices:
            problem = tp_problem(spec, tp, per_host, mbs)
            if problem:
                if mbs == mbs_choices[0]:
                    rejected.append(Rejection(f"TP{tp}", "plan.tp", problem))
                continue
            for pp in divisors(world // tp):
                if pp > MAX_PP:
                    rejected.append(Rejection(f"TP{tp} PP{pp}", "plan.pp", f"pp={pp} exceeds the searched {MAX_PP}"))
                    continue
                dp = world // (tp * pp)
                if preset.global_batch % (dp * mbs):
                    rejected.append(Rejection(f"TP{tp} PP{pp} DP{dp} mbs{mbs}", "plan.num_microbatches",
                                              f"global batch {preset.global_batch} is not a multiple of dp*mbs = {dp * mbs}"))
                    continue
                m = preset.global_batch // (dp * mbs)
                layouts = [(ep, "strided") for ep in (divisors(dp) if moe else [1])]
                if moe and tp > 1:
                    layouts += [(tp * k, "folded") for k in divisors(dp)]
                for ep, layout in layouts:
                    if moe and spec.num_experts % ep:
                        rejected.append(Rejection(f"TP{tp} PP{pp} DP{dp} {ep_label(ep, layout)}", "plan.ep",
                                                  f"ep={ep} does not divide the {spec.num_experts} experts"))
                        continue
                    yield tp, pp, dp, ep, layout, mbs, m
