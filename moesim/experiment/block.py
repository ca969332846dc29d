"""Simulate one block (a decoder layer or an MoE FFN block), not a whole training step.

:func:`block_scenario` describes the block as an ordinary :class:`Scenario`: a one-layer copy of
the model (``first_k_dense=0`` so the layer of an MoE model is an MoE layer; ``moe_block`` also
drops the attention block; no embedding or output head: ``TransformerSpec.attention`` and
``edges``), pp = 1, dp = ep = ``ranks`` (each GPU runs its own microbatch of ``tokens`` tokens;
an MoE block's experts spread over the GPUs), ``iterations`` microbatches back to back (1F1B
with one stage runs F, B, F, B, ...), no data-parallel gradient reduction and no optimizer, and
PyTorch's ``.grad +=`` gradient accumulation (eager PyTorch's default) between iterations.
:func:`simulate_block` runs it through the same build, lowering and engine as ``moesim run``
(:func:`moesim.experiment.runner.run_scenario`) and condenses the Recorder into a
:class:`BlockResult`: the time per iteration, GPU time per op class with the cost model's
provenance per class, and the critical path.

Time per op class is GPU busy time per iteration, averaged over the GPUs: a compute task's span
is split over its kernels' classes in proportion to their cost-model times (the segment's
``op_ns``), communication by collective kind, and an eager host thread's issue time as ``host``.
Communication may overlap compute, so the classes need not add up to the iteration time; the
critical path does.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from moesim.errors import ConfigError
from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario

LAYERS = ("decoder", "moe_block")
PASSES = ("fwd", "fwd_bwd")
HOSTS = ("eager", "graphs")
GPU_TOPOLOGIES = {"H200": "dgx_h200", "H100": "dgx_h100"}
HOST_CLASS = "host"


@dataclass(frozen=True)
class OpClassTime:
    """GPU time of one op class per iteration (mean over GPUs) and where its costs come from."""

    name: str
    time_ns: float
    provenance: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "time_ns": round(self.time_ns, 1), "provenance": self.provenance}


@dataclass(frozen=True)
class BlockResult:
    """What :func:`simulate_block` found; ``recorder`` feeds :func:`moesim.trace.write_chrome_trace`."""

    scenario: Scenario
    iterations: int
    step_time_ns: int
    time_per_iteration_ns: float
    op_classes: tuple[OpClassTime, ...]
    critical_path: dict[str, Any]
    cost_model: str
    calibrated: bool
    host_issue: dict[str, Any]
    result: Any = field(repr=False, default=None)
    recorder: Any = field(repr=False, default=None)
    host_pricing: Any = field(repr=False, default=None)   # what the eager host charged (lowering.host.HostPricing)
    # host-bound runs: time per iteration at the profile's fastest and slowest host runs (host_speed)
    host_band: "tuple[float, float] | None" = None
    # per op-class family, where the cost model's times come from (its ``sources()``, as ``moesim run``'s
    # results.json ``cost_sources``) and the calibration profile's identity (name, device, date, sha256)
    cost_sources: dict[str, str] = field(default_factory=dict)
    profile: "dict[str, str] | None" = None
    # per communication class: the part of its time per iteration no compute kernel overlaps (mean over GPUs)
    comm_exposed: dict[str, float] = field(default_factory=dict)

    @property
    def gpu_classes(self) -> tuple[OpClassTime, ...]:
        """The op classes that run on a GPU (compute and communication streams), not the host thread."""
        return tuple(c for c in self.op_classes if c.name != HOST_CLASS)

    @property
    def host_class(self) -> "OpClassTime | None":
        """The eager host thread's issue time per iteration (its own lane, beside the GPU's)."""
        return next((c for c in self.op_classes if c.name == HOST_CLASS), None)

    def to_dict(self) -> dict[str, Any]:
        def entry(c: OpClassTime) -> dict[str, Any]:
            lane = "host" if c.name == HOST_CLASS else ("gpu comm" if c.name in self.comm_exposed else "gpu compute")
            extra = {"exposed_ns": round(self.comm_exposed[c.name], 1)} if c.name in self.comm_exposed else {}
            return {**c.to_dict(), "lane": lane, **extra}
        return {"scenario": self.scenario.name, "iterations": self.iterations, "step_time_ns": self.step_time_ns,
                "time_per_iteration_ns": round(self.time_per_iteration_ns, 1),
                "op_classes": [entry(c) for c in self.op_classes], "critical_path": self.critical_path,
                "cost_model": self.cost_model, "calibrated": self.calibrated, "host_issue": self.host_issue,
                "cost_sources": dict(self.cost_sources), "profile": self.profile,
                **({"host_band_ns": [round(b, 1) for b in self.host_band]} if self.host_band else {})}


# -- the scenario ------------------------------------------------------------------------------
def block_scenario(model: Any, *, layer: str = "decoder", tokens: int, seq_len: int | None = None,
                   passes: str = "fwd_bwd", ranks: int = 1, gpu: str = "H200", host: str = "eager",
                   iterations: int = 1, moe: MoEOptions | None = None, cost_model: str = "auto",
                   name: str | None = None, grads: str = "fresh", layer_index: int = 0) -> Scenario:
    """The Scenario of one block (see the module docstring). ``tokens`` per GPU and microbatch;
    ``seq_len`` None keeps the model's sequence length where it divides ``tokens`` (else one
    sequence of ``tokens``); ``gpu`` is ``"H200"``, ``"H100"`` or a topology name/path.
    ``grads="fresh"``: the first iteration stores its weight gradients and later ones add into
    them; ``"kept"``: ``.grad`` exists before the first iteration (a benchmark loop without
    ``zero_grad``), so every iteration adds. ``layer_index``: the model layer whose attention kind
    the block takes where layers differ (``layer_types``: GPT-OSS alternates 128-token windows,
    layer 0, and full attention, layer 1)."""
    from moesim.experiment.build import resolve_model
    from moesim.workload.moe import MoESpec

    _check_choice("layer", layer, LAYERS, "'decoder' (attention + FFN/MoE) or 'moe_block' (the MoE FFN block alone)")
    _check_choice("passes", passes, PASSES, "'fwd' (forward only) or 'fwd_bwd' (forward and backward)")
    _check_choice("host", host, HOSTS, "'eager' (a PyTorch host thread issues every kernel) or 'graphs' (CUDA graphs)")
    _check_choice("grads", grads, ("fresh", "kept"), "'fresh' (the first iteration stores .grad) or 'kept' (every "
                  "iteration adds into an existing .grad)")
    for what, value in (("tokens", tokens), ("ranks", ranks), ("iterations", iterations)):
        _check_count(what, value)
    if seq_len is not None:
        _check_count("seq_len", seq_len)
    spec = resolve_model(model)
    is_moe = isinstance(spec, MoESpec)
    if layer == "moe_block" and not is_moe:
        raise ConfigError("layer", f"model {spec.name!r} has no MoE layer", "use layer='decoder', or an MoE model")
    seq = _seq_len(spec, tokens, seq_len)
    if not isinstance(layer_index, int) or isinstance(layer_index, bool) or not 0 <= layer_index < spec.num_layers:
        raise ConfigError("layer_index", f"must be a layer of {spec.name!r} (0 to {spec.num_layers - 1}), "
                          f"got {layer_index!r}", "give e.g. layer_index=0")
    kinds = {"layer_types": (spec.layer_types[layer_index],)} if getattr(spec, "layer_types", ()) else {}
    one = dataclasses.replace(spec, num_layers=1, seq_len=seq, edges=False, attention=layer == "decoder",
                              **kinds, **({"first_k_dense": 0, "moe_layer_freq": 1} if is_moe else {}))
    topology, gpus_per_node, nodes = _fabric(gpu, ranks)
    plan = ParallelPlan(tp=1, dp=ranks, pp=1, ep=ranks if is_moe else 1, micro_batch_size=tokens // seq,
                        num_microbatches=iterations, grad_dtype_bytes=_grad_bytes(spec.dtype))
    label = name or f"{spec.name}.{layer}.{tokens}tok.{passes}.{ranks}gpu"
    return Scenario(name=label, topology=topology, model=one, plan=plan, schedule="1f1b", nodes=nodes,
                    gpus_per_node=gpus_per_node, cost_model=cost_model, moe=moe or MoEOptions(),
                    host=host, mode="forward" if passes == "fwd" else "train", optimizer=False,
                    grad_sync=False, grad_accumulation="add_every" if grads == "kept" else "add",
                    description=f"one {layer} of {spec.name}, {tokens} tokens per GPU, {passes}, {ranks} GPU(s)")


def _check_choice(what: str, value: Any, allowed: tuple[str, ...], fix: str) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(what, f"unknown {what} {value!r}", f"use {fix}")


def _check_count(what: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(what, f"must be an integer >= 1, got {value!r}", f"give a whole number, e.g. {what}=1")


def _seq_len(spec: Any, tokens: int, seq_len: int | None) -> int:
    """The sequence length: given (it must divide ``tokens``), else the model's where it divides."""
    if seq_len is None:
        return spec.seq_len if tokens % spec.seq_len == 0 else tokens
    if tokens % seq_len:
        raise ConfigError("seq_len", f"{seq_len} does not divide tokens={tokens}",
                          "give a sequence length dividing the token count (microbatch = tokens / seq_len sequences)")
    return seq_len


