"""Read-only summaries of a :class:`Topology`: link counts, per-GPU bandwidth, bisection, routes.

Nothing here changes the graph. :func:`describe` gathers the numbers the ``moesim topo show``
command prints and that reports quote when they name a fabric.
"""
from __future__ import annotations

from collections import Counter

import networkx as nx

from moesim.topology.model import LINK_KINDS, NODE_TYPES, Topology


def link_kind_counts(topo: Topology) -> dict[str, int]:
    """Number of directed links of each kind (a physical link counts twice, once per direction)."""
    counts = Counter(l.kind for l in topo.links)
    return {k: counts[k] for k in LINK_KINDS if counts[k]}


def node_type_counts(topo: Topology) -> dict[str, int]:
    """Number of nodes of each type."""
    counts = Counter(d.get("type") for _, d in topo.graph.nodes(data=True))
    return {t: counts[t] for t in NODE_TYPES if counts[t]}


def gpu_bandwidth_by_kind(topo: Topology, rank: int = 0) -> dict[str, float]:
    """GB/s per direction one GPU can inject into each link kind.

    Counts the GPU's own links and the network links of NICs attached to it (its scale-out
    port), e.g. DGX H100 multi-node: ``{"nvswitch": 450, "pcie": 64, "ib": 50}``.
    """
    g = topo.graph
    gpu = topo.gpus[rank]
    out: Counter[str] = Counter()
    for nbr, d in g.succ[gpu].items():
        out[d["kind"]] += d["bandwidth_gbps"]
        if g.nodes[nbr].get("type") == "nic":
            for far, nd in g.succ[nbr].items():
                if far != gpu:
                    out[nd["kind"]] += nd["bandwidth_gbps"]
    return {k: float(out[k]) for k in LINK_KINDS if out[k]}


def bisection_bandwidth_gbps(topo: Topology) -> float:
    """Max flow (GB/s, one direction) from the first half of the ranks to the second half.

    Ranks are host-major, so on several hosts this cuts the cluster between host halves; the
    value equals the capacity of the minimum cut separating the halves (max-flow/min-cut).
    """
    n = topo.num_gpus
    if n < 2:
        return 0.0
    flow = nx.DiGraph()
    for l in topo.links:
        flow.add_edge(l.src, l.dst, capacity=l.bandwidth_gbps)
    source, sink = ("__bisection_source__",), ("__bisection_sink__",)
    for rank, gpu in enumerate(topo.gpus):
        if rank < n // 2:
            flow.add_edge(source, gpu)  # no capacity attribute = unbounded
        else:
            flow.add_edge(gpu, sink)
    return float(nx.maximum_flow_value(flow, source, sink))


def sample_routes(topo: Topology) -> list[dict]:
    """A few representative routes from rank 0: same host, same rail on the next host, other rail."""
    pairs = []
    if topo.num_gpus > 1 and topo.host_of(1) == topo.host_of(0):
        pairs.append(("same host", 0, 1))
    per_host = topo.gpus_per_host
    if topo.num_hosts > 1:
        pairs.append(("next host, same local index", 0, per_host))
        if per_host > 1:
            pairs.append(("next host, other local index", 0, per_host + 1))
    return [route_summary(topo, s, d, label) for label, s, d in pairs]


def route_summary(topo: Topology, src: int, dst: int, label: str = "", key: int = 0) -> dict:
    """Hops, kinds, latency, bottleneck and ECMP width of one route."""
    r = topo.route(src, dst, key)
    hops = [{"from": topo.links[i].src, "to": topo.links[i].dst, "kind": topo.links[i].kind,
             "bandwidth_gbps": topo.links[i].bandwidth_gbps, "latency_ns": topo.links[i].latency_ns} for i in r.link_ids]
    return {"label": label, "src": topo.gpus[src], "dst": topo.gpus[dst], "hops": hops, "kinds": list(r.kinds),
            "latency_ns": r.latency_ns, "bottleneck_gbps": r.bottleneck_gbps, "num_paths": topo.num_paths(src, dst)}


def describe(topo: Topology) -> dict:
    """Everything :func:`moesim.topology.cli.show` prints, as plain data."""
    return {
        "name": topo.name,
        "description": topo.meta.get("description", ""),
        "source": topo.meta.get("source", ""),
        "gpu_kind": topo.gpu_kind,
        "num_gpus": topo.num_gpus,
        "num_hosts": topo.num_hosts,
        "gpus_per_host": topo.gpus_per_host,
        "intra": topo.meta.get("intra"),
        "scale_out": topo.meta.get("scale_out"),
        "node_types": node_type_counts(topo),
        "link_kinds": link_kind_counts(topo),
        "gpu_bandwidth_gbps": gpu_bandwidth_by_kind(topo) if topo.num_gpus else {},
        "bisection_gbps": bisection_bandwidth_gbps(topo),
        "routes": sample_routes(topo),
    }
