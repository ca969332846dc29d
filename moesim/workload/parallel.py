"""The parallel plan: how a model is split over GPUs (tensor, data, pipeline, expert parallelism).

A :class:`ParallelPlan` is a ``Scenario`` field (``moesim.experiment.scenario`` re-exports it) and
what ``moesim.memory`` budgets against; it lives here, below both, so that the memory budget and
the ``moesim memory`` verb can build one without importing the experiment layer.
"""
from __future__ import annotations

from dataclasses import dataclass

from moesim.errors import ConfigError

DIMENSIONS = ("tp", "dp", "pp")
EP_LAYOUTS = ("strided", "folded")


@dataclass(frozen=True)
class ParallelPlan:
    """How the model is split over GPUs.

    ``ep`` GPUs of a stage form one expert-parallel group: the MoE layers' experts are spread
    over it (whole experts, ``num_experts / ep`` a GPU) and tokens cross it by all-to-all. Which
    GPUs, ``ep_layout``:

    * ``"strided"`` (default): one set of EP groups per TP index, each ``ep`` consecutive DP
      replicas of that index (``ep`` divides ``dp``): EP ranks strided by ``tp``, where
      Megatron-Core places them when expert TP equals TP.
    * ``"folded"``: MoE parallel folding, Megatron-Core's ``--expert-tensor-parallel-size 1``: the
      stage's ``tp * dp`` GPUs numbered TP innermost (``dp_index * tp + tp_index``) and EP group
      ``k`` holds numbers ``k ep .. (k+1) ep - 1``, so whole TP groups (``ep`` a multiple of
      ``tp`` dividing ``tp * dp``). The GPUs holding the same experts (expert data
      parallelism) are then ``tp * dp / ep``, one per EP group.

    Either way each GPU routes its own ``micro_batch_size * seq_len / tp`` tokens (sequence
    parallel). ``order`` lists the parallel dimensions innermost first: ``"tp-dp-pp"`` puts the TP group
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
    ep_layout: str = "strided"

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
        if self.ep_layout not in EP_LAYOUTS:
            raise ConfigError("plan.ep_layout", f"unknown EP layout {self.ep_layout!r}",
                              f"use one of {', '.join(EP_LAYOUTS)}")
        if self.ep_layout == "folded" and self.ep > 1:   # ep 1: no groups to fold, either layout
            if self.ep % self.tp or (self.tp * self.dp) % self.ep:
                raise ConfigError("plan.ep", f"ep={self.ep} with ep_layout='folded' must be a multiple of tp={self.tp} "
                                  f"dividing tp*dp={self.tp * self.dp} (an EP group holds whole TP groups)",
                                  f"use an ep among the multiples of {self.tp} that divide {self.tp * self.dp}")
        elif self.dp % self.ep:
            raise ConfigError("plan.ep", f"ep={self.ep} must divide dp={self.dp} (with ep_layout='strided' expert "
                              "parallelism is carved out of each TP index's data parallelism)",
                              f"use an ep among the divisors of {self.dp}, or ep_layout='folded' (EP groups "
                              f"over tp*dp = {self.tp * self.dp} GPUs, Megatron's expert TP 1)")
        if self.grad_dtype_bytes not in (2, 4):
            raise ConfigError("plan.grad_dtype_bytes", f"must be 2 (bf16) or 4 (fp32), got {self.grad_dtype_bytes}")

    @property
    def ep_dp_span(self) -> int:
        """DP indices one EP group spans (at every TP index it covers): ``ep`` strided,
        ``ep / tp`` folded."""
        return ep_dp_span(self.tp, self.ep, self.ep_layout)

    @property
    def expert_tp(self) -> int:
        """Tensor parallelism inside each routed expert, as the layout implies it (Megatron's
        ``--expert-tensor-parallel-size``): the strided layout, EP inside each TP index's data
        parallelism, is Megatron's default expert TP = TP (each GPU holds 1/tp of its experts'
        weights; its kernels are priced as whole experts on its own tokens, the same FLOPs); the
        folded layout is expert TP 1 (whole experts). 1 without experts' EP or TP."""
        return self.tp if self.ep_layout == "strided" and self.tp > 1 and self.ep > 1 else 1

    @property
    def expert_dp(self) -> int:
        """The expert-data-parallel group: the GPUs of one TP index holding the same experts, one per
        EP group, whose expert gradients reduce together (``dp / ep_dp_span``)."""
        return self.dp // self.ep_dp_span

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


def ep_dp_span(tp: int, ep: int, layout: str = "strided") -> int:
    """DP indices one EP group spans: ``ep`` strided, ``ep / tp`` folded (``ep`` 1: nothing to fold)."""
    return ep // tp if layout == "folded" and ep > 1 else ep


def ep_group(tp: int, ep: int, layout: str = "strided", tp_index: int = 0, index: int = 0) -> list[tuple[int, int]]:
    """EP group ``index`` of one pipeline stage as ``(dp index, tp index)`` members in EP-rank
    order (see :class:`ParallelPlan`): strided, the group at TP index ``tp_index``; folded, whole
    TP groups (``tp_index`` unused)."""
    span = ep_dp_span(tp, ep, layout)
    dps = range(index * span, (index + 1) * span)
    if layout == "folded" and ep > 1:
        return [(d, t) for d in dps for t in range(tp)]
    return [(d, tp_index) for d in dps]


def ep_group_members(tp: int, dp: int, ep: int,
                     layout: str = "strided") -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Every EP group of one pipeline stage as ``(tp key, group index, members)``
    (:func:`ep_group`). The tp key is the TP index of a strided group and 0 for a folded one (it
    spans every TP index); the group index counts groups of that key."""
    keys = [0] if layout == "folded" and ep > 1 else range(tp)
    return [(t, k, ep_group(tp, ep, layout, t, k)) for t in keys for k in range(dp // ep_dp_span(tp, ep, layout))]
