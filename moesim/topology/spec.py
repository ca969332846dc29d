"""Frozen, validated fabric specs and the registries that map YAML ``type`` names to them.

A :class:`FabricSpec` is what one ``topologies/*.yaml`` file declares: GPU kind, number of hosts,
GPUs per host, one intra-host spec (``INTRA_TYPES``) and, for several hosts, one scale-out spec
(``SCALE_OUT_TYPES``). Each spec checks its own values at construction (ConfigError naming the
field) and knows how to build its part of the graph with :mod:`moesim.topology.builders`.
The loader turns YAML into these specs; tests and sweeps may also build them directly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Sequence

import networkx as nx

from moesim.errors import ConfigError, unknown_name
from moesim.topology import builders as b
from moesim.topology.model import Topology

GPU_KINDS = ("A100", "B200", "GB200", "H100", "H100-PCIE", "H200", "H800")
SCALE_OUT_KINDS = ("ib", "ethernet")
# Size guards, checked before any graph is built (building costs ~90 us per GPU, ~30 us per
# link on one core): 131,072 GPUs is beyond the largest clusters built so far, and 2**19
# physical links covers them on a rail fat-tree. Larger specs are typos (nodes: 100000000) or
# need symmetry reduction, not a bigger graph.
MAX_GPUS = 1 << 17
MAX_LATENCY_NS = 10**9  # one second per link: anything above is a unit mistake (and overflows int64 sums)
MAX_LINKS = 1 << 19
# A link between 1 MB/s and 100 TB/s per direction: below, a transfer of a few GB takes hours of
# simulated time (1e-300 GB/s overflowed the transfer times); above, a unit mistake (NVLink 5 is
# 900 GB/s, HBM3e ~5 TB/s). Oversubscription beyond 1000:1 would take the same links below that.
MIN_BANDWIDTH_GBPS, MAX_BANDWIDTH_GBPS = 1e-3, 1e5
MAX_OVERSUBSCRIPTION = 1000.0


def _check_values(spec: object) -> None:
    """Bandwidths (``*_gbps``) must be finite and > 0, latencies (``*_latency_ns``) in [0, 1 s],
    counts >= 1."""
    for f in fields(spec):  # type: ignore[arg-type]
        value = getattr(spec, f.name)
        if value is None or isinstance(value, str):
            continue
        if f.name.endswith("_gbps") and not (value > 0 and math.isfinite(value)):
            problem = f"must be > 0, got {value}" if not value > 0 else f"must be finite, got {value}"
            raise ConfigError(f.name, problem, "give a bandwidth in GB/s per direction (400 Gb/s = 50 GB/s)")
        if f.name.endswith("_gbps") and not MIN_BANDWIDTH_GBPS <= value <= MAX_BANDWIDTH_GBPS:
            problem = f"{value} GB/s is outside {MIN_BANDWIDTH_GBPS:g}..{MAX_BANDWIDTH_GBPS:g} GB/s (1 MB/s to 100 TB/s)"
            raise ConfigError(f.name, problem, "give a bandwidth in GB/s per direction (400 Gb/s = 50 GB/s)")
        if f.name.endswith("latency_ns") and not 0 <= value <= MAX_LATENCY_NS:
            problem = (f"must be >= 0, got {value}" if value < 0
                       else f"must be at most {MAX_LATENCY_NS} (1 s), got {value}")
            raise ConfigError(f.name, problem, "give a latency in nanoseconds")
        if f.name in _COUNT_FIELDS and value < 1:
            raise ConfigError(f.name, f"must be >= 1, got {value}", f"set {f.name} to 1 or more")


_COUNT_FIELDS = {"nodes", "gpus_per_node", "group_size", "gpus_per_switch", "sockets", "gpus_per_cpu", "spines", "nodes_per_leaf"}


# -- intra-host --------------------------------------------------------------------------------
@dataclass(frozen=True)
class NVSwitchIntra:
    """All GPUs of a host on one (logical) NVSwitch; ``bandwidth_gbps`` per GPU per direction."""

    bandwidth_gbps: float
    latency_ns: int
    type_name: ClassVar[str] = "nvswitch"

    def __post_init__(self) -> None:
        _check_values(self)

    def build(self, g: nx.DiGraph, host: int, num_gpus: int) -> list[str]:
        return b.add_nvswitch_island(g, host, num_gpus, b.LinkSpec("nvswitch", self.bandwidth_gbps, self.latency_ns))


@dataclass(frozen=True)
class NVLinkPairsIntra:
    """Direct NVLinks, full mesh inside groups of ``group_size`` (None = whole host, 2 = pairs).

    ``bandwidth_gbps`` is one GPU's total NVLink bandwidth per direction, split over its peers.
    """

    bandwidth_gbps: float
    latency_ns: int
    group_size: int | None = None
    type_name: ClassVar[str] = "nvlink_pairs"

    def __post_init__(self) -> None:
        _check_values(self)

    def build(self, g: nx.DiGraph, host: int, num_gpus: int) -> list[str]:
        link = b.LinkSpec("nvlink", self.bandwidth_gbps, self.latency_ns)
        return b.add_nvlink_mesh(g, host, num_gpus, link, self.group_size)


@dataclass(frozen=True)
class PCIeTreeIntra:
    """GPUs behind PCIe switches behind CPU sockets (no NVLink).

    ``bandwidth_gbps``: GPU-switch link; ``uplink_gbps``: switch-CPU link (default the same);
    ``cpu_link_gbps``: the inter-socket link (UPI/xGMI), modelled as kind ``pcie``.
    """

    bandwidth_gbps: float
    latency_ns: int
    cpu_link_gbps: float
    gpus_per_switch: int = 2
    sockets: int = 2
    uplink_gbps: float | None = None
    cpu_link_latency_ns: int | None = None
    type_name: ClassVar[str] = "pcie_tree"

    def __post_init__(self) -> None:
        _check_values(self)

    def build(self, g: nx.DiGraph, host: int, num_gpus: int) -> list[str]:
        gpu_link = b.LinkSpec("pcie", self.bandwidth_gbps, self.latency_ns)
        uplink = gpu_link.scaled(self.uplink_gbps or self.bandwidth_gbps)
        cpu_lat = self.latency_ns if self.cpu_link_latency_ns is None else self.cpu_link_latency_ns
        cpu_link = b.LinkSpec("pcie", self.cpu_link_gbps, cpu_lat)
        return b.add_pcie_tree(g, host, num_gpus, gpu_link, uplink, cpu_link, self.gpus_per_switch, self.sockets)


@dataclass(frozen=True)
class NVL72Intra:
    """GB200 NVL72-style NVLink domain (one logical NVSwitch) plus Grace CPUs on NVLink-C2C."""

    bandwidth_gbps: float
    latency_ns: int
    c2c_gbps: float
    c2c_latency_ns: int
    gpus_per_cpu: int = 2
    type_name: ClassVar[str] = "nvl72"

    def __post_init__(self) -> None:
        _check_values(self)

    def build(self, g: nx.DiGraph, host: int, num_gpus: int) -> list[str]:
        nvsw = b.LinkSpec("nvswitch", self.bandwidth_gbps, self.latency_ns)
        c2c = b.LinkSpec("c2c", self.c2c_gbps, self.c2c_latency_ns)
        return b.add_nvl72(g, host, num_gpus, nvsw, c2c, self.gpus_per_cpu)


# -- scale-out ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _NicFabric:
    """Fields shared by scale-out fabrics: one NIC per GPU on PCIe, NIC-switch links of ``kind``."""

    kind: str
    nic_gbps: float
    latency_ns: int
    pcie_gbps: float
    pcie_latency_ns: int

    def __post_init__(self) -> None:
        if self.kind not in SCALE_OUT_KINDS:
            raise unknown_name("kind", self.kind, SCALE_OUT_KINDS)
        _check_values(self)

    def _nics(self, g: nx.DiGraph, gpus_by_host: Sequence[Sequence[str]]) -> list[list[str]]:
        return b.add_nics(g, gpus_by_host, b.LinkSpec("pcie", self.pcie_gbps, self.pcie_latency_ns))

    @property
    def nic_link(self) -> b.LinkSpec:
        return b.LinkSpec(self.kind, self.nic_gbps, self.latency_ns)


@dataclass(frozen=True)
class SingleSwitchFabric(_NicFabric):
    """Every NIC on one non-blocking switch."""

    type_name: ClassVar[str] = "single_switch"

    def build(self, g: nx.DiGraph, gpus_by_host: Sequence[Sequence[str]]) -> None:
        b.add_single_switch(g, self._nics(g, gpus_by_host), self.nic_link)


@dataclass(frozen=True)
class RailFatTreeFabric(_NicFabric):
    """Rail-optimised two-level fat-tree (see :func:`builders.add_rail_fat_tree`)."""

    spines: int = 2
    spine_gbps: float | None = None
    spine_latency_ns: int | None = None
    nodes_per_leaf: int | None = None
    oversubscription: float = 1.0
    type_name: ClassVar[str] = "rail_fat_tree"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.oversubscription <= MAX_OVERSUBSCRIPTION:  # also refuses NaN
            raise ConfigError("oversubscription", f"must be a number in (0, {MAX_OVERSUBSCRIPTION:g}], "
                              f"got {self.oversubscription}",
                              "use 1.0 for a non-blocking fabric")

    def build(self, g: nx.DiGraph, gpus_by_host: Sequence[Sequence[str]]) -> None:
        b.add_rail_fat_tree(g, self._nics(g, gpus_by_host), self.nic_link, self.spines, self.spine_gbps,
                            self.spine_latency_ns, self.nodes_per_leaf, self.oversubscription)


IntraSpec = NVSwitchIntra | NVLinkPairsIntra | PCIeTreeIntra | NVL72Intra
ScaleOutSpec = SingleSwitchFabric | RailFatTreeFabric
INTRA_TYPES: dict[str, type] = {c.type_name: c for c in (NVSwitchIntra, NVLinkPairsIntra, PCIeTreeIntra, NVL72Intra)}
SCALE_OUT_TYPES: dict[str, type] = {c.type_name: c for c in (RailFatTreeFabric, SingleSwitchFabric)}


# -- whole fabric ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FabricSpec:
    """One fabric: ``nodes`` hosts of ``gpus_per_node`` GPUs, their intra spec, the scale-out."""

    name: str
    gpu_kind: str
    gpus_per_node: int
    intra: IntraSpec
    nodes: int = 1
    scale_out: ScaleOutSpec | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.gpu_kind not in GPU_KINDS:
            raise unknown_name("gpu.kind", self.gpu_kind, GPU_KINDS)
        _check_values(self)
        if self.nodes > 1 and self.scale_out is None:
            raise ConfigError("scale_out", f"nodes is {self.nodes} but no scale_out fabric joins the hosts",
                              f"add a scale_out block (type: {' or '.join(SCALE_OUT_TYPES)}) or set nodes: 1")
        _check_size(self)

    def build_graph(self) -> nx.DiGraph:
        """The fabric graph; the scale-out is built only when there is more than one host."""
        g = nx.DiGraph()
        try:
            gpus_by_host = [self.intra.build(g, host, self.gpus_per_node) for host in range(self.nodes)]
        except ConfigError as e:
            raise ConfigError(f"intra.{e.field}", e.problem, e.fix) from None
        if self.nodes > 1:
            assert self.scale_out is not None
            try:
                self.scale_out.build(g, gpus_by_host)
            except ConfigError as e:
                raise ConfigError(f"scale_out.{e.field}", e.problem, e.fix) from None
        return g

    def build(self, source: str = "") -> Topology:
        """Build the :class:`Topology`; ``meta`` keeps the spec (as a YAML-shaped, JSON-safe dict)
        and where it came from."""
        meta = {
            "source": source, "description": self.description, "nodes": self.nodes, "gpus_per_node": self.gpus_per_node,
            "intra": self.intra.type_name, "scale_out": self.scale_out.type_name if self.nodes > 1 and self.scale_out else None,
            "spec": spec_to_dict(self),
        }
        return Topology(self.name, self.build_graph(), self.gpu_kind, meta)


def _intra_links(intra: IntraSpec, gpus: int) -> int:
    """Physical links one host's intra spec builds (an upper bound where the builder will refuse)."""
    if isinstance(intra, NVLinkPairsIntra):
        size = min(intra.group_size or gpus, gpus)
        return gpus * (size - 1) // 2
    if isinstance(intra, PCIeTreeIntra):
        switches = -(-gpus // intra.gpus_per_switch)
        sockets = min(intra.sockets, switches)
        return gpus + switches + sockets * (sockets - 1) // 2
    if isinstance(intra, NVL72Intra):
        return 2 * gpus
    return gpus


def _check_size(spec: FabricSpec) -> None:
    """Refuse, before building, fabrics beyond :data:`MAX_GPUS` GPUs or :data:`MAX_LINKS` links."""
    gpus = spec.nodes * spec.gpus_per_node
    if gpus > MAX_GPUS:
        field = "nodes" if spec.nodes > 1 else "gpus_per_node"
        raise ConfigError(field, f"{spec.nodes} hosts x {spec.gpus_per_node} GPUs = {gpus} GPUs is more than "
                          f"moesim builds ({MAX_GPUS})", "simulate fewer hosts (symmetric hosts behave alike)")
    parts = {"intra": spec.nodes * _intra_links(spec.intra, spec.gpus_per_node)}
    if spec.nodes > 1 and spec.scale_out is not None:
        parts["scale_out"] = 2 * gpus
        if isinstance(spec.scale_out, RailFatTreeFabric):
            so = spec.scale_out
            groups = -(-spec.nodes // min(so.nodes_per_leaf or spec.nodes, spec.nodes))
            parts["scale_out.spines"] = groups * spec.gpus_per_node * so.spines
    links = sum(parts.values())
    if links > MAX_LINKS:
        field = max(parts, key=lambda k: parts[k])
        raise ConfigError(field, f"the fabric would have ~{links} links, more than moesim builds ({MAX_LINKS})",
                          "use fewer spines, hosts or NVLink peers per group")


def spec_to_dict(spec: FabricSpec) -> dict:
    """The YAML-shaped dict of a spec (round-trips through the loader)."""
    out: dict = {"name": spec.name, "gpu": {"kind": spec.gpu_kind}, "nodes": spec.nodes, "gpus_per_node": spec.gpus_per_node}
    if spec.description:
        out["description"] = spec.description
    for block in ("intra", "scale_out"):
        part = getattr(spec, block)
        if part is not None:
            out[block] = {"type": part.type_name, **{k: v for k, v in asdict(part).items() if v is not None}}
    return out
