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


def _capacities(capacity_gbps: Sequence[float]) -> np.ndarray:
    """Link capacities as floats; a non-positive one is a bug upstream (topology validation)."""
    cap = np.asarray(capacity_gbps, dtype=np.float64)
    if (cap <= 0).any():
        bad = int(np.argmax(cap <= 0))
        raise ValueError(f"link {bad} has non-positive capacity {cap[bad]}")
    return cap


class FluidNetwork:
    """Flow-level network with max-min fair sharing.

    Active flows live in numpy arrays (remaining bytes, rate, latency) plus one small array of
    link ids per flow, so advancing time, finding the next completion and building the
    flow-link incidence for the rate solver are vectorised.

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
        cap = _capacities(capacity_gbps)
        self.env = env
        self.capacity = cap
        self._links: list[np.ndarray] = []
        self._events: list[simpy.Event] = []
        self._remaining = np.zeros(0)
        self._nbytes = np.zeros(0)
        self._rate = np.zeros(0)
        self._latency = np.zeros(0, dtype=np.int64)
        self._new: list[tuple[np.ndarray, float, int, simpy.Event]] = []
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
        done = self.env.event()
        self.num_flows += 1
        if not link_ids or nbytes <= 0:
            self.bytes_delivered += max(nbytes, 0.0)
            self._fire_after(done, latency_ns)
            return done
        self._new.append((np.asarray(link_ids, dtype=np.int64), float(nbytes), int(latency_ns), done))
        self._request_solve()
        return done

    @property
    def active_flows(self) -> int:
        return len(self._links) + len(self._new)

    # -- internals ------------------------------------------------------------------------
    def _fire_after(self, event: simpy.Event, delay_ns: int) -> None:
        if delay_ns <= 0:
            event.succeed()
        else:
            self.env.timeout(delay_ns).callbacks.append(lambda _e, ev=event: ev.succeed())

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._last_ns
        if dt > 0 and self._remaining.size:
            self._remaining -= self._rate * dt
        self._last_ns = now

    def _admit(self) -> None:
        """Move flows started at this instant into the arrays."""
        if not self._new:
            return
        links, nbytes, lat, events = zip(*self._new)
        self._new = []
        self._links.extend(links)
        self._events.extend(events)
        self._remaining = np.concatenate([self._remaining, nbytes])
        self._nbytes = np.concatenate([self._nbytes, nbytes])
        self._rate = np.concatenate([self._rate, np.zeros(len(nbytes))])
        self._latency = np.concatenate([self._latency, np.asarray(lat, dtype=np.int64)])

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
        self._admit()
        self._solve_and_schedule()

    def _solve_and_schedule(self) -> None:
        self._version += 1
        n = len(self._links)
        if not n:
            self._report_util(np.zeros_like(self.capacity))
            return
        lens = np.fromiter((l.size for l in self._links), dtype=np.int64, count=n)
        inc_flow = np.repeat(np.arange(n), lens)
        inc_link = np.concatenate(self._links)
        rates = maxmin_rates(inc_flow, inc_link, n, self.capacity)
        self.num_rate_solves += 1
        self._rate = rates
        dt_min = float(np.min(self._remaining / rates))
        load = np.bincount(inc_link, weights=rates[inc_flow], minlength=self.capacity.shape[0])
        self._report_util(load / self.capacity)
        wake = max(1, math.ceil(dt_min - _FINISH_SLACK_NS))
        version = self._version
        self.env.timeout(wake).callbacks.append(lambda _e: self._on_wake(version))

    def _on_wake(self, version: int) -> None:
        if version != self._version:
            return  # superseded by a later solve
        self._advance()
        done = self._remaining <= self._rate * _FINISH_SLACK_NS + 1e-9 * self._nbytes
        if done.any():
            idx = np.flatnonzero(done)
            self.bytes_delivered += float(self._nbytes[idx].sum())
            for i in idx:
                self._fire_after(self._events[i], int(self._latency[i]))
            keep = np.flatnonzero(~done)
            self._links = [self._links[i] for i in keep]
            self._events = [self._events[i] for i in keep]
            self._remaining, self._nbytes = self._remaining[keep], self._nbytes[keep]
            self._rate, self._latency = self._rate[keep], self._latency[keep]
        self._admit()
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
        cap = _capacities(capacity_gbps)
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
