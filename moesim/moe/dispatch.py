"""Token dispatch over replicas: which GPU computes each source rank's tokens for each expert.

:func:`split_to_gpus` divides ``counts[src_rank, expert]`` among the expert's replicas of a
:class:`~moesim.moe.layout.Placement`. Source rank r is GPU r of the placement (the EP ranks are
the GPUs). Policies:

- ``proportional``: every source spreads its tokens evenly over all replicas;
- ``round_robin``: source r sends all its tokens for an expert to replica ``r mod replicas``
  (a static per-rank choice, like SGLang's static EPLB dispatch);
- ``nearest``: the replicas on the source's own GPU, else on its node (``host_of``), else all,
  share the tokens evenly.

Integer tokens are conserved exactly: an even split gives ``count // n`` to each replica and the
``count mod n`` leftovers to the replicas ``(rank + offset) mod n``, a deterministic
largest-remainder rounding whose rotation keeps any replica from being favoured. The result is
per (source, slot); per (source, GPU) and per (GPU, expert) totals are derived from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from moesim.errors import ConfigError, unknown_name
from moesim.moe.layout import Placement, node_index

SPLIT_POLICIES = ("proportional", "round_robin", "nearest")


@dataclass(frozen=True)
class TokenSplit:
    """``src_slot[src_rank, slot]`` tokens, slots as in ``placement.slot_gpu/slot_expert``."""

    placement: Placement
    src_slot: np.ndarray

    @property
    def src_gpu(self) -> np.ndarray:
        """``[src_rank, gpu]`` tokens each source sends to each GPU (dispatch message sizes)."""
        out = np.zeros((self.src_slot.shape[0], self.placement.num_gpus), dtype=np.int64)
        np.add.at(out.T, self.placement.slot_gpu, self.src_slot.T)
        return out

    @property
    def gpu_expert(self) -> np.ndarray:
        """``[gpu, expert]`` tokens each GPU computes for each expert (its replica's batch)."""
        out = np.zeros((self.placement.num_gpus, self.placement.num_experts), dtype=np.int64)
        np.add.at(out, (self.placement.slot_gpu, self.placement.slot_expert), self.src_slot.sum(axis=0))
        return out

    @property
    def gpu_load(self) -> np.ndarray:
        """``[gpu]`` tokens each GPU computes."""
        return self.src_slot.sum(axis=0) @ np.eye(self.placement.num_gpus, dtype=np.int64)[self.placement.slot_gpu]

    def dense(self) -> np.ndarray:
        """``[src_rank, gpu, expert]`` (memory grows as ranks x GPUs x experts: small cases)."""
        out = np.zeros((self.src_slot.shape[0], self.placement.num_gpus, self.placement.num_experts), dtype=np.int64)
        for slot, (g, e) in enumerate(zip(self.placement.slot_gpu, self.placement.slot_expert)):
            out[:, g, e] += self.src_slot[:, slot]
        return out


def _even_share(count: np.ndarray, eligible: np.ndarray, rank_in_set: np.ndarray,
                set_size: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Split ``count`` evenly over the eligible replicas, leftovers to rotating replicas."""
    n = np.maximum(set_size, 1)
    base, rem = np.divmod(count, n)
    extra = (rank_in_set - offset) % n < rem
    return np.where(eligible, base + extra, 0)


def _segment_rank(eligible: np.ndarray, expert_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For slots sorted by expert: rank of each eligible slot among its expert's eligible slots
    and the eligible-slot count of its expert, per source row."""
    starts = np.flatnonzero(np.r_[True, expert_sorted[1:] != expert_sorted[:-1]])
    cum = np.cumsum(eligible, axis=1)
    before = np.concatenate([np.zeros((eligible.shape[0], 1), dtype=cum.dtype), cum[:, starts[1:] - 1]], axis=1)
    seg = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, expert_sorted.size]))
    rank = cum - before[:, seg] - 1
    size = np.add.reduceat(eligible.astype(np.int64), starts, axis=1)[:, seg]
    return rank, size


def _tiers(placement: Placement, num_src: int, host_of: Sequence[Any] | None) -> np.ndarray:
    """``[src, slot]`` distance tier: 0 same GPU, 1 same node, 2 elsewhere."""
    src = np.arange(num_src)[:, None]
    tier = np.where(placement.slot_gpu[None, :] == src, 0, 2)
    if host_of is not None:
        node = node_index(host_of)
        same_node = node[placement.slot_gpu][None, :] == node[:num_src][:, None]
        tier = np.where((tier == 2) & same_node, 1, tier)
    return tier


def _nearest_only(tier: np.ndarray, expert_sorted: np.ndarray) -> np.ndarray:
    """``[src, slot]`` True for the slots in the best (lowest) tier among their expert's slots."""
    starts = np.flatnonzero(np.r_[True, expert_sorted[1:] != expert_sorted[:-1]])
    segment = np.searchsorted(starts, np.arange(expert_sorted.size), "right") - 1
    return tier == np.minimum.reduceat(tier, starts, axis=1)[:, segment]


def _check_split(counts: np.ndarray, placement: Placement, policy: str, host_of: Sequence[Any] | None) -> None:
    if policy not in SPLIT_POLICIES:
        raise unknown_name("policy", policy, SPLIT_POLICIES)
    if counts.ndim != 2 or counts.shape[1] != placement.num_experts:
        raise ConfigError("counts", f"shape {counts.shape} is not [src_rank, {placement.num_experts} experts]",
                          "pass one (layer, microbatch) sample")
    if policy == "nearest" and counts.shape[0] > placement.num_gpus:
        raise ConfigError("counts", f"{counts.shape[0]} source ranks but {placement.num_gpus} GPUs",
                          "source rank r must be GPU r of the placement for policy 'nearest'")
    if host_of is not None and len(host_of) != placement.num_gpus:
        raise ConfigError("host_of", f"{len(host_of)} entries for {placement.num_gpus} GPUs", "one node per GPU")


def split_to_gpus(counts: np.ndarray, placement: Placement, policy: str = "proportional",
                  host_of: Sequence[Any] | None = None) -> TokenSplit:
    """Divide ``counts[src_rank, expert]`` among replicas (see the module docstring)."""
    counts = np.asarray(counts, dtype=np.int64)
    _check_split(counts, placement, policy, host_of)
    order = np.argsort(placement.slot_expert, kind="stable")  # slots grouped by expert
    expert = placement.slot_expert[order]
    src = np.arange(counts.shape[0])[:, None]
    if policy == "nearest":
        eligible = _nearest_only(_tiers(placement, counts.shape[0], host_of)[:, order], expert)
    else:
        eligible = np.ones((counts.shape[0], expert.size), dtype=bool)
    rank, size = _segment_rank(eligible, expert)
    if policy == "round_robin":
        eligible = rank == src % size
        rank, size = np.zeros_like(rank), np.ones_like(size)
    sorted_share = _even_share(counts[:, expert], eligible, rank, size, src + expert[None, :])
    share = np.empty_like(sorted_share)
    share[:, order] = sorted_share
    return TokenSplit(placement, share)
