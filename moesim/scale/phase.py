"""One event per collective phase: how long a set of concurrent flows occupies a fabric.

A phase is a byte matrix ``bytes[i, j]`` between the GPUs of a group, all flows starting
together (an all-to-all dispatch or combine). :class:`PhaseSolver` turns it into per-link loads
with one sparse-free matrix product (every flow spread evenly over its equal-cost paths, as the
engine's per-flow round robin spreads them on average) and returns the time of the most loaded
link at its effective capacity, ``max(load / (bandwidth x efficiency))``, plus the longest route
latency. That is the *load bound*: no schedule of these flows finishes sooner, and the engine's
per-flow max-min fluid solve reaches it when every flow crosses the binding link for the whole
phase. :func:`fluid_phase_ns` runs the same flows through the engine so the two can be compared
(tests/test_scale.py, benchmarks/scaling.py). Transfer time is linear in the bytes, so one solve
per byte pattern serves every payload size (fp8 dispatch, bf16 combine, gradients).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from moesim.topology.model import Topology

SCALE_OUT_KINDS = ("ib", "ethernet")
BATCH_ENTRIES = 1 << 22   # phase-matrix entries solved in one product (32 MiB of float64)


@dataclass(frozen=True)
class PhaseTime:
    """A solved phase for one byte per unit: multiply ``transfer_ns_per_byte`` by the payload.

    ``bottleneck`` names the binding link (kind, endpoints); ``nic_tx``/``nic_rx`` are the
    largest scale-out egress and ingress unit counts of any GPU of the group (what one GPU's NIC
    carries), ``latency_ns`` the longest route latency among the flows.
    """

    transfer_ns_per_unit: float
    latency_ns: int
    bottleneck: str
    bottleneck_kind: str
    nic_tx: float
    nic_rx: float

    def duration_ns(self, unit_bytes: float, step_latency_ns: int = 0) -> int:
        return int(round(self.transfer_ns_per_unit * unit_bytes)) + self.latency_ns + step_latency_ns


class PhaseSolver:
    """Load-bound phase times on ``gpus`` of ``topo`` (routes and incidence cached per group).

    ``alike``: other groups of as many GPUs that run the same phase at the same time (the EP
    groups of the other TP indices, on the same nodes); their flows load the links too, pair
    (i, j) of each group carrying what pair (i, j) of ``gpus`` carries."""

    def __init__(self, topo: Topology, gpus: Sequence[int], efficiency: Mapping[str, float],
                 alike: Sequence[Sequence[int]] = ()) -> None:
        self.topo, self.gpus = topo, list(gpus)
        n = len(self.gpus)
        links = topo.links
        self.capacity = np.array([l.bandwidth_gbps * efficiency.get(l.kind, 1.0) for l in links])
        self.names = [f"{l.kind} {l.src}->{l.dst}" for l in links]
        self.kinds = [l.kind for l in links]
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        latency = np.zeros(n * n, dtype=np.int64)
        # every equal-cost path's links, as Topology.route(a, b, key) for key in range(paths)
        # gives them (the router's paths in order), without building a Route per path
        link_id = {(l.src, l.dst): l.link_id for l in links}
        link_latency = [l.latency_ns for l in links]
        for group in [self.gpus, *map(list, alike)]:
            assert len(group) == n, "alike groups have as many GPUs as the group"
            for i, a in enumerate(group):
                for j, b in enumerate(group):
                    if a == b:
                        continue
                    paths = topo.router.paths(topo.gpus[a], topo.gpus[b])
                    share = 1.0 / len(paths)
                    for nodes in paths:
                        ids = [link_id[u, v] for u, v in zip(nodes, nodes[1:])]
                        rows += [i * n + j] * len(ids)
                        cols += ids
                        vals += [share] * len(ids)
                    first = sum(link_latency[k] for k in (link_id[u, v] for u, v in zip(paths[0], paths[0][1:])))
                    latency[i * n + j] = max(latency[i * n + j], first)
        # links x pairs, duplicates summed: the share of each pair's bytes crossing each link
        self.incidence = sparse.csr_matrix((vals, (cols, rows)), shape=(len(links), n * n))
        self.latency = latency
        hosts = np.array([topo.host_of(g) for g in self.gpus])
        self.cross = hosts[:, None] != hosts[None, :]

    def solve(self, units: np.ndarray) -> PhaseTime:
        """``units[i, j]``: payload units group GPU i sends to group GPU j (diagonal ignored)."""
        return self.solve_many([units])[0]

    def solve_many(self, phases: Sequence[np.ndarray]) -> list[PhaseTime]:
        """:meth:`solve` for many phases at once: one sparse product for all their link loads (in
        batches of at most ``BATCH_ENTRIES`` matrix entries, to bound memory for large groups)."""
        n = len(self.gpus)
        per = max(1, BATCH_ENTRIES // (n * n))
        out: list[PhaseTime] = []
        for lo in range(0, len(phases), per):
            out += self._solve_batch(phases[lo:lo + per])
        return out

    def _solve_batch(self, phases: Sequence[np.ndarray]) -> list[PhaseTime]:
        n = len(self.gpus)
        m = np.array(phases, dtype=float).reshape(len(phases), n, n)
        m[:, np.arange(n), np.arange(n)] = 0.0
        flat = m.reshape(len(phases), n * n)
        load = np.asarray(self.incidence @ flat.T).T                 # phases x links
        ratio = np.divide(load, self.capacity, out=np.zeros_like(load), where=self.capacity > 0)
        worst = np.argmax(ratio, axis=1)
        active = flat > 0
        latency = np.where(active, self.latency[None, :], 0).max(axis=1)
        cross = np.where(self.cross[None], m, 0.0)
        tx, rx = cross.sum(axis=2).max(axis=1), cross.sum(axis=1).max(axis=1)
        return [PhaseTime(float(ratio[p, w]), int(latency[p]), self.names[w], self.kinds[w], float(tx[p]), float(rx[p]))
                for p, w in enumerate(worst.tolist())]


def fluid_phase_ns(topo: Topology, gpus: Sequence[int], nbytes: np.ndarray, efficiency: Mapping[str, float]) -> int:
    """The same phase through the engine's per-flow max-min fluid network (for comparison)."""
    from moesim.engine import Simulation

    sim = Simulation(topo, mode="fluid", link_efficiency=dict(efficiency))
    n = len(gpus)
    for j in range(n):
        flows = [(gpus[i], gpus[j], float(nbytes[i, j])) for i in range(n) if i != j and nbytes[i, j] > 0]
        sim.comm([(gpus[j], "comm.ep")], [flows] if flows else [], f"recv{j}", category="all_to_all")
    return sim.run().makespan_ns
