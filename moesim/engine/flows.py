"""What the fluid networks (numpy and compiled) share: starting flows and firing ended ones.

Both networks take flows through :class:`FlowStarts` (``transfer`` / ``transfer_many``: a flow
with no link or no bytes arrives after its latency; the others start now and are solved together
by an event queued behind the first start of the instant) and fire the events of the flows that
drained with :func:`fire_ended` (the flows of one ``transfer_many`` as one :class:`_Group`).
Bandwidths are in GB/s, numerically bytes per ns.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import simpy

# A flow is finished when what is left would drain in under this many ns at its rate.
_FINISH_SLACK_NS = 1e-6
# What a network reports link utilisation to: (t_ns, link ids, utilisations).
UtilSink = Callable[[int, np.ndarray, np.ndarray], None]


def _capacities(capacity_gbps: Sequence[float]) -> np.ndarray:
    """Link capacities as floats; a non-positive one is a bug upstream (topology validation)."""
    cap = np.asarray(capacity_gbps, dtype=np.float64)
    if (cap <= 0).any():
        bad = int(np.argmax(cap <= 0))
        raise ValueError(f"link {bad} has non-positive capacity {cap[bad]}")
    return cap


def _fire_after(env: simpy.Environment, event: simpy.Event, delay_ns: int) -> None:
    """Succeed ``event`` now or after ``delay_ns``."""
    if delay_ns <= 0:
        event.succeed()
    else:
        env.timeout(delay_ns).callbacks.append(lambda _e, ev=event: ev.succeed())


def fire_ended(env: simpy.Environment, now: int, events: list, slots: Sequence[int], latencies: Sequence[int]) -> None:
    """The flows in ``slots`` drained at ``now``: each fires its event after its latency, or, one of
    a :class:`_Group`, counts down its group, whose event fires after the latest arrival once the
    last has ended. Clears their entries of ``events``."""
    for i, lat in zip(slots, latencies):
        waiter = events[i]
        events[i] = None
        if waiter.__class__ is _Group:
            arrival = now + lat
            if arrival > waiter.latest:
                waiter.latest = arrival
            waiter.pending -= 1
            if not waiter.pending:
                _fire_after(env, waiter.done, waiter.latest - now)
        else:
            _fire_after(env, waiter, lat)


class FlowStarts:
    """``transfer`` and ``transfer_many`` of a fluid network: a flow with no link or no bytes
    arrives after its latency; the others start now (``_begin``) and are solved together, by an
    event queued behind the first start of the instant (``_queue_solve`` -> ``_solve_cb``)."""

    env: simpy.Environment
    num_flows: int
    _pending: bool

    def _begin(self, link_ids: tuple[int, ...], nbytes: float, latency_ns: int, waiter: "simpy.Event | _Group") -> None:
        raise NotImplementedError

    def _deliver_direct(self, nbytes: float) -> None:
        raise NotImplementedError

    def _solve_cb(self, _event: simpy.Event) -> None:
        raise NotImplementedError

    def transfer(self, link_ids: tuple[int, ...], nbytes: float, latency_ns: int) -> simpy.Event:
        """Start a flow of ``nbytes`` over ``link_ids``; the event fires when it has arrived."""
        done = self.env.event()
        self.num_flows += 1
        if not link_ids or nbytes <= 0:
            self._deliver_direct(max(nbytes, 0.0))
            _fire_after(self.env, done, latency_ns)
            return done
        self._begin(link_ids, nbytes, latency_ns, done)
        self._queue_solve()
        return done

    def transfer_many(self, flows: Sequence[tuple[tuple[int, ...], float, int]]) -> simpy.Event:
        """Start several flows ``(link_ids, nbytes, latency_ns)`` at once; the event fires when
        the last has arrived (one event for a collective phase instead of one per flow)."""
        done = self.env.event()
        now = self.env.now
        group = _Group(done, now)
        begin = self._begin
        for link_ids, nbytes, latency_ns in flows:
            if not link_ids or nbytes <= 0:
                self._deliver_direct(max(nbytes, 0.0))
                group.latest = max(group.latest, now + int(latency_ns))
            else:
                group.pending += 1
                begin(link_ids, nbytes, latency_ns, group)
        self.num_flows += len(flows)
        if group.pending:
            self._queue_solve()
        else:
            _fire_after(self.env, done, group.latest - now)
        return done

    def _queue_solve(self) -> None:
        """Queue the solve of this instant's starts behind the first of them (once)."""
        if not self._pending:
            self._pending = True
            ev = self.env.event()
            ev.callbacks.append(self._solve_cb)
            ev.succeed()


class _Group:
    """The flows of one :meth:`FlowStarts.transfer_many` call: how many are still moving and
    the latest arrival (end plus latency) of those that ended."""

    __slots__ = ("done", "pending", "latest")

    def __init__(self, done: simpy.Event, now: int) -> None:
        self.done = done
        self.pending = 0
        self.latest = now
