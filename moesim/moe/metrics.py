"""Balance and locality metrics of routing samples and placements (pure numpy).

Loads: per expert, per GPU through a placement (integer split with a policy, or the even split
EPLB assumes). Balance: max/mean (the straggler factor: the MoE layer ends when the busiest GPU
does), vLLM's balancedness (sum of means / sum of maxes over layers, 1.0 is perfect), the
coefficient of variation and the Gini coefficient (reference moe_and_hardware.md §3.4).
Locality: token-expert pairs crossing nodes and their bytes (dispatch + combine, one copy per
pair as the workload's all-to-all sizes count them), and the nodes each token reaches.
Source rank r is GPU r of the placement throughout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from moesim.moe.dispatch import split_to_gpus
from moesim.moe.layout import Placement, node_index


def expert_load(counts: np.ndarray) -> np.ndarray:
    """``[experts]`` tokens per expert, summed over every leading axis of ``counts[..., expert]``."""
    counts = np.asarray(counts)
    return counts.reshape(-1, counts.shape[-1]).sum(axis=0)


def placement_gpu_load(load: np.ndarray, placement: Placement) -> np.ndarray:
    """``[gpu]`` load when each expert's ``load`` splits evenly (fractionally) over its replicas."""
    load = np.asarray(load, dtype=np.float64)
    per_slot = load[placement.slot_expert] / placement.replica_counts[placement.slot_expert]
    return np.bincount(placement.slot_gpu, weights=per_slot, minlength=placement.num_gpus)


def gpu_load(counts: np.ndarray, placement: Placement, policy: str = "proportional",
             host_of: Sequence[Any] | None = None) -> np.ndarray:
    """``[gpu]`` integer tokens computed per GPU for one sample ``counts[src_rank, expert]``."""
    return split_to_gpus(counts, placement, policy, host_of).gpu_load


def max_over_mean(values: np.ndarray) -> float:
    """Busiest over average (1.0 = perfect; 0 loads give 1.0)."""
    v = np.asarray(values, dtype=np.float64)
    mean = v.mean()
    return float(v.max() / mean) if mean > 0 else 1.0


def balancedness(loads: np.ndarray) -> float:
    """vLLM EPLB balancedness: ``sum_layers mean / sum_layers max`` of ``loads[(layer,) gpu]``."""
    v = np.atleast_2d(np.asarray(loads, dtype=np.float64))
    top = v.max(axis=1).sum()
    return float(v.mean(axis=1).sum() / top) if top > 0 else 1.0


def coefficient_of_variation(values: np.ndarray) -> float:
    """Standard deviation over mean (0 = perfect)."""
    v = np.asarray(values, dtype=np.float64)
    mean = v.mean()
    return float(v.std() / mean) if mean > 0 else 0.0


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = equal, toward 1 = one holds all)."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    total = v.sum()
    if total <= 0:
        return 0.0
    n = v.size
    return max(0.0, float((2.0 * np.arange(1, n + 1) - n - 1) @ v / (n * total)))  # >= 0 up to round-off


@dataclass(frozen=True)
class LoadStats:
    """Summary of one load vector."""

    max: float
    mean: float
    max_over_mean: float
    balancedness: float
    cv: float
    gini: float


def load_stats(values: np.ndarray) -> LoadStats:
    v = np.asarray(values, dtype=np.float64)
    return LoadStats(float(v.max()), float(v.mean()), max_over_mean(v), balancedness(v),
                     coefficient_of_variation(v), gini(v))


def cross_node_tokens(src_gpu: np.ndarray, host_of: Sequence[Any]) -> int:
    """Token-expert pairs whose computing GPU is on another node than their source rank."""
    node = node_index(host_of)
    src_gpu = np.asarray(src_gpu)
    remote = node[: src_gpu.shape[0]][:, None] != node[None, :]
    return int(src_gpu[remote].sum())


def fraction_leaving_node(src_gpu: np.ndarray, host_of: Sequence[Any]) -> float:
    """Share of token-expert pairs that leave their source's node."""
    total = int(np.asarray(src_gpu).sum())
    return cross_node_tokens(src_gpu, host_of) / total if total else 0.0


def cross_node_bytes(src_gpu: np.ndarray, host_of: Sequence[Any], dispatch_bytes_per_token: float,
                     combine_bytes_per_token: float) -> float:
    """Bytes crossing node boundaries in dispatch plus combine for one sample."""
    return cross_node_tokens(src_gpu, host_of) * (dispatch_bytes_per_token + combine_bytes_per_token)


def nodes_per_token(assignments: np.ndarray, expert_node: np.ndarray) -> np.ndarray:
    """``[tokens]`` distinct nodes each token's experts live on (``expert_node[expert]``)."""
    nodes = np.sort(np.asarray(expert_node)[np.asarray(assignments)], axis=1)
    return 1 + (nodes[:, 1:] != nodes[:, :-1]).sum(axis=1)


def coactivation(assignments: np.ndarray, num_experts: int) -> np.ndarray:
    """``[E, E]`` symmetric count of tokens that selected both experts (zero diagonal)."""
    a = np.asarray(assignments)
    out = np.zeros(num_experts * num_experts, dtype=np.int64)
    for i in range(a.shape[1]):
        for j in range(i + 1, a.shape[1]):
            out += np.bincount(a[:, i] * num_experts + a[:, j], minlength=num_experts * num_experts)
    out = out.reshape(num_experts, num_experts)
    return out + out.T
