"""Builders, routing, ECMP, bisection and the shipped topology files, with exact known answers."""
from __future__ import annotations

import networkx as nx
import pytest

from moesim.errors import ConfigError
from moesim.topology import Topology, available_topologies, load_topology
from moesim.topology import builders as b
from moesim.topology.analysis import (bisection_bandwidth_gbps, describe, gpu_bandwidth_by_kind,
                                      link_kind_counts, node_type_counts)
from moesim.topology.spec import (FabricSpec, NVL72Intra, NVLinkPairsIntra, NVSwitchIntra, PCIeTreeIntra,
                                  RailFatTreeFabric, SingleSwitchFabric)

NVSW = NVSwitchIntra(bandwidth_gbps=450, latency_ns=300)


def rail(spines: int = 4, **kw) -> RailFatTreeFabric:
    return RailFatTreeFabric(kind="ib", nic_gbps=50, latency_ns=450, pcie_gbps=64, pcie_latency_ns=950, spines=spines, **kw)


def fabric(intra=NVSW, nodes: int = 1, gpus_per_node: int = 8, scale_out=None) -> Topology:
    return FabricSpec("t", "H100", gpus_per_node, intra, nodes=nodes, scale_out=scale_out).build()


def edge_bandwidths(topo: Topology, kind: str) -> set[float]:
    return {l.bandwidth_gbps for l in topo.links if l.kind == kind}


# -- builders ---------------------------------------------------------------------------------
def test_nvswitch_island_counts_and_bandwidth():
    t = fabric()
    assert t.gpus == tuple(f"n0.gpu{i}" for i in range(8))
    assert node_type_counts(t) == {"gpu": 8, "nvswitch": 1}
    assert link_kind_counts(t) == {"nvswitch": 16}
    assert edge_bandwidths(t, "nvswitch") == {450.0}
    assert t.graph.has_edge("n0.gpu3", "n0.nvsw") and t.graph.has_edge("n0.nvsw", "n0.gpu3")


def test_nvlink_pair_gets_the_whole_per_gpu_bandwidth():
    t = fabric(NVLinkPairsIntra(bandwidth_gbps=450, latency_ns=600), gpus_per_node=2)
    assert link_kind_counts(t) == {"nvlink": 2}
    assert edge_bandwidths(t, "nvlink") == {450.0}


def test_nvlink_mesh_splits_bandwidth_over_peers_and_pairs_are_disjoint():
    mesh = fabric(NVLinkPairsIntra(bandwidth_gbps=300, latency_ns=600), gpus_per_node=4)
    assert link_kind_counts(mesh) == {"nvlink": 12}  # 6 pairs x 2 directions
    assert edge_bandwidths(mesh, "nvlink") == {100.0}
    pairs = fabric(NVLinkPairsIntra(bandwidth_gbps=300, latency_ns=600, group_size=2), gpus_per_node=4)
    assert sorted((l.src, l.dst) for l in pairs.links) == [
        ("n0.gpu0", "n0.gpu1"), ("n0.gpu1", "n0.gpu0"), ("n0.gpu2", "n0.gpu3"), ("n0.gpu3", "n0.gpu2")]
    assert edge_bandwidths(pairs, "nvlink") == {300.0}


def test_pcie_tree_shape():
    t = fabric(PCIeTreeIntra(bandwidth_gbps=64, latency_ns=500, cpu_link_gbps=40, gpus_per_switch=2, sockets=2))
    assert node_type_counts(t) == {"gpu": 8, "pcie_switch": 4, "cpu": 2}
    assert link_kind_counts(t) == {"pcie": 2 * (8 + 4 + 1)}
    g = t.graph
    assert [next(iter(set(g.succ[f"n0.pcisw{s}"]) & {"n0.cpu0", "n0.cpu1"})) for s in range(4)] == \
        ["n0.cpu0", "n0.cpu0", "n0.cpu1", "n0.cpu1"]
    assert g.edges["n0.cpu0", "n0.cpu1"]["bandwidth_gbps"] == 40.0


