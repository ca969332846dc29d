"""Parameterised graph builders: the only code that adds nodes and links to a fabric graph.

Each builder adds one piece of a fabric (an NVSwitch island, an NVLink mesh, a PCIe tree, a GB200
NVL72 rack, NICs, a rail-optimised fat-tree or a single switch) to a ``networkx.DiGraph`` with the
attributes :mod:`moesim.topology.model` documents. Every physical link becomes two directed edges
with the same ``bandwidth_gbps`` (GB/s per direction), ``latency_ns`` and ``kind``. Node names are
readable and unique: ``n0.gpu3``, ``n0.nvsw``, ``n0.pcisw1``, ``n0.cpu0``, ``n0.nic3``, ``leaf2``,
``spine0``; adding a name twice raises :class:`ConfigError`. Host-local nodes carry ``host``;
leaves and spines do not (they are the shared fabric the router treats separately).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import networkx as nx

from moesim.errors import ConfigError
from moesim.topology.model import LINK_KINDS, NODE_TYPES


@dataclass(frozen=True)
class LinkSpec:
    """Bandwidth (GB/s per direction), latency and kind of one physical link."""

    kind: str
    bandwidth_gbps: float
    latency_ns: int

    def __post_init__(self) -> None:
        if self.kind not in LINK_KINDS:
            raise ConfigError("kind", f"unknown link kind {self.kind!r}", f"use one of: {', '.join(LINK_KINDS)}")
        if not self.bandwidth_gbps > 0:
            raise ConfigError("bandwidth_gbps", f"must be > 0, got {self.bandwidth_gbps}", "give GB/s per direction")
        if self.latency_ns < 0:
            raise ConfigError("latency_ns", f"must be >= 0, got {self.latency_ns}", "give a latency in ns")

    def scaled(self, bandwidth_gbps: float) -> "LinkSpec":
        """The same link kind and latency with another bandwidth."""
        return LinkSpec(self.kind, bandwidth_gbps, self.latency_ns)


# -- primitives ---------------------------------------------------------------------------------
def add_node(g: nx.DiGraph, name: str, node_type: str, **attrs: object) -> str:
    """Add one node; a name already in the graph is a ConfigError (names must be unique)."""
    assert node_type in NODE_TYPES, node_type
    if name in g:
        raise ConfigError("node name", f"duplicate node {name!r}", "give each host and switch a unique index/prefix")
    g.add_node(name, type=node_type, **attrs)
    return name


def add_link(g: nx.DiGraph, a: str, b: str, link: LinkSpec) -> None:
    """Join ``a`` and ``b`` by one physical link: two directed edges, one per direction."""
    if g.has_edge(a, b):
        raise ConfigError("link", f"duplicate link {a} <-> {b}", "join each pair of nodes once; raise its bandwidth instead")
    attrs = {"bandwidth_gbps": float(link.bandwidth_gbps), "latency_ns": int(link.latency_ns), "kind": link.kind}
    g.add_edge(a, b, **attrs)
    g.add_edge(b, a, **attrs)


def add_gpus(g: nx.DiGraph, host: int, num_gpus: int) -> list[str]:
    """Add ``num_gpus`` GPUs of one host, named ``n{host}.gpu{i}``."""
    _positive_int("gpus_per_node", num_gpus)
    return [add_node(g, f"n{host}.gpu{i}", "gpu", host=host, local=i) for i in range(num_gpus)]


def _positive_int(field: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(field, f"must be a whole number >= 1, got {value!r}", f"set {field} to 1 or more")


# -- scale-up (inside one host) ----------------------------------------------------------------
def add_nvswitch_island(g: nx.DiGraph, host: int, num_gpus: int, link: LinkSpec) -> list[str]:
    """GPUs of one host, each joined to one logical NVSwitch ``n{host}.nvsw`` by ``link``.

    One logical switch per host stands for the NVSwitch chips of the baseboard: the hardware
    sprays every transfer over all of a GPU's NVLinks, so a single link of the GPU's full
    per-direction NVLink bandwidth is the faithful fluid model (and the switch is non-blocking).
    """
    gpus = add_gpus(g, host, num_gpus)
    switch = add_node(g, f"n{host}.nvsw", "nvswitch", host=host)
    for gpu in gpus:
        add_link(g, gpu, switch, link)
    return gpus


def add_nvlink_mesh(g: nx.DiGraph, host: int, num_gpus: int, link: LinkSpec, group_size: int | None = None) -> list[str]:
    """GPUs joined point-to-point by NVLink, fully meshed inside groups of ``group_size``.

    ``link.bandwidth_gbps`` is one GPU's total NVLink bandwidth per direction; in a group of k GPUs
    each of the k-1 peer links gets an equal share (2 GPUs: the whole of it, e.g. 18 NVLinks =
    450 GB/s). ``group_size`` None means one group of the whole host; 2 means disjoint pairs.
    """
    size = num_gpus if group_size is None else group_size
    _positive_int("group_size", size)
    if num_gpus % size:
        raise ConfigError("group_size", f"{num_gpus} GPUs do not split into groups of {size}", "use a divisor of gpus_per_node")
    gpus = add_gpus(g, host, num_gpus)
    if size < 2:
        return gpus
    peer = link.scaled(link.bandwidth_gbps / (size - 1))
    for start in range(0, num_gpus, size):
        group = gpus[start:start + size]
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                add_link(g, a, b, peer)
    return gpus


def add_pcie_tree(g: nx.DiGraph, host: int, num_gpus: int, gpu_link: LinkSpec, uplink: LinkSpec,
                  cpu_link: LinkSpec, gpus_per_switch: int = 2, sockets: int = 2) -> list[str]:
    """GPUs behind PCIe switches behind the CPU root complexes of ``sockets`` sockets.

    GPU i hangs off switch ``i // gpus_per_switch``; switches are spread evenly over the sockets in
    order; CPU sockets are joined pairwise by ``cpu_link`` (the inter-socket link).
    """
    _positive_int("gpus_per_switch", gpus_per_switch)
    _positive_int("sockets", sockets)
    num_switches = math.ceil(num_gpus / gpus_per_switch)
    if sockets > num_switches:
        raise ConfigError("sockets", f"{sockets} sockets for only {num_switches} PCIe switch(es)",
                          f"use sockets <= {num_switches}")
    gpus = add_gpus(g, host, num_gpus)
    cpus = [add_node(g, f"n{host}.cpu{k}", "cpu", host=host) for k in range(sockets)]
    for s in range(num_switches):
        switch = add_node(g, f"n{host}.pcisw{s}", "pcie_switch", host=host)
        add_link(g, switch, cpus[s * sockets // num_switches], uplink)
        for gpu in gpus[s * gpus_per_switch:(s + 1) * gpus_per_switch]:
            add_link(g, gpu, switch, gpu_link)
    for i, a in enumerate(cpus):
        for b in cpus[i + 1:]:
            add_link(g, a, b, cpu_link)
    return gpus


def add_nvl72(g: nx.DiGraph, host: int, num_gpus: int, nvswitch: LinkSpec, c2c: LinkSpec, gpus_per_cpu: int = 2) -> list[str]:
    """A GB200 NVL72-style rack: one NVLink domain of all GPUs plus Grace CPUs joined by C2C.

    The 18 NVSwitch chips of the 9 switch trays form one non-blocking NVLink domain; as in
    :func:`add_nvswitch_island` they are one logical switch with the GPU's full NVLink bandwidth.
    Each Grace CPU ``n{host}.cpu{k}`` serves ``gpus_per_cpu`` GPUs over NVLink-C2C.
    """
    _positive_int("gpus_per_cpu", gpus_per_cpu)
    if num_gpus % gpus_per_cpu:
        raise ConfigError("gpus_per_cpu", f"{num_gpus} GPUs do not split over CPUs of {gpus_per_cpu}",
                          "use a divisor of gpus_per_node")
    gpus = add_nvswitch_island(g, host, num_gpus, nvswitch)
    for k in range(num_gpus // gpus_per_cpu):
        cpu = add_node(g, f"n{host}.cpu{k}", "cpu", host=host)
        for gpu in gpus[k * gpus_per_cpu:(k + 1) * gpus_per_cpu]:
            add_link(g, gpu, cpu, c2c)
    return gpus


# -- scale-out (between hosts) -----------------------------------------------------------------
def add_nics(g: nx.DiGraph, gpus_by_host: Sequence[Sequence[str]], pcie: LinkSpec) -> list[list[str]]:
    """One NIC per GPU, ``n{host}.nic{local}``, joined to its GPU by ``pcie`` (GPUDirect RDMA)."""
    nics_by_host = []
    for gpus in gpus_by_host:
        nics = []
        for gpu in gpus:
            attrs = g.nodes[gpu]
            nic = add_node(g, f"n{attrs['host']}.nic{attrs['local']}", "nic", host=attrs["host"], local=attrs["local"])
            add_link(g, gpu, nic, pcie)
            nics.append(nic)
        nics_by_host.append(nics)
    return nics_by_host


def add_single_switch(g: nx.DiGraph, nics_by_host: Sequence[Sequence[str]], nic_link: LinkSpec) -> str:
    """Every NIC on one non-blocking switch ``leaf0``."""
    switch = add_node(g, "leaf0", "leaf")
    for nics in nics_by_host:
        for nic in nics:
            add_link(g, nic, switch, nic_link)
    return switch


def add_rail_fat_tree(g: nx.DiGraph, nics_by_host: Sequence[Sequence[str]], nic_link: LinkSpec, spines: int,
                      spine_gbps: float | None = None, spine_latency_ns: int | None = None,
                      nodes_per_leaf: int | None = None, oversubscription: float = 1.0) -> list[str]:
    """A rail-optimised two-level fat-tree: NIC r of every host goes to a leaf of rail r.

    Hosts are cut into groups of ``nodes_per_leaf`` (default: all hosts on one leaf per rail);
    leaf ``leaf{r}`` (or ``leaf{r}g{group}`` with several groups) joins NIC r of its group's hosts.
    Every leaf joins every spine, so traffic between leaves spreads over ``spines`` equal-cost
    paths (ECMP). Without ``spine_gbps`` each leaf-spine link gets the leaf's downlink bandwidth
    divided by ``spines * oversubscription`` (1.0 = non-blocking); ``spine_latency_ns`` defaults
    to the NIC link's. Returns the leaf names.
    """
    _positive_int("spines", spines)
    if not oversubscription > 0:
        raise ConfigError("oversubscription", f"must be > 0, got {oversubscription}", "use 1.0 for a non-blocking fabric")
    num_hosts = len(nics_by_host)
    per_leaf = num_hosts if nodes_per_leaf is None else nodes_per_leaf
    _positive_int("nodes_per_leaf", per_leaf)
    num_rails = len(nics_by_host[0]) if nics_by_host else 0
    num_groups = math.ceil(num_hosts / per_leaf)
    spine_names = [add_node(g, f"spine{k}", "spine") for k in range(spines)]
    leaves = []
    for grp in range(num_groups):
        members = nics_by_host[grp * per_leaf:(grp + 1) * per_leaf]
        for r in range(num_rails):
            leaf = add_node(g, f"leaf{r}" if num_groups == 1 else f"leaf{r}g{grp}", "leaf")
            for nics in members:
                add_link(g, nics[r], leaf, nic_link)
            up = LinkSpec(nic_link.kind,
                          spine_gbps or len(members) * nic_link.bandwidth_gbps / (spines * oversubscription),
                          nic_link.latency_ns if spine_latency_ns is None else spine_latency_ns)
            for spine in spine_names:
                add_link(g, leaf, spine, up)
            leaves.append(leaf)
    return leaves