def _grad_bytes(dtype: str) -> int:
    """Eager PyTorch keeps ``.grad`` in the parameter dtype: 2 bytes for 16-bit models, else 4."""
    from moesim.ops import DTYPE_BYTES

    return 2 if DTYPE_BYTES.get(dtype, 4) <= 2 else 4


def _fabric(gpu: str, ranks: int) -> tuple[str, int | None, int | None]:
    """(topology, gpus_per_node, nodes) holding ``ranks`` GPUs: part of one node, or whole nodes."""
    from moesim.topology.loader import read_spec, resolve_path

    if not isinstance(gpu, str) or not gpu:
        raise ConfigError("gpu", f"must be a GPU kind or a topology name, got {gpu!r}",
                          f"use one of {', '.join(GPU_TOPOLOGIES)} or a topology name such as 'dgx_h200'")
    topology = GPU_TOPOLOGIES.get(gpu.upper(), gpu)
    try:
        spec, _ = read_spec(resolve_path(topology))
    except ConfigError as err:
        raise ConfigError("gpu", f"{gpu!r} is neither a GPU kind nor a topology ({err.problem})",
                          f"use one of {', '.join(GPU_TOPOLOGIES)} or a topology name such as 'dgx_h200'") from None
    per_node = int(spec.get("gpus_per_node", 1))
    if ranks <= per_node:
        return topology, (ranks if ranks < per_node else None), 1
    if ranks % per_node:
        raise ConfigError("ranks", f"{ranks} GPUs are not whole nodes of {per_node} ({topology})",
                          f"use at most {per_node} GPUs or a multiple of {per_node}")
    return topology, None, ranks // per_node


