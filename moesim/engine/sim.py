"""The simulation: tasks with dependencies on GPU streams, run by SimPy.

The engine knows tasks, streams and flows, never models, schedules or experts.

* A *stream* is ``(rank, name)``; ``"compute"`` is a GPU's compute stream, names starting with
  ``"comm"`` are communication streams. Tasks on one stream run one at a time in the order they
  were added; different streams run concurrently.
* A *task* starts when it is at the head of every stream it occupies (a collective occupies one
  stream per participant: the NCCL rendezvous) and all its dependencies have finished.
* Compute tasks take a fixed duration; a compute task that starts while a communication task
  is in flight on the same GPU is stretched by ``overlap_slowdown`` (SM/HBM contention, a
  calibrated factor). The decision is taken at the compute task's start.
* A compute task may carry ``region_ns``: the fixed cost a kernel pays when it starts on an idle
  stream (measured, :mod:`moesim.costs.regions`). It saves that much when it starts the instant the
  previous task on its stream ends (it was queued behind it).
* Communication tasks are phases of flows moved by the network (fluid or analytical), each phase
  preceded by ``step_latency_ns``.

Simultaneous events are processed in SimPy's order: (time, priority, insertion id), so the same
inputs always give the same result. If the event queue empties with tasks unfinished, ``run``
raises :class:`DeadlockError` naming each stuck task and what it waits on.
"""
from __future__ import annotations

import gc
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import simpy

from moesim.engine import collectives as coll
from moesim.engine.compiled import CompiledFluidNetwork, fluid_network
from moesim.engine.network import AnalyticalNetwork, FluidNetwork
from moesim.engine.recorder import Recorder, Span
from moesim.errors import ConfigError, DeadlockError

StreamKey = tuple[int, str]
MODES = ("fluid", "analytical")
HOST_STREAM = "host"  # the stream of a GPU's host thread (Simulation.host)
# Physical ranges of one task (~11.6 days) and one flow (a petabyte): NaN, inf or 1e300 made
# int() overflow, durations beyond any step, or an event loop that never advanced (latency 10^30).
MAX_TASK_NS = 10**15
MAX_FLOW_BYTES = 1e15


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while bulk-creating or running tasks.

    A simulation allocates millions of small objects and frees none of them until the end, so
    generational collections only rescan live objects (they halved throughput in
    ``benchmarks/engine_speed.py``). Reference counting still frees everything it can; the
    collector resumes (and runs on its own schedule) when the block ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Task:
    """A unit of work on one or more streams. Created through :class:`Simulation` methods."""

    __slots__ = ("id", "name", "category", "streams", "duration_ns", "phases", "step_latency_ns",
                 "deps", "args", "done", "finished", "arrived", "start_ns", "end_ns", "span_ids", "region_ns")

    def __init__(self, tid: int, name: str, category: str, streams: tuple[StreamKey, ...],
                 duration_ns: int, phases: coll.Phases | None, step_latency_ns: int,
                 deps: tuple["Task", ...], args: dict[str, Any]) -> None:
        self.id = tid
        self.name = name
        self.category = category
        self.streams = streams
        self.duration_ns = duration_ns
        self.phases = phases
        self.step_latency_ns = step_latency_ns
        self.deps = deps
        self.args = args
        self.done: simpy.Event | None = None
        self.finished = False
        self.arrived = 0
        self.start_ns = -1
        self.end_ns = -1
        self.span_ids: list[int] | None = None  # a communication task's spans (Recorder.task_spans: every task's)
        self.region_ns = 0  # what a compute task saves when it starts right behind another on its stream

    @property
    def is_comm(self) -> bool:
        return self.phases is not None

    def __repr__(self) -> str:
        return f"Task({self.id}, {self.name!r})"


@dataclass(frozen=True)
class SimResult:
    """What one run produced. ``mode`` says which network model ran."""

    makespan_ns: int
    mode: str
    num_tasks: int
    num_flows: int
    num_rate_solves: int
    bytes_moved: float
    recorder: Recorder
    meta: Mapping[str, Any] = field(default_factory=dict)
    # Tasks not finished when ``run(until_ns=...)`` stopped; makespan_ns then covers finished ones only.
    num_unfinished: int = 0

    @property
    def complete(self) -> bool:
        """Whether every task finished (always, unless ``run`` was given ``until_ns``)."""
        return self.num_unfinished == 0


