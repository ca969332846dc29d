"""Seeded synthetic Recorders that follow the engine's conventions, for tests and exporter benchmarks.

A tiny list scheduler: tasks arrive in topological order, each waits for its dependencies (plus
an optional fixed latency) and for every stream it occupies, then runs for a random duration.
Compute tasks occupy one GPU's ``compute`` stream; collectives occupy one ``comm*`` stream on
several GPUs (one span each, same task id, same times); point-to-point transfers occupy
``comm.pp_send`` on the sender and ``comm.pp_recv`` on the receiver. Cross-GPU dependencies get
an Arrow, communication drives ``link:`` utilisation counters. Same seed, same Recorder.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from moesim.engine.recorder import Recorder, Span

COMPUTE_CATEGORIES = ("forward", "backward", "weight_grad", "expert", "router")
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
COLLECTIVE_STREAMS = ("comm", "comm.ep", "comm.dp")


@dataclass(frozen=True)
class _Task:
    tracks: tuple[tuple[int, str], ...]
    category: str
    duration_ns: int
    deps: tuple[int, ...]


def _pick_task(rng: random.Random, task_id: int, num_ranks: int) -> _Task:
    deps = tuple(sorted(rng.sample(range(task_id), min(task_id, rng.randint(0, 2)))))
    duration_ns = rng.randint(1, 5000)
    roll = rng.random()
    if roll < 0.6 or num_ranks < 2:
        return _Task(((rng.randrange(num_ranks), "compute"),), rng.choice(COMPUTE_CATEGORIES), duration_ns, deps)
    if roll < 0.8:
        src, dst = rng.sample(range(num_ranks), 2)
        return _Task(((src, "comm.pp_send"), (dst, "comm.pp_recv")), "send", duration_ns, deps)
    ranks = sorted(rng.sample(range(num_ranks), rng.randint(2, num_ranks)))
    stream = rng.choice(COLLECTIVE_STREAMS)
    return _Task(tuple((r, stream) for r in ranks), rng.choice(COLLECTIVES), duration_ns, deps)


def _meta(seed: int, num_ranks: int, gpus_per_host: int) -> dict:
    links = {f"link:gpu{a}->gpu{b}": {"kind": "nvlink" if a // gpus_per_host == b // gpus_per_host else "ib",
                                      "bandwidth_gbps": 450.0}
             for a in range(num_ranks) for b in range(num_ranks) if a != b}
    return {"num_ranks": num_ranks, "mode": "analytical", "cost_model": "synthetic",
            "scenario": f"synthetic-{seed}", "links": links,
            "ranks": {r: {"host": r // gpus_per_host, "gpu": "H100"} for r in range(num_ranks)}}


def synthetic_recorder(seed: int, num_ranks: int = 4, num_tasks: int = 40, *,
                       gpus_per_host: int = 2, dep_latency_ns: int = 0) -> Recorder:
    """A consistent random Recorder: no overlaps on a stream, every task after its deps."""
    assert num_ranks >= 1 and num_tasks >= 0 and gpus_per_host >= 1 and dep_latency_ns >= 0
    rng = random.Random(seed)
    rec = Recorder(meta=_meta(seed, num_ranks, gpus_per_host))
    free_at: dict[tuple[int, str], int] = {}
    end_of: dict[int, int] = {}
    for task_id in range(num_tasks):
        task = _pick_task(rng, task_id, num_ranks)
        ready = max((end_of[d] + dep_latency_ns for d in task.deps), default=0)
        start = max([ready] + [free_at.get(t, 0) for t in task.tracks])
        end = start + task.duration_ns
        name = f"{task.category}.{task_id}"
        rec.task_deps[task_id], rec.task_names[task_id], end_of[task_id] = task.deps, name, end
        args = {"stage": task.tracks[0][0], "microbatch": task_id % 4} if task.category in COMPUTE_CATEGORIES \
            else {"bytes": task.duration_ns * 100}
        first = -1
        for rank, stream in task.tracks:
            free_at[(rank, stream)] = end
            idx = rec.add_span(Span(task_id, rank, rank // gpus_per_host, stream, name, task.category, start, end,
                                    dict(args)))
            first = idx if first < 0 else first
        if task.category == "send":  # like the engine: an arrow from the send span to the recv span
            rec.add_arrow(first, first + 1, name)
        _add_arrows(rec, task_id, first)
        _add_counters(rec, rng, task.tracks, start, end)
    return rec


def _add_arrows(rec: Recorder, task_id: int, dst_span: int) -> None:
    dst_rank = rec.spans[dst_span].rank
    for dep in rec.task_deps[task_id]:
        src_span = rec.task_spans[dep][-1]
        if rec.spans[src_span].rank != dst_rank:
            rec.add_arrow(src_span, dst_span, "dep")


def _add_counters(rec: Recorder, rng: random.Random, tracks: tuple[tuple[int, str], ...],
                  start_ns: int, end_ns: int) -> None:
    ranks = [rank for rank, stream in tracks if stream.startswith("comm")]
    for a, b in zip(ranks, ranks[1:]):
        track = f"link:gpu{a}->gpu{b}"
        rec.add_counter(track, start_ns, round(rng.uniform(0.1, 1.0), 3))
        rec.add_counter(track, end_ns, 0.0)
