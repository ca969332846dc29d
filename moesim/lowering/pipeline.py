"""Lower a pipeline schedule on a DP x TP x PP grid of GPUs into engine tasks.

Input: a validated :class:`~moesim.schedules.Schedule`, the plan (which GPU holds which
(tp, dp, pp) coordinate) and a :class:`StageWorkTable` that says what each action costs on one
GPU. Output: tasks in a :class:`~moesim.engine.Simulation`:

* every action (F, B, W, BW) of the schedule becomes, on each of the TP group's GPUs, a compute
  task on the ``compute`` stream, followed (when tp > 1) by one TP collective on ``comm.tp``
  carrying that action's tensor-parallel traffic. TP collectives are blocking in Megatron, so
  the next step's compute waits for them; inside a DualPipe overlapped pair they are not;
* every cross-rank dependency becomes a send/recv between the two stage GPUs of the same
  (tp, dp) coordinate on dedicated per-peer streams ``comm.send>R`` / ``comm.recv<R``, created
  in the sender's production order (so recv order can never deadlock). The receiver's compute
  waits for the transfer; with ``p2p_overlap=False`` (Megatron without
  ``--overlap-p2p-communication``) the sender's next step waits for it too;
* after the last backward of each model chunk a DP gradient all-reduce runs on ``comm.dp``
  (overlapping the rest of the backward when ``dp_overlap``), then an optimizer step.

The lowering knows tasks and costs only through the table; model maths lives in ``workload``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from moesim.engine import Simulation, Task
from moesim.schedules.deps import cross_deps
from moesim.schedules.model import Action, Overlap, Schedule, actions_of

CATEGORY = {"F": "forward", "B": "backward", "W": "weight_grad", "BW": "backward"}


@dataclass(frozen=True)
class StageWork:
    """Cost of one action on one GPU: compute time, FLOPs and the TP traffic it carries.

    ``tp_bytes`` is the all-reduce-equivalent size of all TP collectives of the action and
    ``tp_collectives`` how many collectives that stands for (each pays the step latency).
    """

    duration_ns: int
    flops: float
    tp_bytes: float = 0.0
    tp_collectives: int = 0


class StageWorkTable(Protocol):
    """What the lowering needs to know about the model on this hardware."""

    def work(self, action: Action) -> StageWork:
        """Cost of ``action`` (kind, path, stage) on one GPU of its TP group."""
        ...

    def send_bytes(self, action: Action) -> float:
        """Bytes one GPU sends to the next stage after ``action`` (activation or gradient)."""
        ...

    def grad_bytes(self, rank: int, chunk: int) -> float:
        """Gradient bytes of one model chunk held by one GPU (DP reduction size)."""
        ...

    def optimizer_ns(self, rank: int) -> int:
        """Optimizer step time on one GPU of pipeline rank ``rank``."""
        ...


@dataclass(frozen=True)
class Grid:
    """GPU coordinates: ``gpu(tp, dp, pp) -> rank`` of the topology."""

    tp: int
    dp: int
    pp: int
    ranks: tuple[int, ...]   # indexed by (pp * dp + dp_idx) * tp + tp_idx

    def gpu(self, tp: int, dp: int, pp: int) -> int:
        return self.ranks[(pp * self.dp + dp) * self.tp + tp]

    def tp_group(self, dp: int, pp: int) -> list[int]:
        return [self.gpu(t, dp, pp) for t in range(self.tp)]

    def dp_group(self, tp: int, pp: int) -> list[int]:
        return [self.gpu(tp, d, pp) for d in range(self.dp)]


@dataclass(frozen=True)
class LoweringOptions:
    """Latencies and policies the lowering needs from the cost model and the plan."""

    tp_step_latency_ns: int = 0
    dp_step_latency_ns: int = 0
    p2p_latency_ns: int = 0
    dp_overlap: bool = True
    dp_algorithm: str = "ring"
    p2p_overlap: bool = True


def lower_pipeline(sim: Simulation, schedule: Schedule, grid: Grid, table: StageWorkTable,
                   opts: LoweringOptions) -> dict[str, int]:
    """Add the whole training step to ``sim``; return counts of what was created."""
    done: dict[tuple[int, int, Action], list[Task]] = {}
    compute: dict[tuple[int, int, Action], list[Task]] = {}
    last_backward: dict[tuple[int, int, int], list[Task]] = {}
    for d in range(grid.dp):
        for p in range(grid.pp):
            _lower_rank(sim, schedule, grid, table, opts, d, p, done, compute, last_backward)
    # An overlapped F&B pair is one slot: it starts when both halves' inputs are ready, so the
    # dependencies of either half are attached to the pair's first task.
    slot_head = dict(compute)
    for p in range(grid.pp):
        for step in schedule.steps[p]:
            if isinstance(step, Overlap):
                for d in range(grid.dp):
                    slot_head[(d, p, step.second)] = compute[(d, p, step.first)]
    sends = _wire_pipeline(sim, schedule, grid, table, opts, done, slot_head)
    dp_tasks = _gradient_sync(sim, schedule, grid, table, opts, last_backward, done)
    return {"actions": len(done), "sends": sends, "dp_collectives": dp_tasks}


def _lower_rank(sim, schedule, grid, table, opts, d, p, done, compute, last_backward) -> None:
    group = grid.tp_group(d, p)
    block: list[Task] = []            # TP collectives the next step must wait for
    for index, step in enumerate(schedule.steps[p]):
        acts = actions_of(step)
        step_tp: list[Task] = []
        for a in acts:
            w = table.work(a)
            chunk = schedule.chunk_of(a.path, a.stage)
            args = {"stage": a.stage, "microbatch": a.microbatch, "chunk": chunk, "path": a.path,
                    "flops": w.flops, "step": index, "pp_rank": p, "dp": d}
            name = f"{a.kind}{a.stage}.{a.microbatch}" + (f"@{a.path}" if a.path else "")
            tasks = [sim.compute(g, w.duration_ns, name, category=CATEGORY[a.kind],
                                 deps=block, args={**args, "tp": t}) for t, g in enumerate(group)]
            compute[(d, p, a)] = tasks
            finished = tasks
            if grid.tp > 1 and w.tp_bytes > 0:
                tp_task = sim.collective("all_reduce", group, w.tp_bytes, f"tp:{name}", stream="comm.tp",
                                         step_latency_ns=opts.tp_step_latency_ns * max(1, w.tp_collectives),
                                         deps=tasks, args={"stage": a.stage, "microbatch": a.microbatch})
                step_tp.append(tp_task)
                finished = [tp_task] * len(group)
            done[(d, p, a)] = finished
            if a.kind in ("W", "BW") or (a.kind == "B" and not _has_w(schedule, a)):
                last_backward[(d, p, chunk)] = finished
        block = step_tp


def _has_w(schedule: Schedule, a: Action) -> bool:
    return schedule.backward_kind.get(a.key) == "B"


def _consumers(schedule: Schedule) -> dict[Action, list[Action]]:
    out: dict[Action, list[Action]] = {}
    for row in schedule.steps:
        for step in row:
            for a in actions_of(step):
                for dep in cross_deps(schedule, a):
                    out.setdefault(dep.action, []).append(a)
    return out


def _next_actions(schedule: Schedule, p: int) -> dict[Action, Action]:
    """Each action of rank ``p`` -> the first action of the following step (blocking sends)."""
    row = schedule.steps[p]
    out: dict[Action, Action] = {}
    for i, step in enumerate(row[:-1]):
        for a in actions_of(step):
            out[a] = actions_of(row[i + 1])[0]
    return out


def _wire_pipeline(sim, schedule, grid, table, opts, done, compute) -> int:
    consumers = _consumers(schedule)
    sends = 0
    for d in range(grid.dp):
        for p in range(grid.pp):
            following = {} if opts.p2p_overlap else _next_actions(schedule, p)
            for step in schedule.steps[p]:
                for a in actions_of(step):
                    for c in consumers.get(a, ()):
                        q = schedule.rank_of(c.path, c.stage)
                        for t in range(grid.tp):
                            dst_task = compute[(d, q, c)][t]
                            src_done = done[(d, p, a)][t]
                            if q == p:
                                sim.add_dep(dst_task, src_done)
                                continue
                            src, dst = grid.gpu(t, d, p), grid.gpu(t, d, q)
                            s = sim.send(src, dst, table.send_bytes(a), f"p2p:{a}->{c}", deps=[src_done],
                                         latency_ns=opts.p2p_latency_ns, send_stream=f"comm.send>{dst}",
                                         recv_stream=f"comm.recv<{src}",
                                         args={"stage": a.stage, "microbatch": a.microbatch})
                            sim.add_dep(dst_task, s)
                            if a in following:   # blocking send: the sender's next step waits for it
                                sim.add_dep(compute[(d, p, following[a])][t], s)
                            sends += 1
    return sends


def _chunks(schedule: Schedule) -> range:
    return range(2 if schedule.layout == "dual" else schedule.num_chunks)


def _gradient_sync(sim, schedule, grid, table, opts, last_backward, done) -> int:
    """DP gradient all-reduce per (tp, pp, chunk) group, then the optimizer step on every GPU."""
    finished: dict[tuple[int, int, int], list[Task]] = {}
    for (d, p, _a), tasks in done.items():
        for t, task in enumerate(tasks):
            finished.setdefault((d, p, t), []).append(task)
    syncs: dict[tuple[int, int], list[Task]] = {}
    if grid.dp > 1:
        for p in range(grid.pp):
            for t in range(grid.tp):
                for chunk in _chunks(schedule):
                    if opts.dp_overlap:
                        deps = [last_backward[(d, p, chunk)][t] for d in range(grid.dp) if (d, p, chunk) in last_backward]
                    else:
                        deps = [task for d in range(grid.dp) for task in finished.get((d, p, t), [])]
                    syncs.setdefault((t, p), []).append(sim.collective(
                        "all_reduce", grid.dp_group(t, p), table.grad_bytes(p, chunk), f"dp:grad.c{chunk}",
                        stream="comm.dp", algorithm=opts.dp_algorithm, step_latency_ns=opts.dp_step_latency_ns,
                        deps=deps, args={"chunk": chunk, "pp_rank": p}))
    for d in range(grid.dp):
        for p in range(grid.pp):
            for t in range(grid.tp):
                sim.compute(grid.gpu(t, d, p), table.optimizer_ns(p), "optimizer", category="optimizer",
                            deps=finished.get((d, p, t), []) + syncs.get((t, p), []), args={"pp_rank": p})
    return sum(len(v) for v in syncs.values())