# -- the run -------------------------------------------------------------------------------------
def simulate_block(scn: Scenario, force: bool = False, host_band: bool = True) -> BlockResult:
    """Run the block as :func:`~moesim.experiment.runner.run_scenario` runs it (a block is always
    the full engine: the reduced one refuses its optimizer and grad_sync) and condense it, its op
    classes weighed and judged by the cost model the run priced with. ``host_band``: where the
    profile measured several host runs and the run's time moves with the host (:func:`_host_bound`),
    the block again at its fastest and slowest (``Scenario.host_speed``)."""
    from moesim.experiment.runner import build_at_duty, run_built

    built = build_at_duty(scn, force=force)
    result, rec = run_built(scn, built)
    iterations = scn.plan.num_microbatches
    step_ns = int(rec.end_ns)
    cost = built.cost_model
    classes = class_times_per_iteration(rec, iterations, cost)
    provenance = class_provenance(scn, cost, rec)
    sources = dict(result.cost_sources or {})
    op_classes = tuple(OpClassTime(k, v, class_source(k, provenance.get(k), sources, result))
                       for k, v in sorted(classes.items(), key=lambda kv: (-kv[1], kv[0])))
    path = result.analysis.get("critical_path", {})
    band = _host_band(scn) if host_band and _host_bound(result.host_issue, path) else None
    return BlockResult(scn, iterations, step_ns, step_ns / iterations, op_classes, path, result.cost_model,
                       result.calibrated, result.host_issue, result, rec, built.host, band, sources,
                       result.profile, exposed_comm_per_iteration(rec, iterations))


HOST_BAND_BUSY = 0.9   # the slowest host run would keep the host thread busy this share of the run
HOST_BAND_PATH = 0.1   # or the host's issue is this share of the critical path (issue after each read-back)