def test_nvl72_rack():
    t = fabric(NVL72Intra(bandwidth_gbps=900, latency_ns=300, c2c_gbps=450, c2c_latency_ns=300), gpus_per_node=72)
    assert node_type_counts(t) == {"gpu": 72, "nvswitch": 1, "cpu": 36}
    assert link_kind_counts(t) == {"nvswitch": 144, "c2c": 144}
    assert edge_bandwidths(t, "nvswitch") == {900.0} and edge_bandwidths(t, "c2c") == {450.0}
    assert set(t.graph.succ["n0.cpu5"]) == {"n0.gpu10", "n0.gpu11"}


def test_rail_fat_tree_counts_and_bandwidths():
    t = fabric(nodes=4, scale_out=rail(spines=4))
    assert node_type_counts(t) == {"gpu": 32, "nvswitch": 4, "nic": 32, "leaf": 8, "spine": 4}
    # 32 GPU-NIC (pcie) + 32 NIC-leaf + 8 leaves x 4 spines, each in both directions
    assert link_kind_counts(t) == {"nvswitch": 64, "pcie": 64, "ib": 2 * (32 + 32)}
    assert edge_bandwidths(t, "pcie") == {64.0}
    assert t.graph.edges["n2.nic5", "leaf5"]["bandwidth_gbps"] == 50.0
    assert t.graph.edges["leaf5", "spine3"]["bandwidth_gbps"] == 4 * 50 / 4  # non-blocking
    assert set(t.graph.succ["leaf5"]) == {f"n{h}.nic5" for h in range(4)} | {f"spine{k}" for k in range(4)}


def test_rail_fat_tree_leaf_groups_and_oversubscription():
    t = fabric(nodes=4, gpus_per_node=2, scale_out=rail(spines=2, nodes_per_leaf=2, oversubscription=2.0))
    leaves = sorted(n for n, d in t.graph.nodes(data=True) if d["type"] == "leaf")
    assert leaves == ["leaf0g0", "leaf0g1", "leaf1g0", "leaf1g1"]
    assert t.graph.edges["leaf1g1", "spine0"]["bandwidth_gbps"] == 2 * 50 / (2 * 2.0)
    explicit = fabric(nodes=2, gpus_per_node=2, scale_out=rail(spines=2, spine_gbps=7.0, spine_latency_ns=9))
    up = explicit.graph.edges["leaf0", "spine1"]
    assert (up["bandwidth_gbps"], up["latency_ns"], up["kind"]) == (7.0, 9, "ib")


def test_single_switch():
    sw = SingleSwitchFabric(kind="ethernet", nic_gbps=50, latency_ns=1000, pcie_gbps=64, pcie_latency_ns=800)
    t = fabric(nodes=3, gpus_per_node=4, scale_out=sw)
    assert node_type_counts(t) == {"gpu": 12, "nvswitch": 3, "nic": 12, "leaf": 1}
    assert link_kind_counts(t)["ethernet"] == 24


def test_every_physical_link_is_two_identical_directed_edges():
    single_node_only = {"hgx_h100_pcie", "h200x2_nvlink"}
    for name in available_topologies():
        g = load_topology(name, nodes=None if name in single_node_only else 2).graph
        for u, v, d in g.edges(data=True):
            back = g.edges[v, u]
            assert (back["bandwidth_gbps"], back["latency_ns"], back["kind"]) == (d["bandwidth_gbps"], d["latency_ns"], d["kind"])


def test_builders_refuse_duplicate_names_and_links():
    g = nx.DiGraph()
    b.add_nvswitch_island(g, 0, 2, b.LinkSpec("nvswitch", 450, 300))
    with pytest.raises(ConfigError, match="duplicate node 'n0.gpu0'"):
        b.add_nvswitch_island(g, 0, 2, b.LinkSpec("nvswitch", 450, 300))
    with pytest.raises(ConfigError, match="duplicate link"):
        b.add_link(g, "n0.gpu0", "n0.nvsw", b.LinkSpec("nvswitch", 1, 1))


