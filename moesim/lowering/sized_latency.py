"""Size-dependent collective time for calibrated profiles, in the engine's terms.

NCCL's bus bandwidth grows with the message: on two NV18-linked H200s all-reduce reaches 0.47 of
the NVLink datasheet at 16 MiB and 0.73 at 1 GiB (docs/accuracy.md). The engine runs a
collective's flows at one link efficiency (the large-message figure), so on its own it would
price tens-of-MB tensor-parallel all-reduces too fast. :class:`SizedLatency` gives the per-phase
latency that makes the engine's ring run of a collective last what the profile measured at that
size (``collective_ns``), while the flows, and any contention they meet, stay the engine's: a
ring of ``phases`` steps, each moving ``nbytes / n`` over one hop at ``hop_gbps`` (bandwidth x
efficiency) plus the hop's path latency. Several same-sized collectives folded into one (a
stage's TP traffic) are priced as ``count`` collectives of ``nbytes / count`` each. Where the
engine's own transfer already exceeds the measurement the latency is 0 (never negative).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RING_PHASES = {"all_reduce": lambda n: 2 * (n - 1), "all_gather": lambda n: n - 1, "reduce_scatter": lambda n: n - 1}


@dataclass(frozen=True)
class SizedLatency:
    """Per-phase latency of ring ``op`` over ``num_ranks`` GPUs from ``cost.collective_ns``."""

    cost: Any
    op: str
    num_ranks: int
    hop_gbps: float
    hop_latency_ns: int
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def step_latency_ns(self, total_bytes: float, count: int = 1) -> int:
        key = (float(total_bytes), int(count))
        if key not in self._cache:
            n, c = self.num_ranks, max(1, int(count))
            phases = RING_PHASES[self.op](n)
            target = c * self.cost.collective_ns(self.op, n, total_bytes / c)
            engine = phases * (total_bytes / n / self.hop_gbps + self.hop_latency_ns)
            self._cache[key] = max(0, int(round((target - engine) / phases)))
        return self._cache[key]


def sized_latency(cost: Any, op: str, ranks: list[int], topo: Any, efficiency: dict[str, float],
                  measured_kinds: tuple[str, ...]) -> SizedLatency | None:
    """A :class:`SizedLatency` when ``cost`` measured ``op`` and the group's ring stays on a
    measured link kind (NVLink/NVSwitch); None otherwise (the engine keeps its fixed step latency)."""
    if len(ranks) < 2 or not hasattr(cost, "collective_ns") or op not in RING_PHASES:
        return None
    hops = [topo.route(a, b) for a, b in zip(ranks, ranks[1:] + ranks[:1])]
    if any(k not in measured_kinds for r in hops for k in r.kinds):
        return None
    try:
        cost.collective_ns(op, len(ranks), 1 << 20)
    except Exception:  # noqa: BLE001 - the profile has no such collective: keep the fixed latency
        return None
    slowest = min(hops, key=lambda r: r.bottleneck_gbps)
    gbps = min(topo.links[i].bandwidth_gbps * efficiency.get(topo.links[i].kind, 1.0) for i in slowest.link_ids)
    return SizedLatency(cost, op, len(ranks), gbps, max(r.latency_ns for r in hops))
