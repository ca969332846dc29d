"""The parallel plan: how a model is split over GPUs (tensor, data, pipeline, expert parallelism).

A :class:`ParallelPlan` is a ``Scenario`` field (``moesim.experiment.scenario`` re-exports it) and
what ``moesim.memory`` budgets against; it lives here, below both, so that the memory budget and
the ``moesim memory`` verb can build one without importing the experiment layer.
"""
from __future__ import annotations

from dataclasses import dataclass

from moesim.errors import ConfigError

DIMENSIONS = ("tp", "dp", "pp")


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
    ``pair_overlap`` interleaves the two halves of a DualPipe F&B pair so one microbatch's
    all-to-all hides behind the other's compute (False runs them one after the other).
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
    pair_overlap: bool = True

    def __post_init__(self) -> None:
        for name in ("tp", "dp", "pp", "vpp", "ep", "micro_batch_size", "num_microbatches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"plan.{name}", f"must be an integer >= 1, got {value!r}",
                                  "give a whole number such as 1")
        for name in ("sequence_parallel", "dp_overlap", "p2p_overlap", "pair_overlap"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"plan.{name}", f"must be true or false, got {getattr(self, name)!r}",
                                  f"write plan.{name}=true or plan.{name}=false")
        if not isinstance(self.order, str):
            raise ConfigError("plan.order", f"must be text, got {self.order!r}",
                              "write the three dimensions innermost first, e.g. 'tp-dp-pp'")
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