def test_link_spec_validates():
    with pytest.raises(ConfigError, match="bandwidth_gbps"):
        b.LinkSpec("nvlink", 0, 1)
    with pytest.raises(ConfigError, match="latency_ns"):
        b.LinkSpec("nvlink", 1, -1)
    with pytest.raises(ConfigError, match="kind"):
        b.LinkSpec("warp", 1, 1)


# -- routing ----------------------------------------------------------------------------------
def test_same_node_route_is_two_nvswitch_hops():
    t = fabric(nodes=2, scale_out=rail())
    r = t.route(0, 5)
    assert r.kinds == ("nvswitch", "nvswitch")
    assert [t.links[i].dst for i in r.link_ids] == ["n0.nvsw", "n0.gpu5"]
    assert (r.latency_ns, r.bottleneck_gbps, t.num_paths(0, 5)) == (600, 450.0, 1)


def test_cross_node_same_rail_goes_gpu_nic_leaf_nic_gpu():
    t = fabric(nodes=2, scale_out=rail())
    r = t.route(3, 8 + 3)
    assert [t.links[i].dst for i in r.link_ids] == ["n0.nic3", "leaf3", "n1.nic3", "n1.gpu3"]
    assert r.kinds == ("pcie", "ib", "ib", "pcie")
    assert (r.latency_ns, r.bottleneck_gbps, t.num_paths(3, 11)) == (2 * 950 + 2 * 450, 50.0, 1)


def test_cross_rail_uses_ecmp_over_spines_and_key_picks_deterministically():
    t = fabric(nodes=2, scale_out=rail(spines=4))
    assert t.num_paths(0, 9) == 4
    spines = [t.links[t.route(0, 9, key).link_ids[2]].dst for key in range(8)]
    assert spines == ["spine0", "spine1", "spine2", "spine3"] * 2
    assert t.route(0, 9, 6) == t.route(0, 9, 6) == t.route(0, 9, 2)
    r = t.route(0, 9)
    assert r.kinds == ("pcie", "ib", "ib", "ib", "ib", "pcie") and r.latency_ns == 2 * 950 + 4 * 450


def test_same_rail_across_leaf_groups_goes_through_spines():
    t = fabric(nodes=4, gpus_per_node=2, scale_out=rail(spines=3, nodes_per_leaf=2))
    assert t.num_paths(0, 2) == 1  # hosts 0 and 1 share leaf0g0
    assert t.num_paths(0, 4) == 3  # host 2 is on leaf0g1
    assert [t.links[i].dst for i in t.route(0, 4, 1).link_ids] == ["n0.nic0", "leaf0g0", "spine1", "leaf0g1", "n2.nic0", "n2.gpu0"]


def test_pcie_tree_routes():
    t = fabric(PCIeTreeIntra(bandwidth_gbps=64, latency_ns=500, cpu_link_gbps=40, cpu_link_latency_ns=700))
    same_switch, same_socket, other_socket = t.route(0, 1), t.route(0, 2), t.route(0, 4)
    assert (len(same_switch.link_ids), same_switch.latency_ns) == (2, 1000)
    assert (len(same_socket.link_ids), same_socket.latency_ns) == (4, 2000)
    assert (len(other_socket.link_ids), other_socket.latency_ns, other_socket.bottleneck_gbps) == (5, 2700, 40.0)


def test_gpus_are_a_last_resort_transit():
    # gpu0 - gpu1 - gpu2 direct links at 0 ns, plus a slow switch joining gpu0 and gpu2
    g = nx.DiGraph()
    for i in range(3):
        g.add_node(f"gpu{i}", type="gpu", host=0, local=i)
    g.add_node("sw", type="nvswitch", host=0)
    b.add_link(g, "gpu0", "gpu1", b.LinkSpec("nvlink", 100, 0))
    b.add_link(g, "gpu1", "gpu2", b.LinkSpec("nvlink", 100, 0))
    b.add_link(g, "gpu0", "sw", b.LinkSpec("nvswitch", 10, 5000))
    b.add_link(g, "sw", "gpu2", b.LinkSpec("nvswitch", 10, 5000))
    t = Topology("t", g, "H100")
    assert [t.links[i].dst for i in t.route(0, 2).link_ids] == ["sw", "gpu2"]
    g.remove_node("sw")
    chain = Topology("chain", g, "H100")
    assert [chain.links[i].dst for i in chain.route(0, 2).link_ids] == ["gpu1", "gpu2"]


