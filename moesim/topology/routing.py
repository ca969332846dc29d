"""Equal-cost GPU-to-GPU routes on a fabric graph, computed hierarchically and cached.

Routing policy (one definition, used everywhere): among all paths from one GPU to another, take
those that cross the fewest *other* GPUs (a GPU is not a router: forwarding through one needs a
kernel on it, so it is used only when nothing else joins the pair, as in a chain of GPUs); among
those, the lowest total latency; then the fewest hops. All such equal-cost paths are returned,
sorted by node names in natural order (``spine2`` before ``spine10``), so ECMP is deterministic.

:meth:`Router.paths` computes this exactly with Dijkstra on the whole graph when it must, but for
fabrics built from hosts and a shared switch fabric it splits every route into
``[segment inside the source host] + [segment in the fabric] + [segment inside the destination host]``
and caches each piece: per-GPU Dijkstra inside its (tiny) host, and per-switch Dijkstra over the
leaves and spines. Hosts whose non-GPU parts touch two different fabric switches could carry
through-traffic, which the split would miss, so such graphs use the exact whole-graph search.
"""
from __future__ import annotations

import functools
import heapq
import itertools
import re
from collections.abc import Sequence
from typing import Hashable

import networkx as nx

GPU_TRANSIT_COST = 1 << 60  # exceeds any latency*4096 + hops a path can sum to
_LATENCY_SCALE = 4096  # latency first, then one unit per hop (ties go to the fewest hops)

Node = Hashable
NodePath = tuple[Node, ...]


