"""Two-GPU pipelines of MLP blocks predicted by the pipeline lowering on the engine.

The measured step (``moesim.calibrate.pipeline_bench``): every stage holds blocks
``Linear(h, f) -> GELU -> Linear(f, h)`` (bf16, no bias); each rank runs the recorded action
order; activations and gradients travel by NCCL send/recv; weight gradients accumulate over
microbatches; stage 0's input needs no gradient; the step is timed from a barrier to the last
GPU going idle. The prediction replays exactly that:

* the schedule is built from the recorded ``orders`` (``F``/``B`` become ``F``/``BW``) and
  checked by the schedule validator;
* :class:`MLPStageTable` gives every action one segment per kernel it ran, costed by the
  calibrated model with the kernel's operand layout (forward GEMMs ``fwd``, input gradients
  ``bwd_data``, weight gradients ``bwd_weight``), GELU and its backward as elementwise kernels,
  and the in-place gradient accumulation from the second microbatch on; per-kernel segments let
  the engine's overlap slowdown touch only the kernels that start while a transfer runs;
* :func:`moesim.lowering.pipeline.lower_pipeline` lowers it onto ``h200x2_nvlink`` with the
  profile's p2p latency; sends carry ``tokens x hidden x 2`` bytes;
* each rank's host thread issues the actions' kernels (one launch each) and its ``irecv`` /
  ``isend`` calls (the collective host overhead each) in program order, and a receive waits
  for the receiver's previously issued kernels (PyTorch's NCCL stream semantics);
* the clock state follows :meth:`~lab.legacy_validate.clocks.ClockModel.state_for`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from moesim.engine import Simulation, Task
from moesim.errors import ConfigError
from moesim.lowering.pipeline import Grid, LoweringOptions, StageWork, lower_pipeline
from moesim.schedules import Action, Schedule, validate
from lab.legacy_validate.context import Kernel, ValidationContext
from lab.legacy_validate.host import HostThread
from moesim.validate.measurements import Measurement
from lab.legacy_validate.prediction import Prediction

# pipeline_bench.time_pipeline: one untimed step, then the timed ones, back to back.
UNTIMED_STEPS = 1


def schedule_from_orders(orders: list[list[str]], name: str, num_chunks: int) -> Schedule:
    """The recorded per-rank orders (``F2.5``: forward of virtual stage 2, microbatch 5; ``B``
    is the full backward) as a validated looped :class:`Schedule`."""
    rows = tuple(tuple(_parse(token) for token in row) for row in orders)
    microbatches = 1 + max(a.microbatch for row in rows for a in row)
    sched = Schedule(name, len(rows), microbatches, num_chunks, 1, "looped", rows)
    validate(sched)
    return sched


def _parse(token: str) -> Action:
    kind, rest = token[:1], token[1:]
    stage, dot, mb = rest.partition(".")
    if kind not in ("F", "B") or not dot or not stage.isdigit() or not mb.isdigit():
        raise ConfigError("orders", f"bad action {token!r}", "write actions like F2.5 or B0.3")
    return Action("F" if kind == "F" else "BW", int(stage), int(mb))


@dataclass(frozen=True)
class MLPStageTable:
    """Per-kernel costs of the MLP-block pipeline (the lowering's StageWorkTable)."""

    ctx: ValidationContext
    schedule: Schedule
    tokens: int
    hidden: int
    ffn: int
    blocks_per_stage: int
    state: str

    @cached_property
    def _first_backward(self) -> dict[int, int]:
        """Stage -> the microbatch of its first backward (whose weight grads need no ``+=``)."""
        first: dict[int, int] = {}
        for row in self.schedule.steps:
            for a in row:
                if a.kind == "BW":
                    first.setdefault(a.stage, a.microbatch)
        return first

    @cached_property
    def _forward(self) -> list[Kernel]:
        t, h, f, c = self.tokens, self.hidden, self.ffn, self.ctx
        block = [c.gemm("fc1", t, f, h, "fwd", self.state), c.memory("gelu", "elementwise", "silu", 4.0 * t * f),
                 c.gemm("fc2", t, h, f, "fwd", self.state)]
        return block * self.blocks_per_stage

    def backward_kernels(self, stage: int, accumulate: bool) -> list[Kernel]:
        """Blocks in reverse: fc2 input and weight grads, GELU backward, fc1 grads, and the
        in-place ``grad += new`` of both weights when they already hold a gradient."""
        t, h, f, c, st = self.tokens, self.hidden, self.ffn, self.ctx, self.state
        out: list[Kernel] = []
        for block in reversed(range(self.blocks_per_stage)):
            out += [c.gemm("fc2.dgrad", t, f, h, "bwd_data", st), c.gemm("fc2.wgrad", h, f, t, "bwd_weight", st)]
            out += [c.memory("fc2.accumulate", "elementwise", "add", 6.0 * h * f)] if accumulate else []
            out += [c.memory("gelu.bwd", "elementwise", "mul", 6.0 * t * f)]
            if not (stage == 0 and block == 0):  # stage 0's input needs no gradient
                out += [c.gemm("fc1.dgrad", t, h, f, "bwd_data", st)]
            out += [c.gemm("fc1.wgrad", f, h, t, "bwd_weight", st)]
            out += [c.memory("fc1.accumulate", "elementwise", "add", 6.0 * h * f)] if accumulate else []
        return out

    def kernels(self, action: Action) -> list[Kernel]:
        if action.kind == "F":
            return self._forward
        return self.backward_kernels(action.stage, self._first_backward[action.stage] != action.microbatch)

    # -- StageWorkTable ---------------------------------------------------------------------
    def segments(self, action: Action) -> list[StageWork]:
        return [StageWork(k.duration_ns, k.flops, label=k.name) for k in self.kernels(action)]

    def work(self, action: Action) -> StageWork:
        ks = self.kernels(action)
        return StageWork(sum(k.duration_ns for k in ks), sum(k.flops for k in ks))

    def send_bytes(self, action: Action) -> float:
        return 2.0 * self.tokens * self.hidden

    def grad_bytes(self, rank: int, chunk: int) -> float:
        return 0.0

    def optimizer_ns(self, rank: int) -> int:
        return 0  # the measured step has no optimizer step


def predict_pipeline(ctx: ValidationContext, case: Measurement) -> Prediction:
    """Engine replay of the measured step at the clock state of the run: first at boost clocks;
    if the steps, run back to back, then exceed the power cap in some burst window, again at
    sustained clocks."""
    boost = _simulate(ctx, case, "boost")
    state = ctx.clock.state_for(case.thermal, boost.busy, boost.makespan_ns, case.repeats + UNTIMED_STEPS)
    run = boost if state == "boost" else _simulate(ctx, case, state)
    n = int(case.description["num_ranks"])
    comps = dict(run.components)
    return Prediction(
        case.case_id, case.kind, case.thermal, case.measured_ns, float(run.makespan_ns),
        method=f"{ctx.engine_label(n, overlap=True)}; lower_pipeline of the recorded orders, per-kernel segments, "
               "eager host issue, receives ordered after prior compute", clock_state=state, components=comps,
    )


@dataclass(frozen=True)
class _Run:
    makespan_ns: int
    busy: list[list[tuple[float, float, float]]]
    components: dict[str, float]


def _simulate(ctx: ValidationContext, case: Measurement, state: str) -> _Run:
    d = dict(case.description)
    n = int(d["num_ranks"])
    sched = schedule_from_orders(d["orders"], d["schedule"], int(d["num_chunks_per_rank"]))
    table = MLPStageTable(ctx, sched, int(d["tokens_per_microbatch"]), int(d["hidden"]), int(d["ffn"]),
                          int(d["blocks_per_stage"]), state)
    if 2.0 * table.tokens * table.hidden != float(d["activation_bytes_per_message"]):
        raise ConfigError("activation_bytes_per_message", "does not equal tokens x hidden x 2 (bf16)", source=case.case_id)
    sim = ctx.simulation(n, overlap=True)
    opts = LoweringOptions(p2p_latency_ns=ctx.cost.p2p_latency_ns(ctx.link_kind(n)))
    lower_pipeline(sim, sched, Grid(1, 1, n, tuple(range(n))), table, opts)
    _issue_from_hosts(ctx, sim, sched, table, ctx.host_scales(case.extra, n))
    res = sim.run()
    busy = [[(float(t.start_ns), float(t.end_ns), float(t.args.get("flops", 0.0))) for t in sim.tasks
             if t.category in ("forward", "backward") and t.streams[0][0] == r] for r in range(n)]
    sends = sorted(t.end_ns - t.start_ns for t in sim.tasks if t.category == "send")
    comps = {f"rank{r}_compute_ns": sum(e - s for s, e, _ in b) for r, b in enumerate(busy)}
    comps["p2p_median_ns"] = float(sends[len(sends) // 2]) if sends else 0.0
    return _Run(res.makespan_ns, busy, comps)


def _issue_from_hosts(ctx: ValidationContext, sim: Simulation, sched: Schedule, table: MLPStageTable,
                      host_scales: "list[float] | None" = None) -> None:
    """Make the lowered step follow the eager program of each rank, in program order:

    * per action an ``irecv`` (if it receives), one launch per kernel, an ``isend`` (if it
      sends), each a host-thread task the GPU work waits for (host costs times the rank's
      ``host_scales`` entry: its in-process probe's speed, 1 without one);
    * a receive waits for the receiver's kernels issued before its ``irecv``: ProcessGroupNCCL
      makes the NCCL stream wait for the current stream before every point-to-point op, so a
      receive cannot overlap compute queued ahead of it (the send side already waits for the
      producing action in the lowering).
    """
    computes: dict[int, list[Task]] = {}
    for t in sim.tasks:
        if t.category in ("forward", "backward"):
            computes.setdefault(t.streams[0][0], []).append(t)
    recv_of: dict[str, Task] = {}
    send_of: dict[str, Task] = {}
    for t in sim.tasks:
        if t.category == "send":
            src, dst = t.name.removeprefix("p2p:").split("->")
            send_of.setdefault(src, t)
            recv_of[dst] = t
    host_ns = ctx.collective_host_ns("send_recv")
    for rank, row in enumerate(sched.steps):
        thread = HostThread(sim, rank, ctx, host_scales[rank] if host_scales else 1.0)
        queue = iter(computes.get(rank, []))
        last: Task | None = None
        for a in row:
            if str(a) in recv_of:
                sim.add_dep(recv_of[str(a)], thread.issue(host_ns, f"irecv:{a}"))
                if last is not None:
                    sim.add_dep(recv_of[str(a)], last)
            for kernel in table.kernels(a):
                last = next(queue)
                assert last.duration_ns == kernel.duration_ns, "lowered tasks out of program order"
                sim.add_dep(last, thread.issue(ctx.launch_ns(), kernel.name))
            if str(a) in send_of:
                sim.add_dep(send_of[str(a)], thread.issue(host_ns, f"isend:{a}"))
