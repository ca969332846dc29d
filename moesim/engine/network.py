"""Moving bytes over links: the fluid (max-min fair) network and the analytical network.

Both expose one call, ``transfer(route, nbytes) -> simpy.Event``, which fires when the last byte
has arrived. Bandwidths are in GB/s, which is numerically bytes per ns.

* :class:`FluidNetwork`: concurrent flows share every link they cross max-min fairly. Rates are
  recomputed whenever a flow starts or ends (recomputations requested at the same instant are
  batched into one). A flow's time is its path latency plus its bytes drained at its (changing)
  rate. Link utilisation is recorded as counter samples when it changes.
* :class:`AnalyticalNetwork`: no contention; a flow takes ``latency + bytes / bottleneck``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import simpy

from moesim.engine.maxmin import maxmin_rates

# A flow is finished when what is left would drain in under this many ns at its rate.
_FINISH_SLACK_NS = 1e-6


class _Flow:
    __slots__ = ("links", "remaining", "rate", "latency_ns", "event", "nbytes")

    def __init__(self, links: tuple[int, ...], nbytes: float, latency_ns: int, event: simpy.Event) -> None:
        self.links = links
        self.remaining = float(nbytes)
        self.nbytes = float(nbytes)
        self.rate = 0.0
        self.latency_ns = latency_ns
        self.event = event


class FluidNetwork:
    """Flow-level network with max-min fair sharing.

    Args:
        env: the SimPy environment.
        capacity_gbps: effective capacity of every link, indexed by link id.
        on_utilization: called as ``(t_ns, link_id, utilization)`` when a link's load changes.
    """

    mode = "fluid"

    def __init__(
        self,
        env: simpy.Environment,
        capacity_gbps: Sequence[float],
        on_utilization: Callable[[int, int, float], None] | None = None,
    ) -> None:
        cap = np.asarray(capacity_gbps, dtype=np.float64)
        if (cap <= 0).any():
            bad = int(np.argmax(cap <= 0))
            raise ValueError(f"link {bad} has non-positive capacity {cap[bad]}")
        self.env = env
        self.capacity = cap
        self._flows: list[_Flow] = []
        self._last_ns = 0
        self._version = 0
        self._pending = False
        self._on_util = on_utilization
        self._util = np.zeros(cap.shape[0])
        self.num_rate_solves = 0
        self.num_flows = 0
        self.bytes_delivered = 0.0

    # -- public ---------------------------------------------------------------------------
    def transfer(self, link_ids: tuple[int, ...], nbytes: float, latency_ns: int) -> simpy.Event:
        """Start a flow of ``nbytes`` over ``link_ids``; the event fires when it has arrived."""
        env = self.env
        done = env.event()
        self.num_flows += 1
        if not link_ids or nbytes <= 0:
            self.bytes_delivered += max(nbytes, 0.0)
            self._fire_after(done, latency_ns)
            return done
        self._advance()
        self._flows.append(_Flow(link_ids, nbytes, latency_ns, done))
        self._request_solve()
        return done

    @property
    def active_flows(self) -> int:
        return len(self._flows)

    # -- internals ------------------------------------------------------------------------
    def _fire_after(self, event: simpy.Event, delay_ns: int) -> None:
        if delay_ns <= 0:
            event.succeed()
        else:
            self.env.timeout(delay_ns).callbacks.append(lambda _e, ev=event: ev.succeed())

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._last_ns
        if dt > 0:
            for f in self._flows:
                f.remaining -= f.rate * dt
        self._last_ns = now

    def _request_solve(self) -> None:
        if self._pending:
            return
        self._pending = True
        ev = self.env.event()
        ev.callbacks.append(self._solve_cb)
        ev.succeed()

    def _solve_cb(self, _event: simpy.Event) -> None:
        self._pending = False
        self._advance()
        self._solve_and_schedule()

    def _solve_and_schedule(self) -> None:
        flows = self._flows
        self._version += 1
        if not flows:
            self._report_util(np.zeros_like(self.capacity))
            return
        lens = [len(f.links) for f in flows]
        inc_flow = np.repeat(np.arange(len(flows)), lens)
        inc_link = np.fromiter((l for f in flows for l in f.links), dtype=np.int64, count=int(sum(lens)))
        rates = maxmin_rates(inc_flow, inc_link, len(flows), self.capacity)
        self.num_rate_solves += 1
        dt_min = math.inf
        for f, r in zip(flows, rates):
            f.rate = float(r)
            dt_min = min(dt_min, f.remaining / f.rate)
        load = np.bincount(inc_link, weights=rates[inc_flow], minlength=self.capacity.shape[0])
        self._report_util(load / self.capacity)
        wake = max(1, math.ceil(dt_min - _FINISH_SLACK_NS))
        version = self._version
        self.env.timeout(wake).callbacks.append(lambda _e: self._on_wake(version))

    def _on_wake(self, version: int) -> None:
        if version != self._version:
            return  # superseded by a later solve
        self._advance()
        keep: list[_Flow] = []
        for f in self._flows:
            if f.remaining <= f.rate * _FINISH_SLACK_NS + 1e-9 * f.nbytes:
                self.bytes_delivered += f.nbytes
                self._fire_after(f.event, f.latency_ns)
            else:
                keep.append(f)
        self._flows = keep
        self._solve_and_schedule()

    def _report_util(self, util: np.ndarray) -> None:
        if self._on_util is None:
            self._util = util
            return
        changed = np.flatnonzero(np.abs(util - self._util) > 1e-12)
        now = self.env.now
        for link in changed:
            self._on_util(now, int(link), float(util[link]))
        self._util = util


class AnalyticalNetwork:
    """Contention-free network: each flow runs alone at its path's bottleneck bandwidth."""

    mode = "analytical"

    def __init__(self, env: simpy.Environment, capacity_gbps: Sequence[float]) -> None:
        cap = np.asarray(capacity_gbps, dtype=np.float64)
        if (cap <= 0).any():
            bad = int(np.argmax(cap <= 0))
            raise ValueError(f"link {bad} has non-positive capacity {cap[bad]}")
        self.env = env
        self.capacity = cap
        self.num_flows = 0
        self.num_rate_solves = 0
        self.bytes_delivered = 0.0
        self.active_flows = 0

    def transfer(self, link_ids: tuple[int, ...], nbytes: float, latency_ns: int) -> simpy.Event:
        """Start a flow; the event fires after latency plus bytes at the bottleneck rate."""
        self.num_flows += 1
        self.bytes_delivered += max(nbytes, 0.0)
        drain = 0
        if link_ids and nbytes > 0:
            bottleneck = min(self.capacity[l] for l in link_ids)
            drain = math.ceil(nbytes / bottleneck - _FINISH_SLACK_NS)
        return self.env.timeout(drain + latency_ns)