class Router:
    """All equal-cost paths between GPUs of one graph (see the module docstring for the policy)."""

    def __init__(self, graph: nx.DiGraph) -> None:
        self.graph = graph
        self._is_gpu = {n: d.get("type") == "gpu" for n, d in graph.nodes(data=True)}
        self._host = {n: self._host_of(n, d) for n, d in graph.nodes(data=True)}
        self._succ = {u: [(v, _weight(d)) for v, d in graph.succ[u].items()] for u in graph}
        self._pred = {v: [(u, _weight(d)) for u, d in graph.pred[v].items()] for v in graph}
        self._local_fwd: dict[Node, tuple[dict, dict]] = {}
        self._local_rev: dict[Node, tuple[dict, dict]] = {}
        self._fabric: dict[Node, tuple[dict, dict]] = {}
        self._egress_cache: dict[Node, dict[Node, int]] = {}
        self._middles: dict[tuple[Node, Node], list[NodePath]] = {}
        self._attach: dict[tuple[Node, Node, int, bool], list[NodePath]] = {}
        self._ingress_cache: dict[Node, dict[Node, int]] = {}
        self.hierarchical = self._hosts_carry_no_transit()

    def _host_of(self, node: Node, data: dict) -> object | None:
        if data.get("type") == "gpu":
            return data.get("host", 0)
        return data.get("host")  # None: shared fabric (leaf, spine, or anything without a host)

    def _hosts_carry_no_transit(self) -> bool:
        """True when no host's non-GPU parts could carry traffic between two fabric switches."""
        local = [n for n, h in self._host.items() if h is not None and not self._is_gpu[n]]
        sub = self.graph.subgraph(local).to_undirected(as_view=True)
        for comp in nx.connected_components(sub):
            hosts = {self._host[n] for n in comp}
            touched = {v for n in comp for v, _ in self._succ[n] if self._host[v] is None}
            touched |= {u for n in comp for u, _ in self._pred[n] if self._host[u] is None}
            if len(hosts) > 1 or len(touched) > 1:
                return False
        # a direct edge between two different hosts' nodes bypasses the fabric split
        return all(self._host[u] is None or self._host[v] is None or self._host[u] == self._host[v]
                   for u, v in self.graph.edges)

    # -- public ---------------------------------------------------------------------------------
    def paths(self, src: Node, dst: Node) -> "Sequence[NodePath]":
        """All equal-cost node paths from GPU ``src`` to GPU ``dst``, sorted; [] if unreachable."""
        if self.hierarchical:
            found = self._split_paths(src, dst)
            if found:
                return found
        return self._exact_paths(src, dst)

    # -- exact whole-graph search (fallback) ----------------------------------------------------
    def _exact_paths(self, src: Node, dst: Node) -> list[NodePath]:
        def w(u: Node, v: Node, d: dict) -> int:
            return _weight(d) + (GPU_TRANSIT_COST if u != src and self._is_gpu[u] else 0)
        try:
            return sorted((tuple(p) for p in nx.all_shortest_paths(self.graph, src, dst, weight=w)), key=_path_order)
        except nx.NetworkXNoPath:
            return []

    # -- hierarchical search --------------------------------------------------------------------
    def _split_paths(self, src: Node, dst: Node) -> "Sequence[NodePath]":
        best, pieces = None, []
        if self._host[src] == self._host[dst]:
            dist, _ = self._local(src, forward=True)
            if dst in dist:
                best, pieces = dist[dst], [("local",)]
        for cost, f1, f2 in self._fabric_options(src, dst):
            if best is None or cost < best:
                best, pieces = cost, []
            if cost == best:
                pieces.append(("fabric", f1, f2))
        parts = [self._expand(src, dst, piece) for piece in pieces]
        if len(parts) == 1 and parts[0][1]:
            return parts[0][0]  # one head and one tail around sorted middles: already in order
        return sorted({p for found, _ in parts for p in found}, key=_path_order)

    def _fabric_options(self, src: Node, dst: Node) -> list[tuple[int, Node, Node]]:
        """(cost, first fabric node, last fabric node) of every way out of src's host and in."""
        egress, ingress = self._egress(src), self._ingress(dst)
        options = []
        for f1, c1 in egress.items():
            dist, _ = self._fabric_tree(f1)
            for f2, c2 in ingress.items():
                if f2 in dist:
                    options.append((c1 + dist[f2] + c2, f1, f2))
        return options

    def _egress(self, src: Node) -> dict[Node, int]:
        """Cheapest cost from src to each fabric node adjacent to its host (cached)."""
        if src not in self._egress_cache:
            self._egress_cache[src] = self._border(src, forward=True)
        return self._egress_cache[src]

    def _ingress(self, dst: Node) -> dict[Node, int]:
        """Cheapest cost from each fabric node adjacent to dst's host to dst (cached)."""
        if dst not in self._ingress_cache:
            self._ingress_cache[dst] = self._border(dst, forward=False)
        return self._ingress_cache[dst]

    def _border(self, gpu: Node, forward: bool) -> dict[Node, int]:
        dist, _ = self._local(gpu, forward)
        out: dict[Node, int] = {}
        for p, dp in dist.items():
            if p != gpu and self._is_gpu[p]:
                continue
            for f, w in (self._succ[p] if forward else self._pred[p]):
                if self._host[f] is None and dp + w < out.get(f, 1 << 80):
                    out[f] = dp + w
        return out

    def _expand(self, src: Node, dst: Node, piece: tuple) -> tuple[list[NodePath], bool]:
        """The paths of one piece, and whether they are already in sorted order."""
        if piece[0] == "local":
            return sorted(_unwind(self._local(src, True)[1], src, dst), key=_path_order), True
        _, f1, f2 = piece
        heads = self._attachments(src, f1, self._egress(src)[f1], forward=True)
        tails = self._attachments(dst, f2, self._ingress(dst)[f2], forward=False)
        middles = self._middles.get((f1, f2))
        if middles is None:
            middles = sorted(_unwind(self._fabric_tree(f1)[1], f1, f2), key=_path_order)
            self._middles[f1, f2] = middles
        if len(heads) == 1 and len(tails) == 1:  # the usual case: sorted as the middles are
            return _Joined(heads[0], middles, tails[0]), True
        return [h + m + t for h, m, t in itertools.product(heads, middles, tails)], False

    def _attachments(self, gpu: Node, f: Node, cost: int, forward: bool) -> list[NodePath]:
        """Cheapest local paths gpu->p with p->f (forward), or f->q with q->gpu paths (reverse);
        cached (every pair of GPUs on two hosts asks for the same ones)."""
        key = (gpu, f, cost, forward)
        got = self._attach.get(key)
        if got is None:
            got = self._attach[key] = self._find_attachments(gpu, f, cost, forward)
        return got

    def _find_attachments(self, gpu: Node, f: Node, cost: int, forward: bool) -> list[NodePath]:
        dist, preds = self._local(gpu, forward)
        out: list[NodePath] = []
        for p, dp in dist.items():
            if p != gpu and self._is_gpu[p]:
                continue
            edges = self._succ[p] if forward else self._pred[p]
            if any(v == f and dp + w == cost for v, w in edges):
                paths = _unwind(preds, gpu, p)
                out.extend(paths if forward else [tuple(reversed(q)) for q in paths])
        return out

    def _local(self, gpu: Node, forward: bool) -> tuple[dict, dict]:
        """Dijkstra inside gpu's host (other GPUs are endpoints only), cached per direction."""
        cache = self._local_fwd if forward else self._local_rev
        if gpu not in cache:
            host, adj = self._host[gpu], (self._succ if forward else self._pred)
            cache[gpu] = _dijkstra(gpu, adj, lambda n: self._host[n] == host,
                                   lambda n: n == gpu or not self._is_gpu[n])
        return cache[gpu]

    def _fabric_tree(self, f: Node) -> tuple[dict, dict]:
        """Dijkstra over shared-fabric nodes only, cached per start node."""
        if f not in self._fabric:
            self._fabric[f] = _dijkstra(f, self._succ, lambda n: self._host[n] is None, lambda n: True)
        return self._fabric[f]


