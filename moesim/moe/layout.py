"""Where expert replicas live: the :class:`Placement` value and node bookkeeping.

A placement maps GPUs to the experts whose weights they hold: ``slots[g]`` lists GPU g's
experts, an expert may sit on several GPUs (replicas, as EPLB's redundant experts) and a GPU may
hold several experts. It is a plain validated value; strategies that build one live in
:mod:`moesim.moe.placement`, token splitting over replicas in :mod:`moesim.moe.dispatch`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from moesim.errors import ConfigError


def node_index(host_of: Sequence[Any]) -> np.ndarray:
    """Node number (0..N-1, in order of first appearance) of every GPU given its host label."""
    first: dict[Any, int] = {}
    return np.array([first.setdefault(h, len(first)) for h in host_of], dtype=np.int64)


@dataclass(frozen=True)
class Placement:
    """``slots[g]``: the experts (one entry per replica) held by GPU g."""

    num_experts: int
    num_gpus: int
    slots: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if self.num_experts < 1 or self.num_gpus < 1:
            raise ConfigError("num_experts" if self.num_experts < 1 else "num_gpus", "must be >= 1")
        slots = tuple(tuple(int(e) for e in gpu) for gpu in self.slots)
        object.__setattr__(self, "slots", slots)
        if len(slots) != self.num_gpus:
            raise ConfigError("slots", f"{len(slots)} GPU entries for num_gpus = {self.num_gpus}",
                              "give one tuple of experts per GPU")
        flat = [e for gpu in slots for e in gpu]
        if any(not 0 <= e < self.num_experts for e in flat):
            raise ConfigError("slots", f"expert id outside 0..{self.num_experts - 1}", "fix the expert ids")
        missing = sorted(set(range(self.num_experts)) - set(flat))
        if missing:
            raise ConfigError("slots", f"experts {missing[:10]} have no slot", "place every expert at least once")

    @classmethod
    def from_phy2log(cls, phy2log: Sequence[int], num_experts: int, num_gpus: int) -> "Placement":
        """From EPLB's physical-to-logical map: slot s lives on GPU ``s // (slots / num_gpus)``."""
        phy = [int(e) for e in phy2log]
        if len(phy) % num_gpus:
            raise ConfigError("num_gpus", f"{len(phy)} slots do not split evenly over {num_gpus} GPUs",
                              "use a slot count that is a multiple of num_gpus")
        per = len(phy) // num_gpus
        return cls(num_experts, num_gpus, tuple(tuple(phy[g * per:(g + 1) * per]) for g in range(num_gpus)))

    # -- derived views -------------------------------------------------------------------
    @functools.cached_property
    def slot_gpu(self) -> np.ndarray:
        """GPU of every slot, slots in GPU order."""
        return np.repeat(np.arange(self.num_gpus), [len(s) for s in self.slots])

    @functools.cached_property
    def slot_expert(self) -> np.ndarray:
        """Expert of every slot, slots in GPU order."""
        return np.array([e for gpu in self.slots for e in gpu], dtype=np.int64)

    @functools.cached_property
    def replica_counts(self) -> np.ndarray:
        """Replicas per expert (``[num_experts]``, each >= 1)."""
        return np.bincount(self.slot_expert, minlength=self.num_experts)

    def replicas(self, expert: int) -> tuple[int, ...]:
        """GPUs holding ``expert``, one entry per replica, in GPU order."""
        return tuple(int(g) for g in self.slot_gpu[self.slot_expert == expert])

    @property
    def slots_per_gpu(self) -> tuple[int, ...]:
        """Number of expert slots on each GPU."""
        return tuple(len(s) for s in self.slots)

    @property
    def num_slots(self) -> int:
        return int(self.slot_expert.size)

    @property
    def num_redundant(self) -> int:
        """Slots beyond one per expert (EPLB's redundant experts)."""
        return self.num_slots - self.num_experts

    def memory_bytes(self, expert_param_bytes: float) -> np.ndarray:
        """Expert-weight bytes on each GPU: its slot count times one expert's bytes."""
        return np.asarray(self.slots_per_gpu, dtype=np.float64) * float(expert_param_bytes)

    def home_nodes(self, node_of_gpu: np.ndarray) -> np.ndarray:
        """Per expert, the node holding most of its replicas (lowest node number on ties)."""
        node_of_gpu = np.asarray(node_of_gpu, dtype=np.int64)
        num_nodes = int(node_of_gpu.max()) + 1
        per_node = np.zeros((self.num_experts, num_nodes), dtype=np.int64)
        np.add.at(per_node, (self.slot_expert, node_of_gpu[self.slot_gpu]), 1)
        return per_node.argmax(axis=1)

    def describe(self) -> str:
        """One line per GPU: ``gpu 3: 12 40 40``."""
        return "\n".join(f"gpu {g}: " + " ".join(map(str, s)) for g, s in enumerate(self.slots))