def _host_bound(rec: "dict[str, Any] | None", path: "dict[str, Any] | None" = None) -> bool:
    """On a profile of several host runs, a run whose time moves with the host: the slowest run
    would keep the host thread busy for :data:`HOST_BAND_BUSY` of it, or the host's issue is
    :data:`HOST_BAND_PATH` of its critical path already (a program with device-to-host reads, where
    the GPU waits for the host after each)."""
    from moesim.analysis.host_issue import speed_span

    span = speed_span(rec)
    if span is None:
        return False
    on_path = (path or {}).get("by_category_ns", {}).get("host", 0) / max(1, (path or {}).get("makespan_ns") or 1)
    return (rec or {}).get("host_busy_fraction", 0.0) * span[1] >= HOST_BAND_BUSY or on_path >= HOST_BAND_PATH


def _host_band(scn: Scenario) -> tuple[float, float]:
    """Time per iteration at the profile's fastest and slowest host runs."""
    ends = [simulate_block(dataclasses.replace(scn, host_speed=end), host_band=False).time_per_iteration_ns
            for end in ("fastest", "slowest")]
    return float(min(ends)), float(max(ends))


def class_times_per_iteration(rec: Any, iterations: int, cost: Any = None) -> dict[str, float]:
    """GPU busy time per op class and iteration, mean over GPUs (see the module docstring);
    ``cost`` weighs the kernels of a task that lists its ops (``args["ops"]``)."""
    from moesim.engine.sim import HOST_STREAM

    totals: dict[str, float] = {}
    ranks: set[int] = set()
    for s in rec.spans:
        if s.rank is None:
            continue
        ranks.add(s.rank)
        duration = s.end_ns - s.start_ns
        for name, ns in _span_classes(s, HOST_STREAM, duration, cost):
            totals[name] = totals.get(name, 0.0) + ns
    scale = 1.0 / (max(1, len(ranks)) * max(1, iterations))
    return {k: v * scale for k, v in totals.items() if v > 0}


def _span_classes(s: Any, host_stream: str, duration: float, cost: Any = None) -> list[tuple[str, float]]:
    """A span's time by op class (:func:`moesim.lowering.op_classes.span_op_classes`)."""
    from moesim.lowering.op_classes import span_op_classes

    return span_op_classes(s, duration, cost, host_stream, HOST_CLASS)


# -- provenance ----------------------------------------------------------------------------------
def class_provenance(scn: Scenario, cost: Any, rec: Any = None) -> dict[str, str]:
    """Per op class: ``measured`` (the calibrated profile prices all its ops), ``roofline`` (a
    roofline cost model), ``roofline fallback`` (a calibrated profile without it) or ``mixed``,
    judged on the block's own ops (:func:`block_ops`) and the ops recorded tasks list."""
    from moesim.lowering.op_classes import op_class

    ops = {op: None for op in block_ops(scn)}
    for s in (rec.spans if rec is not None else ()):
        for op in (s.args or {}).get("ops") or ():
            ops.setdefault(op, None)
    seen: dict[str, set[str]] = {}
    for op in ops:
        seen.setdefault(op_class(op), set()).add(op_provenance(cost, op))
    return {k: (v.pop() if len(v) == 1 else "mixed") for k, v in seen.items()}


# op class (by prefix) -> the cost model's ``sources()`` key of its family (CalibratedCostModel.sources)
SOURCE_KEYS = (("comm:", "collectives"), ("grouped GEMM", "grouped gemm"), ("GEMM", "gemm"),
               ("attention", "attention"), ("memory:", "memory-bound"))


def class_source(name: str, provenance: "str | None", sources: dict[str, str], result: Any) -> str:
    """Where a class's costs come from, in the words of the cost model's ``sources()`` (what
    ``moesim run`` reports: ``measured (<device>)``, ``measured on <device> (borrowed)``,
    ``roofline``): a class whose ops the calibrated profile prices (``measured``), and every
    communication class, take its family's entry; ``roofline fallback``, ``measured stand-in`` and
    ``mixed`` classes keep that word; the host thread says how it was priced."""
    if name == HOST_CLASS:
        return (result.host_issue or {}).get("launch_source", "profile host figures")
    key = next((k for prefix, k in SOURCE_KEYS if name.startswith(prefix)), None)
    if provenance is None and not name.startswith("comm:"):
        provenance = "measured" if result.calibrated else "roofline"
    if not result.calibrated:
        return provenance or "roofline"
    if (provenance in (None, "measured")) and key in sources:
        return sources[key]
    return provenance or "roofline"


