"""Scenarios: one frozen object = hardware + model + parallel plan + schedule + run options.

A :class:`Scenario` names its topology (a file in ``topologies/`` or a path, plus a node count),
its model (a preset name from :mod:`moesim.workload.presets` or a spec object), a
:class:`ParallelPlan`, a pipeline schedule name, the cost model to use and the network mode.
Everything is validated at construction with errors that name the field and the fix; checks
that need the topology or the model (world size, divisibility) run in :func:`check_against`.
``with_overrides({"plan.num_microbatches": 16})`` returns a modified copy (the ``--set`` flag).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, Mapping

from moesim.costs.clock import check_clock
from moesim.costs.host_classes import check_host_speed
from moesim.errors import ConfigError
from moesim.experiment.faults import Faults
from moesim.lowering.host import host_mode
from moesim.lowering.overlap import OverlapOptions
from moesim.memory.config import MemoryConfig
from moesim.moe.routing import RoutingConfig
from moesim.workload.parallel import ParallelPlan

COST_MODELS = ("auto", "calibrated", "roofline")


ENGINES = ("full", "reduced")
MODES = ("train", "forward")
GRAD_ACCUMULATION = ("fused", "add", "add_every")


@dataclass(frozen=True)
class MoEOptions:
    """Routing and expert placement of an MoE scenario.

    ``routing`` is a :class:`moesim.moe.routing.RoutingConfig` (None: every rank spreads its
    tokens evenly over all experts). ``placement`` names a strategy of
    :data:`moesim.moe.placement.PLACEMENTS`; ``num_redundant`` adds that many replica slots per
    EP group (load-balanced placements use them). The placement is computed from the routing
    statistics of step ``stats_step`` and the simulated step is ``step``, so drifting routing
    shows the cost of a stale placement. ``dispatcher`` is how tokens cross the group:
    ``"alltoall"`` (one copy per selected expert, Megatron) or ``"deepep"`` (one copy per
    destination node over the scale-out network, forwarded over NVLink: :mod:`moesim.moe.deepep`).
    ``experts`` is how a GPU runs its local experts (``"grouped"``: one kernel per projection over
    all of them; ``"loop"``: a kernel chain per expert after the counts' copy to the host;
    ``"padded"``: every expert padded to ``capacity_factor``'s capacity, tokens over it dropped),
    ``token_movement`` whose router and permute / unpermute kernels run (``"torchtitan"``,
    ``"megatron"``, ``"fused"``): :mod:`moesim.workload.moe_exec`. ``grouped_gemm`` is how the
    grouped experts' GEMMs are issued: ``"torch"`` (one ``torch._grouped_mm`` kernel over all local
    experts) or ``"te"`` (Transformer Engine's, as Megatron-Core's ``TEGroupedMLP`` runs it on Hopper:
    one cuBLAS GEMM per expert over 4 streams), each priced from its own measured rows. ``framework_modules`` (Megatron's
    token movements): the layer runs through Megatron-Core's modules: their Python beyond the
    kernels' calls costs an eager host time where the profile measured it (``host_op`` classes
    ``megatron_moe_layer``, ``megatron_expert_mlp``), the alltoall dispatcher regroups each GPU's
    received tokens by local expert and back (two copies), and the ``megatron`` movement applies
    the probabilities inside the fused SwiGLU; False: Megatron's router and permute kernels issued
    by plain torch calls, as moesim's own harness programs issue them (per-op host costs, no
    regrouping, probabilities multiplied after the experts).
    """

    routing: Any = None
    placement: str = "contiguous"
    num_redundant: int = 0
    replica_policy: str = "proportional"
    stats_step: int = 0
    step: int = 1
    dispatcher: str = "alltoall"
    experts: str = "grouped"
    token_movement: str = "torchtitan"
    capacity_factor: float | None = None
    framework_modules: bool = True
    grouped_gemm: str = "torch"

    def __post_init__(self) -> None:
        from moesim.moe.deepep import DISPATCHERS

        if not isinstance(self.dispatcher, str) or self.dispatcher not in DISPATCHERS:
            raise ConfigError("moe.dispatcher", f"unknown dispatcher {self.dispatcher!r}",
                              f"use one of: {', '.join(DISPATCHERS)}")
        if self.routing is not None and not isinstance(self.routing, RoutingConfig):
            raise ConfigError("moe.routing", f"must be a RoutingConfig or None, got {self.routing!r}",
                              "give RoutingConfig(kind=...), or leave it out (None) for balanced routing")
        for name in ("placement", "replica_policy"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"moe.{name}", f"must be a strategy name, got {value!r}",
                                  f"give a name such as {_DEFAULT_NAMES[name]!r}")
        for name in ("num_redundant", "stats_step", "step"):
            _check_count(f"moe.{name}", getattr(self, name))
        if isinstance(self.framework_modules, str) and self.framework_modules.lower() in ("true", "false"):
            object.__setattr__(self, "framework_modules", self.framework_modules.lower() == "true")
        if not isinstance(self.framework_modules, bool):
            raise ConfigError("moe.framework_modules", f"must be true or false, got {self.framework_modules!r}",
                              "true: Megatron-Core's modules run the layer; false: plain torch calls")
        self._check_exec()

    def _check_exec(self) -> None:
        """``experts``, ``token_movement``, ``grouped_gemm`` and ``capacity_factor`` (text from
        ``--set`` read as a number); padding needs the plain all-to-all, no replicas and one
        capacity factor (its absence is refused when the scenario is built, so fields can be set
        one at a time)."""
        from moesim.workload.moe_exec import check_exec

        if isinstance(self.capacity_factor, str):
            try:
                object.__setattr__(self, "capacity_factor", float(self.capacity_factor))
            except ValueError:
                raise ConfigError("moe.capacity_factor", f"cannot read {self.capacity_factor!r} as a number",
                                  "give e.g. 1.25") from None
        check_exec(self.experts, self.token_movement, self.capacity_factor, need_capacity=False,
                   grouped_gemm=self.grouped_gemm)
        if self.experts != "padded":
            return
        if self.dispatcher != "alltoall" or self.num_redundant:
            raise ConfigError("moe.experts", "experts='padded' (Megatron's capacity padding) runs with the "
                              "'alltoall' dispatcher and no redundant experts",
                              "set moe.dispatcher='alltoall' and moe.num_redundant=0, or use experts='grouped'")
        routed_cf = getattr(self.routing, "capacity_factor", None)
        if routed_cf is not None and routed_cf != self.capacity_factor:
            raise ConfigError("moe.capacity_factor", f"{self.capacity_factor} differs from "
                              f"moe.routing.capacity_factor={routed_cf}", "give one capacity factor (moe.capacity_factor)")


@dataclass(frozen=True)
class Scenario:
    """One simulation to run. See the module docstring. ``memory`` is a
    :class:`moesim.memory.MemoryConfig` (recompute, ZeRO stage...; recompute also adds the
    re-run forward work to every backward); ``faults``
    a :class:`moesim.experiment.faults.Faults` (stragglers, link faults, jitter);
    ``overlap_slowdown`` replaces the cost model's compute-time multiplier while communication
    shares the GPU (None: the cost model's own, measured where the profile is calibrated).
    ``engine`` is ``"full"`` (every GPU lowered) or ``"reduced"`` (:mod:`moesim.scale`: symmetry
    and one event per collective phase, for expert-parallel runs of thousands of GPUs).
    ``host`` is ``"graphs"`` (the host has issued every task before the GPU needs it, as CUDA
    graphs do; ``"ahead"``, its older name, is accepted and stored as ``"graphs"``) or ``"eager"``
    (a host thread per GPU issues its tasks at measured eager host costs per op class, in both
    engines: :mod:`moesim.lowering.host`); ``host_launch_us`` replaces the per-op host costs by a
    flat host time per counted kernel, both where ``"eager"`` charges it and in the
    ``host_issue`` check. ``profile`` names the calibration profile that prices the ops (a JSON
    path, or a name looked up in ``moesim/profiles/``, ``MOESIM_PROFILE_PATH``, then
    ``~/.config/moesim/profiles``; None: the one ``cost_model`` picks for the GPU); a profile of
    another device is refused unless ``cost_model="calibrated"``.
    ``mode`` is ``"train"`` (forward, backward, gradient sync, optimizer) or ``"forward"`` (forward
    passes only: no backward, no gradient sync, no optimizer). ``optimizer=False`` drops the
    optimizer step, ``grad_sync=False`` the data-parallel gradient reduction (a layer microbenchmark
    runs neither). ``grad_accumulation`` is how weight gradients of microbatches after the first
    add up: ``"fused"`` inside the wgrad GEMM (Megatron's gradient_accumulation_fusion, no extra
    kernel), ``"add"`` (PyTorch autograd's ``.grad += g``: one add kernel per parameter tensor,
    :mod:`moesim.lowering.grad_accumulation`) or ``"add_every"`` (the same, with ``.grad`` kept
    from before the step, as a loop without ``zero_grad`` does: every microbatch adds). ``gpus_per_node`` replaces the topology file's
    GPUs per node (e.g. one GPU of a DGX H200). ``overlap`` holds the frameworks' communication-overlap
    switches under their Megatron names (:class:`moesim.lowering.overlap.OverlapOptions`).
    ``gpu_clock`` is ``"sustained"`` (the clock a GPU holds under training load, the calibrated
    profile's protocol) or ``"boost"`` (its maximum, as a short benchmark on a cool GPU sees:
    compute-bound kernels priced at that clock, :mod:`moesim.costs.clock`; the roofline, a
    datasheet peak, is the same in both). ``host_speed`` is the host CPU the eager host runs at:
    ``"mean"`` (the profile's host rows averaged over its runs, each on its own machine), or its
    ``"slowest"`` or ``"fastest"`` run (on the lent H100s they span about 0.74-1.33x the mean):
    every host issue time scales by that run's speed (:func:`moesim.costs.host_classes.run_speeds`),
    device-to-host copies do not."""

    name: str
    topology: str
    model: Any
    plan: ParallelPlan = field(default_factory=ParallelPlan)
    schedule: str = "1f1b"
    nodes: int | None = None
    cost_model: str = "auto"
    network: str = "fluid"
    seed: int = 0
    description: str = ""
    moe: MoEOptions = field(default_factory=MoEOptions)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    faults: Any = None
    overlap_slowdown: float | None = None
    engine: str = "full"
    host: str = "graphs"
    host_launch_us: float | None = None
    mode: str = "train"
    optimizer: bool = True
    grad_accumulation: str = "fused"
    grad_sync: bool = True
    gpus_per_node: int | None = None
    profile: str | None = None
    overlap: OverlapOptions = field(default_factory=OverlapOptions)
    gpu_clock: str = "sustained"
    host_speed: str = "mean"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("scenario.name", "must be a non-empty string", "give the scenario a short name")
        if not isinstance(self.cost_model, str) or self.cost_model not in COST_MODELS:
            raise ConfigError("scenario.cost_model", f"unknown cost model {self.cost_model!r}",
                              f"use one of: {', '.join(COST_MODELS)}")
        if not isinstance(self.network, str) or self.network not in ("fluid", "analytical"):
            raise ConfigError("scenario.network", f"unknown network mode {self.network!r}",
                              "use 'fluid' or 'analytical'")
        _check_size("scenario.nodes", self.nodes, "give a node count, or leave it out for the topology file's own")
        if self.profile is not None and (not isinstance(self.profile, (str, os.PathLike)) or not str(self.profile)):
            raise ConfigError("scenario.profile", f"must be a profile path or name, got {self.profile!r}",
                              "give a JSON path or a name on the profile search path (moesim/profiles, "
                              "MOESIM_PROFILE_PATH, ~/.config/moesim/profiles), or leave it out")
        if self.profile is not None:
            object.__setattr__(self, "profile", str(self.profile))
        check_clock(self.gpu_clock, "scenario.gpu_clock")
        check_host_speed(self.host_speed, "scenario.host_speed")
        self._check_types()

    def _check_types(self) -> None:
        """Each field holds the kind of object the build reads (a text ``seed`` or ``memory=None``
        would otherwise fail deep inside the build with a bare traceback)."""
        if not isinstance(self.topology, (str, os.PathLike)) or not str(self.topology):
            raise ConfigError("scenario.topology", f"must be a topology name or a file path, got {self.topology!r}",
                              "give a shipped name such as 'dgx_h100' or a path to a YAML file")
        if not (isinstance(self.model, str) and self.model
                or isinstance(getattr(self.model, "num_layers", None), int)):
            raise ConfigError("scenario.model", f"{self.model!r} is not a model",
                              "give a preset name such as 'llama3-8b' or a model spec")
        if not isinstance(self.schedule, str) or not self.schedule:
            raise ConfigError("scenario.schedule", f"must be a schedule name, got {self.schedule!r}",
                              "give a name such as '1f1b' (see moesim.schedules.registry.SCHEDULES)")
        _check_count("scenario.seed", self.seed)
        if not isinstance(self.description, str):
            raise ConfigError("scenario.description", f"must be text, got {self.description!r}",
                              "give a short sentence, or leave it out")
        for name, kind, fix in _GROUPS:
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise ConfigError(f"scenario.{name}", f"must be a {kind.__name__}, got {value!r}", fix)
        if not isinstance(self.engine, str) or self.engine not in ENGINES:
            raise ConfigError("scenario.engine", f"unknown engine {self.engine!r}",
                              "use 'full' (every GPU lowered) or 'reduced' (moesim.scale: symmetry and per-phase "
                              "events, for expert-parallel runs of thousands of GPUs)")
        _check_optional_number("scenario.overlap_slowdown", self.overlap_slowdown, "[1, 10)", lambda x: 1.0 <= x < 10.0,
                               "give e.g. 1.2 (compute 20% slower under communication), or leave it out")
        if host_mode(self.host) is None:
            raise ConfigError("scenario.host", f"unknown host mode {self.host!r}",
                              "use 'graphs' (the host issues ahead of the GPU, as CUDA graphs; 'ahead' is the same) "
                              "or 'eager' (a simulated host thread per GPU at measured eager host costs per op class)")
        object.__setattr__(self, "host", host_mode(self.host))   # 'ahead' is stored and printed as 'graphs'
        _check_optional_number("scenario.host_launch_us", self.host_launch_us, "(0, 10000] us",
                               lambda x: 0.0 < x <= 10_000.0,
                               "give your host's eager time per counted kernel (replaces the per-op host costs), "
                               "e.g. 40.0, or leave it out for the profile's")
        if self.host_launch_us is not None and self.host_speed != "mean":
            raise ConfigError("scenario.host_speed", f"{self.host_speed!r} given with scenario.host_launch_us "
                              f"{self.host_launch_us} (your own flat host figure, which no profile run scales)",
                              "drop one of them: host_launch_us prices your host, host_speed picks a profile run's")
        self._check_step_options()
        if self.faults is not None and not isinstance(self.faults, Faults):
            raise ConfigError("scenario.faults", f"must be a Faults or None, got {self.faults!r}",
                              "give Faults(...) (moesim.experiment.faults), or leave it out for no faults")

    def _check_step_options(self) -> None:
        """``mode``, ``optimizer``, ``grad_accumulation``, ``grad_sync`` and ``gpus_per_node``
        (see the class docstring); the reduced engine refuses what it does not lower."""
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ConfigError("scenario.mode", f"unknown mode {self.mode!r}",
                              "use 'train' (forward, backward, gradient sync, optimizer) or 'forward' (forward passes only)")
        if not isinstance(self.grad_accumulation, str) or self.grad_accumulation not in GRAD_ACCUMULATION:
            raise ConfigError("scenario.grad_accumulation", f"unknown gradient accumulation {self.grad_accumulation!r}",
                              "use 'fused' (inside the wgrad GEMM, Megatron's gradient_accumulation_fusion), 'add' "
                              "(PyTorch autograd's .grad += g, one add kernel per parameter tensor) or 'add_every' "
                              "(.grad kept from before the step: every microbatch adds)")
        for name in ("optimizer", "grad_sync"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"scenario.{name}", f"must be true or false, got {getattr(self, name)!r}",
                                  f"write {name}=true or {name}=false")
        _check_size("scenario.gpus_per_node", self.gpus_per_node,
                    "give a GPU count per node, or leave it out for the topology file's own")
        if self.engine == "reduced":
            for name, default in (("optimizer", True), ("grad_sync", True), ("grad_accumulation", "fused"),
                                  ("gpus_per_node", None)):
                if getattr(self, name) != default:
                    raise ConfigError(f"scenario.{name}", f"{name}={getattr(self, name)!r} is not lowered by the "
                                      "reduced engine (it always syncs gradients and steps the optimizer, with fused "
                                      "accumulation, on the topology's own nodes)",
                                      f"use engine='full', or leave {name} at its default with the reduced engine")

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Scenario":
        """A copy with dotted keys replaced, e.g. ``{"plan.num_microbatches": 16, "schedule": "zb-h1"}``.
        Every key is applied before any config checks its fields, so settings that only agree
        together (``plan.dp=4 plan.ep=4``) are accepted in any order."""
        tree: dict[str, Any] = {}
        for key, raw in overrides.items():
            if not isinstance(key, str) or not key.strip():
                raise ConfigError(repr(key), "is not a field name",
                                  "write a dotted field path, e.g. plan.num_microbatches=16")
            node = tree
            for part in key.split("."):
                node = node.setdefault(part, {})
            node[_VALUE] = (raw, key)
        return _replace_tree(self, tree, "")


_EMPTY_DEFAULTS = {"faults": Faults}   # None and the empty config are the same scenario: --set fills it in
_VALUE = object()  # the key of a value set at this node of :meth:`Scenario.with_overrides`' tree


def _replace_tree(obj: Any, tree: dict, prefix: str) -> Any:
    """``obj`` with every field the override ``tree`` names replaced, in one ``dataclasses.replace``
    per config object (its checks see all of its new fields at once)."""
    if obj is None and prefix[:-1] in _EMPTY_DEFAULTS:   # an unset config whose empty form means the same
        obj = _EMPTY_DEFAULTS[prefix[:-1]]()
    if obj is None:
        key = next(_keys(tree))
        parent = prefix[:-1]
        first = {"moe.routing": "e.g. routing: {kind: zipf, zipf_s: 1.2} in a scenario file, or "
                                "MoEOptions(routing=...) in an experiment",
                 "faults": "Faults(slow_gpus={3: 1.3}) in the experiment file, or faults: {slow_gpus: {3: 1.3}} in "
                           "a scenario file"}.get(parent, f"{parent} in the experiment or scenario file")
        raise ConfigError(key, f"{parent} is not set (None: its default), so it has no field "
                          f"{key[len(prefix):].split('.')[0]!r}", f"set {parent} itself first ({first}), then {key}")
    if not dataclasses.is_dataclass(obj):
        key = next(_keys(tree))
        raise ConfigError(key, f"cannot set {key[len(prefix):]} inside a {type(obj).__name__}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for head, sub in tree.items():
        if head not in fields:
            raise ConfigError(next(_keys(sub)), f"unknown field {head!r} of {type(obj).__name__}",
                              f"use one of: {', '.join(fields)}")
        value = getattr(obj, head)
        if _VALUE in sub:
            raw, key = sub[_VALUE]
            value = _coerce(value, raw, key, fields[head].type)
        children = {k: v for k, v in sub.items() if k is not _VALUE}
        if children:
            value = _replace_tree(value, children, f"{prefix}{head}.")
        changes[head] = value
    try:
        return dataclasses.replace(obj, **changes)
    except ConfigError as err:
        if err.field in changes and prefix:
            # a config's own check names its field alone: name the whole path that was set
            raise ConfigError(prefix + err.field, err.problem, err.fix, source=err.source) from None
        raise


def _keys(tree: dict):
    """The dotted keys set inside an override tree, as given (for messages)."""
    for head, sub in tree.items():
        yield from ([sub[1]] if head is _VALUE else _keys(sub))


_GROUPS = (  # Scenario fields holding a config object: (field, its class, the fix)
    ("plan", ParallelPlan, "give ParallelPlan(...), or set one of its fields, e.g. plan.tp"),
    ("moe", MoEOptions, "give MoEOptions(...), or set one of its fields, e.g. moe.placement"),
    ("overlap", OverlapOptions, "give OverlapOptions(...) (moesim.lowering.overlap), or set one of its fields, "
                                "e.g. overlap.overlap_moe_expert_parallel_comm"),
    ("memory", MemoryConfig, "give MemoryConfig(...), or leave it out for the defaults, or set one of its fields, "
                             "e.g. memory.recompute"),
)
_DEFAULT_NAMES = {"placement": "contiguous", "replica_policy": "proportional"}


def _check_optional_number(field_name: str, value: Any, interval: str, inside: Callable[[float], bool], fix: str) -> None:
    """None, or a number (not a bool) for which ``inside`` holds; else ConfigError quoting ``interval``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not inside(value)):
        raise ConfigError(field_name, f"must be a number in {interval}, got {value!r}", fix)


def _check_size(field_name: str, value: Any, fix: str) -> None:
    """None (the topology file's own), or a whole number >= 1 (not a bool)."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(field_name, f"must be an integer >= 1, got {value!r}", fix)


def _check_count(field_name: str, value: Any) -> None:
    """A whole number >= 0 (not a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(field_name, f"must be an integer >= 0, got {value!r}", "give a whole number such as 0")


def _settable_field(obj: Any) -> str:
    """The first field of dataclass ``obj`` that ``--set`` can change directly (a plain value)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is not None and not dataclasses.is_dataclass(value):
            return f.name
    return dataclasses.fields(obj)[0].name


def _coerce(current: Any, raw: Any, key: str, hint: Any = None) -> Any:
    if key == "model" and isinstance(raw, str):
        return raw   # a model preset name, as a scenario may give it (checked when the scenario is built)
    if isinstance(raw, str) and dataclasses.is_dataclass(current):
        raise ConfigError(key, f"cannot replace the whole {type(current).__name__} with the text {raw!r}",
                          f"set one of its fields, e.g. {key}.{_settable_field(current)}=...")
    if current is None and isinstance(raw, str) and "float" in str(hint) and not raw.isdigit():
        # an optional number left unset (e.g. moe.routing.capacity_factor=1.25): read it as a
        # number; the text reached the config's check and was refused as "not a number > 0"
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(key, f"cannot read {raw!r} as a number") from None
    if not isinstance(raw, str) or isinstance(current, str) or current is None and not raw.isdigit():
        return raw
    try:
        if isinstance(current, bool) or raw.lower() in ("true", "false"):
            if raw.lower() not in ("true", "false"):
                raise ValueError
            return raw.lower() == "true"
        if isinstance(current, int) or current is None:
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except ValueError:
        kind = "true or false" if isinstance(current, bool) else "a whole number" if isinstance(current, int) else "a number"
        raise ConfigError(key, f"cannot read {raw!r} as {type(current).__name__}", f"give {kind}, e.g. {key}={str(current).lower()}"
                          if current is not None else f"give {kind}") from None
    return raw
