"""How big a simulation will be, known before building it: tasks, flows, events, memory, wall time.

:func:`estimate_run` counts what the lowering will create from the plan, the schedule, the model
and the fabric spec alone (no graph, no cost model, no task is built): per pipeline pass the
compute segments x TP x DP GPUs, one folded TP collective per segment and DP replica (ring:
``2(tp-1)tp`` flows), the MoE exchanges (dispatch, shared experts, one task per expert slot,
combine; ``2 ep(ep-1)`` flows per exchange), the pipeline sends (one flow each), the DP gradient
all-reduces (ring or hierarchical flows) and the optimizer steps. Wall time follows from per-task
and per-flow constants measured on real runs, with an extra cost per MoE exchange flow, a
function of the flows in flight (each such flow ends alone and re-solves the rates it shares
links with; see :class:`CostConstants`, refitted by ``python benchmarks/scaling.py --section
estimate --fit``). Memory is the process's peak RSS: the measured baseline of ``moesim run``'s
imports, the simulation (per task, per link-utilisation sample) and, when they will be written,
the Perfetto trace and the plots (:class:`MemoryConstants`, refitted by ``python
benchmarks/memory_estimate.py --fit``). :func:`check_budget` turns an estimate over the task limit
or the machine's available memory into a one-line ConfigError with what it needs, what there is
and what to change, so a runaway scenario is refused in milliseconds instead of exhausting the
machine.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, Mapping

from moesim.engine.compiled import fluid_backend
from moesim.errors import ConfigError
from moesim.experiment.scenario import ParallelPlan, Scenario
from moesim.schedules import actions_of, cross_deps, generate
from moesim.schedules.model import Schedule
from moesim.workload.transformer import TransformerSpec

GIB = 2**30
DEFAULT_MAX_TASKS = 5_000_000
DEFAULT_MAX_MEMORY_BYTES = 8 * GIB  # where the machine's available memory cannot be read
# Generate the real schedule when it has at most this many actions; beyond, a small probe
# schedule of the same shape gives the per-microbatch counts (generation is ~ms per 1000 actions).
PROBE_ACTION_LIMIT = 20_000


@dataclass(frozen=True)
class MemoryConstants:
    """Peak resident memory (RSS) of ``moesim run`` as terms in the counts :func:`estimate_run`
    predicts. ``baseline_bytes``: the interpreter with what ``moesim run`` imports, measured
    (``ru_maxrss`` after the imports). The simulation adds ``sim_fixed`` (profiles, cost-model
    caches, the schedule) + per task + per flow + per link sample + per exchange flow x flows in
    flight. Link samples: a flow that ends alone (:func:`exchange_flows`) re-solves the rates of
    its group and records a utilisation sample on each link whose rate changed, about one per
    rank of the group (:func:`link_samples`; measured 0.53-0.58 per exchange flow and rank at
    EP8 / EP16). A Perfetto trace adds ``trace_*`` (its event dicts and text: a slice per span, a
    counter event per link sample), plots add ``plots_*`` (matplotlib, the boxes of every span,
    the utilisation curves). Fitted by :func:`moesim.experiment.estimate_fit.fit_memory` on peak
    RSS measured by ``python benchmarks/memory_estimate.py --fit`` (data:
    benchmarks/memory_estimate.json) on the numpy network. The compiled network holds no
    per-flow-in-flight working set and stores link samples only for a trace (``link_series``):
    :func:`estimate_run` drops those terms there (measured on it: 0.83-1.25x of peak RSS on the
    MoE rows EP8-EP64, every export mode but EP64's trace, docs/robustness.md)."""

    baseline_bytes: float
    sim_fixed: float
    sim_per_task: float
    sim_per_flow: float
    sim_per_link_sample: float
    sim_per_exchange_flow_in_flight: float
    trace_fixed: float
    trace_per_task: float
    trace_per_flow: float
    trace_per_link_sample: float
    plots_fixed: float
    plots_per_task: float
    plots_per_flow: float
    plots_per_link_sample: float

    def terms(self) -> tuple[float, ...]:
        """The fitted coefficients in :func:`memory_columns`' order (all but the baseline)."""
        return tuple(getattr(self, f.name) for f in fields(self)[1:])


def memory_columns(tasks: float, flows: float, exchange_flows: float, width: float, in_flight: float, trace: bool,
                   plots: bool) -> tuple[float, ...]:
    """What each of :class:`MemoryConstants`' terms multiplies, in its field order after the
    baseline; ``exchange_flows * width`` are the link samples (:func:`link_samples`)."""
    samples = exchange_flows * width
    t, p = float(trace), float(plots)
    return (1.0, tasks, flows, samples, exchange_flows * in_flight, t, t * tasks, t * flows, t * samples,
            p, p * tasks, p * flows, p * samples)


def memory_bytes(m: MemoryConstants, tasks: float, flows: float, exchange_flows: float, width: float,
                 in_flight: float, trace: bool = False, plots: bool = False) -> float:
    """Estimated peak RSS: baseline + simulation + the exports asked for (see :class:`MemoryConstants`)."""
    cols = memory_columns(tasks, flows, exchange_flows, width, in_flight, trace, plots)
    return m.baseline_bytes + sum(c * k for c, k in zip(cols, m.terms()))


@dataclass(frozen=True)
class CostConstants:
    """Per-item costs of a build + run (seconds, events; memory: :class:`MemoryConstants`), by
    network mode for flows (the fluid network records link-utilisation counters and solves rates,
    the analytical one does neither).

    In the fluid network a solve happens at every instant where flows start or end. A ring
    step's flows end together (one solve for the step); the MoE all-to-all's flows, sized per
    pair by the routing, and the pipeline sends end one by one (:func:`exchange_flows`), and
    each end re-solves the flows it shares links with, up to the flows in flight
    (:func:`flows_in_flight`). So such a flow costs extra
    ``exchange + exchange_in_flight * flows_in_flight`` on top of any flow's cost. Measured with
    :func:`moesim.experiment.estimate_fit.measure`, fitted with
    :func:`~moesim.experiment.estimate_fit.fit_costs`: ``python benchmarks/scaling.py --section
    estimate --fit``."""

    seconds_per_task: float
    events_per_task: float
    seconds_fixed: float
    seconds_per_flow: Mapping[str, float]
    events_per_flow: Mapping[str, float]
    memory: MemoryConstants
    seconds_per_exchange_flow: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def per_flow(self, network: str) -> tuple[float, float]:
        """(seconds, events) per flow for a network mode (the costlier mode if unknown)."""
        mode = network if network in self.seconds_per_flow else "fluid"
        return self.seconds_per_flow[mode], self.events_per_flow[mode]

    def per_exchange_flow(self, network: str, in_flight: float) -> float:
        """Extra seconds of an MoE exchange flow with ``in_flight`` flows in flight (the fluid
        network's figures are those of the backend this process runs, :func:`fluid_backend`)."""
        mode = network if network in self.seconds_per_flow else "fluid"
        if mode == "fluid" and fluid_backend() == "numpy" and "fluid-numpy" in self.seconds_per_exchange_flow:
            mode = "fluid-numpy"
        s0, s1 = self.seconds_per_exchange_flow.get(mode, (0.0, 0.0))
        return s0 + s1 * in_flight


# Fitted by ``python benchmarks/memory_estimate.py --from benchmarks/memory_estimate.json --fit``
# (relative-error NNLS) on 78 runs measured on the 2-core development machine, 2026-12-06: the 19
# scaling.py rows x {no export, trace, plots, both} (EP64's three export rows left out: ~12 GiB
# estimated, more than the shared machine could spare) + EP64 with one microbatch x 4 + EP64 with
# two, trace and plots (7.1 GiB; 0.90x before it joined the fit). Peak RSS 106 MiB - 6.9 GiB;
# every run within 0.85-1.28x. Terms the fit put at zero are kept so a refit elsewhere can use
# them. Baseline: ru_maxrss after importing moesim.cli, moesim.experiment.cli and the runner
# (median of the 78 processes, 55.6-56.3 MiB).
MEMORY = MemoryConstants(
    baseline_bytes=58.6e6, sim_fixed=51.9e6, sim_per_task=2690.0, sim_per_flow=0.0, sim_per_link_sample=180.0,
    sim_per_exchange_flow_in_flight=0.17, trace_fixed=2.8e6, trace_per_task=300.0, trace_per_flow=0.0,
    trace_per_link_sample=615.0, plots_fixed=46.75e6, plots_per_task=0.0, plots_per_flow=0.0,
    plots_per_link_sample=0.0)

# Time fitted by ``python benchmarks/scaling.py --section estimate --fit`` on the 2-core development
# machine (shared with other work), 2026-12-06, on the compiled fluid network
# (moesim.engine._fluidcore): CPU seconds of build + run; 19 rows: dense 8-64 GPUs, pipeline-only,
# eager host, MoE EP8-EP64 with 56-4,032 flows in flight: every row within 0.55-1.81x (least worst
# ratio). Seconds per task and per fluid flow are held at benchmarks/engine_speed.py's (a) (100k
# tasks built and run: 2.9 us a task) and (c) (512-GPU ring all-reduce: 2.0 us a flow); SimPy events
# per fluid flow measured on moe(8) and moe(16) (1.0-1.1 beyond two per task); the analytical figures
# are older. ``fluid-numpy``: the exchange-flow cost of the numpy network (where the extension was
# not built), fitted the same way on it earlier that day (every row within 0.75-1.33x).
CONSTANTS = CostConstants(
    seconds_per_task=3e-6, events_per_task=2.0, seconds_fixed=0.107,
    seconds_per_flow={"fluid": 2e-6, "analytical": 16e-6},
    events_per_flow={"fluid": 1.1, "analytical": 1.25},
    memory=MEMORY,
    seconds_per_exchange_flow={"fluid": (35.2e-6, 0.1e-9), "fluid-numpy": (111e-6, 1.4e-9)},
)


@dataclass(frozen=True)
class RunParts:
    """What the estimate needs: the plan, the schedule name, the model spec and the host size."""

    plan: ParallelPlan
    schedule: str
    model: Any
    gpus_per_node: int
    network: str = "fluid"
    num_redundant: int = 0
    host: str = "ahead"
    experts: str = "grouped"
    dispatcher: str = "alltoall"


@dataclass(frozen=True)
class RunEstimate:
    """Predicted size of one simulation (before building it)."""

    tasks: int
    flows: int
    events: int
    memory_bytes: float
    wall_s: float
    flows_in_flight: int = 0
    trace_bytes: float = 0.0   # of memory_bytes: what writing the Perfetto trace adds
    plots_bytes: float = 0.0   # of memory_bytes: what drawing the plots adds

    def describe(self) -> str:
        return (f"~{self.tasks:,} tasks, ~{self.flows:,} flows, ~{self.memory_bytes / GIB:.1f} GiB, "
                f"~{_duration(self.wall_s)}")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


# -- inputs ------------------------------------------------------------------------------------
def parts_of(scn: Scenario) -> RunParts:
    """The :class:`RunParts` of a scenario: the model resolved, the fabric spec read (not built)."""
    from moesim.topology.loader import parse_spec, read_spec, resolve_path
    from moesim.workload.presets import get_model

    spec, source = read_spec(resolve_path(scn.topology))
    if scn.nodes:
        spec["nodes"] = scn.nodes
    if scn.gpus_per_node:
        spec["gpus_per_node"] = scn.gpus_per_node
    fabric = parse_spec(spec, source)
    model = get_model(scn.model) if isinstance(scn.model, str) else scn.model
    if not isinstance(getattr(model, "num_layers", None), int):
        raise ConfigError("scenario.model", f"{model!r} is not a model", "give a preset name or a model spec")
    return RunParts(scn.plan, scn.schedule, model, fabric.gpus_per_node, scn.network, scn.moe.num_redundant, scn.host,
                    scn.moe.experts, scn.moe.dispatcher)


# -- the schedule, per microbatch ----------------------------------------------------------------
@dataclass(frozen=True)
class _ScheduleShape:
    passes: dict[tuple[str, int], float]   # (F|B|W, stage) -> passes per microbatch (BW = B + W)
    sends_per_microbatch: float            # cross-rank dependencies per microbatch (per TP/DP rank)
    num_stages: int
    num_chunks: int


@lru_cache(maxsize=64)
def _schedule_shape(name: str, pp: int, vpp: int, num_microbatches: int) -> _ScheduleShape:
    chunks = vpp if name == "interleaved" else None
    sched = None
    if num_microbatches * pp * vpp * 3 > PROBE_ACTION_LIMIT:
        for m in (2 * pp * vpp, 4 * pp * vpp, pp * vpp, 2 * pp, pp, 2, 1):
            try:
                sched = generate(name, pp, m, chunks)
                break
            except ConfigError:
                continue
    sched = sched or generate(name, pp, num_microbatches, chunks)
    return _shape(sched)


def _shape(sched: Schedule) -> _ScheduleShape:
    passes: Counter[tuple[str, int]] = Counter()
    sends = 0
    for row in sched.steps:
        for step in row:
            for a in actions_of(step):
                for kind in ("B", "W") if a.kind == "BW" else (a.kind,):
                    passes[(kind, a.stage)] += 1
                sends += sum(d.crosses_ranks for d in cross_deps(sched, a))
    m = sched.num_microbatches
    chunks = 2 if sched.layout == "dual" else sched.num_chunks
    return _ScheduleShape({k: v / m for k, v in passes.items()}, sends / m, sched.num_stages, chunks)


# -- counting ----------------------------------------------------------------------------------
def _moe_layers_per_stage(model: Any, num_stages: int) -> list[int]:
    from moesim.lowering.stage_costs import stage_layer_ranges

    is_moe = getattr(model, "is_moe_layer", lambda _layer: False)
    return [sum(1 for layer in r if is_moe(layer)) for r in stage_layer_ranges(model.num_layers, num_stages)]


def _exchange_counts(parts: RunParts, kind: str) -> tuple[float, float]:
    """(tasks, flows) of one MoE exchange of one pass, over every TP index and EP group."""
    plan, model = parts.plan, parts.model
    groups = plan.tp * plan.dp // plan.ep   # EP groups of a stage, either layout
    experts = _expert_tasks(parts, kind)
    if kind == "W":
        return groups * experts, 0.0
    shared = plan.ep if getattr(model, "num_shared_experts", 0) else 0
    return groups * (2 * plan.ep + shared + experts), groups * 2.0 * _exchange_pairs(parts)


def _exchange_pairs(parts: RunParts) -> int:
    """Flows of one dispatch (or combine) in one EP group: every ordered pair, ``ep (ep - 1)``;
    DeepEP over several nodes sends across nodes only to the rail peer (same index inside the
    node) and forwards over NVLink, so its pairs are those inside a node plus one per other
    node and GPU (:func:`moesim.moe.deepep.two_hop_units`)."""
    ep, local = parts.plan.ep, max(1, parts.gpus_per_node)
    if parts.dispatcher == "deepep" and ep > local and ep % local == 0:
        return ep * (local - 1) + ep * (ep // local - 1)
    return ep * (ep - 1)


def _expert_tasks(parts: RunParts, kind: str) -> float:
    """Expert tasks of one EP group in one exchange (:func:`moesim.workload.moe_exec.expert_tasks`):
    a loop's chain per expert slot plus each GPU's counts copy (forward) and cat; grouped and
    padded, one task per kernel on each GPU (torchtitan's count, the largest)."""
    from moesim.workload.moe_exec import grouped_ops

    plan, model = parts.plan, parts.model
    slots = model.num_experts + parts.num_redundant
    if parts.experts == "loop":
        return slots + plan.ep * {"F": 2, "B": 1}.get(kind, 0)
    return plan.ep * len(grouped_ops(model, (1,), "W" if kind == "W" else ("F" if kind == "F" else "B")))


def _pass_counts(parts: RunParts, kind: str, stage: int, moe_layers: int) -> tuple[float, float]:
    """(tasks, flows) of one pass (F, B or W) of one microbatch over one virtual stage."""
    plan = parts.plan
    segments = moe_layers + 1
    tasks = segments * plan.dp * plan.tp
    flows = 0.0
    # F and B segments carry TP traffic; a W pass only on stage 0, for the embedding gradient
    tp_segments = segments if kind != "W" else int(stage == 0 and isinstance(parts.model, TransformerSpec))
    if plan.tp > 1 and tp_segments:
        tasks += tp_segments * plan.dp
        flows += tp_segments * plan.dp * 2.0 * (plan.tp - 1) * plan.tp
    if moe_layers:
        ex_tasks, ex_flows = _exchange_counts(parts, kind)
        tasks += moe_layers * ex_tasks
        flows += moe_layers * ex_flows
    return tasks, flows


def _dp_flows(parts: RunParts) -> float:
    """Flows of one DP gradient all-reduce: a ring, or hierarchical when the group spans hosts."""
    plan = parts.plan
    dp = plan.dp
    hosts = Counter(plan.rank(0, d, 0) // parts.gpus_per_node for d in range(dp))
    sizes = set(hosts.values())
    if len(hosts) == 1 or len(sizes) != 1:
        return 2.0 * (dp - 1) * dp
    local, h = sizes.pop(), len(hosts)
    return 2.0 * (local - 1) * local * h + 2.0 * (h - 1) * h * local


EAGER_HOST_TASKS_PER_TASK = 2.0


def count_run(parts: RunParts) -> tuple[int, int]:
    """(tasks, flows) the lowering will create for ``parts``."""
    plan = parts.plan
    shape = _schedule_shape(parts.schedule, plan.pp, plan.vpp, plan.num_microbatches)
    moe = _moe_layers_per_stage(parts.model, shape.num_stages)
    tasks = flows = 0.0
    for (kind, stage), per_mb in shape.passes.items():
        t, f = _pass_counts(parts, kind, stage, moe[stage])
        tasks += per_mb * plan.num_microbatches * t
        flows += per_mb * plan.num_microbatches * f
    sends = shape.sends_per_microbatch * plan.num_microbatches * plan.dp * plan.tp
    tasks += sends + plan.dp * plan.pp * plan.tp   # sends, optimizer steps
    flows += sends
    if plan.dp > 1:
        syncs = plan.pp * plan.tp * shape.num_chunks
        tasks += syncs
        flows += syncs * _dp_flows(parts)
    if parts.host == "eager":  # one host task per compute task and per rank of each call: 1.3-1.7 per task
        tasks *= 1 + EAGER_HOST_TASKS_PER_TASK  # measured on 1f1b_vs_interleaved.py; 2 keeps it an upper bound
    return int(round(tasks)), int(round(flows))


def flows_in_flight(parts: RunParts) -> int:
    """The most flows one collective puts in flight at once (they share links, so every start
    or end re-solves up to this many rates): an EP group's all-to-all (:func:`_exchange_pairs`); a
    ring step of TP or DP, one flow per rank. 0 when nothing crosses the network."""
    plan = parts.plan
    return max(_exchange_pairs(parts) if _has_exchange(parts) else 0, plan.tp if plan.tp > 1 else 0,
               plan.dp if plan.dp > 1 else 0, 1 if plan.pp > 1 else 0)


def group_width(parts: RunParts) -> int:
    """Ranks of the widest group whose flows share links: the EP group when there is an MoE
    exchange, else the TP or DP ring; 1 when nothing but pipeline sends crosses the network."""
    plan = parts.plan
    return max(plan.ep if _has_exchange(parts) else 1, plan.tp, plan.dp)


def link_samples(parts: RunParts) -> int:
    """Link-utilisation samples the fluid network records, roughly: each flow that ends alone
    (:func:`exchange_flows`) changes the rates on about one link per rank of its group
    (:func:`group_width`). Measured 0.53 and 0.58 of this at EP8 and EP16 (Qwen3 MoE layers)."""
    return exchange_flows(parts) * group_width(parts)


def _has_exchange(parts: RunParts) -> bool:
    return bool(getattr(parts.model, "num_experts", 0)) and parts.plan.ep > 1


def exchange_flows(parts: RunParts) -> int:
    """The flows that start and end on their own, one rate solve each: the MoE all-to-alls'
    (dispatch and combine, forward and backward; sized per pair) and the pipeline sends."""
    plan = parts.plan
    shape = _schedule_shape(parts.schedule, plan.pp, plan.vpp, plan.num_microbatches)
    sends = shape.sends_per_microbatch * plan.num_microbatches * plan.dp * plan.tp
    if not _has_exchange(parts):
        return int(round(sends))
    moe = _moe_layers_per_stage(parts.model, shape.num_stages)
    return int(round(sends + sum(per_mb * plan.num_microbatches * moe[stage] * _exchange_counts(parts, kind)[1]
                                 for (kind, stage), per_mb in shape.passes.items())))


def estimate_run(scn_or_parts: "Scenario | RunParts", constants: CostConstants = CONSTANTS, *, trace: bool = False,
                 plots: bool = False, link_series: bool = True) -> RunEstimate:
    """Predict the size of a run before building it (see the module docstring); its memory is
    the peak RSS of the process, with a Perfetto trace / plots written when ``trace`` / ``plots``.
    ``link_series=False`` (a run that keeps each link's utilisation integral, not its samples;
    the compiled fluid network only) stores no link sample."""
    parts = parts_of(scn_or_parts) if isinstance(scn_or_parts, Scenario) else scn_or_parts
    tasks, flows = count_run(parts)
    in_flight = flows_in_flight(parts)
    exchanged = exchange_flows(parts)
    flow_s, flow_events = constants.per_flow(parts.network)
    ex_s = constants.per_exchange_flow(parts.network, in_flight)
    # the analytical network records no link samples and re-solves nothing
    fluid = parts.network not in ("analytical",)
    # the numpy network stores every sample and holds a working set per flow in flight; the
    # compiled one keeps its state per link and per flow alive, and samples only for a trace
    numpy_net = fluid and fluid_backend() == "numpy"
    samples = fluid and (link_series or trace or numpy_net)
    counts = (tasks, flows, exchanged, group_width(parts) if samples else 0, in_flight if numpy_net else 0)
    sim = memory_bytes(constants.memory, *counts)
    with_trace = memory_bytes(constants.memory, *counts, trace=trace)
    mem = memory_bytes(constants.memory, *counts, trace=trace, plots=plots)
    return RunEstimate(
        tasks=tasks, flows=flows,
        events=int(constants.events_per_task * tasks + flow_events * flows),
        memory_bytes=mem,
        wall_s=constants.seconds_fixed + constants.seconds_per_task * tasks + flow_s * flows + ex_s * exchanged,
        flows_in_flight=in_flight, trace_bytes=with_trace - sim, plots_bytes=mem - with_trace,
    )


def available_memory_bytes() -> tuple[float, str]:
    """(bytes this run may use, where the figure comes from): on Linux ``MemAvailable`` of
    /proc/meminfo plus this process's own resident set (the estimate counts the process, which
    already holds it); elsewhere the available physical pages (``os.sysconf``, where the system
    has them); else the fixed :data:`DEFAULT_MAX_MEMORY_BYTES`."""
    import os

    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        with open("/proc/self/statm", encoding="ascii") as f:
            own = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return kib * 1024.0 + own, "available (MemAvailable + this process)"
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "available (free physical pages)"
    except (AttributeError, ValueError, OSError):
        return float(DEFAULT_MAX_MEMORY_BYTES), "the fixed limit (available memory unknown here)"


def _size(nbytes: float) -> str:
    return f"{nbytes / GIB:,.1f} GiB" if nbytes >= GIB else f"{nbytes / GIB:.2f} GiB"


def memory_refusal(estimate: RunEstimate, limit_bytes: float, limit_source: str) -> str:
    """The one-line refusal of a run whose estimated peak memory exceeds ``limit_bytes``."""
    parts = [f"simulation {_size(estimate.memory_bytes - estimate.trace_bytes - estimate.plots_bytes)}"]
    parts += [f"{name} {_size(b)}" for name, b in (("trace", estimate.trace_bytes), ("plots", estimate.plots_bytes))
              if b]
    return (f"needs ~{_size(estimate.memory_bytes)} of memory ({' + '.join(parts)}; ~{estimate.tasks:,} tasks, "
            f"~{estimate.flows:,} flows) but this machine has {_size(limit_bytes)} {limit_source}")


def check_budget(estimate: RunEstimate, max_tasks: int = DEFAULT_MAX_TASKS,
                 max_memory_bytes: float | None = None, force: bool = False) -> None:
    """ConfigError when ``estimate`` exceeds ``max_tasks`` or the memory limit (unless ``force``):
    ``max_memory_bytes``, or by default what this machine has available
    (:func:`available_memory_bytes`). One line: what it needs against what there is, and how to
    lower it."""
    if force:
        return
    limit, source = (max_memory_bytes, "allowed") if max_memory_bytes is not None else available_memory_bytes()
    if estimate.memory_bytes > limit:
        exports = estimate.trace_bytes + estimate.plots_bytes
        export = f" --no-trace / --no-plots (a trace and plots take {_size(exports)})," if exports else ""
        raise ConfigError("scenario", f"too large to simulate here: {memory_refusal(estimate, limit, source)}",
                          f"lower it with{export} fewer microbatches (plan.num_microbatches), the reduced engine for "
                          "an expert-parallel run with tp=1 (--set engine=reduced; docs/scale.md), "
                          "network='analytical', fewer layers or fewer GPUs, or pass --force to run anyway")
    if estimate.tasks > max_tasks:
        raise ConfigError("scenario", f"too large to simulate here: {estimate.describe()} ({estimate.tasks:,} tasks > "
                          f"{max_tasks:,})", "for an expert-parallel run with tp=1 use the reduced engine "
                          "(engine='reduced', --set engine=reduced; docs/scale.md); otherwise use fewer microbatches "
                          "(plan.num_microbatches), network='analytical', fewer layers or fewer GPUs (symmetric DP "
                          "replicas behave alike), or pass --force to run anyway")
