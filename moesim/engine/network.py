"""Moving bytes over links: the fluid (max-min fair) network and the analytical network.

Both expose one call, ``transfer(route, nbytes) -> simpy.Event``, which fires when the last byte
has arrived. Bandwidths are in GB/s, which is numerically bytes per ns.

* :class:`FluidNetwork`: concurrent flows share every link they cross max-min fairly. A flow's
  time is its path latency plus its bytes drained at its (changing) rate. Rates change only
  when flows start or end, and then only in the connected components (flows linked through
  shared links) that a started or ended flow belongs to. Flows started at one instant are
  solved together (the solve is an event queued behind the first start), and so are the flows
  ending at one instant with those started by then. Link utilisation is reported per solve, for
  the links whose load changed.
* :class:`AnalyticalNetwork`: no contention; a flow takes ``latency + bytes / bottleneck``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import simpy
from moesim.engine.maxmin import link_components, solve_padded

# A flow is finished when what is left would drain in under this many ns at its rate.
_FINISH_SLACK_NS = 1e-6
# A flow slower than the slowest ended flow of its component by this much keeps its rate.
_KEEP_MARGIN = 1e-9
# Up to this many flows in flight, every solve takes them all (components are not tracked).
_SMALL = 64
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


class FluidNetwork:
    """Flow-level network with max-min fair sharing, solved incrementally.

    Flows live in slots of persistent numpy arrays (links as a padded matrix, bytes left at the
    time of the last rate change, rate, finish time); ended slots are compacted away in bulk,
    keeping start order. Every link carries a component label: links are in one component when
    flows join them. At an instant where flows start or end, only the flows of the touched
    components are solved, on incidence arrays compacted to the links they use; in a component
    where flows only ended, a flow slower than every ended flow keeps its rate (max-min: it was
    bottlenecked before the ended flows' level), so only the faster ones are solved again. The
    labels of the links started flows join are merged; the components of the solved flows are
    recomputed exactly once a quarter of them have ended since the last time (a label covering
    several components only costs solving more flows). Event order is that of a from-scratch
    solve: a solve event queued behind the first start of an instant, versioned wake-ups.

    Args:
        env: the SimPy environment.
        capacity_gbps: effective capacity of every link, indexed by link id.
        on_utilization: called once per solve as ``(t_ns, link_ids, utilizations)`` with the
            links whose load changed (ascending ids); ``None`` records nothing.
        incremental: ``False`` solves every flow in flight from scratch at every instant where a
            flow starts or ends (the reference the incremental solve is tested against).
        small_flows: up to this many flows in flight, every solve takes them all (finding the
            touched components costs more than it saves).
    """

    mode = "fluid"

    def __init__(self, env: simpy.Environment, capacity_gbps: Sequence[float],
                 on_utilization: UtilSink | None = None, incremental: bool = True,
                 small_flows: int = _SMALL) -> None:
        cap = _capacities(capacity_gbps)
        self.env = env
        self.incremental = incremental
        self.small_flows = small_flows
        self.capacity = cap
        num_links = cap.shape[0]
        self._label = np.arange(num_links, dtype=np.int64)  # component label of every link
        self._util = np.zeros(num_links)
        self._on_util = on_utilization
        self._size = 0                                      # slots in use (alive or ended)
        self._alloc(64, 1)
        self._events: list[simpy.Event | None] = []
        self._new: list[tuple[tuple[int, ...], float, int, simpy.Event]] = []
        self._pending = False                               # a solve event is queued
        self._stale = False                                 # component labels out of date
        self._ended_since = 0                               # flows ended since the last exact labelling
        self._version = 0                                   # the solve whose wake-up is current
        self._alive_count = 0
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
            _fire_after(self.env, done, latency_ns)
            return done
        self._new.append((link_ids, float(nbytes), int(latency_ns), done))
        if not self._pending:
            self._pending = True
            ev = self.env.event()
            ev.callbacks.append(self._solve_cb)
            ev.succeed()
        return done

    @property
    def active_flows(self) -> int:
        return self._alive_count + len(self._new)

    # -- slots ----------------------------------------------------------------------------
    def _alloc(self, slots: int, width: int) -> None:
        """(Re)allocate slot arrays for ``slots`` flows of up to ``width`` links, keeping contents."""
        old = getattr(self, "_links", None)
        links = np.full((slots, width), -1, dtype=np.int64)
        fields = {"_rem": 0.0, "_t0": 0.0, "_rate": 0.0, "_finish": np.inf, "_nbytes": 0.0}
        arrays = {name: np.full(slots, fill) for name, fill in fields.items()}
        lat = np.zeros(slots, dtype=np.int64)
        alive = np.zeros(slots, dtype=bool)
        if old is not None:
            n = self._size
            links[:n, :old.shape[1]] = old[:n]
            for name in fields:
                arrays[name][:n] = getattr(self, name)[:n]
            lat[:n], alive[:n] = self._latency[:n], self._alive[:n]
        self._links, self._latency, self._alive = links, lat, alive
        for name, arr in arrays.items():
            setattr(self, name, arr)

    def _compact(self) -> None:
        """Drop ended slots, keeping the alive ones in start order."""
        n = self._size
        keep = np.flatnonzero(self._alive[:n])
        k = keep.size
        for name in ("_links", "_rem", "_t0", "_rate", "_finish", "_nbytes", "_latency", "_alive"):
            arr = getattr(self, name)
            arr[:k] = arr[keep]
            arr[k:n] = -1 if name == "_links" else (np.inf if name == "_finish" else 0)
        self._events = [self._events[i] for i in keep]
        self._size = k

    def _admit(self, now: int) -> np.ndarray:
        """Give the flows started at this instant slots; return their slot indices."""
        new, self._new = self._new, []
        if self._size - self._alive_count > max(1024, self._alive_count):
            self._compact()
        width = max(len(f[0]) for f in new)
        need = self._size + len(new)
        if need > self._links.shape[0] or width > self._links.shape[1]:
            self._alloc(max(need, 2 * self._links.shape[0]), max(width, self._links.shape[1]))
        slots = np.arange(self._size, need)
        block = np.full((len(new), self._links.shape[1]), -1, dtype=np.int64)
        for row, flow in zip(block, new):
            row[:len(flow[0])] = flow[0]
        self._links[slots] = block
        nbytes = np.fromiter((f[1] for f in new), dtype=np.float64, count=len(new))
        self._rem[slots] = nbytes
        self._nbytes[slots] = nbytes
        self._t0[slots] = now
        self._rate[slots] = 0.0
        self._latency[slots] = np.fromiter((f[2] for f in new), dtype=np.int64, count=len(new))
        self._alive[slots] = True
        self._events.extend(f[3] for f in new)
        self._size = need
        self._alive_count += len(new)
        return slots

    # -- events: a solve after starts, a wake-up at the next end ----------------------------
    def _solve_cb(self, _event: simpy.Event) -> None:
        self._pending = False
        self._step(self.env.now, np.zeros(0, dtype=np.int64))

    def _on_wake(self, version: int) -> None:
        if version != self._version:
            return  # superseded by a later solve
        now = self.env.now
        self._step(now, self._end_finished(now))

    def _step(self, now: int, ended: np.ndarray) -> None:
        """Admit the flows started so far, solve what the starts and ends touched, and schedule
        the wake-up at the next end (superseding the previous one)."""
        started = self._admit(now) if self._new else np.zeros(0, dtype=np.int64)
        if ended.size or started.size:
            self._solve(now, ended, started)
        self._version += 1
        if self._alive_count:
            dt_min = float(self._finish[:self._size].min()) - now
            version = self._version
            wake = max(1, math.ceil(dt_min - _FINISH_SLACK_NS))
            self.env.timeout(wake).callbacks.append(lambda _e: self._on_wake(version))

    def _end_finished(self, now: int) -> np.ndarray:
        """Slots whose bytes have drained by ``now``; their events fire after their latency."""
        n = self._size
        if not self._alive_count:
            return np.zeros(0, dtype=np.int64)
        rate = self._rate[:n]
        left = self._rem[:n] - rate * (now - self._t0[:n])
        done = self._alive[:n] & (left <= rate * _FINISH_SLACK_NS + 1e-9 * self._nbytes[:n])
        idx = np.flatnonzero(done)
        if idx.size:
            self.bytes_delivered += float(self._nbytes[idx].sum())
            self._alive[idx] = False
            self._finish[idx] = np.inf
            self._alive_count -= idx.size
            env, events = self.env, self._events
            for i, lat in zip(idx.tolist(), self._latency[idx].tolist()):
                _fire_after(env, events[i], lat)
                events[i] = None
        return idx

    def _solve(self, now: int, ended: np.ndarray, started: np.ndarray) -> None:
        links, label = self._links, self._label
        ended_links = links[ended][links[ended] >= 0]
        alive = np.flatnonzero(self._alive[:self._size])
        full = not self.incremental or alive.size <= self.small_flows or self._stale
        if full:  # few flows: solving them all costs less than finding what to solve
            members, keep = alive, None
            self._stale = self.incremental and alive.size <= self.small_flows
        else:
            started_links = links[started][links[started] >= 0]
            touched = np.zeros(self.capacity.shape[0], dtype=bool)
            touched[label[ended_links]] = True
            touched[label[started_links]] = True
            members = alive[touched[label[links[alive, 0]]]]
            keep = self._kept(members, ended, started_links) if ended.size else None
        used, paths = self._compact_paths(links[members])
        if members.size:
            self._resolve(now, members, paths, used, keep)
        if self.incremental and not self._stale:
            self._update_labels(full, members.size, ended.size, ended_links, used, paths, started)
        if self._on_util is not None:
            self._report(now, members, paths, used, ended_links)

    def _update_labels(self, full: bool, num_members: int, num_ended: int, ended_links: np.ndarray,
                       used: np.ndarray, paths: np.ndarray, started: np.ndarray) -> None:
        """Keep every alive flow's links under one label. Started flows merge the labels they
        join; the solved flows' components are recomputed exactly (splitting what ended flows
        held together) once a quarter of them have ended since the last time, or after a solve
        of everything. In between a label may cover several components, which costs solving
        more flows but changes no rate (components solve independently)."""
        label = self._label
        self._ended_since += num_ended
        if full or 4 * self._ended_since >= num_members:
            label[ended_links] = ended_links
            rows, cols = np.nonzero(paths < used.size)  # incidence, sorted by flow
            label[used] = used[link_components(rows, paths[rows, cols], used.size)]
            self._ended_since = 0
        elif started.size:
            # components of the labels the started flows join, one label each (the smallest)
            mat = self._links[started]
            r, c = np.nonzero(mat >= 0)
            groups, at = np.unique(label[mat[r, c]], return_inverse=True)
            merged = groups[link_components(r, at, groups.size)]
            if (merged != groups).any():
                pos = np.minimum(np.searchsorted(groups, label), groups.size - 1)
                hit = groups[pos] == label
                label[hit] = merged[pos[hit]]

    def _kept(self, members: np.ndarray, ended: np.ndarray, started_links: np.ndarray) -> np.ndarray:
        """Mask over ``members``: flows that keep their rate, being slower than every flow that
        ended in their component, where none started (max-min: they were bottlenecked below
        the level where the ended flows' load could matter)."""
        label = self._label
        floor = np.full(self.capacity.shape[0], np.inf)
        np.minimum.at(floor, label[self._links[ended, 0]], self._rate[ended])
        floor[label[started_links]] = -np.inf
        return self._rate[members] < floor[label[self._links[members, 0]]] * (1.0 - _KEEP_MARGIN)

    def _resolve(self, now: int, members: np.ndarray, paths: np.ndarray, used: np.ndarray,
                 keep: np.ndarray | None) -> None:
        """New rates for the members not kept, on what the kept ones leave of shared links."""
        remaining = self.capacity[used]
        slots = members
        if keep is not None and keep.any():
            kept = np.repeat(self._rate[members[keep]], paths.shape[1])
            remaining = remaining - np.bincount(paths[keep].ravel(), weights=kept, minlength=used.size + 1)[:-1]
            solve = ~keep
            paths, slots = paths[solve], members[solve]
            if not slots.size:
                return
        rates = solve_padded(paths, remaining)
        self.num_rate_solves += 1
        self._rem[slots] -= self._rate[slots] * (now - self._t0[slots])
        self._t0[slots] = now
        self._rate[slots] = rates
        self._finish[slots] = now + self._rem[slots] / rates

    def _compact_paths(self, mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The links in use (ascending) and the flows' paths as indices among them, padded with
        ``used.size``."""
        mark = np.zeros(self.capacity.shape[0] + 1, dtype=bool)
        mark[mat] = True  # padding (-1) lands on the extra last slot
        mark[-1] = False
        used = np.flatnonzero(mark)
        index = np.cumsum(mark) - 1
        index[-1] = used.size  # where padding points
        return used, index[mat]

    def _report(self, now: int, members: np.ndarray, paths: np.ndarray, used: np.ndarray,
                ended_links: np.ndarray) -> None:
        """Utilisation of the links whose load changed at this solve, in link order."""
        util = np.zeros(self.capacity.shape[0])
        load = np.bincount(paths.ravel(), weights=np.repeat(self._rate[members], paths.shape[1]), minlength=used.size + 1)
        util[used] = load[:-1] / self.capacity[used]
        mark = np.zeros(util.shape[0], dtype=bool)
        mark[used] = True
        mark[ended_links] = True
        links = np.flatnonzero(mark)
        util = util[links]
        changed = np.abs(util - self._util[links]) > 1e-12
        self._util[links] = util
        if changed.any():
            self._on_util(now, links[changed], util[changed])


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
