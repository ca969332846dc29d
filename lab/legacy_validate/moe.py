"""Two-GPU expert-parallel MoE layers predicted by an engine run mirroring the real layer.

The measured forward (``moesim.calibrate.moe_bench.MoELayer.forward``), per rank: permute the
token copies by destination (``index_select``), dispatch them with ``all_to_all_single`` and
uneven splits, regroup the received rows by local expert (``index_select``), run each local
expert's SwiGLU FFN in turn, ``cat`` and un-regroup the outputs (``index_select``), combine
with the reverse ``all_to_all_single``, then ``zeros``, ``back * gate`` and ``index_add_``.
It was timed with CUDA events from a start event recorded right after a barrier and a host
synchronisation to the last kernel, taking the maximum over ranks per repeat.
Where the session recorded each rank's SM clock as the forwards ended and the host time each
forward took to issue (``--moe-telemetry``), the experts run at those clocks and each rank's host
thread at its measured issue rate (its calls' table costs scaled so that the thread takes the
measured issue time): what the layer's time then tests is the composition of host issue, GPU
work and the exchanges, not the host's speed, which no profile can know for another process.
Otherwise the experts run at the clock state of the run and the host at the table's costs
(scaled by the session's host probe where it has one).

Here each rank's host thread makes exactly those calls in program order, each costing the
profile's measured host time for its call type (``index_select``, ``empty``, the
``all_to_all_single`` with split lists, ``slice`` and the ``swiglu_ffn`` call per expert, ``cat``,
``zeros``, the broadcast ``mul``, ``index_add_``); the collectives are engine ``all_to_all_v``
runs over the measured ``counts_src_dst_local`` x ``hidden x 2`` bytes on ``h200x2_nvlink``, with
the size-dependent latency of :func:`~lab.legacy_validate.collectives.sized_step_latency_ns`; expert
FFNs are costed at their real token counts; ``zeros`` and ``index_add_`` use their own measured
curves (the scatter-add of top-2 rows, with bf16 atomics, is about 5x an ``index_copy_``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.engine import Task
from lab.legacy_validate.collectives import sized_step_latency_ns
from lab.legacy_validate.context import Kernel, ValidationContext
from lab.legacy_validate.host import HostThread
from moesim.validate.measurements import Measurement
from lab.legacy_validate.prediction import Prediction
from lab.legacy_validate.single import swiglu_kernels

# moe_bench.time_moe: 3 untimed forwards before the timed repeats, run back to back.
UNTIMED_FORWARDS = 3
INDEX_BYTES = 8  # int64 row index read per gathered or scattered row


@dataclass(frozen=True)
class MoELayerShape:
    """What one measured layer moved and computed, from its description."""

    tokens_per_rank: int
    hidden: int
    top_k: int
    counts: np.ndarray              # [src, dst, local expert] token copies
    local_experts: tuple[tuple[int, ...], ...]

    @property
    def num_ranks(self) -> int:
        return int(self.counts.shape[0])

    def sent_rows(self, rank: int) -> int:
        return int(self.counts[rank].sum())

    def received_rows(self, rank: int) -> int:
        return int(self.counts[:, rank].sum())

    def expert_rows(self, rank: int) -> list[int]:
        return [int(x) for x in self.counts[:, rank].sum(axis=0)]

    def dispatch_bytes(self) -> list[list[float]]:
        """Bytes rank i sends rank j in the dispatch (token rows, bf16)."""
        rows = self.counts.sum(axis=2)
        return [[float(rows[i, j]) * self.hidden * 2 for j in range(self.num_ranks)] for i in range(self.num_ranks)]


def shape_of(case: Measurement) -> MoELayerShape:
    d = case.description
    counts = np.asarray(d["counts_src_dst_local"], dtype=np.int64)
    local = tuple(tuple(d["local_experts"][str(r)]) for r in range(counts.shape[0]))
    return MoELayerShape(int(d["tokens_per_rank"]), int(d["hidden"]), int(d["top_k"]), counts, local)


def _rows_bytes(rows: int, hidden: int) -> float:
    """Bytes a row gather/scatter moves: every row read and written once, plus its index."""
    return rows * (4.0 * hidden + INDEX_BYTES)


def before_dispatch(ctx: ValidationContext, s: MoELayerShape, rank: int) -> list[Kernel]:
    return [ctx.memory("permute.index_select", "permute", "gather", _rows_bytes(s.sent_rows(rank), s.hidden),
                       call="index_select")]


def expert_phase(ctx: ValidationContext, s: MoELayerShape, rank: int, ffn: int, state: "str | float") -> list[Kernel]:
    """Regroup, every local expert with tokens (in slot order), cat, un-regroup. (Each expert's
    ``slice`` of the grouped rows is a host-only call, issued by :func:`_issue_experts`.)"""
    rows = s.received_rows(rank)
    out = [ctx.memory("regroup.index_select", "permute", "gather", _rows_bytes(rows, s.hidden), call="index_select")]
    for expert, n in zip(s.local_experts[rank], s.expert_rows(rank)):
        if n > 0:
            out += swiglu_kernels(ctx, n, s.hidden, ffn, state, prefix=f"expert{expert}", call="swiglu_ffn")
    out += [ctx.memory("cat", "copy", "copy", 4.0 * rows * s.hidden, call="cat"),
            ctx.memory("ungroup.index_select", "permute", "gather", _rows_bytes(rows, s.hidden), call="index_select")]
    return out


def after_combine(ctx: ValidationContext, s: MoELayerShape, rank: int) -> list[Kernel]:
    """``zeros``, ``back * gate`` and ``index_add_`` of the returned rows."""
    rows, t, h = s.sent_rows(rank), s.tokens_per_rank, s.hidden
    return [ctx.memory("zeros", "copy", "zeros", 2.0 * t * h, call="zeros"),
            ctx.memory("gate.mul", "elementwise", "mul", 4.0 * rows * h + 2.0 * rows, call="mul_broadcast"),
            ctx.memory("index_add_", "permute", "index_add", _rows_bytes(rows, h), call="index_add_")]


def _issue_experts(thread: HostThread, kernels: list[Kernel], deps: list[Task]) -> list[Task]:
    """The expert phase's kernels, with each expert's host-only ``slice`` before its FFN call."""
    out: list[Task] = []
    for k in kernels:
        if k.name.endswith(".gate"):  # the first kernel of an expert's swiglu_ffn call
            thread.call("slice", f"{k.name.removesuffix('.gate')}.slice")
        out.append(thread.kernel(k, deps if not out else ()))
    return out


def predict_moe(ctx: ValidationContext, case: Measurement) -> Prediction:
    """Engine run of one layer forward at the clock state of the run (see
    :meth:`~lab.legacy_validate.clocks.ClockModel.state_for`); the layer time is the latest rank's
    last kernel."""
    n = shape_of(case).num_ranks
    clocks = recorded_rank_clocks(case, n)
    issue = recorded_issue_ns(case, n)
    if clocks is not None and ctx.has_clock_reference():
        scales = None
        if issue is not None:  # each rank's host thread at the issue rate its process measured
            unit = _simulate(ctx, case, clocks, [1.0] * n)
            scales = [issue[r] / max(unit.components[f"rank{r}_host_ns"], 1.0) for r in range(n)]
        run = _simulate(ctx, case, clocks, scales)
        state, clock_note = f"{max(clocks):.0f} MHz", ", experts at each rank's recorded clock (" + "/".join(
            f"{x:.0f}" for x in clocks) + " MHz)"
    else:
        boost = _simulate(ctx, case, "boost")
        state = ctx.clock.state_for(case.thermal, boost.busy, boost.makespan_ns, case.repeats + UNTIMED_FORWARDS)
        run, clock_note = (boost if state == "boost" else _simulate(ctx, case, state)), ""
    return Prediction(
        case.case_id, case.kind, case.thermal, case.measured_ns, float(run.makespan_ns),
        method=f"{ctx.engine_label(n, overlap=False)}; eager host issue{_probe_note(run)}, all_to_all_v dispatch and "
               f"combine{clock_note}",
        clock_state=state, components=run.components,
    )


def recorded_issue_ns(case: Measurement, num_ranks: int) -> "list[float] | None":
    """Per rank, the median host time one timed forward took to issue
    (``measured.host_issue_ns.median_per_rank``, ``validate_workloads --moe-telemetry``), or None."""
    return _per_rank(case, "host_issue_ns", "median_per_rank", num_ranks)


def recorded_rank_clocks(case: Measurement, num_ranks: int) -> "list[float] | None":
    """Per rank, the median SM clock its GPU had as each timed forward ended
    (``measured.clock.sm_mhz_per_rank``, ``validate_workloads --moe-telemetry``), or None."""
    return _per_rank(case, "clock", "sm_mhz_per_rank", num_ranks)


def _per_rank(case: Measurement, record: str, key: str, num_ranks: int) -> "list[float] | None":
    """``measured[record][key]``: one positive number per rank, or None."""
    rec = case.extra.get(record) if hasattr(case.extra, "get") else None
    per_rank = rec.get(key) if isinstance(rec, dict) else None
    if (isinstance(per_rank, list) and len(per_rank) == num_ranks
            and all(isinstance(x, (int, float)) and x > 0 for x in per_rank)):
        return [float(x) for x in per_rank]
    return None


def _probe_note(run: "_Run") -> str:
    scales = [v for k, v in run.components.items() if k.endswith("_host_scale")]
    by = "measured issue time" if run.components.get("host_from_issue") else "probe"
    return "" if all(x == 1.0 for x in scales) else " (host x " + "/".join(f"{x:.2f}" for x in scales) + f" by {by})"


def _issue_all_to_all(thread: HostThread, name: str) -> Task:
    """``torch.empty`` of the receive buffer, then ``all_to_all_single`` with split lists."""
    thread.call("empty", f"{name}.empty")
    return thread.call("all_to_all_single_splits", name)


@dataclass(frozen=True)
class _Run:
    makespan_ns: int
    busy: list[list[tuple[float, float, float]]]
    components: dict[str, float]


def _simulate(ctx: ValidationContext, case: Measurement, state: "str | list[float]",
              host_scales: "list[float] | None" = None) -> _Run:
    """One forward; ``state``: a clock state for every rank, or each rank's SM clock (MHz);
    ``host_scales``: each rank's factor on the host table (default: the session's probe)."""
    s = shape_of(case)
    ffn = int(case.description["ffn"])
    n = s.num_ranks
    states = list(state) if isinstance(state, list) else [state] * n
    sim = ctx.simulation(n, overlap=False)  # no GPU compute overlaps the all-to-alls here
    scales = host_scales if host_scales is not None else ctx.host_scales(case.extra, n)
    threads = [HostThread(sim, r, ctx, scales[r]) for r in range(n)]
    last = [threads[r].kernels(before_dispatch(ctx, s, r))[-1] for r in range(n)]
    matrix = s.dispatch_bytes()
    issued = [_issue_all_to_all(th, "dispatch") for th in threads]
    dispatch = sim.collective("all_to_all_v", list(range(n)), matrix, "dispatch", stream="comm",
                              step_latency_ns=sized_step_latency_ns(ctx, "all_to_all_v", n, matrix), deps=issued + last)
    experts = [_issue_experts(threads[r], expert_phase(ctx, s, r, ffn, states[r]), [dispatch]) for r in range(n)]
    issued = [_issue_all_to_all(th, "combine") for th in threads]
    back = [[matrix[j][i] for j in range(n)] for i in range(n)]
    combine = sim.collective("all_to_all_v", list(range(n)), back, "combine", stream="comm",
                             step_latency_ns=sized_step_latency_ns(ctx, "all_to_all_v", n, back),
                             deps=issued + [e[-1] for e in experts])
    tails = [threads[r].kernels(after_combine(ctx, s, r), [combine]) for r in range(n)]
    sim.run()
    ends = [t[-1].end_ns for t in tails]
    comps = {"dispatch_ns": float(dispatch.end_ns - dispatch.start_ns),
             "combine_ns": float(combine.end_ns - combine.start_ns),
             "host_from_issue": 1.0 if host_scales is not None else 0.0}
    for r in range(n):
        comps[f"rank{r}_experts_ns"] = float(experts[r][-1].end_ns - dispatch.end_ns)
        comps[f"rank{r}_unpermute_ns"] = float(tails[r][-1].end_ns - combine.end_ns)
        comps[f"rank{r}_host_ns"] = float(threads[r].busy_ns)
        comps[f"rank{r}_host_scale"] = float(scales[r])
    busy = [[(float(t.start_ns), float(t.end_ns), float(t.args.get("flops", 0.0))) for t in experts[r]]
            for r in range(n)]
    return _Run(max(ends), busy, comps)