def test_route_to_self_and_unreachable():
    t = fabric(NVLinkPairsIntra(bandwidth_gbps=100, latency_ns=1, group_size=2), gpus_per_node=4)
    assert t.route(1, 1).link_ids == () and t.num_paths(1, 1) == 1
    with pytest.raises(ConfigError, match="no path from n0.gpu0"):
        t.route(0, 2)


def test_hierarchical_router_matches_exact_search_on_shipped_fabrics():
    t = load_topology("dgx_h100", nodes=3)
    assert t.router.hierarchical
    for src in range(t.num_gpus):
        for dst in range(0, t.num_gpus, 5):
            if src != dst:
                s, d = t.gpus[src], t.gpus[dst]
                assert t.router.paths(s, d) == t.router._exact_paths(s, d)


def dual_rail(host_carries_transit: bool = False) -> Topology:
    """2 hosts x 2 GPUs; every GPU has NICs on leafA and leafB, which share one spine.

    With ``host_carries_transit`` each host also gets a PCIe switch wired to both leaves, so a
    host could forward between leaves and the router must fall back to the exact search.
    """
    g = nx.DiGraph()
    pcie, ib = b.LinkSpec("pcie", 64, 100), b.LinkSpec("ib", 50, 100)
    for leaf in ("leafA", "leafB"):
        b.add_node(g, leaf, "leaf")
    b.add_node(g, "spine0", "spine")
    for leaf in ("leafA", "leafB"):
        b.add_link(g, leaf, "spine0", ib)
    for h in range(2):
        gpus = b.add_nvswitch_island(g, h, 2, b.LinkSpec("nvswitch", 450, 300))
        for gpu in gpus:
            for leaf in ("leafA", "leafB"):
                nic = b.add_node(g, f"{gpu}.nic{leaf[-1]}", "nic", host=h)
                b.add_link(g, gpu, nic, pcie)
                b.add_link(g, nic, leaf, ib)
        if host_carries_transit:
            sw = b.add_node(g, f"n{h}.pcisw", "pcie_switch", host=h)
            b.add_link(g, sw, "leafA", ib)
            b.add_link(g, sw, "leafB", ib)
    return Topology("dual_rail", g, "H100")


def test_several_tied_exits_give_one_path_per_rail():
    t = dual_rail()
    assert t.router.hierarchical
    leaves = [t.links[t.route(0, 2, key).link_ids[1]].dst for key in range(2)]
    assert t.num_paths(0, 2) == 2 and leaves == ["leafA", "leafB"]
    for s in t.gpus:
        for d in t.gpus:
            if s != d:
                assert t.router.paths(s, d) == t.router._exact_paths(s, d)


def test_hosts_that_could_forward_between_leaves_use_the_exact_search():
    t = dual_rail(host_carries_transit=True)
    assert not t.router.hierarchical
    assert t.num_paths(0, 2) == 2 and t.route(0, 2).kinds == ("pcie", "ib", "ib", "pcie")


def test_rank_of_names_and_ranks():
    t = fabric(nodes=2, scale_out=rail())
    assert (t.rank_of("n1.gpu2"), t.rank_of("10"), t.rank_of(3), t.host_of(10)) == (10, 10, 3, 1)
    with pytest.raises(ConfigError, match="n0.gpu0"):
        t.rank_of("gpu9")


