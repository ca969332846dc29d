"""The Topology object: a typed networkx graph of a GPU fabric plus cached routing.

Nodes carry ``type`` (gpu, nvswitch, pcie_switch, cpu, nic, leaf, spine) and, for GPUs,
``host`` (the node/server index) and ``local`` (index inside the host). Directed edges carry
``bandwidth_gbps`` (GB/s per direction, numerically equal to bytes per ns), ``latency_ns`` and
``kind`` (nvlink, nvswitch, pcie, ib, ethernet, c2c). Every directed edge also gets a dense
integer ``link_id`` so the engine can keep per-link state in numpy arrays.

Ranks are indices into ``Topology.gpus`` (host-major order). Routes cross the fewest other GPUs
(a GPU is not a router; only a chain of GPUs with nothing else between them forces it), then have
the lowest total latency, then the fewest hops; where several equal-cost paths exist (spines of a
fat-tree), ``route(src, dst, key)`` spreads flows over them deterministically by ``key`` (ECMP).
:mod:`moesim.topology.routing` finds them; each pair is cached.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import networkx as nx

from moesim.errors import ConfigError
from moesim.topology.routing import Router

NODE_TYPES = ("gpu", "nvswitch", "pcie_switch", "cpu", "nic", "leaf", "spine")
LINK_KINDS = ("nvlink", "nvswitch", "pcie", "ib", "ethernet", "c2c")


@dataclass(frozen=True)
class Link:
    """One directed link."""

    link_id: int
    src: str
    dst: str
    kind: str
    bandwidth_gbps: float
    latency_ns: int


@dataclass(frozen=True)
class Route:
    """A path between two GPUs: the links crossed, in order."""

    src: int
    dst: int
    link_ids: tuple[int, ...]
    latency_ns: int
    bottleneck_gbps: float
    kinds: tuple[str, ...]


class Topology:
    """A GPU fabric. Build it with a builder or the YAML loader, not by hand."""

    def __init__(self, name: str, graph: nx.DiGraph, gpu_kind: str, meta: dict | None = None) -> None:
        self.name = name
        self.graph = graph
        self.gpu_kind = gpu_kind
        self.meta = dict(meta or {})
        gpus = [n for n, d in graph.nodes(data=True) if d.get("type") == "gpu"]
        gpus.sort(key=lambda n: (graph.nodes[n].get("host", 0), graph.nodes[n].get("local", 0), n))
        self.gpus: tuple[str, ...] = tuple(gpus)
        self._rank = {g: i for i, g in enumerate(self.gpus)}
        links = []
        for i, (u, v, d) in enumerate(sorted(graph.edges(data=True), key=lambda e: (e[0], e[1]))):
            d["link_id"] = i
            links.append(Link(i, u, v, d["kind"], float(d["bandwidth_gbps"]), int(d["latency_ns"])))
        self.links: tuple[Link, ...] = tuple(links)
        self._paths: dict[tuple[int, int], list[tuple[str, ...]]] = {}
        self._routes: dict[tuple[int, int, int], Route] = {}

    # -- identity -------------------------------------------------------------------------
    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    @cached_property
    def num_hosts(self) -> int:
        return len({self.graph.nodes[g].get("host", 0) for g in self.gpus})

    @cached_property
    def gpus_per_host(self) -> int:
        return self.num_gpus // max(1, self.num_hosts)

    def host_of(self, rank: int) -> int:
        """Server (node) index of a rank."""
        return int(self.graph.nodes[self.gpus[rank]].get("host", 0))

    def rank_of(self, gpu: "str | int") -> int:
        """Rank of a GPU given by name or rank; raises ConfigError naming valid GPUs."""
        if isinstance(gpu, int) or (isinstance(gpu, str) and gpu.isdigit()):
            r = int(gpu)
            if not 0 <= r < self.num_gpus:
                raise ConfigError("gpu", f"rank {r} out of range", f"use 0..{self.num_gpus - 1}", source=self.name)
            return r
        if gpu not in self._rank:
            raise ConfigError("gpu", f"no GPU named {gpu!r}", f"use a rank 0..{self.num_gpus - 1} or a name like {self.gpus[0]!r}", source=self.name)
        return self._rank[gpu]

    # -- routing --------------------------------------------------------------------------
    @cached_property
    def router(self) -> Router:
        """The path finder (built on first use; see :mod:`moesim.topology.routing`)."""
        return Router(self.graph)

    @cached_property
    def _link_id(self) -> dict[tuple[str, str], int]:
        return {(l.src, l.dst): l.link_id for l in self.links}

    def _equal_cost_paths(self, src: int, dst: int) -> list[tuple[str, ...]]:
        """Node paths of every equal-cost route, cached per rank pair."""
        key = (src, dst)
        paths = self._paths.get(key)
        if paths is None:
            paths = self.router.paths(self.gpus[src], self.gpus[dst])
            if not paths:
                raise ConfigError("route", f"no path from {self.gpus[src]} (rank {src}) to {self.gpus[dst]} (rank {dst})",
                                  "join every GPU to the fabric (the topology loader checks this)", source=self.name)
            self._paths[key] = paths
        return paths

    def route(self, src: int, dst: int, key: int = 0) -> Route:
        """The route a flow from rank ``src`` to rank ``dst`` takes; ``key`` picks among ECMP paths."""
        if src == dst:
            return Route(src, dst, (), 0, float("inf"), ())
        paths = self._equal_cost_paths(src, dst)
        index = key % len(paths)
        cached = self._routes.get((src, dst, index))
        if cached is None:
            nodes, ids = paths[index], self._link_id
            link_ids = tuple(ids[u, v] for u, v in zip(nodes, nodes[1:]))
            links = [self.links[i] for i in link_ids]
            cached = Route(
                src, dst, link_ids,
                latency_ns=sum(l.latency_ns for l in links),
                bottleneck_gbps=min(l.bandwidth_gbps for l in links),
                kinds=tuple(l.kind for l in links),
            )
            self._routes[src, dst, index] = cached
        return cached

    def num_paths(self, src: int, dst: int) -> int:
        """How many equal-cost paths join two ranks."""
        return 1 if src == dst else len(self._equal_cost_paths(src, dst))

    def capacities_gbps(self) -> list[float]:
        """Per-link bandwidth indexed by link_id."""
        return [l.bandwidth_gbps for l in self.links]

    def __repr__(self) -> str:
        return f"Topology({self.name!r}, gpus={self.num_gpus}, hosts={self.num_hosts}, links={len(self.links)})"
