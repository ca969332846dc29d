"""Topology-aware expert placement: keep tokens inside their node.

Objective (maximised): tokens that stay on their source's node, ``sum_e traffic_node[node(e), e]``,
plus co-activated pairs placed on one node, ``sum over same-node pairs of coactivation`` (under
node-limited routing that is what lets a token reach fewer nodes). Constraints: each node holds
``E/G`` experts per GPU it has, and no node's load may exceed
``max((1 + balance_slack) * its fair share, its load under the contiguous layout)``.

Method: start from the contiguous layout (so the result is never worse than it on either count),
then a Kernighan-Lin style local search: repeatedly apply the expert swap between two nodes with
the largest positive gain that keeps node loads within bounds, with all gains of all pairs
recomputed as one ``E x E`` numpy expression. Inside each node, experts are packed onto GPUs by
load (EPLB's balanced packing), because NVLink traffic is cheap and the busiest GPU is not.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from moesim.moe.eplb import balanced_packing
from moesim.moe.layout import Placement

if TYPE_CHECKING:
    from moesim.moe.placement import PlacementInputs


def _inputs(inp: "PlacementInputs") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(local[E, N], coact[E, E], load[E], node_of_gpu[G])`` with absent inputs as zeros."""
    E = inp.num_experts
    node_of_gpu = inp.node_of_gpu
    num_nodes = int(node_of_gpu.max()) + 1
    local = np.zeros((E, num_nodes))
    if inp.traffic is not None:
        np.add.at(local.T, node_of_gpu, inp.traffic)
    coact = np.zeros((E, E)) if inp.coactivation is None else inp.coactivation.copy()
    np.fill_diagonal(coact, 0.0)
    if inp.expert_load is not None:
        load = inp.expert_load
    elif inp.traffic is not None:
        load = inp.traffic.sum(axis=0)
    else:
        load = coact.sum(axis=1)
    return local, coact, load, node_of_gpu


def objective(node_of_expert: np.ndarray, local: np.ndarray, coact: np.ndarray) -> float:
    """Local tokens plus co-activated pairs sharing a node (each unordered pair once)."""
    same = node_of_expert[:, None] == node_of_expert[None, :]
    return float(local[np.arange(local.shape[0]), node_of_expert].sum() + 0.5 * coact[same].sum())


def improve_nodes(node_of_expert: np.ndarray, local: np.ndarray, coact: np.ndarray, load: np.ndarray,
                  cap: np.ndarray, max_swaps: int) -> np.ndarray:
    """Best-gain expert swaps between nodes while the objective rises and loads stay <= cap."""
    node = node_of_expert.copy()
    num_nodes = local.shape[1]
    node_load = np.bincount(node, weights=load, minlength=num_nodes)
    affinity = local + coact @ np.eye(num_nodes)[node]  # [E, N]: gain of e sitting on node n
    tol = 1e-9 * max(1.0, float(np.abs(affinity).max()))
    for _ in range(max_swaps):
        own = affinity[np.arange(node.size), node]
        cross = affinity[:, node]  # cross[e, f] = affinity of e to f's node
        gain = cross - own[:, None] + cross.T - own[None, :] - 2.0 * coact
        shift = load[None, :] - load[:, None]  # e's node gains load[f] - load[e]
        ok = ((node[:, None] != node[None, :]) & (node_load[node][:, None] + shift <= cap[node][:, None] + tol)
              & (node_load[node][None, :] - shift <= cap[node][None, :] + tol))
        gain = np.where(ok, gain, -np.inf)
        e, f = np.unravel_index(np.argmax(gain), gain.shape)
        if not gain[e, f] > tol:
            break
        a, b = node[e], node[f]
        node_load[a] += load[f] - load[e]
        node_load[b] += load[e] - load[f]
        affinity[:, a] += coact[:, f] - coact[:, e]
        affinity[:, b] += coact[:, e] - coact[:, f]
        node[e], node[f] = b, a
    return node


def place_topology_aware(inp: "PlacementInputs") -> Placement:
    """The strategy behind ``PLACEMENTS['topology_aware']`` (inputs already validated)."""
    local, coact, load, node_of_gpu = _inputs(inp)
    per_gpu = inp.num_experts // inp.num_gpus
    start = node_of_gpu[np.arange(inp.num_experts) // per_gpu]
    num_nodes = local.shape[1]
    gpus_on = np.bincount(node_of_gpu, minlength=num_nodes)
    fair = load.sum() * gpus_on / inp.num_gpus
    cap = np.maximum((1.0 + inp.balance_slack) * fair, np.bincount(start, weights=load, minlength=num_nodes))
    node = improve_nodes(start, local, coact, load, cap, max_swaps=4 * inp.num_experts)
    slots: list[tuple[int, ...]] = [()] * inp.num_gpus
    for n in range(num_nodes):
        experts = np.flatnonzero(node == n)
        gpus = np.flatnonzero(node_of_gpu == n)
        pack, _ = balanced_packing(load[experts], gpus.size)
        for i, gpu in enumerate(gpus):
            slots[int(gpu)] = tuple(int(e) for e in experts[pack == i])
    return Placement(inp.num_experts, inp.num_gpus, tuple(slots))