# -- analysis ---------------------------------------------------------------------------------
def test_bisection_known_answers():
    # 4 GPUs on a switch at 100: 2 GPUs' uplinks cross the cut
    assert bisection_bandwidth_gbps(fabric(NVSwitchIntra(100, 0), gpus_per_node=4)) == 200.0
    # 2 hosts x 4 GPUs, one 50 GB/s NIC per GPU: the cut is the 4 NICs of a host
    assert bisection_bandwidth_gbps(fabric(nodes=2, gpus_per_node=4, scale_out=rail(spines=2))) == 200.0
    # one host per leaf group, 2:1 oversubscribed single spine: 2 rails x 50/2 GB/s uplinks
    over = rail(spines=1, nodes_per_leaf=1, oversubscription=2.0)
    assert bisection_bandwidth_gbps(fabric(nodes=2, gpus_per_node=2, scale_out=over)) == 50.0
    # PCIe tree: GPUs 0-3 on socket 0, 4-7 on socket 1 -> the inter-socket link
    pcie = PCIeTreeIntra(bandwidth_gbps=64, latency_ns=500, cpu_link_gbps=40)
    assert bisection_bandwidth_gbps(fabric(pcie)) == 40.0
    assert bisection_bandwidth_gbps(fabric(gpus_per_node=1)) == 0.0


def test_gpu_bandwidth_by_kind_and_describe():
    t = load_topology("dgx_h100", nodes=2)
    assert gpu_bandwidth_by_kind(t) == {"nvswitch": 450.0, "pcie": 64.0, "ib": 50.0}
    info = describe(t)
    assert (info["num_gpus"], info["num_hosts"], info["gpus_per_host"], info["bisection_gbps"]) == (16, 2, 8, 400.0)
    assert [r["num_paths"] for r in info["routes"]] == [1, 1, 4]
    assert info["link_kinds"] == {"nvswitch": 32, "pcie": 32, "ib": 2 * (16 + 8 * 4)}


# -- shipped files ----------------------------------------------------------------------------
EXPECTED = {  # name: (GPUs, per-GPU scale-up GB/s per direction)
    "dgx_a100": (8, {"nvswitch": 300.0}), "dgx_h100": (8, {"nvswitch": 450.0}), "dgx_h200": (8, {"nvswitch": 450.0}),
    "dgx_h100_4node": (32, {"nvswitch": 450.0, "pcie": 64.0, "ib": 50.0}), "hgx_h100_pcie": (8, {"pcie": 64.0}),
    "gb200_nvl72": (72, {"nvswitch": 900.0, "c2c": 450.0}),
    "gb200_nvl72_ethernet": (72, {"nvswitch": 900.0, "c2c": 450.0}), "h200x2_nvlink": (2, {"nvlink": 450.0}),
    "h800_cluster": (64, {"nvswitch": 200.0, "pcie": 64.0, "ib": 50.0}),
}


def test_every_shipped_file_is_expected():
    assert sorted(available_topologies()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_topology_loads_and_routes(name):
    t = load_topology(name)
    gpus, bandwidth = EXPECTED[name]
    assert t.num_gpus == gpus and gpu_bandwidth_by_kind(t) == bandwidth
    for dst in range(1, t.num_gpus):
        r = t.route(0, dst)
        assert r.bottleneck_gbps > 0 and r.latency_ns > 0


@pytest.mark.parametrize("name", ["dgx_a100", "dgx_h100", "dgx_h200", "gb200_nvl72", "h800_cluster"])
def test_shipped_topology_scales_with_nodes(name):
    t = load_topology(name, nodes=3)
    assert t.num_hosts == 3 and t.num_gpus == 3 * t.meta["gpus_per_node"]
    assert t.route(0, t.num_gpus - 1).kinds[0] == "pcie"


def test_extends_gives_the_same_graph_as_the_override():
    a, b4 = load_topology("dgx_h100", nodes=4).graph, load_topology("dgx_h100_4node").graph
    assert sorted(a.edges(data=True)) == sorted(b4.edges(data=True))
    assert load_topology("dgx_h200").gpu_kind == "H200"


def test_full_deepseek_cluster_builds_and_routes_across_leaf_groups():
    t = load_topology("h800_cluster", nodes=256)
    assert (t.num_gpus, t.num_hosts) == (2048, 256)
    far = t.rank_of("n200.gpu0")  # same rail, other leaf group -> 32 spines
    assert t.num_paths(0, far) == 32 and t.route(0, far).bottleneck_gbps == 50.0
