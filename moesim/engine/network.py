"""Moving bytes over links: the fluid (max-min fair) network and the analytical network.

Both expose ``transfer(link_ids, nbytes, latency_ns) -> simpy.Event``, which fires when the
last byte has arrived, and ``transfer_many(flows)`` for the flows of one phase (one event, fired
when the last of them has arrived). Bandwidths are in GB/s, which is numerically bytes per ns.

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
from typing import Sequence

import numpy as np
import simpy
from moesim.engine.flows import _FINISH_SLACK_NS, FlowStarts, UtilSink, _capacities, _Group, fire_ended
from moesim.engine.maxmin import link_components, solve_rows

# A flow slower than the slowest ended flow of its component by this much keeps its rate.
_KEEP_MARGIN = 1e-9
# Up to this many flows in flight, every solve takes them all (components are not tracked).
_SMALL = 64
# Above this many links, a solve works on the links its flows use, not on every link.
_COMPACT_LINKS = 4096
_NONE = np.zeros(0, dtype=np.int64)


class FluidNetwork(FlowStarts):
    """Flow-level network with max-min fair sharing, solved incrementally.

    Flows live in slots of persistent numpy arrays (links as a matrix padded with a stand-in
    link of infinite capacity, index ``num_links``; bytes left at the time of the last rate
    change, rate, finish time, the time it counts as arrived, in one float block); ended slots
    are compacted away in bulk, keeping start order. Every link carries a component label:
    links are in one component when flows join them. At an instant where flows start or end,
    only the flows of the touched components are solved; in a component where flows only
    ended, a flow slower than every ended flow keeps its rate (max-min: it was bottlenecked
    before the ended flows' level), so only the faster ones are solved again, on what the kept
    ones leave of the links (with few flows in flight, components are not tracked and the
    slowest ended flow's rate is the floor for all). Link loads for the
    utilisation samples follow the rate changes. The labels of the links
    started flows join are merged; the components of the solved flows are recomputed exactly
    once a quarter of them have ended since the last time (a label covering several components
    only costs solving more flows). Event order is that of a from-scratch solve: a solve event
    queued behind the first start of an instant, versioned wake-ups.

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
        self._pad = num_links                                # the stand-in link padding paths
        self._cap = np.append(cap, np.inf)
        self._label = np.arange(num_links + 1, dtype=np.int64)  # component label of every link
        self._util = np.zeros(num_links)                   # last reported utilisation
        self._load = np.zeros(num_links + 1)               # bytes/ns on every link (when reporting)
        self._dload = np.zeros(num_links + 1)              # its change since the last report
        self._nflows = np.zeros(num_links + 1, dtype=np.int64)  # alive flows on every link
        self._on_util = on_utilization
        self._size = 0                                      # slots in use (alive or ended)
        self._alloc(64, 1)
        self._events: list[simpy.Event | _Group | None] = []   # what each slot's end fires
        self._new: list[tuple[tuple[int, ...], float, int, simpy.Event | _Group]] = []
        self._pending = False                               # a solve event is queued
        self._stale = False                                 # component labels out of date
        self._ended_since = 0                               # flows ended since the last exact labelling
        self._version = 0                                   # the solve whose wake-up is current
        self._alive_count = 0
        self.num_rate_solves = 0
        self.num_flows = 0
        self.bytes_delivered = 0.0

    def _begin(self, link_ids: tuple[int, ...], nbytes: float, latency_ns: int, waiter: "simpy.Event | _Group") -> None:
        self._new.append((link_ids, float(nbytes), int(latency_ns), waiter))

    def _deliver_direct(self, nbytes: float) -> None:
        self.bytes_delivered += nbytes

    @property
    def active_flows(self) -> int:
        return self._alive_count + len(self._new)

    # -- slots ----------------------------------------------------------------------------
    # rows of the float block ``_state``
    _REM, _T0, _RATE, _FINISH, _DUE, _NBYTES = range(6)

    def _alloc(self, slots: int, width: int) -> None:
        """(Re)allocate slot arrays for ``slots`` flows of up to ``width`` links, keeping contents."""
        old = getattr(self, "_links", None)
        links = np.full((slots, width), self._pad, dtype=np.int64)
        state = np.zeros((6, slots))
        state[self._FINISH] = state[self._DUE] = np.inf
        lat = np.zeros(slots, dtype=np.int64)
        alive = np.zeros(slots, dtype=bool)
        if old is not None:
            n = self._size
            links[:n, :old.shape[1]] = old[:n]
            state[:, :n] = self._state[:, :n]
            lat[:n], alive[:n] = self._latency[:n], self._alive[:n]
        self._links, self._state, self._latency, self._alive = links, state, lat, alive
        self._views()

    def _views(self) -> None:
        st = self._state
        self._rem, self._t0, self._rate = st[self._REM], st[self._T0], st[self._RATE]
        self._finish, self._due, self._nbytes = st[self._FINISH], st[self._DUE], st[self._NBYTES]

    def _compact(self) -> None:
        """Drop ended slots, keeping the alive ones in start order."""
        n = self._size
        keep = self._alive[:n].nonzero()[0]
        k = keep.size
        self._links[:k] = self._links[keep]
        self._links[k:n] = self._pad
        self._state[:, :k] = self._state[:, keep]
        self._state[:, k:n] = 0.0
        self._finish[k:n] = self._due[k:n] = np.inf
        self._latency[:k] = self._latency[keep]
        self._alive[:k] = True
        self._alive[k:n] = False
        self._events = [self._events[i] for i in keep.tolist()]
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
        block = self._links[self._size:need]
        for row, flow in zip(block, new):
            row[:len(flow[0])] = flow[0]
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
        if self._on_util is not None:
            self._nflows += np.bincount(block.ravel(), minlength=self._pad + 1)
        return slots

    # -- events: a solve after starts, a wake-up at the next end ----------------------------
    def _solve_cb(self, _event: simpy.Event) -> None:
        self._pending = False
        self._step(self.env.now, _NONE)

    def _on_wake(self, version: int) -> None:
        if version != self._version:
            return  # superseded by a later solve
        now = self.env.now
        self._step(now, self._end_finished(now))

    def _step(self, now: int, ended: np.ndarray) -> None:
        """Admit the flows started so far, solve what the starts and ends touched, and schedule
        the wake-up at the next end (superseding the previous one)."""
        started = self._admit(now) if self._new else _NONE
        if ended.size or started.size:
            self._solve(now, ended, started)
        self._version += 1
        if self._alive_count:
            dt_min = float(np.minimum.reduce(self._finish[:self._size])) - now
            version = self._version
            wake = max(1, math.ceil(dt_min - _FINISH_SLACK_NS))
            self.env.timeout(wake).callbacks.append(lambda _e: self._on_wake(version))

    def _end_finished(self, now: int) -> np.ndarray:
        """Slots whose bytes have drained by ``now`` (what is left would drain within
        ``_FINISH_SLACK_NS``, or is under a billionth of the flow: ``_due``, set at each rate
        change); their events fire after their latency."""
        if not self._alive_count:
            return _NONE
        idx = (self._due[:self._size] <= now).nonzero()[0]
        if idx.size:
            self.bytes_delivered += float(np.add.reduce(self._nbytes[idx]))
            self._alive[idx] = False
            self._state[self._FINISH:self._DUE + 1, idx] = np.inf
            self._alive_count -= idx.size
            if self._on_util is not None:
                mat = self._links.take(idx, axis=0)
                self._dload -= np.bincount(mat.ravel(), weights=self._rate[idx].repeat(mat.shape[1]),
                                           minlength=self._pad + 1)
                self._nflows -= np.bincount(mat.ravel(), minlength=self._pad + 1)
            fire_ended(self.env, now, self._events, idx.tolist(), self._latency[idx].tolist())
        return idx

    def _solve(self, now: int, ended: np.ndarray, started: np.ndarray) -> None:
        links, label = self._links, self._label
        alive = self._alive_count
        full = not self.incremental or alive <= self.small_flows or self._stale
        kept = None
        if full:  # few flows: solving them all costs less than finding what to solve
            members = self._alive[:self._size].nonzero()[0]
            self._stale = self.incremental and alive <= self.small_flows
            if self.incremental and ended.size and not started.size:
                # a flow slower than every ended flow keeps its rate whatever its component
                # (the slowest ended flow's rate is no larger than its component's floor)
                faster = self._rate[members] >= np.minimum.reduce(self._rate[ended]) * (1.0 - _KEEP_MARGIN)
                kept = members[~faster]
                members = members[faster]
                if not kept.size:
                    kept = None
        else:
            n = self._size
            first = label[links[:n, 0]]  # every link of a flow carries its component's label
            ended_labels = first[ended]
            lo = np.minimum.reduce(ended_labels) if ended.size else -1
            if not started.size and (ended.size == 1 or lo == np.maximum.reduce(ended_labels)):
                # the usual case: flows ended in one component, none started; the flows of the
                # component slower than every ended flow keep their rate (see _kept)
                inside = (first == lo) & self._alive[:n]
                faster = self._rate[:n] >= np.minimum.reduce(self._rate[ended]) * (1.0 - _KEEP_MARGIN)
                members = (inside & faster).nonzero()[0]
                kept = (inside & ~faster).nonzero()[0]
                if not kept.size:
                    kept = None
            else:
                touched = np.zeros(self._pad + 1, dtype=bool)
                touched[label[links[ended]]] = True
                touched[label[links[started]]] = True
                touched[self._pad] = False
                members = (touched[first] & self._alive[:n]).nonzero()[0]
                if ended.size:
                    members, kept = self._kept(members, ended, started)
        if members.size:
            self._resolve(now, members, kept)
        if self.incremental and not self._stale:
            self._update_labels(full, members.size + (0 if kept is None else kept.size), ended, started)
        if self._on_util is not None:
            self._report(now)

    def _update_labels(self, full: bool, num_members: int, ended: np.ndarray, started: np.ndarray) -> None:
        """Keep every alive flow's links under one label. Started flows merge the labels they
        join; the components of the touched labels are recomputed exactly (splitting what ended
        flows held together) once a quarter of their flows have ended since the last time, or
        after a solve of everything. In between a label may cover several components, which
        costs solving more flows but changes no rate (components solve independently)."""
        label, links, pad = self._label, self._links, self._pad
        self._ended_since += ended.size
        if full or 4 * self._ended_since >= num_members:
            n = self._size
            if full:  # every label may be out of date
                label[:] = np.arange(pad + 1)
                flows = self._alive[:n].nonzero()[0]
            else:
                touched = np.zeros(pad + 1, dtype=bool)
                touched[label[links[ended]]] = True
                touched[label[links[started]]] = True
                touched[pad] = False
                flows = (touched[label[links[:n, 0]]] & self._alive[:n]).nonzero()[0]
                reset = touched[label[:pad]].nonzero()[0]
                label[reset] = reset
            mat = links[flows]
            r, c = np.nonzero(mat < pad)  # incidence, sorted by flow
            used, at = np.unique(mat[r, c], return_inverse=True)
            label[used] = used[link_components(r, at, used.size)]
            self._ended_since = 0
        elif started.size:
            # components of the labels the started flows join, one label each (the smallest)
            mat = links[started]
            r, c = np.nonzero(mat < pad)
            groups, at = np.unique(label[mat[r, c]], return_inverse=True)
            merged = groups[link_components(r, at, groups.size)]
            if (merged != groups).any():
                pos = np.minimum(np.searchsorted(groups, label), groups.size - 1)
                hit = groups[pos] == label
                label[hit] = merged[pos[hit]]

    def _kept(self, members: np.ndarray, ended: np.ndarray,
              started: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Split ``members`` into the flows to solve and those that keep their rate, being
        slower than every flow that ended in their component, where none started (max-min:
        they were bottlenecked below the level where the ended flows' load could matter)."""
        label, links, rate = self._label, self._links, self._rate
        ended_labels = label[links[ended, 0]]
        lo = ended_labels.min()
        if not started.size and lo == ended_labels.max():  # one component (the usual case)
            keep = rate[members] < rate[ended].min() * (1.0 - _KEEP_MARGIN)
        else:
            floor = np.full(self._pad + 1, np.inf)
            np.minimum.at(floor, ended_labels, rate[ended])
            floor[label[links[started]]] = -np.inf
            keep = rate[members] < floor[label[links[members, 0]]] * (1.0 - _KEEP_MARGIN)
        if not keep.any():
            return members, None
        return members[~keep], members[keep]

    def _resolve(self, now: int, slots: np.ndarray, kept: np.ndarray | None) -> None:
        """New rates for ``slots``, on what the ``kept`` flows leave of the links they share."""
        paths = self._links.take(slots, axis=0)  # (take: faster than fancy indexing on rows)
        remaining = self._cap
        if kept is not None:
            width = paths.shape[1]
            load = np.bincount(self._links.take(kept, axis=0).ravel(),
                               weights=self._rate.take(kept).repeat(width), minlength=self._pad + 1)
            remaining = remaining - load
        if slots.size == 1:  # alone: what is left of its narrowest link (the kernel's one round)
            rates = np.maximum(np.minimum.reduce(remaining.take(paths[0]), keepdims=True), 0.0)
        elif remaining.shape[0] > _COMPACT_LINKS and remaining.shape[0] > 4 * paths.size:
            used, compact = self._compact_paths(paths)
            rates = solve_rows(compact, np.append(remaining[used], np.inf))
        else:
            rates = solve_rows(paths, remaining)
        self.num_rate_solves += 1
        block = self._state.take(slots, axis=1)
        rem, t0, rate, nbytes = block[self._REM], block[self._T0], block[self._RATE], block[self._NBYTES]
        rem -= rate * (now - t0)
        block[self._T0] = now
        if self._on_util is not None:
            self._dload += np.bincount(paths.ravel(), weights=(rates - rate).repeat(paths.shape[1]),
                                       minlength=self._pad + 1)
        block[self._RATE] = rates
        block[self._FINISH] = now + rem / rates
        # counted as arrived once what is left would drain within the slack or is under a
        # billionth of the flow (rem - rates * (t - now) <= rates * slack + 1e-9 * nbytes)
        block[self._DUE] = now + (rem - 1e-9 * nbytes) / rates - _FINISH_SLACK_NS
        self._state[:, slots] = block

    def _compact_paths(self, mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The links in use (ascending) and the flows' paths as indices among them, padded with
        ``used.size``."""
        pad = self._pad
        mark = np.zeros(pad + 1, dtype=bool)
        mark[mat] = True
        mark[pad] = False
        used = mark.nonzero()[0]
        index = np.cumsum(mark) - 1
        index[pad] = used.size  # where padding points
        return used, index[mat]

    def _report(self, now: int) -> None:
        """Utilisation of the links whose load changed at this instant, in link order. Loads are
        kept up to date by the rate changes (a link no flow crosses is exactly 0)."""
        dload = self._dload
        dload[self._pad] = 0.0
        links = dload.nonzero()[0]
        if not links.size:
            return
        load = self._load
        load[links] += dload[links]
        dload[links] = 0.0
        load[links[self._nflows[links] == 0]] = 0.0
        # a load summed up over rate changes can pass the capacity by a rounding error: clip it
        util = np.minimum(load[links] / self.capacity[links], 1.0)
        changed = np.abs(util - self._util[links]) > 1e-12
        if np.logical_or.reduce(changed):
            self._util[links] = util
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

    def transfer_many(self, flows: Sequence[tuple[tuple[int, ...], float, int]]) -> simpy.Event:
        """Start several flows; the event fires when the slowest has arrived."""
        self.num_flows += len(flows)
        longest = 0
        cap = self.capacity
        for link_ids, nbytes, latency_ns in flows:
            self.bytes_delivered += max(nbytes, 0.0)
            drain = 0
            if link_ids and nbytes > 0:
                drain = math.ceil(nbytes / min(cap[l] for l in link_ids) - _FINISH_SLACK_NS)
            longest = max(longest, drain + latency_ns)
        return self.env.timeout(longest)