class _Joined(Sequence):
    """``head + middle + tail`` for every middle, in the middles' order, each built when asked
    for (a fat-tree pair has many equal-cost middles; a flow takes one)."""

    __slots__ = ("head", "middles", "tail")

    def __init__(self, head: NodePath, middles: list[NodePath], tail: NodePath) -> None:
        self.head, self.middles, self.tail = head, middles, tail

    def __len__(self) -> int:
        return len(self.middles)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.head + m + self.tail for m in self.middles[i]]
        return self.head + self.middles[i] + self.tail

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (list, tuple, _Joined)) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


def _path_order(path: NodePath) -> tuple:
    """Natural sort key of a node path: digit runs compare as numbers."""
    return tuple(_natural(str(n)) for n in path)


@functools.lru_cache(maxsize=1 << 16)
def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _weight(d: dict) -> int:
    return int(d["latency_ns"]) * _LATENCY_SCALE + 1


def _dijkstra(start: Node, adj: dict, allowed, expandable) -> tuple[dict, dict]:
    """Distances and all equal-cost predecessors from ``start`` over ``allowed`` nodes."""
    dist: dict[Node, int] = {start: 0}
    preds: dict[Node, list[Node]] = {start: []}
    heap = [(0, 0, start)]
    counter = itertools.count(1)
    done: set[Node] = set()
    while heap:
        d, _, u = heapq.heappop(heap)
        if u in done:
            continue
        done.add(u)
        if not expandable(u):
            continue
        for v, w in adj[u]:
            if not allowed(v):
                continue
            nd = d + w
            old = dist.get(v)
            if old is None or nd < old:
                dist[v], preds[v] = nd, [u]
                heapq.heappush(heap, (nd, next(counter), v))
            elif nd == old:
                preds[v].append(u)
    return dist, preds


def _unwind(preds: dict, start: Node, end: Node) -> list[NodePath]:
    """Every path start->end in a predecessor DAG (for reverse searches: end->start reversed)."""
    if end == start:
        return [(start,)]
    out: list[NodePath] = []
    for p in preds.get(end, ()):
        out.extend(path + (end,) for path in _unwind(preds, start, p))
    return out
