"""What the scenarios of one experiment share in the reduced run, built once and reused.

The scenarios of one experiment file usually differ in schedule or overlap switches only; the
reduced run's expensive inputs do not depend on those. :class:`ReducedCache` holds them, keyed
by exactly what each is a function of:

* **routing**: the EP group's routing source (draws, placements, DeepEP copy factors and the
  two-hop copy matrices it caches), keyed by the fabric of the group, the model, the MoE options,
  the seed, ``ep``, tokens per rank and the routing samples;
* **solvers**: a :class:`~moesim.scale.phase.PhaseSolver` per (fabric, group, link efficiency);
* **phases**: each solved all-to-all phase, keyed by solver, routing, layer, sample, direction;
* **experts**: the busiest and mean expert queue of every (layer, sample, phase), keyed by the
  expert pricing (cost model identity, model, ``ep``, expert mode, token movement) and routing;
* **topologies**: the fabrics the run loads (one node, the EP group's nodes, the lanes' nodes),
  keyed by topology choice and node count, so their route caches (shortest-path searches) serve
  every scenario. A Topology is not changed by a run; its caches are functions of its graph.

Keys of routing, solvers and pricing are long tuples of frozen dataclasses (the model, the MoE
options); :meth:`ReducedCache.intern` gives each a small integer, so the many per-(layer, sample)
lookups hash that instead.

A scenario given no cache gets a fresh one (nothing shared). Cached values are the very objects
or numbers a fresh build computes, so a scenario's results do not depend on which scenarios ran
before it; the one side effect of pricing, the cost model's ``fallback_ops`` record (what it
priced outside its profile, reported in ``cost_sources``), is replayed on a hit
(:meth:`ReducedCache.priced`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable


@dataclass
class ReducedCache:
    """Per-experiment store of the reduced run's shared inputs (see the module docstring)."""

    routing: dict[Hashable, Any] = field(default_factory=dict)
    solvers: dict[Hashable, Any] = field(default_factory=dict)
    phases: dict[Hashable, Any] = field(default_factory=dict)
    experts: dict[Hashable, tuple[Any, frozenset[str]]] = field(default_factory=dict)
    topologies: dict[Hashable, Any] = field(default_factory=dict)
    interned: dict[Hashable, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    spent_s: dict[str, float] = field(default_factory=dict)   # CPU seconds making each kind (misses)

    def get(self, kind: str, key: Hashable, make: Callable[[], Any]) -> Any:
        """The ``kind`` store's value for ``key``, made by ``make()`` on a miss."""
        store: dict = getattr(self, kind)
        if key in store:
            self.hits[kind] = self.hits.get(kind, 0) + 1
            return store[key]
        self.misses[kind] = self.misses.get(kind, 0) + 1
        start = time.process_time()
        value = store[key] = make()
        self.spend(kind, start)
        return value

    def intern(self, key: Hashable) -> int:
        """A small integer standing for ``key`` (equal keys, equal integers; distinct, distinct)."""
        return self.interned.setdefault(key, len(self.interned))

    def spend(self, kind: str, start: float) -> None:
        """Add the CPU time since ``start`` (``time.process_time()``) to ``kind``'s making (CPU, not
        wall: the figure other work on the machine does not inflate)."""
        self.spent_s[kind] = self.spent_s.get(kind, 0.0) + time.process_time() - start

    def priced(self, cost: Any, key: Hashable, make: Callable[[], Any]) -> Any:
        """An ``experts`` value priced by ``cost``: on a miss ``make()`` runs with the cost model's
        ``fallback_ops`` recorded apart, on a hit the recorded labels are added to this ``cost``,
        so each scenario's ``cost_sources`` name what its own pricing used."""
        entry = self.experts.get(key)
        labels = getattr(cost, "fallback_ops", None)
        if entry is None:
            self.misses["experts"] = self.misses.get("experts", 0) + 1
            start = time.process_time()
            if isinstance(labels, set):
                cost.fallback_ops = set()
                try:
                    value = make()
                finally:
                    used, cost.fallback_ops = cost.fallback_ops, labels
                labels.update(used)
            else:
                value, used = make(), set()
            entry = self.experts[key] = (value, frozenset(used))
            self.spend("experts", start)
        else:
            self.hits["experts"] = self.hits.get("experts", 0) + 1
            if isinstance(labels, set):
                labels.update(entry[1])
        return entry[0]

    def summary(self) -> dict[str, dict[str, float]]:
        """Hits, misses and CPU seconds spent making per store (for benchmarks)."""
        return {k: {"hits": self.hits.get(k, 0), "misses": self.misses.get(k, 0),
                    "seconds": round(self.spent_s.get(k, 0.0), 3)}
                for k in ("routing", "solvers", "phases", "experts", "topologies")}
