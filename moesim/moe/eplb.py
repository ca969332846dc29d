"""DeepSeek's expert-parallel load balancer (EPLB), ported exactly to numpy, plus a refinement.

:func:`rebalance_experts` reproduces ``deepseek-ai/EPLB`` ``eplb.py`` (reference
moe_and_hardware.md §3): hierarchical when ``num_groups % num_nodes == 0`` (pack expert groups
onto nodes, replicate the hottest experts inside each node, pack replicas onto the node's GPUs by
load), global otherwise (the same routine with one group and one node). Ties break as the
original: stable descending sort, lowest pack index, first argmax. Loads are float64 (EPLB uses
float32; only exact ties could differ).

:func:`refine_swaps` is our addition for :func:`moesim.moe.placement.load_balanced`: it swaps
slots between GPUs of one node while that lowers the busiest GPU's load.
"""
from __future__ import annotations

import numpy as np

from moesim.errors import ConfigError


def balanced_packing(weight: np.ndarray, num_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """Put ``n`` weighted items into ``num_packs`` packs of exactly n/num_packs items: heaviest
    first, each into the lightest pack with room. Returns ``(pack_index, rank_in_pack)``."""
    n = weight.size
    per_pack = n // num_packs
    if per_pack == 1:
        return np.arange(n), np.zeros(n, dtype=np.int64)
    pack_index = np.full(n, -1, dtype=np.int64)
    rank_in_pack = np.full(n, -1, dtype=np.int64)
    pack_weight = np.zeros(num_packs)
    pack_items = np.zeros(num_packs, dtype=np.int64)
    for item in np.argsort(-weight, kind="stable"):
        open_packs = np.flatnonzero(pack_items < per_pack)
        pack = open_packs[np.argmin(pack_weight[open_packs])]
        pack_index[item], rank_in_pack[item] = pack, pack_items[pack]
        pack_weight[pack] += weight[item]
        pack_items[pack] += 1
    return pack_index, rank_in_pack


def replicate_experts(weight: np.ndarray, num_phy: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add ``num_phy - n`` replicas, each to the expert with the largest load per replica.
    Returns ``(phy2log, replica_rank, replica_count)``."""
    num_log = weight.size
    phy2log = np.arange(num_phy)
    rank = np.zeros(num_phy, dtype=np.int64)
    count = np.ones(num_log, dtype=np.int64)
    for slot in range(num_log, num_phy):
        hot = int(np.argmax(weight / count))
        phy2log[slot], rank[slot] = hot, count[hot]
        count[hot] += 1
    return phy2log, rank, count


def _inverse(perm: np.ndarray) -> np.ndarray:
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    return inv


def rebalance_hierarchical(weight: np.ndarray, num_phy: int, num_groups: int, num_nodes: int,
                           num_gpus: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One layer of EPLB's hierarchical policy: ``(phy2log, phy_rank, logcnt)``."""
    num_log = weight.size
    group_size, groups_per_node = num_log // num_groups, num_groups // num_nodes
    per_node_log, per_node_phy = num_log // num_nodes, num_phy // num_nodes
    phy_per_gpu = num_phy // num_gpus
    # 1: pack groups onto nodes; mlog = expert id renumbered node by node
    group_pack, group_rank = balanced_packing(weight.reshape(num_groups, group_size).sum(axis=1), num_nodes)
    log2mlog = ((group_pack * groups_per_node + group_rank)[:, None] * group_size + np.arange(group_size)).ravel()
    mlog2log = _inverse(log2mlog)
    node_weight = weight[mlog2log].reshape(num_nodes, per_node_log)
    pphy2mlog, pphy_rank, mlogcnt = [], [], []
    for node in range(num_nodes):
        # 2: replicate inside the node; 3: pack its replicas onto the node's GPUs
        phy2mlog, phy_rank, cnt = replicate_experts(node_weight[node], per_node_phy)
        pack, rank_in = balanced_packing((node_weight[node] / cnt)[phy2mlog], num_gpus // num_nodes)
        pphy2phy = _inverse(pack * phy_per_gpu + rank_in)
        pphy2mlog.append(phy2mlog[pphy2phy] + node * per_node_log)
        pphy_rank.append(phy_rank[pphy2phy])
        mlogcnt.append(cnt)
    # 4: back to global ids
    phy2log = mlog2log[np.concatenate(pphy2mlog)]
    logcnt = np.concatenate(mlogcnt)[log2mlog]
    return phy2log, np.concatenate(pphy_rank), logcnt


def check_eplb(num_experts: int, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int) -> None:
    """ConfigError naming the field when EPLB's divisibility rules do not hold."""
    if num_replicas < num_experts:
        raise ConfigError("num_replicas", f"{num_replicas} slots for {num_experts} experts",
                          "give at least one slot per expert (num_redundant >= 0)")
    if num_replicas % num_gpus:
        raise ConfigError("num_redundant", f"{num_replicas} slots (experts + redundant) do not split evenly over "
                          f"{num_gpus} GPUs", f"make num_experts + num_redundant a multiple of {num_gpus}")
    if num_gpus % num_nodes:
        raise ConfigError("host_of", f"{num_gpus} GPUs do not split evenly over {num_nodes} nodes",
                          "give every node the same number of GPUs")
    if num_groups < 1 or num_experts % num_groups:
        raise ConfigError("num_groups", f"{num_experts} experts do not split into {num_groups} groups",
                          "use a num_groups that divides num_experts")


def rebalance_experts(weight: np.ndarray, num_replicas: int, num_groups: int, num_nodes: int,
                      num_gpus: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EPLB's entry point: ``weight[layers, experts]`` -> ``(phy2log[layers, num_replicas],
    log2phy[layers, experts, max_count] (-1 padded), logcnt[layers, experts])``."""
    weight = np.atleast_2d(np.asarray(weight, dtype=np.float64))
    num_layers, num_log = weight.shape
    check_eplb(num_log, num_replicas, num_groups, num_nodes, num_gpus)
    if num_groups % num_nodes:
        num_groups, num_nodes = 1, 1  # global policy
    results = [rebalance_hierarchical(w, num_replicas, num_groups, num_nodes, num_gpus) for w in weight]
    phy2log = np.stack([r[0] for r in results])
    phy_rank = np.stack([r[1] for r in results])
    logcnt = np.stack([r[2] for r in results])
    log2phy = np.full((num_layers, num_log, int(logcnt.max())), -1, dtype=np.int64)
    for layer in range(num_layers):
        log2phy[layer, phy2log[layer], phy_rank[layer]] = np.arange(num_replicas)
    return phy2log, log2phy, logcnt


def refine_swaps(slot_expert: np.ndarray, slot_gpu: np.ndarray, slot_weight: np.ndarray,
                 node_of_gpu: np.ndarray, max_swaps: int = 10_000) -> np.ndarray:
    """Swap slots between GPUs of one node while the busiest GPU gets lighter; returns the new
    ``slot_expert``. Each swap strictly lowers the sorted load vector, so this terminates."""
    slot_expert, slot_weight = slot_expert.copy(), slot_weight.astype(np.float64).copy()
    num_gpus = int(slot_gpu.max()) + 1
    load = np.bincount(slot_gpu, weights=slot_weight, minlength=num_gpus)
    tol = 1e-9 * max(float(load.max()), 1.0)
    for _ in range(max_swaps):
        hot = int(np.argmax(load))
        mine = np.flatnonzero(slot_gpu == hot)
        other = np.flatnonzero((slot_gpu != hot) & (node_of_gpu[slot_gpu] == node_of_gpu[hot]))
        if other.size == 0:
            break
        delta = slot_weight[other][None, :] - slot_weight[mine][:, None]  # hot gains delta
        worst = np.maximum(load[hot] + delta, load[slot_gpu[other]][None, :] - delta)
        a, b = np.unravel_index(np.argmin(worst), worst.shape)
        if worst[a, b] >= load[hot] - tol:
            break
        i, j = mine[a], other[b]
        load[hot] += delta[a, b]
        load[slot_gpu[j]] -= delta[a, b]
        slot_expert[[i, j]] = slot_expert[[j, i]]
        slot_weight[[i, j]] = slot_weight[[j, i]]
    return slot_expert
