"""What-if injection: slow GPUs, degraded or failed links, slow NICs and network jitter.

A :class:`Faults` record rides on a Scenario. :func:`apply_to_topology` returns a modified copy
of the fabric (bandwidth scaled, links removed; routes are recomputed, so traffic takes another
path where the fabric has one, and a failure that disconnects GPUs is a clear error). Slow GPUs
and jitter are handed to the engine (``Simulation(compute_scale=..., jitter_ns=..., seed=...)``).
A moving expert hot spot is routing drift (``RoutingConfig(drift="rotate")``), not a fault.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping

import networkx as nx

from moesim.errors import ConfigError
from moesim.topology.model import Topology

MAX_SLOWDOWN = 1000.0  # a fault slows a GPU, link or NIC by at most this factor


@dataclass(frozen=True)
class Faults:
    """Injected degradations.

    Attributes:
        slow_gpus: rank -> compute time multiplier (1.3 = every kernel 30% slower).
        degraded_links: (node, node, fraction): both directions keep ``fraction`` of their bandwidth.
        failed_links: (node, node): both directions removed.
        slow_nics: rank -> fraction of bandwidth left on that GPU's NIC links (host side and fabric side).
        jitter_ns: every flow gets an extra latency drawn uniformly from [0, jitter_ns] (seeded).
    """

    slow_gpus: Mapping[int, float] = field(default_factory=dict)
    degraded_links: tuple[tuple[str, str, float], ...] = ()
    failed_links: tuple[tuple[str, str], ...] = ()
    slow_nics: Mapping[int, float] = field(default_factory=dict)
    jitter_ns: int = 0

    def __post_init__(self) -> None:
        # Physical ranges: a GPU at most 1000x slower, a link or NIC at least 1/1000 of its speed,
        # jitter at most 1 s (inf overflowed int conversion; 1e300 hung; 1e-300 bandwidth overflowed).
        for rank, factor in self.slow_gpus.items():
            if not isinstance(rank, int) or rank < 0 or not 1.0 <= factor <= MAX_SLOWDOWN:
                raise ConfigError("faults.slow_gpus", f"{rank}: {factor} is not rank: multiplier in [1, {MAX_SLOWDOWN:g}]",
                                  "write e.g. {5: 1.3} for GPU 5 running 30% slower")
        for item in self.degraded_links:
            if len(item) != 3 or not 1 / MAX_SLOWDOWN <= item[2] <= 1:
                raise ConfigError("faults.degraded_links", f"{item!r} is not (node, node, fraction in [0.001, 1])")
        for rank, frac in self.slow_nics.items():
            if not 1 / MAX_SLOWDOWN <= frac <= 1:
                raise ConfigError("faults.slow_nics", f"rank {rank}: fraction {frac} not in [0.001, 1]")
        if isinstance(self.jitter_ns, bool) or not isinstance(self.jitter_ns, int) or not 0 <= self.jitter_ns <= 10**9:
            raise ConfigError("faults.jitter_ns", f"must be a whole number of ns in [0, 10^9], got {self.jitter_ns!r}")

    @property
    def touches_topology(self) -> bool:
        return bool(self.degraded_links or self.failed_links or self.slow_nics)


def _edge_pair(g: nx.DiGraph, a: str, b: str, what: str, source: str) -> list[tuple[str, str]]:
    edges = [(u, v) for u, v in ((a, b), (b, a)) if g.has_edge(u, v)]
    if not edges:
        raise ConfigError(what, f"no link between {a!r} and {b!r} in {source}",
                          "name two adjacent nodes (see `moesim topo show`/`topo path`)")
    return edges


def _nic_edges(g: nx.DiGraph, topo: Topology, rank: int) -> list[tuple[str, str]]:
    gpu = topo.gpus[rank]
    nics = sorted({n for n in nx.all_neighbors(g, gpu) if g.nodes[n].get("type") == "nic"})
    if not nics:
        raise ConfigError("faults.slow_nics", f"GPU {rank} ({gpu}) has no NIC in {topo.name}",
                          "slow NICs apply to multi-node fabrics with one NIC per GPU")
    return [(u, v) for nic in nics for u, v in list(g.in_edges(nic)) + list(g.out_edges(nic))]


def apply_to_topology(topo: Topology, faults: Faults) -> Topology:
    """A copy of ``topo`` with the link faults applied; routing is recomputed."""
    if not faults.touches_topology:
        return topo
    g = copy.deepcopy(topo.graph)
    for a, b, frac in faults.degraded_links:
        for u, v in _edge_pair(g, a, b, "faults.degraded_links", topo.name):
            g.edges[u, v]["bandwidth_gbps"] *= frac
    for rank, frac in faults.slow_nics.items():
        for u, v in _nic_edges(g, topo, rank):
            g.edges[u, v]["bandwidth_gbps"] *= frac
    for a, b in faults.failed_links:
        for u, v in _edge_pair(g, a, b, "faults.failed_links", topo.name):
            g.remove_edge(u, v)
    _check_connected(g, topo, faults)
    return Topology(topo.name + "+faults", g, topo.gpu_kind, {**topo.meta, "faults": repr(faults)})


def _check_connected(g: nx.DiGraph, topo: Topology, faults: Faults) -> None:
    comps = list(nx.strongly_connected_components(g))
    where = {gpu: i for i, comp in enumerate(comps) for gpu in comp if gpu in set(topo.gpus)}
    if len({where[gpu] for gpu in topo.gpus}) > 1:
        first = topo.gpus[0]
        cut = [gpu for gpu in topo.gpus if where[gpu] != where[first]]
        raise ConfigError("faults.failed_links", f"failing {list(faults.failed_links)} disconnects {first} from "
                          f"{cut[:4]}{' ...' if len(cut) > 4 else ''}: the fabric has no other path",
                          "fail a link that has a redundant path (e.g. one leaf-spine uplink), or degrade it instead")
