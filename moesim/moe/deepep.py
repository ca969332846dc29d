"""DeepEP-style dispatch: one copy of a token per destination node over the scale-out network,
forwarded inside that node over NVLink, one copy per destination GPU.

The plain all-to-all (``dispatcher="alltoall"``, Megatron's) moves one copy of a token per
selected expert: ``pairs[i, j]`` token-expert pairs from EP rank i to GPU j. DeepEP
(``dispatcher="deepep"``; DeepSeek-V3 §3.2.2, reference §1.3) sends a token at most once to each
node holding some of its experts (to the GPU on the same rail as the sender), and that GPU
forwards it over NVLink to every GPU of the node holding some of them; the combine retraces the
hops in reverse. With node-limited routing (top-8 over at most 4 nodes) this roughly halves the
InfiniBand bytes.

Routing counts hold no per-token information, so the copies are measured on sampled tokens:
:func:`token_copies` draws ``num_tokens`` tokens with the layer's own popularity and gate
(:func:`moesim.moe.sampling.sample_topk`), maps each pick to its GPU under the layer's
placement, and returns for every destination GPU and node the number of pairs per distinct
token (``pairs / tokens with at least one pick there``). :func:`two_hop_units` divides the pair
counts by them and lays out the two hops as one unit matrix between GPUs, which the phase
solver and the engine route on the real fabric.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from moesim.errors import ConfigError
from moesim.moe.layout import Placement
from moesim.moe.popularity import stream
from moesim.moe.routing import RoutingConfig, _gate, layer_popularity
from moesim.moe.sampling import sample_topk

DISPATCHERS = ("alltoall", "deepep")
_TAG_COPIES = 211
SAMPLE_TOKENS = 8192


def expert_gpu(placement: Placement) -> np.ndarray:
    """GPU of each expert (its first replica)."""
    out = np.full(placement.num_experts, -1, dtype=np.int64)
    for gpu, slots in enumerate(placement.slots):
        for e in slots:
            if out[e] < 0:
                out[e] = gpu
    return out


def token_copies(config: RoutingConfig, spec: Any, host_of: Sequence[Any], placement: Placement, layer: int,
                 step: int, num_tokens: int = SAMPLE_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """``(per_gpu[ep], per_node[nodes])``: pairs per distinct token arriving at each GPU / node
    (>= 1; 1 where nothing arrives), measured on ``num_tokens`` sampled tokens of ``layer``."""
    if config.kind == "trace":
        raise ConfigError("moe.dispatcher", "deepep needs per-token samples and a counts trace has none",
                          "use dispatcher='alltoall' with a routing trace, or a synthetic routing kind")
    hosts = np.unique(np.asarray(host_of), return_inverse=True)[1].reshape(-1)
    ep = len(hosts)
    gate = _gate(config, spec, host_of, placement)
    popularity = layer_popularity(config, spec.num_experts, layer, step)
    picks = sample_topk(stream(config.seed, _TAG_COPIES, step, layer), popularity, num_tokens, spec.top_k, *gate)
    gpu = expert_gpu(placement)[picks]                      # [tokens, k]
    node = hosts[gpu]
    return _per_target(gpu, ep), _per_target(node, int(hosts.max()) + 1)


def _per_target(target: np.ndarray, size: int) -> np.ndarray:
    pairs = np.bincount(target.ravel(), minlength=size).astype(float)
    seen = np.zeros((target.shape[0], size), dtype=bool)   # token x target: some pick lands there
    seen[np.arange(target.shape[0])[:, None], target] = True
    hits = seen.sum(axis=0).astype(float)
    return np.where(hits > 0, pairs / np.maximum(hits, 1.0), 1.0)


def two_hop_units(pairs: np.ndarray, per_gpu: np.ndarray, per_node: np.ndarray, host_of: Sequence[Any]) -> np.ndarray:
    """Token copies between the group's GPUs for one dispatch: ``units[a, b]`` (a != b).

    Same node: ``pairs / per_gpu`` over NVLink. Other node n: ``sum of pairs into n /
    per_node[n]`` from i to its rail peer in n (same index inside the node), then ``pairs /
    per_gpu`` from the rail peer to each other destination GPU of n. The combine is the
    transpose.
    """
    hosts = np.unique(np.asarray(host_of), return_inverse=True)[1].reshape(-1)
    n = len(hosts)
    local = np.zeros(n, dtype=np.int64)
    members: dict[int, list[int]] = {}
    for g, h in enumerate(hosts):
        local[g] = len(members.setdefault(int(h), []))
        members[int(h)].append(g)
    pairs = np.asarray(pairs)
    gpu_units = np.asarray(pairs, dtype=float) / np.asarray(per_gpu, dtype=float)[None, :]
    # every addition as (source i, row, column, value); applied in source order, so each entry
    # sums its terms in the order of a loop over sources (the same floats as one by one)
    src, row, col, val = [], [], [], []
    for node, gpus in members.items():
        gpus_a = np.array(gpus)
        inside = np.flatnonzero(hosts == node)   # sources on this node: straight to each GPU
        src.append(np.repeat(inside, len(gpus)))
        row.append(np.repeat(inside, len(gpus)))
        col.append(np.tile(gpus_a, len(inside)))
        val.append(gpu_units[np.ix_(inside, gpus_a)].ravel())
        into = (pairs[:, gpus].sum(axis=1).astype(float) if pairs.dtype.kind in "iub"   # exact: whole counts
                else np.array([float(pairs[i, gpus].sum()) for i in range(n)]))   # each row summed as before
        outside = np.flatnonzero((hosts != node) & (into > 0))   # one copy to the rail peer, forwarded
        peers = gpus_a[np.minimum(local[outside], len(gpus) - 1)]
        src.append(outside)
        row.append(outside)
        col.append(peers)
        val.append(into[outside] / per_node[node])
        fwd = np.tile(gpus_a, len(outside)) != np.repeat(peers, len(gpus))
        src.append(np.repeat(outside, len(gpus))[fwd])
        row.append(np.repeat(peers, len(gpus))[fwd])
        col.append(np.tile(gpus_a, len(outside))[fwd])
        val.append(gpu_units[np.ix_(outside, gpus_a)].ravel()[fwd])
    order = np.argsort(np.concatenate(src), kind="stable")
    units = np.zeros((n, n))
    np.add.at(units, (np.concatenate(row)[order], np.concatenate(col)[order]), np.concatenate(val)[order])
    np.fill_diagonal(units, 0.0)
    return units