def _join(env: simpy.Environment, waits: list[simpy.Event]) -> simpy.Event:
    """An event that succeeds when every one of ``waits`` (none processed yet, none failing) has:
    ``env.all_of`` without its per-event checks and result dictionary (a collective's task can
    wait on dozens of ranks). It succeeds in the same step ``all_of`` would."""
    join = env.event()
    left = len(waits)

    def arrived(_event: simpy.Event) -> None:
        nonlocal left
        left -= 1
        if not left:
            join.succeed()
    for w in waits:
        w.callbacks.append(arrived)
    return join


class Simulation:
    """Build a task graph with :meth:`compute`, :meth:`comm`, :meth:`send` and
    :meth:`collective`, then :meth:`run` it once.

    Args:
        topology: the fabric (a :class:`moesim.topology.Topology`).
        mode: ``"fluid"`` (max-min sharing) or ``"analytical"`` (no contention).
        link_efficiency: fraction of datasheet bandwidth achieved, per link kind.
        overlap_slowdown: compute stretch factor while a collective runs on the same GPU.
        recorder: where spans go (a fresh one by default).
        record_link_counters: record link utilisation counters (costly on huge fabrics).
        link_series: keep every utilisation change as a sample (a trace draws them); with
            ``False`` the compiled fluid network keeps each link's integral only
            (``recorder.link_totals``: what the analysis reads), storing no sample.
        compute_scale: rank -> multiplier of every compute duration on that GPU (a straggler).
        jitter_ns: extra latency per flow, uniform in [0, jitter_ns], drawn from ``seed`` in
            flow-creation order (deterministic).
    """

    def __init__(self, topology: Any, mode: str = "fluid", link_efficiency: Mapping[str, float] | None = None,
                 overlap_slowdown: float = 1.0, recorder: Recorder | None = None,
                 record_link_counters: bool = True, compute_scale: Mapping[int, float] | None = None,
                 jitter_ns: int = 0, seed: int = 0, link_series: bool = True) -> None:
        if mode not in MODES:
            raise ConfigError("mode", f"unknown network mode {mode!r}", f"use one of: {', '.join(MODES)}")
        if overlap_slowdown < 1.0:
            raise ConfigError("overlap_slowdown", f"must be >= 1 (got {overlap_slowdown})", "use 1.0 for no slowdown")
        self.topology = topology
        self.mode = mode
        self.env = simpy.Environment()
        eff = dict(link_efficiency or {})
        for kind, e in eff.items():
            if not 0 < e <= 1:
                raise ConfigError(f"link_efficiency[{kind}]", f"must be in (0, 1] (got {e})")
        self.capacity = [l.bandwidth_gbps * eff.get(l.kind, 1.0) for l in topology.links]
        self.recorder = recorder if recorder is not None else Recorder()
        self.recorder.record_counters = record_link_counters
        if mode == "fluid":
            cb = self.recorder.add_link_samples if record_link_counters else None
            if record_link_counters:
                self.recorder.link_tracks = [f"link:{link.src}->{link.dst}" for link in topology.links]
            self.net: CompiledFluidNetwork | FluidNetwork | AnalyticalNetwork = fluid_network(
                self.env, self.capacity, cb, series=link_series)
            if record_link_counters and not link_series and isinstance(self.net, CompiledFluidNetwork):
                self.recorder.link_totals = self.net.link_totals
        else:
            self.net = AnalyticalNetwork(self.env, self.capacity)
        self.overlap_slowdown = overlap_slowdown
        self.compute_scale = {int(r): float(f) for r, f in (compute_scale or {}).items() if f != 1.0}
        self.jitter_ns = int(jitter_ns)
        self._rng = np.random.default_rng(seed) if jitter_ns else None
        self._num_gpus = topology.num_gpus
        self._hosts = [topology.host_of(r) for r in range(self._num_gpus)]
        self.tasks: list[Task] = []
        self._streams: dict[StreamKey, list[Task]] = {}
        self._comm_active: dict[int, int] = defaultdict(int)
        self._route_key = 0
        self._ran = False
        self._depended: set[int] = set()  # ids of the tasks some task waits on (kept as tasks are added)
        self._stream_ends: list[int] = []  # the last end of each stream whose tasks all ran

    # -- building the graph ---------------------------------------------------------------
    def _check_rank(self, rank: int, what: str) -> int:
        if not 0 <= rank < self.topology.num_gpus:
            raise ConfigError(what, f"rank {rank} out of range", f"use 0..{self.topology.num_gpus - 1} ({self.topology.name})")
        return rank

    def _add(self, name: str, category: str, streams: Sequence[StreamKey], duration_ns: int,
             phases: coll.Phases | None, step_latency_ns: int, deps: Iterable[Task],
             args: Mapping[str, Any] | None) -> Task:
        assert not self._ran, "cannot add tasks after run()"
        t = Task(len(self.tasks), name, category, tuple(streams), int(duration_ns), phases,
                 int(step_latency_ns), tuple(deps), dict(args or {}))
        self._depended.update([d.id for d in t.deps])
        self.tasks.append(t)
        for key in t.streams:
            self._streams.setdefault(key, []).append(t)
        return t

    def compute(self, rank: int, duration_ns: int, name: str, *, category: str = "compute",
                stream: str = "compute", deps: Iterable[Task] = (), args: Mapping[str, Any] | None = None,
                region_ns: int = 0) -> Task:
        """A compute task of fixed duration on one GPU stream.

        ``region_ns``: the part of ``duration_ns`` a task saves when it starts the instant the
        previous task on its stream ends (queued behind it, as a kernel issued ahead is), the fixed
        cost of a kernel starting on an idle stream (:mod:`moesim.costs.regions`); at most
        ``duration_ns``."""
        if not 0 <= duration_ns <= MAX_TASK_NS:  # NaN fails both
            problem = (f"negative duration {duration_ns}" if duration_ns < 0 else
                       f"duration {duration_ns} is not a number of ns up to {MAX_TASK_NS:.0e}")
            raise ConfigError("duration_ns", f"{problem} for task {name!r}")
        if not 0 <= region_ns <= duration_ns:
            raise ConfigError("region_ns", f"{region_ns} for task {name!r} must be in [0, duration_ns={duration_ns}]")
        if not 0 <= rank < self._num_gpus:
            self._check_rank(rank, "rank")
        assert not self._ran, "cannot add tasks after run()"
        if self.compute_scale and rank in self.compute_scale:
            duration_ns = round(duration_ns * self.compute_scale[rank])
            region_ns = round(region_ns * self.compute_scale[rank])
        key = (rank, stream)
        tasks = self.tasks
        if deps:
            deps = tuple(deps)
            depended = self._depended
            for d in deps:
                depended.add(d.id)
        t = Task(len(tasks), name, category, (key,), int(duration_ns), None, 0,
                 deps or (), dict(args) if args else {})
        if region_ns:
            t.region_ns = int(region_ns)
        tasks.append(t)
        try:
            self._streams[key].append(t)
        except KeyError:
            self._streams[key] = [t]
        return t

    def host(self, rank: int, duration_ns: int, name: str, *, args: Mapping[str, Any] | None = None) -> Task:
        """A task of ``rank``'s host thread (stream ``host``): issuing GPU work. Host tasks run one
        after another in the order they are added; slow-GPU faults and the overlap slowdown leave
        them alone."""
        if duration_ns < 0:
            raise ConfigError("duration_ns", f"negative host time {duration_ns} for {name!r}")
        self._check_rank(rank, "rank")
        return self._add(name, "host", [(rank, HOST_STREAM)], duration_ns, None, 0, (), args)

    def comm(self, streams: Sequence[StreamKey], phases: coll.Phases, name: str, *, category: str,
             step_latency_ns: int = 0, deps: Iterable[Task] = (), args: Mapping[str, Any] | None = None) -> Task:
        """A communication task made of flow phases, occupying the given streams."""
        for rank, _ in streams:
            self._check_rank(rank, "stream rank")
        for phase in phases:
            if isinstance(phase, coll.FlowArrays):
                self._check_arrays(phase, name)
                continue
            for src, dst, nbytes in phase:
                self._check_rank(src, "flow src")
                self._check_rank(dst, "flow dst")
                if not 0 <= nbytes <= MAX_FLOW_BYTES:  # NaN fails both
                    raise ConfigError("nbytes", f"{'negative size' if nbytes < 0 else 'size'} {nbytes} in {name!r}"
                                      f"{'' if nbytes < 0 else f' is not a number of bytes up to {MAX_FLOW_BYTES:.0e}'}")
        if not 0 <= step_latency_ns <= MAX_TASK_NS:  # 10^30 ns hung the event loop
            raise ConfigError("step_latency_ns", f"{step_latency_ns} for {name!r} is outside 0..{MAX_TASK_NS:.0e} ns")
        return self._add(name, category, streams, 0, phases, step_latency_ns, deps, args)

    def _check_arrays(self, phase: coll.FlowArrays, name: str) -> None:
        """Vectorised checks of a phase given as arrays."""
        for what, ranks in (("flow src", phase.src), ("flow dst", phase.dst)):
            bad = (ranks < 0) | (ranks >= self._num_gpus)
            if bad.any():
                self._check_rank(int(ranks[np.argmax(bad)]), what)
        if (phase.nbytes < 0).any():
            raise ConfigError("nbytes", f"negative size {float(phase.nbytes.min())} in {name!r}")
        if not (phase.nbytes <= MAX_FLOW_BYTES).all():  # NaN, inf or more than a petabyte
            raise ConfigError("nbytes", f"a size in {name!r} is not a number of bytes up to {MAX_FLOW_BYTES:.0e}")

    def send(self, src: int, dst: int, nbytes: float, name: str, *, deps: Iterable[Task] = (),
             latency_ns: int = 0, send_stream: str = "comm.send", recv_stream: str = "comm.recv",
             args: Mapping[str, Any] | None = None) -> Task:
        """Point-to-point send/recv: occupies the sender's and receiver's streams (rendezvous)."""
        if not 0 <= nbytes <= MAX_FLOW_BYTES:  # NaN and -1 made no flow at all: a send of nothing, silently
            raise ConfigError("nbytes", f"send {name!r} of {nbytes} bytes is outside 0..{MAX_FLOW_BYTES:.0e}")
        a = {"bytes": nbytes, "src": src, "dst": dst, **(args or {})}
        streams = [(src, send_stream)] if src == dst else [(src, send_stream), (dst, recv_stream)]
        return self.comm(streams, coll.send_recv(src, dst, nbytes), name, category="send",
                         step_latency_ns=latency_ns, deps=deps, args=a)

    def collective(self, op: str, ranks: Sequence[int], nbytes: float | Sequence[Sequence[float]], name: str, *,
                   stream: str = "comm", algorithm: str = "ring", step_latency_ns: int = 0,
                   deps: Iterable[Task] = (), args: Mapping[str, Any] | None = None) -> Task:
        """A collective over ``ranks`` (see :mod:`moesim.engine.collectives` for byte conventions).
        Its flows are built when it starts (:class:`~moesim.engine.collectives.LazyPhases`).
        ``algorithm="hierarchical"`` lowers an all-reduce, reduce-scatter or all-gather as rings
        inside each host and one ring per local index across hosts; other ops ignore it."""
        ranks = [self._check_rank(r, "collective ranks") for r in ranks]
        if len(set(ranks)) != len(ranks):
            raise ConfigError("ranks", f"duplicate ranks in collective {name!r}: {ranks}")
        sizes = np.asarray(nbytes, dtype=float)
        if not ((sizes >= 0) & (sizes <= MAX_FLOW_BYTES)).all():  # NaN, negative or inf sizes
            raise ConfigError("nbytes", f"collective {name!r} has a size outside 0..{MAX_FLOW_BYTES:.0e} bytes")
        builder = self._phase_builder(op, algorithm)
        if op == "all_to_all_v":
            n = len(ranks)
            if len(nbytes) != n or any(len(row) != n for row in nbytes):
                raise ConfigError("nbytes", f"all_to_all_v matrix of {name!r} must be {n}x{n} for {n} ranks")
            total = sum(nbytes[i][j] for i in range(n) for j in range(n))
        else:
            total = nbytes
        a = {"bytes": total, "ranks": len(ranks), "algorithm": algorithm, **(args or {})}
        return self._add(name, op.removesuffix("_v"), [(r, stream) for r in ranks], 0,
                         coll.LazyPhases(builder, ranks, nbytes), step_latency_ns, deps, a)

    def _phase_builder(self, op: str, algorithm: str):
        hierarchical = {"all_reduce": coll.hierarchical_all_reduce, "reduce_scatter": coll.hierarchical_reduce_scatter,
                        "all_gather": coll.hierarchical_all_gather}
        if algorithm == "hierarchical" and op in hierarchical:
            build, host_of = hierarchical[op], self.topology.host_of
            return lambda ranks, nbytes: build(ranks, nbytes, host_of)
        if op == "all_reduce":
            return coll.ring_all_reduce
        builders = {"all_gather": coll.ring_all_gather, "reduce_scatter": coll.ring_reduce_scatter,
                    "all_to_all": coll.direct_all_to_all, "all_to_all_v": coll.direct_all_to_all_v,
                    "broadcast": coll.pipelined_broadcast}
        if op not in builders:
            raise ConfigError("op", f"unknown collective {op!r}", f"use one of: all_reduce, {', '.join(builders)}")
        return builders[op]

    def add_dep(self, task: Task, on: Task) -> None:
        """Make ``task`` wait for ``on`` (lets lowering wire dependencies after creating tasks)."""
        assert not self._ran, "cannot add dependencies after run()"
        if on is task:
            raise ConfigError("deps", f"task {task.name!r} cannot depend on itself")
        task.deps = task.deps + (on,)
        self._depended.add(on.id)

    # -- running --------------------------------------------------------------------------
    def run(self, until_ns: int | None = None) -> SimResult:
        """Run every task to completion and return the result."""
        assert not self._ran, "run() may be called once"
        self._ran = True
        rec = self.recorder
        rec.meta.setdefault("mode", self.mode)
        rec.meta.setdefault("num_ranks", self.topology.num_gpus)
        rec.deps_from(self.tasks)
        with gc_paused():  # setting up allocates per task too
            for key in sorted(self._streams):
                self.env.process(self._stream_proc(key, self._streams[key]))
            self.env.run(until=until_ns)
        done_streams = self._stream_ends
        # every stream ran to its end: every task finished, the last end of a stream is its latest
        unfinished = [] if len(done_streams) == len(self._streams) else [t for t in self.tasks if not t.finished]
        if unfinished and until_ns is None:
            raise DeadlockError(self._stuck_report())
        if unfinished:  # stopped early: say so, the makespan is not the step's
            rec.meta["unfinished_tasks"] = len(unfinished)
            warnings.warn(f"run(until_ns={until_ns}) stopped with {len(unfinished)} of {len(self.tasks)} tasks "
                          "unfinished; makespan_ns covers the finished ones (SimResult.complete is False)",
                          RuntimeWarning, stacklevel=2)
        return SimResult(
            makespan_ns=(max(done_streams, default=0) if not unfinished else
                         max((t.end_ns for t in self.tasks), default=0)),
            mode=self.mode, num_tasks=len(self.tasks), num_flows=self.net.num_flows,
            num_rate_solves=self.net.num_rate_solves, bytes_moved=self.net.bytes_delivered,
            recorder=rec, meta=dict(rec.meta), num_unfinished=len(unfinished),
        )

    def _done_event(self, t: Task) -> simpy.Event:
        if t.done is None:
            t.done = self.env.event()
        return t.done

    def _stream_proc(self, key: StreamKey, tasks: list[Task]):
        # Hot loop over this stream's tasks; keep attribute lookups local. A run of compute
        # tasks that nothing outside the stream waits on (no deps after the first, no dependents
        # before the last, no overlap stretch) is exact to advance with one timeout: the tasks
        # would run back to back anyway. Their spans carry the same times either way.
        env = self.env
        timeout = env.timeout
        rank, stream = key
        host = self._hosts[rank]
        spans = self.recorder.spans
        stretch = self.overlap_slowdown != 1.0 and stream != HOST_STREAM
        comm_active = self._comm_active
        depended = self._depended
        new_span = tuple.__new__  # a NamedTuple without its Python-level __new__
        n = len(tasks)
        i = 0
        last_end = -1  # when the previous task on this stream ended
        slowdown = self.overlap_slowdown
        while i < n:
            t = tasks[i]
            deps = t.deps
            if deps:
                if len(deps) == 1:
                    if not deps[0].finished:
                        yield deps[0].done or self._done_event(deps[0])
                else:
                    waits = [d.done or self._done_event(d) for d in deps if not d.finished]
                    if waits:
                        yield waits[0] if len(waits) == 1 else _join(env, waits)
            if t.phases is None:  # compute and host tasks (one stream each; comm tasks carry phases)
                start = env.now
                tid = t.id
                j = i + 1
                if not stretch and tid not in depended:
                    while j < n and not tasks[j].deps and tasks[j].phases is None and tasks[j - 1].id not in depended:
                        j += 1
                if j == i + 1:  # one task (a chain link, or a stream of dependents): no lists
                    d = t.duration_ns
                    if start == last_end:
                        d -= t.region_ns
                    if stretch and comm_active[rank]:
                        d = int(round(d * slowdown))
                    if d:
                        yield timeout(d)
                    last_end = start + d
                    t.start_ns = start
                    t.end_ns = last_end
                    t.finished = True
                    spans.append(new_span(Span, (tid, rank, host, stream, t.name, t.category, start, last_end, t.args)))
                    done = t.done
                    if done is not None:
                        done.succeed()
                    i += 1
                    continue
                # a task queued behind the previous one on its stream (started the instant it
                # ended, or after it in one chain) saves its region cost
                durations = [tasks[k].duration_ns - (tasks[k].region_ns if k > i or start == last_end else 0)
                             for k in range(i, j)]
                if stretch and comm_active[rank]:
                    durations[0] = int(round(durations[0] * self.overlap_slowdown))
                total = sum(durations)
                if total:
                    yield timeout(total)
                last_end = env.now
                for k in range(i, j):
                    u = tasks[k]
                    u.start_ns = start
                    u.end_ns = start = start + durations[k - i]
                    u.finished = True
                    spans.append(new_span(Span, (u.id, rank, host, stream, u.name, u.category, u.start_ns, u.end_ns, u.args)))
                    if u.done is not None:
                        u.done.succeed()
                i = j
                continue
            t.arrived += 1
            if t.arrived == len(t.streams):
                for r in {r for r, _ in t.streams}:
                    comm_active[r] += 1
                env.process(self._run_comm(t))
            yield self._done_event(t)
            last_end = env.now
            i += 1
        self._stream_ends.append(last_end)

    def _run_comm(self, t: Task):
        env = self.env
        t.start_ns = env.now
        ranks = sorted({r for r, _ in t.streams})
        topo = self.topology
        t.phases = phases = list(t.phases)  # a collective's flows exist from here on
        for phase in phases:
            if t.step_latency_ns:
                yield env.timeout(t.step_latency_ns)
            flows = []
            for src, dst, nbytes in phase:
                self._route_key += 1
                route = topo.route(src, dst, self._route_key)
                latency = route.latency_ns
                if self._rng is not None:
                    latency += int(self._rng.integers(0, self.jitter_ns + 1))
                flows.append((route.link_ids, nbytes, latency))
            if flows:
                yield self.net.transfer_many(flows)
        if not phases and t.step_latency_ns:
            yield env.timeout(t.step_latency_ns)
        t.phases = ()  # the flows are gone; the task stays a communication task
        for r in ranks:
            self._comm_active[r] -= 1
        self._finish(t)

    def _finish(self, t: Task) -> None:
        t.end_ns = self.env.now
        t.finished = True
        spans = self.recorder.spans
        hosts = self._hosts
        t.span_ids = []
        for rank, stream in t.streams:
            t.span_ids.append(len(spans))
            spans.append(Span(t.id, rank, hosts[rank], stream, t.name, t.category, t.start_ns, t.end_ns, t.args))
        if t.category == "send" and len(t.span_ids) == 2:
            self.recorder.add_arrow(t.span_ids[0], t.span_ids[1], t.name)
        if t.done is not None:
            t.done.succeed()

    def _stuck_report(self) -> list[str]:
        lines = []
        for key in sorted(self._streams):
            t = self._head(key)
            if t is None:
                continue
            lines.append(f"gpu{key[0]}/{key[1]}: {t.name!r} {self._why_waiting(t)}")
        return lines

    def _head(self, key: StreamKey) -> Task | None:
        """The first unfinished task of a stream (where it is stuck), or None."""
        return next((t for t in self._streams[key] if not t.finished), None)

    def _why_waiting(self, t: Task) -> str:
        pending = [d for d in t.deps if not d.finished]
        if pending:
            return "waits on " + ", ".join(repr(d.name) for d in pending[:5]) + (" ..." if len(pending) > 5 else "")
        missing = [k for k in t.streams if self._head(k) is not t]
        if missing:
            heads = [f"gpu{k[0]}/{k[1]} (busy with {self._head(k).name!r})" for k in missing[:5]]
            return "waits for its peers to reach it: " + ", ".join(heads)
        return "is ready but never ran"
