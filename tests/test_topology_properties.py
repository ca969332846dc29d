"""Hypothesis properties of random valid fabrics: connected, well-formed routes, exact router."""
from __future__ import annotations

import random

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from moesim.topology import Topology
from moesim.topology.spec import (FabricSpec, NVL72Intra, NVLinkPairsIntra, NVSwitchIntra, PCIeTreeIntra,
                                  RailFatTreeFabric, SingleSwitchFabric)

bandwidths = st.sampled_from([12.5, 25.0, 50.0, 64.0, 100.0, 450.0])
latencies = st.sampled_from([0, 100, 300, 450, 950])  # repeats make ties (ECMP) likely


@st.composite
def intras(draw, gpus_per_node: int):
    kind = draw(st.sampled_from(["nvswitch", "nvlink_pairs", "pcie_tree", "nvl72"]))
    bw, lat = draw(bandwidths), draw(latencies)
    if kind == "nvswitch":
        return NVSwitchIntra(bw, lat)
    if kind == "nvlink_pairs":
        sizes = [None] + [k for k in range(1, gpus_per_node + 1) if gpus_per_node % k == 0]
        return NVLinkPairsIntra(bw, lat, group_size=draw(st.sampled_from(sizes)))
    if kind == "pcie_tree":
        per_switch = draw(st.integers(1, gpus_per_node))
        switches = -(-gpus_per_node // per_switch)
        return PCIeTreeIntra(bw, lat, cpu_link_gbps=draw(bandwidths), gpus_per_switch=per_switch,
                             sockets=draw(st.integers(1, min(2, switches))), cpu_link_latency_ns=draw(latencies))
    return NVL72Intra(bw, lat, c2c_gbps=draw(bandwidths), c2c_latency_ns=draw(latencies),
                      gpus_per_cpu=draw(st.sampled_from([k for k in (1, 2) if gpus_per_node % k == 0])))


@st.composite
def scale_outs(draw, nodes: int):
    common = dict(kind=draw(st.sampled_from(["ib", "ethernet"])), nic_gbps=draw(bandwidths), latency_ns=draw(latencies),
                  pcie_gbps=draw(bandwidths), pcie_latency_ns=draw(latencies))
    if draw(st.booleans()):
        return SingleSwitchFabric(**common)
    return RailFatTreeFabric(**common, spines=draw(st.integers(1, 3)),
                             nodes_per_leaf=draw(st.one_of(st.none(), st.integers(1, nodes))),
                             oversubscription=draw(st.sampled_from([1.0, 2.0])),
                             spine_latency_ns=draw(st.one_of(st.none(), latencies)))


@st.composite
def fabrics(draw) -> Topology:
    nodes, gpus_per_node = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    intra = draw(intras(gpus_per_node))
    if nodes == 1 and isinstance(intra, NVLinkPairsIntra) and intra.group_size not in (None, gpus_per_node):
        assume(gpus_per_node == 1)  # disjoint NVLink groups on one host are disconnected by design
    scale_out = draw(scale_outs(nodes)) if nodes > 1 else None
    return FabricSpec("random", "H100", gpus_per_node, intra, nodes=nodes, scale_out=scale_out).build()


def check_route(topo: Topology, src: int, dst: int, key: int) -> None:
    route = topo.route(src, dst, key)
    links = [topo.links[i] for i in route.link_ids]
    assert links[0].src == topo.gpus[src] and links[-1].dst == topo.gpus[dst]
    assert all(a.dst == b.src for a, b in zip(links, links[1:]))  # contiguous
    assert all(topo.graph.nodes[l.dst]["type"] != "gpu" for l in links[:-1])  # builders never force GPU transit
    assert all(route.bottleneck_gbps <= l.bandwidth_gbps for l in links)
    assert route.bottleneck_gbps == min(l.bandwidth_gbps for l in links)
    assert route.latency_ns == sum(l.latency_ns for l in links)
    assert route.kinds == tuple(l.kind for l in links)


@settings(max_examples=120, deadline=None)
@given(fabrics(), st.integers(0, 10_000))
def test_random_fabrics_connect_every_gpu_pair_with_well_formed_routes(topo, key):
    for src in range(topo.num_gpus):
        for dst in range(topo.num_gpus):
            if src != dst:
                check_route(topo, src, dst, key)
                assert topo.num_paths(src, dst) == topo.num_paths(dst, src)  # links are symmetric


@settings(max_examples=60, deadline=None)
@given(fabrics(), st.integers(0, 2**32 - 1))
def test_hierarchical_router_equals_exact_whole_graph_search(topo, seed):
    rng = random.Random(seed)
    router = topo.router
    assert router.hierarchical
    for _ in range(12):
        s, d = rng.sample(topo.gpus, 2) if topo.num_gpus > 1 else (topo.gpus[0], topo.gpus[0])
        if s != d:
            assert router.paths(s, d) == router._exact_paths(s, d)
