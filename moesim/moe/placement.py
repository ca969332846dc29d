"""Expert placement strategies: which GPU holds which experts (and replicas).

Every strategy takes one :class:`PlacementInputs` and returns a
:class:`~moesim.moe.layout.Placement`; ``PLACEMENTS`` maps names to strategies and
:func:`make_placement` looks them up. Strategies:

- ``contiguous``: expert e on GPU ``e // (E / G)`` (the usual baseline);
- ``round_robin``: expert e on GPU ``e % G``;
- ``hash``: a seeded permutation of experts dealt round-robin (balanced slot counts);
- ``topology_aware``: keeps traffic inside nodes (:mod:`moesim.moe.topology_aware`);
- ``eplb``: DeepSeek EPLB exactly (:mod:`moesim.moe.eplb`), redundant replicas of hot experts;
- ``load_balanced``: EPLB, then slot swaps (inside nodes for the hierarchical policy) while
  the busiest GPU gets lighter; never a busier GPU than ``contiguous`` (see :func:`load_balanced`).

Loads of a replicated expert are assumed split evenly over its replicas when placing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from moesim.errors import ConfigError, unknown_name
from moesim.moe.eplb import check_eplb, rebalance_experts, refine_swaps, replicate_experts
from moesim.moe.layout import Placement, node_index
from moesim.moe.popularity import stream
from moesim.moe.topology_aware import place_topology_aware

_TAG_HASH = 301


def _as_array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if value is None:
        return None
    a = np.asarray(value, dtype=np.float64)
    if a.shape != shape:
        raise ConfigError(name, f"shape {a.shape}, expected {shape}", "pass one value per entry")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ConfigError(name, "holds negative or non-finite values", "pass token counts or loads >= 0")
    return a


@dataclass(frozen=True, kw_only=True, eq=False)
class PlacementInputs:
    """What a strategy may use.

    Attributes:
        num_experts, num_gpus: E logical experts over G GPUs (the EP group).
        host_of: node label of every GPU (topology_aware needs it; EPLB uses it for nodes).
        expert_load: ``[E]`` measured or predicted tokens per expert (EPLB's ``weight``).
        traffic: ``[G, E]`` tokens from each source rank (= GPU) to each expert.
        coactivation: ``[E, E]`` symmetric count of tokens selecting both experts.
        num_redundant: extra replica slots (EPLB); total slots E + num_redundant.
        num_groups: expert groups of group-limited routing (EPLB's hierarchical policy).
        max_slots_per_gpu: memory limit in expert slots per GPU (None: unlimited).
        seed: for ``hash``. balance_slack: node-load headroom for ``topology_aware``.
    """

    num_experts: int
    num_gpus: int
    host_of: tuple[Any, ...] | None = None
    expert_load: np.ndarray | None = None
    traffic: np.ndarray | None = None
    coactivation: np.ndarray | None = None
    num_redundant: int = 0
    num_groups: int = 1
    max_slots_per_gpu: int | None = None
    seed: int = 0
    balance_slack: float = 0.1

    def __post_init__(self) -> None:
        for field in ("num_experts", "num_gpus", "num_groups"):
            if getattr(self, field) < 1:
                raise ConfigError(field, f"must be >= 1, got {getattr(self, field)}")
        if self.num_redundant < 0:
            raise ConfigError("num_redundant", f"must be >= 0, got {self.num_redundant}")
        if self.host_of is not None:
            object.__setattr__(self, "host_of", tuple(self.host_of))
            if len(self.host_of) != self.num_gpus:
                raise ConfigError("host_of", f"{len(self.host_of)} entries for {self.num_gpus} GPUs",
                                  "give one node label per GPU")
        E, G = self.num_experts, self.num_gpus
        object.__setattr__(self, "expert_load", _as_array("expert_load", self.expert_load, (E,)))
        object.__setattr__(self, "traffic", _as_array("traffic", self.traffic, (G, E)))
        object.__setattr__(self, "coactivation", _as_array("coactivation", self.coactivation, (E, E)))
        if self.coactivation is not None and not np.allclose(self.coactivation, self.coactivation.T):
            raise ConfigError("coactivation", "is not symmetric", "pass counts of unordered expert pairs")
        if self.max_slots_per_gpu is not None and E + self.num_redundant > G * self.max_slots_per_gpu:
            raise ConfigError("num_redundant" if self.num_redundant else "max_slots_per_gpu",
                              f"{E} experts + {self.num_redundant} redundant replicas need more than the free "
                              f"{G} x {self.max_slots_per_gpu} slots", "lower num_redundant or add GPUs/memory")
        if self.balance_slack < 0:
            raise ConfigError("balance_slack", f"must be >= 0, got {self.balance_slack}")

    @property
    def node_of_gpu(self) -> np.ndarray:
        """Node number of every GPU (all on node 0 without ``host_of``)."""
        return node_index(self.host_of) if self.host_of is not None else np.zeros(self.num_gpus, dtype=np.int64)

    def load(self, strategy: str) -> np.ndarray:
        """Per-expert load: ``expert_load``, else the column sums of ``traffic``."""
        if self.expert_load is not None:
            return self.expert_load
        if self.traffic is not None:
            return self.traffic.sum(axis=0)
        raise ConfigError("expert_load", f"strategy {strategy!r} needs expert loads",
                          "pass expert_load (e.g. summed routing counts) or traffic")


def _no_replicas(inp: PlacementInputs, strategy: str) -> None:
    if inp.num_redundant:
        raise ConfigError("num_redundant", f"strategy {strategy!r} places no replicas",
                          "use 'load_balanced' or 'eplb' for redundant experts, or set num_redundant=0")


def _experts_per_gpu(inp: PlacementInputs, strategy: str) -> int:
    if inp.num_experts % inp.num_gpus:
        raise ConfigError("num_experts", f"{inp.num_experts} experts do not split evenly over {inp.num_gpus} GPUs "
                          f"for {strategy!r}", "use a GPU count that divides num_experts, or 'round_robin'/'hash'")
    return inp.num_experts // inp.num_gpus


def _every_gpu_used(inp: PlacementInputs, strategy: str) -> None:
    if inp.num_experts < inp.num_gpus:
        raise ConfigError("num_gpus", f"{inp.num_gpus} GPUs for {inp.num_experts} experts leave GPUs empty "
                          f"under {strategy!r}", "use 'load_balanced' with num_redundant to fill every GPU")


def _check_slots(placement: Placement, inp: PlacementInputs) -> Placement:
    if inp.max_slots_per_gpu is not None and max(placement.slots_per_gpu) > inp.max_slots_per_gpu:
        raise ConfigError("max_slots_per_gpu", f"a GPU needs {max(placement.slots_per_gpu)} slots",
                          "raise max_slots_per_gpu or use more GPUs")
    return placement


def _deal(order: np.ndarray, num_gpus: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(e) for e in order[g::num_gpus]) for g in range(num_gpus))


def contiguous(inp: PlacementInputs) -> Placement:
    """Expert e on GPU ``e // (E / G)``."""
    _no_replicas(inp, "contiguous")
    per = _experts_per_gpu(inp, "contiguous")
    slots = tuple(tuple(range(g * per, (g + 1) * per)) for g in range(inp.num_gpus))
    return _check_slots(Placement(inp.num_experts, inp.num_gpus, slots), inp)


def round_robin(inp: PlacementInputs) -> Placement:
    """Expert e on GPU ``e % G``."""
    _no_replicas(inp, "round_robin")
    _every_gpu_used(inp, "round_robin")
    return _check_slots(Placement(inp.num_experts, inp.num_gpus, _deal(np.arange(inp.num_experts), inp.num_gpus)), inp)


def hashed(inp: PlacementInputs) -> Placement:
    """A seeded permutation of the experts dealt round-robin: slot counts differ by at most one."""
    _no_replicas(inp, "hash")
    _every_gpu_used(inp, "hash")
    order = stream(inp.seed, _TAG_HASH).permutation(inp.num_experts)
    return _check_slots(Placement(inp.num_experts, inp.num_gpus, _deal(order, inp.num_gpus)), inp)


def _eplb_layout(inp: PlacementInputs) -> tuple[np.ndarray, np.ndarray, int]:
    """EPLB's ``phy2log`` in EPLB's GPU order, the map EPLB GPU -> our GPU, and nodes used."""
    node_of_gpu = inp.node_of_gpu
    num_nodes = int(node_of_gpu.max()) + 1
    num_replicas = inp.num_experts + inp.num_redundant
    check_eplb(inp.num_experts, num_replicas, inp.num_groups, num_nodes, inp.num_gpus)
    gpu_order = np.argsort(node_of_gpu, kind="stable")  # EPLB GPU i = i-th GPU in node order
    if (np.bincount(node_of_gpu) != inp.num_gpus // num_nodes).any():
        raise ConfigError("host_of", "nodes hold different numbers of GPUs", "give every node the same GPU count")
    phy2log, _, _ = rebalance_experts(inp.load("eplb")[None, :], num_replicas, inp.num_groups, num_nodes,
                                      inp.num_gpus)
    return phy2log[0], gpu_order, num_replicas // inp.num_gpus


def _from_eplb_order(phy2log: np.ndarray, gpu_order: np.ndarray, per_gpu: int, inp: PlacementInputs) -> Placement:
    slots: list[tuple[int, ...]] = [()] * inp.num_gpus
    for i, gpu in enumerate(gpu_order):
        slots[int(gpu)] = tuple(int(e) for e in phy2log[i * per_gpu:(i + 1) * per_gpu])
    return Placement(inp.num_experts, inp.num_gpus, tuple(slots))


def eplb(inp: PlacementInputs) -> Placement:
    """DeepSeek EPLB exactly: hierarchical if ``num_groups % nodes == 0``, else global."""
    return _check_slots(_from_eplb_order(*_eplb_layout(inp), inp), inp)


def max_gpu_load(placement: Placement, expert_load: np.ndarray) -> float:
    """Busiest GPU's load when each expert's load splits evenly over its replicas."""
    per_slot = expert_load[placement.slot_expert] / placement.replica_counts[placement.slot_expert]
    return float(np.bincount(placement.slot_gpu, weights=per_slot, minlength=placement.num_gpus).max())


def _refined(placement: Placement, load: np.ndarray, node_of_gpu: np.ndarray) -> Placement:
    weight = load[placement.slot_expert] / placement.replica_counts[placement.slot_expert]
    new_expert = refine_swaps(placement.slot_expert, placement.slot_gpu, weight, node_of_gpu)
    slots = tuple(tuple(int(e) for e in new_expert[placement.slot_gpu == g]) for g in range(placement.num_gpus))
    return Placement(placement.num_experts, placement.num_gpus, slots)


def _contiguous_with_local_replicas(inp: PlacementInputs, load: np.ndarray) -> Placement:
    """The contiguous layout plus ``num_redundant / G`` replicas per GPU of that GPU's own hottest
    experts (EPLB's replication rule, per GPU): every GPU keeps exactly its contiguous load."""
    per = _experts_per_gpu(inp, "load_balanced")
    extra = inp.num_redundant // inp.num_gpus
    slots = []
    for g in range(inp.num_gpus):
        own = np.arange(g * per, (g + 1) * per)
        phy2log, _, _ = replicate_experts(load[own], per + extra)
        slots.append(tuple(int(e) for e in own[phy2log]))
    return Placement(inp.num_experts, inp.num_gpus, tuple(slots))


def load_balanced(inp: PlacementInputs) -> Placement:
    """EPLB, refined by slot swaps between GPUs (inside nodes under the hierarchical policy);
    if the contiguous layout (given the same number of slots, as local replicas) refined the
    same way has a strictly lighter busiest GPU, that wins: never worse than contiguous."""
    load = inp.load("load_balanced")
    node_of_gpu = inp.node_of_gpu
    hierarchical = inp.num_groups % (int(node_of_gpu.max()) + 1) == 0
    domain = node_of_gpu if hierarchical else np.zeros_like(node_of_gpu)
    best = _refined(eplb(inp), load, domain)
    if inp.num_experts % inp.num_gpus == 0:
        baseline = _refined(_contiguous_with_local_replicas(inp, load), load, domain)
        if max_gpu_load(baseline, load) < max_gpu_load(best, load):
            best = baseline
    return _check_slots(best, inp)


def topology_aware(inp: PlacementInputs) -> Placement:
    """Experts grouped onto nodes to keep tokens local (see :mod:`moesim.moe.topology_aware`)."""
    _no_replicas(inp, "topology_aware")
    _experts_per_gpu(inp, "topology_aware")
    return _check_slots(place_topology_aware(inp), inp)


PLACEMENTS: dict[str, Callable[[PlacementInputs], Placement]] = {
    "contiguous": contiguous,
    "round_robin": round_robin,
    "hash": hashed,
    "topology_aware": topology_aware,
    "eplb": eplb,
    "load_balanced": load_balanced,
}
# strategies that read neither ``expert_load`` nor ``traffic``: no routing statistics needed
LOAD_FREE = frozenset({"contiguous", "round_robin", "hash"})


def make_placement(name: str, inputs: PlacementInputs) -> Placement:
    """Build the placement of strategy ``name`` (ConfigError listing the valid names if unknown,
    or not text: an unhashable name is a miss too, not a TypeError)."""
    if not isinstance(name, str) or name not in PLACEMENTS:
        raise unknown_name("placement", name, list(PLACEMENTS))
    return PLACEMENTS[name](inputs)