def exposed_comm_per_iteration(rec: Any, iterations: int) -> dict[str, float]:
    """Per communication class (``comm: <category>``), its time per iteration that no compute
    kernel of the same GPU overlaps, mean over GPUs; where several communication classes run at
    once the exposed time is split evenly between them, so compute plus exposed communication
    never exceeds the GPU's busy time."""
    from moesim.engine.sim import HOST_STREAM

    events: dict[int, list[tuple[int, int, str]]] = {}
    ranks: set[int] = set()
    for s in rec.spans:
        if s.rank is None:
            continue
        ranks.add(s.rank)
        if s.stream == HOST_STREAM or s.end_ns <= s.start_ns:
            continue
        name = "" if s.stream == "compute" else f"comm: {getattr(s, 'category', '')}"
        events.setdefault(s.rank, []).extend(((s.start_ns, 1, name), (s.end_ns, -1, name)))
    totals: dict[str, float] = {}
    for evs in events.values():
        evs.sort(key=lambda e: (e[0], e[1]))
        active: dict[str, int] = {}
        last = None
        for t, delta, name in evs:
            if last is not None and t > last and not active.get("", 0):
                comms = [k for k, n in active.items() if k and n > 0]
                for k in comms:
                    totals[k] = totals.get(k, 0.0) + (t - last) / len(comms)
            active[name] = active.get(name, 0) + delta
            last = t
    scale = 1.0 / (max(1, len(ranks)) * max(1, iterations))
    return {k: v * scale for k, v in totals.items()} | {k: 0.0 for k in _comm_names(rec) if k not in totals}


def _comm_names(rec: Any) -> set[str]:
    from moesim.engine.sim import HOST_STREAM

    return {f"comm: {getattr(s, 'category', '')}" for s in rec.spans
            if s.rank is not None and s.stream not in ("compute", HOST_STREAM) and s.end_ns > s.start_ns}


def op_provenance(cost: Any, op: Any) -> str:
    """Where ``cost`` gets ``op``'s time: ``measured``, ``measured stand-in`` (another measured
    kernel's curve, e.g. an unmeasured head_dim or SDPA call: the cost model's ``fallback_ops``
    names it), ``roofline`` or ``roofline fallback``.
    A calibrated model prices ``op`` afresh on a copy (its own cache and ``fallback_ops`` left as
    they are): a call of its fallback model records the op's type name in ``fallback_ops``
    (``CalibratedCostModel._fallback_compute``; stand-in curves are recorded under longer labels)."""
    if not getattr(cost, "calibrated", False):
        return "roofline"
    if getattr(cost, "fallback", None) is None:
        return "measured"
    probe = copy.copy(cost)
    probe._cache, probe.fallback_ops = {}, set()
    probe.compute_ns(op)
    name = type(op).__name__
    if name in probe.fallback_ops:
        return "roofline fallback"
    if any(f.startswith((name + " ", name + "[")) for f in probe.fallback_ops):   # a measured stand-in
        return "measured stand-in"
    return "measured"


def block_ops(scn: Scenario) -> list[Any]:
    """The compute ops of the block's layer on one GPU (balanced routing), forward and, for a
    training block, backward and the gradient adds."""
    from moesim.experiment.build import make_schedule, resolve_cost_model, resolve_model
    from moesim.lowering.grad_accumulation import accumulation_ops
    from moesim.lowering.stage_costs import StageTable
    from moesim.workload import layers as wl
    from moesim.workload.common import CommOp

    spec, plan = resolve_model(scn.model), scn.plan
    args = (spec, 0, plan.micro_batch_size, plan.tp, plan.sequence_parallel and plan.tp > 1, plan.ep)
    movement = scn.moe.token_movement
    program = list(wl.forward_program(*args, token_movement=movement))
    if scn.mode != "forward":
        program += wl.backward_input_program(*args, token_movement=movement) + wl.backward_weight_ops(*args)
        if scn.grad_accumulation in ("add", "add_every"):
            table = StageTable(spec, make_schedule(scn), resolve_cost_model("roofline", "H200"), tp=plan.tp,
                               micro_batch_size=plan.micro_batch_size, sequence_parallel=plan.sequence_parallel,
                               ep=plan.ep)
            program += accumulation_ops(table, 0, plan.grad_dtype_bytes)
    return [op for op in program if not isinstance(op, CommOp)]
