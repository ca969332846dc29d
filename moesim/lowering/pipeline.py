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
  ``--overlap-p2p-communication``) the sender's next step waits for it too. (Receives are not
  made to wait for the receiver's earlier kernels: real frameworks batch a step's sends and
  receives together, and modelling them as independent blocking transfers deadlocks
  interleaved, ZB-V and DualPipe orders.);
* after the last backward of each model chunk a DP gradient all-reduce runs on ``comm.dp``
  (overlapping the rest of the backward when ``dp_overlap``), then an optimizer step; routed-expert
  gradients reduce over their expert-data-parallel group only, and with ZeRO-1 the all-reduce is a
  reduce-scatter, the step runs on the shard, and an all-gather of the parameters follows
  (``grad_sync=False`` drops the reduction, ``optimizer=False`` the step and the all-gather; a
  schedule without backward actions, :func:`forward_schedule`, has neither);
* with ``accumulate`` (PyTorch's ``.grad += g``, :mod:`moesim.lowering.grad_accumulation`) every
  weight-gradient action of a model chunk after its first is followed, on the compute stream, by
  the add kernels of that chunk's gradients;
* ``pair_overlap=False`` runs the two halves of an overlapped F&B pair one after the other (the
  second starts when the first has finished, communication included): DualPipe without its
  computation-communication overlap, for comparison.

The lowering knows tasks and costs only through the table; model maths lives in ``workload``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
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
    label: str = ""
    category: str = ""
    region_ns: int = 0     # saved when the task starts right behind another on its stream
    kernels: int = 0       # GPU kernels the segment launches (what an eager host issues)
    host_ns: int = 0       # host time of issuing its ops eagerly (moesim.lowering.host; 0: not priced per op)
    tp_calls: int = 0      # TP collective calls folded into the TP collective (each issued by an eager host)
    op_ns: tuple[tuple[str, int], ...] = ()  # (op class, ns) of its kernels, for per-class reports
    host_sync: bool = False  # its last kernel's result is copied to the host, which waits for it (eager)


class ExchangeLowering(Protocol):
    """Lowers a non-StageWork segment (an MoE dispatch/experts/combine exchange)."""

    def lower(self, sim: Simulation, segment: object, action: Action, ctx: dict, p: int, grid: "Grid",
              ready: dict) -> None:
        """Add the segment's tasks; update ``ready[(d, t)]`` with what the next segment waits for."""
        ...


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
    pair_overlap: bool = True
    tp_sized: object = None   # a SizedLatency: size-dependent TP all-reduce time (calibrated profiles)
    dp_sized: object = None   # the same for a ring DP all-reduce
    zero: bool = False        # ZeRO-1 / distributed optimizer: reduce-scatter, sharded step, all-gather
    grad_sync: bool = True    # False: no data-parallel gradient reduction
    optimizer: bool = True    # False: no optimizer step (nor ZeRO-1's parameter all-gather)
    accumulate: object = None  # callable(action) -> StageWork: gradient adds after a later microbatch's backward
    accumulate_first: bool = False  # .grad exists before the first microbatch (adds after every backward)
    tp_overlap: bool = False  # --tp-comm-overlap: a segment's TP collective runs alongside its GEMMs
    param_gather_overlap: bool = False  # --overlap-param-gather: ZeRO-1's all-gather at the step's start,
    #                                     each chunk's first forward waits for its own
    ep_dp_span: int = 0       # DP indices an EP group spans at one TP index (ParallelPlan.ep_dp_span); 0: the table's ep


def lower_pipeline(sim: Simulation, schedule: Schedule, grid: Grid, table: StageWorkTable,
                   opts: LoweringOptions, exchange: "ExchangeLowering | None" = None,
                   gradient_sync=None, param_gather=None) -> dict[str, int]:
    """Add the whole training step to ``sim``; return counts of what was created.

    ``exchange`` lowers the :class:`Exchange` segments (MoE dispatch/experts/combine) a table may
    return; dense tables return none. ``gradient_sync(sim, last_backward, finished)`` replaces
    the DP all-reduce and optimizer step (``last_backward[(d, p, chunk)]`` and
    ``finished[(d, p, t)]`` hold tasks) and returns how many collectives it added; with it,
    ``param_gather(sim, firsts)`` replaces the ``--overlap-param-gather`` prologue when
    ``opts.param_gather_overlap`` (``firsts[(d, p, chunk)]``: the chunk's first forward's compute
    tasks, one per TP rank, each to wait for its chunk's gather) and returns how many it added.
    """
    done: dict[tuple[int, int, Action], list[Task]] = {}
    compute: dict[tuple[int, int, Action], list[Task]] = {}
    last_backward: dict[tuple[int, int, int], list[Task]] = {}
    for p in range(grid.pp):
        _lower_stage_rank(sim, schedule, grid, table, opts, exchange, p, done, compute, last_backward)
    # An overlapped F&B pair is one slot: it starts when both halves' inputs are ready, so the
    # dependencies of either half are attached to the pair's first task.
    slot_head = dict(compute)
    for p in range(grid.pp):
        for step in schedule.steps[p]:
            if isinstance(step, Overlap):
                for d in range(grid.dp):
                    slot_head[(d, p, step.second)] = compute[(d, p, step.first)]
    sends = _wire_pipeline(sim, schedule, grid, table, opts, done, slot_head)
    gathers = 0
    if has_backward(schedule) and gradient_sync is None and _gathers_params(opts, grid) and opts.param_gather_overlap:
        gathers = _param_gather_prologue(sim, schedule, grid, table, opts, compute)
    elif has_backward(schedule) and param_gather is not None and opts.param_gather_overlap:
        firsts = {(d, p, chunk): compute[(d, p, first)] for p in range(grid.pp)
                  for chunk, first in _first_forwards(schedule, p).items() for d in range(grid.dp)}
        gathers = param_gather(sim, firsts)
    if not has_backward(schedule):   # forward-only: no gradients to sync, no optimizer step
        return {"actions": len(done), "sends": sends, "dp_collectives": 0}
    if gradient_sync is not None:
        dp_tasks = gathers + gradient_sync(sim, last_backward, _finished(done))
    else:
        dp_tasks = gathers + _gradient_sync(sim, schedule, grid, table, opts, last_backward, done)
    return {"actions": len(done), "sends": sends, "dp_collectives": dp_tasks}


def has_backward(schedule: Schedule) -> bool:
    """Whether any rank runs a backward (B, W or BW) action."""
    return any(a.kind != "F" for row in schedule.steps for step in row for a in actions_of(step))


def forward_schedule(schedule: Schedule) -> Schedule:
    """The schedule's forward actions only, in each rank's order (an overlapped pair keeps its
    forward half). Deadlock-free whenever the schedule is: dropping actions removes dependencies
    and keeps the order of what remains, so a wait cycle among forwards would be one before."""
    rows = tuple(tuple(a for step in row for a in actions_of(step) if a.kind == "F") for row in schedule.steps)
    return replace(schedule, name=f"{schedule.name} (forward only)", steps=rows)


def _produces_weight_grads(schedule: Schedule, a: Action) -> bool:
    """The action after which a chunk's weight gradients of ``a.microbatch`` exist."""
    return a.kind in ("W", "BW") or (a.kind == "B" and not _has_w(schedule, a))


def segments_of(table: StageWorkTable, action: Action) -> list:
    """The table's segments for an action (a dense table gives one StageWork)."""
    seg = getattr(table, "segments", None)
    return list(seg(action)) if seg is not None else [table.work(action)]


def _lower_stage_rank(sim, schedule, grid, table, opts, exchange, p, done, compute, last_backward) -> None:
    """All DP replicas of pipeline rank ``p`` in lockstep, step by step. Segments of the two
    actions of an overlapped pair are interleaved on the compute stream (DualPipe's overlap:
    one microbatch's communication hides behind the other's compute)."""
    block: dict[int, list[Task]] = {d: [] for d in range(grid.dp)}
    accumulated: set[int] = set()   # chunks whose gradients exist already (later ones add into them)
    for index, step in enumerate(schedule.steps[p]):
        acts = actions_of(step)
        ready = {a: {(d, t): list(block[d]) for d in range(grid.dp) for t in range(grid.tp)} for a in acts}
        pending = {a: segments_of(table, a) + _accumulation(schedule, opts, a, accumulated) for a in acts}
        position = {a: 0 for a in acts}
        while any(position[a] < len(pending[a]) for a in acts):
            if not opts.pair_overlap and len(acts) == 2 and position[acts[0]] == len(pending[acts[0]]) \
                    and position[acts[1]] == 0:   # no overlap: the second half starts after the first
                ready[acts[1]] = {k: list(v[-1:]) for k, v in ready[acts[0]].items()}
            for a in (acts if opts.pair_overlap else [next(x for x in acts if position[x] < len(pending[x]))]):
                if position[a] >= len(pending[a]):
                    continue
                seg = pending[a][position[a]]
                first = position[a] == 0
                position[a] += 1
                ctx = _ctx(schedule, a, index, p)
                if isinstance(seg, StageWork):
                    tasks = _lower_work(sim, grid, opts, seg, a, ctx, p, ready[a])
                    if first:
                        for d in range(grid.dp):
                            compute[(d, p, a)] = [tasks[(d, t)] for t in range(grid.tp)]
                else:
                    assert exchange is not None, "table returned an exchange segment but no exchange lowering"
                    exchange.lower(sim, seg, a, ctx, p, grid, ready[a])
        for a in acts:
            chunk = schedule.chunk_of(a.path, a.stage)
            for d in range(grid.dp):
                finished = [ready[a][(d, t)][-1] for t in range(grid.tp)]
                done[(d, p, a)] = finished
                if _produces_weight_grads(schedule, a):
                    last_backward[(d, p, chunk)] = finished
        block = {d: [t for a in acts for t in _tp_tail(ready[a], d, grid)] for d in range(grid.dp)}


def _accumulation(schedule: Schedule, opts: LoweringOptions, a: Action, accumulated: set[int]) -> list:
    """The gradient-add segment after ``a`` (none for the first weight-gradient action of its chunk,
    unless ``opts.accumulate_first``: gradients kept from before the step)."""
    if opts.accumulate is None or not _produces_weight_grads(schedule, a):
        return []
    chunk = schedule.chunk_of(a.path, a.stage)
    if chunk not in accumulated and not opts.accumulate_first:
        accumulated.add(chunk)
        return []
    return [opts.accumulate(a)]


def _tp_tail(ready: dict, d: int, grid: Grid) -> list[Task]:
    """The TP collective (if any) an action ended with on DP replica ``d``: the next step waits for it."""
    last = ready[(d, 0)][-1]
    return [last] if last.category == "all_reduce" else []


def _ctx(schedule: Schedule, a: Action, index: int, p: int) -> dict:
    name = f"{a.kind}{a.stage}.{a.microbatch}" + (f"@{a.path}" if a.path else "")
    return {"name": name, "args": {"stage": a.stage, "microbatch": a.microbatch, "path": a.path,
                                    "chunk": schedule.chunk_of(a.path, a.stage), "step": index, "pp_rank": p}}


def _lower_work(sim, grid, opts, w: StageWork, a: Action, ctx: dict, p: int, ready: dict) -> dict:
    """One compute task per GPU of each TP group, then the folded TP collective."""
    name = ctx["name"] + (f":{w.label}" if w.label else "")
    if opts.tp_overlap and grid.tp > 1 and w.tp_bytes > 0:
        def args_of(d: int, t: int) -> dict:
            return {**ctx["args"], "flops": w.flops, "dp": d, "tp": t, "kernels": w.kernels, "host_ns": w.host_ns,
                    **({"host_sync": True} if w.host_sync else {}), **({"op_ns": dict(w.op_ns)} if w.op_ns else {})}
        return _lower_work_tp_overlap(sim, grid, opts, w, a, ctx, p, ready, name, args_of)
    tasks = {}
    for d in range(grid.dp):
        group = grid.tp_group(d, p)
        for t, g in enumerate(group):
            tasks[(d, t)] = sim.compute(g, w.duration_ns, name, category=w.category or CATEGORY[a.kind],
                                        deps=ready[(d, t)], args={**ctx["args"], "flops": w.flops, "dp": d, "tp": t,
                                                                  "kernels": w.kernels, "host_ns": w.host_ns,
                                                                  **({"host_sync": True} if w.host_sync else {}),
                                                                  **({"op_ns": dict(w.op_ns)} if w.op_ns else {})},
                                        region_ns=min(w.region_ns, w.duration_ns))
            ready[(d, t)] = [tasks[(d, t)]]
        if grid.tp > 1 and w.tp_bytes > 0:
            tp_task = sim.collective("all_reduce", group, w.tp_bytes, f"tp:{name}", stream="comm.tp",
                                     step_latency_ns=_tp_latency(opts, w),
                                     deps=[tasks[(d, t)] for t in range(grid.tp)],
                                     args={"stage": a.stage, "microbatch": a.microbatch,
                                           "calls": max(1, w.tp_calls or w.tp_collectives)})
            for t in range(grid.tp):
                ready[(d, t)] = [tp_task]
    return tasks


def _lower_work_tp_overlap(sim, grid, opts, w: StageWork, a: Action, ctx: dict, p: int, ready: dict,
                           name: str, args_of) -> dict:
    """``--tp-comm-overlap``: per GPU the segment's non-GEMM kernels, then its GEMMs; the folded
    TP collective starts when the non-GEMM part ends, so it runs alongside the GEMMs (TE's
    userbuffers overlap); a zero-time join on ``comm.tp`` ends when both have, and is what the
    next segment waits for. Exposed TP time per segment: ``max(0, tp - GEMM time)``."""
    gemm_ns = min(w.duration_ns, sum(ns for cls, ns in w.op_ns if "GEMM" in cls))
    tasks = {}
    for d in range(grid.dp):
        group = grid.tp_group(d, p)
        heads, tails = [], []
        for t, g in enumerate(group):
            rest = w.duration_ns - gemm_ns
            head = sim.compute(g, rest, name, category=w.category or CATEGORY[a.kind], deps=ready[(d, t)],
                               args=args_of(d, t), region_ns=min(w.region_ns, rest))
            tail = sim.compute(g, gemm_ns, f"{name}:gemm", category=w.category or CATEGORY[a.kind], deps=[head],
                               args={**ctx["args"], "flops": 0.0, "dp": d, "tp": t, "kernels": 0, "tp_overlapped": True})
            heads.append(head)
            tails.append(tail)
            tasks[(d, t)] = head
        tp_task = sim.collective("all_reduce", group, w.tp_bytes, f"tp:{name}", stream="comm.tp",
                                 step_latency_ns=_tp_latency(opts, w), deps=heads,
                                 args={"stage": a.stage, "microbatch": a.microbatch, "overlapped": True,
                                       "calls": max(1, w.tp_calls or w.tp_collectives)})
        for t, g in enumerate(group):
            ready[(d, t)] = [sim.comm([(g, "comm.tp")], [], f"tp.join:{name}", category="all_reduce",
                                      deps=[tails[t], tp_task], args={"stage": a.stage, "microbatch": a.microbatch})]
    return tasks


def _tp_latency(opts: LoweringOptions, w: StageWork) -> int:
    """Per-phase latency of a segment's folded TP collective: sized by the profile when it can be."""
    if opts.tp_sized is not None:
        return opts.tp_sized.step_latency_ns(w.tp_bytes, max(1, w.tp_collectives))
    return opts.tp_step_latency_ns * max(1, w.tp_collectives)


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


def _ready_order(schedule: Schedule, p: int) -> list[int]:
    """Pipeline rank ``p``'s model chunks in the order their weight gradients are complete (the
    step of each chunk's last gradient-producing action): a framework reduces a chunk's gradients
    as soon as they are ready, so its DP collectives queue in that order, not by chunk index."""
    last: dict[int, int] = {}
    for index, step in enumerate(schedule.steps[p]):
        for a in actions_of(step):
            if _produces_weight_grads(schedule, a):
                last[schedule.chunk_of(a.path, a.stage)] = index
    return sorted(_chunks(schedule), key=lambda c: (last.get(c, -1), c))


def _finished(done: dict) -> dict[tuple[int, int, int], list[Task]]:
    """Every action's last task per GPU coordinate (d, p, t)."""
    finished: dict[tuple[int, int, int], list[Task]] = {}
    for (d, p, _a), tasks in done.items():
        for t, task in enumerate(tasks):
            finished.setdefault((d, p, t), []).append(task)
    return finished


def _gradient_sync(sim, schedule, grid, table, opts, last_backward, done) -> int:
    """DP gradient sync per (tp, pp, chunk), then the optimizer step on every GPU.

    Dense gradients reduce over the whole DP group. Routed-expert gradients (tables with
    ``expert_grad_bytes``) reduce over their expert-data-parallel group: the GPUs that hold the
    same experts, one per EP group (``dp / span`` of them at each TP index, ``span`` =
    ``opts.ep_dp_span`` or the table's ep; none when the DP group is one EP group). Without ZeRO
    that is an all-reduce and the optimizer updates every parameter; with ZeRO-1 (``opts.zero``) a
    reduce-scatter, the optimizer on this GPU's shard (dense / dp, experts / (dp / span)) and an
    all-gather of the updated parameters over the same groups."""
    finished = _finished(done)
    ep = _ep_span(table, opts)
    edp = grid.dp // ep if ep > 1 and grid.dp % ep == 0 else grid.dp
    expert_bytes = getattr(table, "expert_grad_bytes", None)
    op = "reduce_scatter" if opts.zero else "all_reduce"
    syncs: dict[tuple[int, int, int], list[Task]] = {}
    added = 0

    def collective(kind: str, members: list[int], t: int, p: int, nbytes: float, name: str, deps, args,
                   algorithm: str) -> Task:
        ring_sized = opts.dp_sized is not None and algorithm == "ring" and kind == "all_reduce" and len(members) == grid.dp
        return sim.collective(kind, [grid.gpu(t, d, p) for d in members], nbytes, name, stream="comm.dp",
                              algorithm=algorithm, deps=deps, args=args,
                              step_latency_ns=opts.dp_sized.step_latency_ns(nbytes) if ring_sized else opts.dp_step_latency_ns)

    def expert_groups() -> list[tuple[int, list[int]]]:
        """(EP rank, the DP indices holding its experts): one GPU per EP group."""
        return [(e, [k * ep + e for k in range(edp)]) for e in range(ep)]

    if grid.dp > 1 and opts.grad_sync:
        for p in range(grid.pp):
            order = _ready_order(schedule, p)
            for t in range(grid.tp):
                for chunk in order:
                    def deps_of(members: list[int]) -> list[Task]:
                        if opts.dp_overlap:
                            return [last_backward[(d, p, chunk)][t] for d in members if (d, p, chunk) in last_backward]
                        return [task for d in members for task in finished.get((d, p, t), [])]
                    grads = table.grad_bytes(p, chunk)
                    experts = float(expert_bytes(p, chunk)) if expert_bytes is not None else 0.0
                    dense = max(0.0, grads - experts) if edp != grid.dp else grads
                    args = {"chunk": chunk, "pp_rank": p}
                    if dense > 0:
                        task = collective(op, list(range(grid.dp)), t, p, dense, f"dp:grad.c{chunk}",
                                          deps_of(list(range(grid.dp))), args, opts.dp_algorithm)
                        for d in range(grid.dp):
                            syncs.setdefault((d, t, p), []).append(task)
                        added += 1
                    if experts > 0 and edp != grid.dp and edp > 1:
                        for e, members in expert_groups():
                            task = collective(op, members, t, p, experts, f"dp:expert_grad.c{chunk}", deps_of(members),
                                              {**args, "ep_rank": e}, "ring")
                            for d in members:
                                syncs.setdefault((d, t, p), []).append(task)
                            added += 1
    if not opts.optimizer:
        return added
    shards = (grid.dp, edp) if opts.zero and grid.dp > 1 and opts.grad_sync else (1, 1)
    opt: dict[tuple[int, int, int], Task] = {}
    for d in range(grid.dp):
        for p in range(grid.pp):
            for t in range(grid.tp):
                ns = table.optimizer_ns(p, *shards) if shards != (1, 1) else table.optimizer_ns(p)
                opt[(d, t, p)] = sim.compute(grid.gpu(t, d, p), ns, "optimizer", category="optimizer",
                                             deps=finished.get((d, p, t), []) + syncs.get((d, t, p), []),
                                             args={"pp_rank": p})
    if shards != (1, 1) and not opts.param_gather_overlap:  # ZeRO-1: every GPU gathers what the others updated
        param_bytes = float(getattr(table, "param_dtype_bytes", 2))
        for p in range(grid.pp):
            experts = sum(float(expert_bytes(p, c)) for c in _chunks(schedule)) if expert_bytes is not None else 0.0
            grads = sum(table.grad_bytes(p, c) for c in _chunks(schedule))
            grad_bytes = float(getattr(table, "grad_dtype_bytes", 4))
            if edp == grid.dp:
                experts = 0.0
            dense_params, expert_params = (grads - experts) / grad_bytes, experts / grad_bytes
            for t in range(grid.tp):
                if dense_params > 0:
                    collective("all_gather", list(range(grid.dp)), t, p, dense_params * param_bytes, "dp:params",
                               [opt[(d, t, p)] for d in range(grid.dp)], {"pp_rank": p}, opts.dp_algorithm)
                    added += 1
                if expert_params > 0 and edp > 1:
                    for e, members in expert_groups():
                        collective("all_gather", members, t, p, expert_params * param_bytes, "dp:expert_params",
                                   [opt[(d, t, p)] for d in members], {"pp_rank": p, "ep_rank": e}, "ring")
                        added += 1
    return added


def _ep_span(table, opts: LoweringOptions) -> int:
    """DP indices one EP group spans at a TP index: the GPUs of an expert-data-parallel group are
    the DP indices ``k * span + e`` of one TP index (both layouts; folded: ``ep / tp``)."""
    return opts.ep_dp_span or int(getattr(table, "ep", 1) or 1)


def _gathers_params(opts: LoweringOptions, grid: Grid) -> bool:
    """Whether the step ends its ZeRO-1 optimizer with a parameter all-gather."""
    return opts.zero and grid.dp > 1 and opts.grad_sync and opts.optimizer


def _param_gather_prologue(sim, schedule, grid, table, opts, compute) -> int:
    """``--overlap-param-gather``: the all-gather of the parameters the previous step's sharded
    optimizer updated, per model chunk, issued on ``comm.dp`` before anything else there; the
    chunk's first forward on each GPU waits for its own (Megatron's forward pre-hook waits for
    the bucket's all-gather). Sizes are the end-of-step gathers' (dense over the DP group,
    routed experts over their expert-data-parallel group)."""
    ep = _ep_span(table, opts)
    edp = grid.dp // ep if ep > 1 and grid.dp % ep == 0 else grid.dp
    expert_bytes = getattr(table, "expert_grad_bytes", None)
    grad_b = float(getattr(table, "grad_dtype_bytes", 4))
    param_b = float(getattr(table, "param_dtype_bytes", 2))
    added = 0
    for p in range(grid.pp):
        firsts = _first_forwards(schedule, p)
        for chunk, first in firsts.items():
            experts = float(expert_bytes(p, chunk)) if expert_bytes is not None and edp != grid.dp else 0.0
            dense = (table.grad_bytes(p, chunk) - experts) / grad_b * param_b
            for t in range(grid.tp):
                groups = [list(range(grid.dp))] if dense > 0 else []
                sizes = [dense] if dense > 0 else []
                if experts > 0 and edp > 1:
                    groups += [[k * ep + e for k in range(edp)] for e in range(ep)]
                    sizes += [experts / grad_b * param_b] * ep
                for members, nbytes in zip(groups, sizes):
                    task = sim.collective("all_gather", [grid.gpu(t, d, p) for d in members], nbytes,
                                          f"dp:params.c{chunk}", stream="comm.dp",
                                          algorithm=opts.dp_algorithm if len(members) == grid.dp else "ring",
                                          step_latency_ns=opts.dp_step_latency_ns,
                                          args={"pp_rank": p, "chunk": chunk, "overlapped": True})
                    for d in members:
                        sim.add_dep(compute[(d, p, first)][t], task)
                    added += 1
    return added


def _first_forwards(schedule: Schedule, p: int) -> dict[int, Action]:
    """Each model chunk's first forward action on pipeline rank ``p``."""
    firsts: dict[int, Action] = {}
    for step in schedule.steps[p]:
        for a in actions_of(step):
            if a.kind == "F":
                firsts.setdefault(schedule.chunk_of(a.path, a.stage), a)
    return firsts
