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

    Every field is checked for its type and range here, with errors naming ``faults.<field>``.
    ``slow_gpus`` and ``slow_nics`` also accept text, as ``--set`` gives them:
    comma-separated ``rank:number`` pairs (``--set faults.slow_gpus=3:1.3,5:1.2``; an empty text
    clears them). The link lists take no text form: give them in a scenario file
    (``faults: {failed_links: [[n0.gpu0, n0.nvsw]]}``) or as Python tuples; lists are stored as tuples.
    """

    slow_gpus: Mapping[int, float] = field(default_factory=dict)
    degraded_links: tuple[tuple[str, str, float], ...] = ()
    failed_links: tuple[tuple[str, str], ...] = ()
    slow_nics: Mapping[int, float] = field(default_factory=dict)
    jitter_ns: int = 0

    def __post_init__(self) -> None:
        # Types first (a list where a mapping goes, text from --set, a link of three names were
        # tracebacks), then physical ranges: a GPU at most 1000x slower, a link or NIC at least
        # 1/1000 of its speed, jitter at most 1 s (inf overflowed int conversion; 1e300 hung;
        # 1e-300 bandwidth overflowed).
        gpus = _rank_map("slow_gpus", self.slow_gpus, "multiplier", 1.0, MAX_SLOWDOWN, "3:1.3,5:1.2",
                         "{5: 1.3} for GPU 5 running 30% slower")
        nics = _rank_map("slow_nics", self.slow_nics, "fraction", 1 / MAX_SLOWDOWN, 1.0, "3:0.5",
                         "{3: 0.5} for GPU 3's NIC at half its bandwidth")
        degraded = _links("degraded_links", self.degraded_links, 3)
        failed = _links("failed_links", self.failed_links, 2)
        for item in degraded:
            if not _number(item[2]) or not 1 / MAX_SLOWDOWN <= item[2] <= 1:
                raise ConfigError("faults.degraded_links", f"{item!r} is not (node, node, fraction in [0.001, 1])",
                                  "give e.g. [[n0.gpu0, n0.nvsw, 0.5]] (both directions keep half their bandwidth)")
        for name, value in (("slow_gpus", gpus), ("slow_nics", nics), ("degraded_links", degraded),
                            ("failed_links", failed)):
            object.__setattr__(self, name, value)
        if isinstance(self.jitter_ns, bool) or not isinstance(self.jitter_ns, int) or not 0 <= self.jitter_ns <= 10**9:
            raise ConfigError("faults.jitter_ns", f"must be a whole number of ns in [0, 10^9], got {self.jitter_ns!r}")

    @property
    def touches_topology(self) -> bool:
        return bool(self.degraded_links or self.failed_links or self.slow_nics)


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _rank_map(name: str, value: object, what: str, low: float, high: float, text_form: str,
              example: str) -> dict[int, float]:
    """``value`` as a rank -> number mapping in [low, high]. Text (``--set faults.slow_gpus=3:1.3,5:1.2``)
    is read as comma-separated ``rank:number`` pairs; an empty text is no entries."""
    field_name = f"faults.{name}"
    fix = f"write e.g. {example} in a scenario file, or --set {field_name}={text_form}"
    if isinstance(value, str):
        pairs = [p.strip() for p in value.split(",") if p.strip()]
        parsed: dict[object, object] = {}
        for pair in pairs:
            rank, sep, number = pair.partition(":")
            try:
                if not sep:
                    raise ValueError
                parsed[int(rank)] = float(number)
            except ValueError:
                raise ConfigError(field_name, f"cannot read {pair!r} as rank:{what}", fix) from None
        value = parsed
    if not isinstance(value, Mapping):
        raise ConfigError(field_name, f"must be a mapping of GPU rank -> {what}, got {value!r}"[:200], fix)
    out: dict[int, float] = {}
    for rank, number in value.items():
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ConfigError(field_name, f"key {rank!r} is not a GPU rank (a whole number >= 0)", fix)
        if not _number(number) or not low <= number <= high:
            raise ConfigError(field_name, f"{rank}: {number!r} is not rank: {what} in [{low:g}, {high:g}]", fix)
        out[rank] = number
    return out


def _links(name: str, value: object, size: int) -> tuple[tuple, ...]:
    """``value`` as a tuple of ``size``-tuples whose first two entries are node names."""
    field_name = f"faults.{name}"
    shape = "(node, node)" if size == 2 else "(node, node, fraction)"
    example = "[[n0.gpu0, n0.nvsw]]" if size == 2 else "[[n0.gpu0, n0.nvsw, 0.5]]"
    fix = (f"give a list of {shape} entries in a scenario file, e.g. faults: {{{name}: {example}}} "
           "(--set cannot set this list)")
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise ConfigError(field_name, f"must be a list of {shape}, got {value!r}"[:200], fix)
    out = []
    for item in value:
        if (isinstance(item, (str, bytes)) or not isinstance(item, (tuple, list)) or len(item) != size
                or not all(isinstance(n, str) and n for n in item[:2])):
            raise ConfigError(field_name, f"{item!r} is not {shape}"[:200], fix)
        out.append(tuple(item))
    return tuple(out)


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
