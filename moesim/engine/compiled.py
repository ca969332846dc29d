"""The fluid network with its event step compiled (``moesim.engine._fluidcore``).

:class:`CompiledFluidNetwork` is :class:`moesim.engine.network.FluidNetwork`'s mechanism (max-min
fair sharing, re-solved at every instant where flows start or end, only in the components those
flows touch; flows slower than every ended flow of their component keep their rate) with the
per-instant work in C: finding the ended flows, the components, the solve, the new finish times
and the utilisation of the links whose load changed. Python keeps the SimPy side: the solve event
queued behind the first start of an instant, the versioned wake-up at the next end, and firing
each ended flow's event after its latency. Flow end times agree with the numpy network within
1 ns (tests/test_engine_compiled.py); where the extension was not built (no C compiler at
install), :func:`fluid_network` returns the numpy network.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import simpy

from moesim.engine.flows import _FINISH_SLACK_NS, FlowStarts, UtilSink, _capacities, _Group, fire_ended
from moesim.engine.network import FluidNetwork
from moesim.errors import ConfigError

try:
    from moesim.engine._fluidcore import Core
except ImportError:  # built without a C compiler: the numpy network serves
    Core = None

# MOESIM_FLUID=numpy selects the numpy network even where the compiled one exists.
BACKEND_ENV = "MOESIM_FLUID"
# The longest route the compiled core takes (a list entry packs a flow's slot and its position).
MAX_PATH_LINKS = 63


def compiled_available() -> bool:
    return Core is not None


def fluid_backend() -> str:
    """``"compiled"`` where the extension was built and ``MOESIM_FLUID`` does not say numpy, else
    ``"numpy"``."""
    choice = os.environ.get(BACKEND_ENV, "").strip().lower()
    if choice not in ("", "compiled", "numpy"):
        raise ConfigError(BACKEND_ENV, f"unknown fluid network {choice!r}", "use compiled or numpy")
    return "compiled" if Core is not None and choice != "numpy" else "numpy"


def fluid_network(env: simpy.Environment, capacity_gbps: Sequence[float],
                  on_utilization: UtilSink | None = None, series: bool = True) -> "CompiledFluidNetwork | FluidNetwork":
    """The fluid network of :func:`fluid_backend` (``series``: see :class:`CompiledFluidNetwork`;
    the numpy network always hands over every change)."""
    if fluid_backend() == "compiled":
        return CompiledFluidNetwork(env, capacity_gbps, on_utilization, series=series)
    return FluidNetwork(env, capacity_gbps, on_utilization)


class CompiledFluidNetwork(FlowStarts):
    """Flow-level network with max-min fair sharing; the event step in C (see the module).

    Args:
        env: the SimPy environment.
        capacity_gbps: effective capacity of every link, indexed by link id.
        on_utilization: called once per instant as ``(t_ns, link_ids, utilizations)`` with the
            links whose utilisation changed (ascending ids); ``None`` records nothing.
        relabel_after: the component labels are recomputed exactly once a quarter of the flows
            in flight, and at least this many, have ended since the last time.
        series: hand every change to ``on_utilization`` (a trace draws the time series); with
            ``False`` only each link's integral is kept (:meth:`link_totals`, all an analysis
            needs), so no sample is stored.
    """

    mode = "fluid"

    def __init__(self, env: simpy.Environment, capacity_gbps: Sequence[float],
                 on_utilization: UtilSink | None = None, relabel_after: int = 64, series: bool = True) -> None:
        if Core is None:
            raise RuntimeError("moesim.engine._fluidcore was not built (no C compiler at install)")
        cap = np.ascontiguousarray(_capacities(capacity_gbps), dtype=np.float64)
        self.env = env
        self.capacity = cap
        self._on_util = on_utilization if series else None
        self._record = on_utilization is not None
        if self._record:
            self._ulinks = np.zeros(cap.size, dtype=np.int64)
            self._uvals = np.zeros(cap.size)
            self._core = Core(cap, self._ulinks, self._uvals, relabel_after)
        else:
            self._core = Core(cap, None, None, relabel_after)
        self._events: list[simpy.Event | _Group | None] = []   # what each slot's end fires
        self._latency: list[int] = []
        self._pending = False
        self._version = 0
        self._bytes_direct = 0.0   # flows with no link or no bytes (never in the core)
        self.num_flows = 0

    # -- public ---------------------------------------------------------------------------
    @property
    def num_rate_solves(self) -> int:
        return self._core.num_rate_solves

    @property
    def bytes_delivered(self) -> float:
        return self._bytes_direct + self._core.bytes_delivered

    @property
    def active_flows(self) -> int:
        return self._core.alive

    def link_totals(self, horizon_ns: int) -> list[tuple[int, float, int, float]]:
        """``(link id, integral of utilisation x ns, ns above 0, peak)`` over ``[0, horizon_ns)``
        of every link whose utilisation ever changed, in link order: what
        :func:`moesim.analysis.timeline.step_integral` gives from the samples."""
        if not self._record:
            raise ValueError("link_totals: this network records no utilisation")
        return self._core.totals(int(horizon_ns))

    # -- internals ------------------------------------------------------------------------
    def _deliver_direct(self, nbytes: float) -> None:
        self._bytes_direct += nbytes

    def _begin(self, link_ids, nbytes, latency_ns, waiter) -> None:
        if len(link_ids) > MAX_PATH_LINKS:
            raise ConfigError("topology", f"a route of {len(link_ids)} links; the compiled fluid network takes up to "
                              f"{MAX_PATH_LINKS}", f"shorten the fabric's paths, or set {BACKEND_ENV}=numpy")
        slot = self._core.add(link_ids, float(nbytes), self.env.now)
        if slot == len(self._events):
            self._events.append(waiter)
            self._latency.append(int(latency_ns))
        else:
            self._events[slot] = waiter
            self._latency[slot] = int(latency_ns)

    def _solve_cb(self, _event: simpy.Event) -> None:
        self._pending = False
        self._step(self.env.now, False)

    def _on_wake(self, event: simpy.Event) -> None:
        if event.value == self._version:  # else superseded by a later solve
            self._step(self.env.now, True)

    def _step(self, now: int, end: bool) -> None:
        """End the flows drained by ``now`` (when woken for it), solve what the starts and ends
        touched, fire the ended flows' events after their latency, and schedule the wake-up at
        the next end (superseding the previous one)."""
        ended, next_finish, changed = self._core.step(now, end)
        if ended:
            latency = self._latency
            fire_ended(self.env, now, self._events, ended, [latency[i] for i in ended])
        if changed and self._on_util is not None:
            self._on_util(now, self._ulinks[:changed].copy(), self._uvals[:changed].copy())
        self._version += 1
        if self._core.alive:  # the wake-up carries the version it belongs to
            wake = max(1, math.ceil(next_finish - now - _FINISH_SLACK_NS))
            self.env.timeout(wake, self._version).callbacks.append(self._on_wake)
