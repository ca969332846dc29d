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
from dataclasses import dataclass, field
from typing import Any, Mapping

from moesim.errors import ConfigError
from moesim.memory.config import MemoryConfig

DIMENSIONS = ("tp", "dp", "pp")
COST_MODELS = ("auto", "calibrated", "roofline")


@dataclass(frozen=True)
class ParallelPlan:
    """How the model is split over GPUs.

    ``ep`` groups that many consecutive DP replicas (same TP index and stage) into one
    expert-parallel group: the MoE layers' experts are spread over it and tokens cross it by
    all-to-all. ``order`` lists the parallel dimensions innermost first: ``"tp-dp-pp"`` puts the TP group
    on consecutive ranks (one NVLink island) and pipeline stages on different nodes.
    ``dp_overlap`` overlaps the data-parallel gradient reduction with the backward pass;
    ``p2p_overlap`` lets a stage compute while its pipeline sends are in flight (otherwise its
    next step waits for them, as Megatron without ``--overlap-p2p-communication``).
    ``grad_dtype_bytes`` is the size of one gradient element in the DP reduction.
    """

    tp: int = 1
    dp: int = 1
    pp: int = 1
    vpp: int = 1
    ep: int = 1
    sequence_parallel: bool = True
    micro_batch_size: int = 1
    num_microbatches: int = 8
    order: str = "tp-dp-pp"
    dp_overlap: bool = True
    p2p_overlap: bool = True
    grad_dtype_bytes: int = 4

    def __post_init__(self) -> None:
        for name in ("tp", "dp", "pp", "vpp", "ep", "micro_batch_size", "num_microbatches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"plan.{name}", f"must be an integer >= 1, got {value!r}")
        dims = self.order.split("-")
        if sorted(dims) != sorted(DIMENSIONS):
            raise ConfigError("plan.order", f"{self.order!r} is not an ordering of tp, dp, pp",
                              "write the three dimensions innermost first, e.g. 'tp-dp-pp'")
        if self.dp % self.ep:
            raise ConfigError("plan.ep", f"ep={self.ep} must divide dp={self.dp} (expert parallelism is carved "
                              "out of data parallelism)", f"use an ep among the divisors of {self.dp}")
        if self.grad_dtype_bytes not in (2, 4):
            raise ConfigError("plan.grad_dtype_bytes", f"must be 2 (bf16) or 4 (fp32), got {self.grad_dtype_bytes}")

    @property
    def world_size(self) -> int:
        return self.tp * self.dp * self.pp

    def rank(self, tp: int, dp: int, pp: int) -> int:
        """Global rank of the GPU at (tp, dp, pp) coordinates under ``order``."""
        coords = {"tp": tp, "dp": dp, "pp": pp}
        sizes = {"tp": self.tp, "dp": self.dp, "pp": self.pp}
        rank, stride = 0, 1
        for dim in self.order.split("-"):
            rank += coords[dim] * stride
            stride *= sizes[dim]
        return rank


@dataclass(frozen=True)
class MoEOptions:
    """Routing and expert placement of an MoE scenario.

    ``routing`` is a :class:`moesim.moe.routing.RoutingConfig` (None: every rank spreads its
    tokens evenly over all experts). ``placement`` names a strategy of
    :data:`moesim.moe.placement.PLACEMENTS`; ``num_redundant`` adds that many replica slots per
    EP group (load-balanced placements use them). The placement is computed from the routing
    statistics of step ``stats_step`` and the simulated step is ``step``, so drifting routing
    shows the cost of a stale placement.
    """

    routing: Any = None
    placement: str = "contiguous"
    num_redundant: int = 0
    replica_policy: str = "proportional"
    stats_step: int = 0
    step: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.num_redundant, int) or self.num_redundant < 0:
            raise ConfigError("moe.num_redundant", f"must be an integer >= 0, got {self.num_redundant!r}")


@dataclass(frozen=True)
class Scenario:
    """One simulation to run. See the module docstring. ``memory`` is a
    :class:`moesim.memory.MemoryConfig` (recompute, ZeRO stage...; recompute also adds the
    re-run forward work to every backward); ``faults``
    a :class:`moesim.experiment.faults.Faults` (stragglers, link faults, jitter)."""

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

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("scenario.name", "must be a non-empty string")
        if self.cost_model not in COST_MODELS:
            raise ConfigError("scenario.cost_model", f"unknown cost model {self.cost_model!r}",
                              f"use one of: {', '.join(COST_MODELS)}")
        if self.network not in ("fluid", "analytical"):
            raise ConfigError("scenario.network", f"unknown network mode {self.network!r}", "use 'fluid' or 'analytical'")
        if self.nodes is not None and (not isinstance(self.nodes, int) or self.nodes < 1):
            raise ConfigError("scenario.nodes", f"must be an integer >= 1, got {self.nodes!r}")

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Scenario":
        """A copy with dotted keys replaced, e.g. ``{"plan.num_microbatches": 16, "schedule": "zb-h1"}``."""
        scn = self
        for key, raw in overrides.items():
            scn = _replace_dotted(scn, key.split("."), raw, key)
        return scn


def _coerce(current: Any, raw: Any, key: str) -> Any:
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
        raise ConfigError(key, f"cannot read {raw!r} as {type(current).__name__}") from None
    return raw


def _replace_dotted(obj: Any, path: list[str], raw: Any, key: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(key, f"cannot set {'.'.join(path)} inside a {type(obj).__name__}")
    names = [f.name for f in dataclasses.fields(obj)]
    head = path[0]
    if head not in names:
        raise ConfigError(key, f"unknown field {head!r} of {type(obj).__name__}", f"use one of: {', '.join(names)}")
    current = getattr(obj, head)
    value = _coerce(current, raw, key) if len(path) == 1 else _replace_dotted(current, path[1:], raw, key)
    return dataclasses.replace(obj, **{head: value})
