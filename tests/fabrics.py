"""Tiny hand-built fabrics for engine tests with exactly known answers."""
from __future__ import annotations

import networkx as nx

from moesim.topology.model import Topology


def _link(g: nx.DiGraph, a: str, b: str, bw: float, lat: int = 0, kind: str = "nvlink") -> None:
    g.add_edge(a, b, bandwidth_gbps=bw, latency_ns=lat, kind=kind)
    g.add_edge(b, a, bandwidth_gbps=bw, latency_ns=lat, kind=kind)


def star(n: int, bw: float = 100.0, lat: int = 0) -> Topology:
    """n GPUs on one switch; every GPU-switch link has ``bw`` GB/s per direction."""
    g = nx.DiGraph()
    g.add_node("sw", type="nvswitch")
    for i in range(n):
        g.add_node(f"gpu{i}", type="gpu", host=0, local=i)
        _link(g, f"gpu{i}", "sw", bw, lat, "nvswitch")
    return Topology(f"star{n}", g, "H100")


def chain(bws: list[float], lat: int = 0) -> Topology:
    """gpu0 - gpu1 - ... with link i joining gpu i and gpu i+1 at bws[i] GB/s."""
    g = nx.DiGraph()
    for i in range(len(bws) + 1):
        g.add_node(f"gpu{i}", type="gpu", host=0, local=i)
    for i, bw in enumerate(bws):
        _link(g, f"gpu{i}", f"gpu{i+1}", bw, lat)
    return Topology("chain", g, "H100")


def ring(n: int, bw: float = 100.0, lat: int = 0) -> Topology:
    """n GPUs in a bidirectional ring of direct links."""
    g = nx.DiGraph()
    for i in range(n):
        g.add_node(f"gpu{i}", type="gpu", host=0, local=i)
    for i in range(n):
        _link(g, f"gpu{i}", f"gpu{(i + 1) % n}", bw, lat)
    return Topology(f"ring{n}", g, "H100")


def two_hosts(per_host: int, nvl_bw: float = 400.0, nic_bw: float = 50.0) -> Topology:
    """Two hosts of NVSwitch islands joined through one NIC per host and a switch."""
    g = nx.DiGraph()
    g.add_node("core", type="leaf")
    for h in range(2):
        g.add_node(f"n{h}.sw", type="nvswitch")
        g.add_node(f"n{h}.nic", type="nic")
        _link(g, f"n{h}.sw", f"n{h}.nic", nic_bw, 0, "pcie")
        _link(g, f"n{h}.nic", "core", nic_bw, 0, "ib")
        for i in range(per_host):
            name = f"n{h}.gpu{i}"
            g.add_node(name, type="gpu", host=h, local=i)
            _link(g, name, f"n{h}.sw", nvl_bw, 0, "nvswitch")
    return Topology("two_hosts", g, "H100")


def run_gated_round_trips(sim, flows) -> tuple[list[int], object]:
    """For each ``(src, dst, nbytes, delay)``: after a ``delay`` ns gate on its own stream, send
    ``nbytes`` src -> dst, then ``nbytes // 2 + 1`` back. Runs ``sim``; returns each exchange's
    end and the result (the networks' equivalence tests run the same flows on each network)."""
    tasks = []
    for i, (src, dst, nbytes, delay) in enumerate(flows):
        deps = [sim.compute(src, delay, f"gate{i}", stream=f"gate{i}")] if delay else []
        tasks.append(sim.comm([(src, f"f{i}")], [[(src, dst, nbytes)], [(dst, src, nbytes // 2 + 1)]], f"f{i}",
                              category="send", deps=deps))
    result = sim.run()
    return [t.end_ns for t in tasks], result
