"""NCCL collectives predicted by an engine run of the measured eager loop.

The measurement issued the collective back to back from Python, bracketed by CUDA events, and
kept per iteration the minimum over ranks, then the median. Here each rank's host thread
issues ``LOOP_ITERATIONS`` calls, one every *host interval*, and the engine runs each
collective on the fabric (``h200x2_nvlink`` for two ranks, ranks ``0..n-1`` of ``dgx_h200``
beyond) with the profile's link efficiency and a size-dependent per-step latency (below). A
call's time is from its
start event (after the previous call and its own issue) to its end, as the CUDA events saw it:
``max(host interval, device time)`` in steady state, the host interval for small messages and
the engine's transfer time for large ones.

The host interval of one eager call is, where the session calibrated it in its own processes
(protocol v2: eager loops of the same op at 64 KiB and 256 KiB, sizes that are not validation
cases, timed in the same interleaved rounds; ``measured.eager_host_interval``), that figure.
Otherwise it is the profile's eager time of collectives too small to keep the GPU busy (4 KiB to
1 MiB, where the GPU waits for the host), at the same rank count, scaled per rank by the
session's in-process host probe when it has one
(:meth:`~lab.legacy_validate.context.ValidationContext.collective_host_scales`).

NCCL's bandwidth grows with message size and reaches the large-message figure (the engine's
constant link efficiency) only near 1 GiB. The engine has no size-dependent efficiency, so
:func:`sized_step_latency_ns` gives each collective the per-phase latency that makes the engine,
running it alone on the fabric, take the profile's measured device time at its size (CUDA-graph
times, 1 MiB to 1 GiB in x2 steps); uneven all-to-alls take
:meth:`~moesim.costs.calibrated.CalibratedCostModel.all_to_all_v_ns` of their byte matrix. The
engine's flows, and so any contention between collectives, are kept.
"""
from __future__ import annotations

import statistics
from functools import lru_cache
from typing import Mapping

from moesim.engine import Task
from moesim.engine import collectives as engine_collectives
from lab.legacy_validate.context import ValidationContext
from lab.legacy_validate.host import HostThread
from moesim.validate.measurements import Measurement
from lab.legacy_validate.prediction import Prediction

LOOP_ITERATIONS = 4
HOST_BOUND_SIZES = tuple(4**i * 4096 for i in range(5))  # 4 KiB .. 1 MiB, the profile's small sizes


def host_interval_ns(ctx: ValidationContext, op: str, num_ranks: int) -> int:
    """Host time per eager call: the median eager time of small (host-bound) collectives."""
    return int(round(statistics.median(ctx.cost.collective_ns(op, num_ranks, b, mode="eager")
                                       for b in HOST_BOUND_SIZES)))


def session_host_interval_ns(extra: "dict | Mapping") -> "int | None":
    """The eager host interval the session calibrated in its own processes for this op
    (``measured.eager_host_interval.interval_ns``: loops at sizes that are not validation sizes,
    timed in the same interleaved rounds), or None when the session has none."""
    rec = extra.get("eager_host_interval") if hasattr(extra, "get") else None
    value = rec.get("interval_ns") if isinstance(rec, dict) else None
    return int(round(value)) if isinstance(value, (int, float)) and value > 0 else None


def transfer_matrix(d: dict) -> "list[list[float]] | float":
    """Bytes per (src, dst) for all_to_all_v (send buffer times the split fractions), else nbytes."""
    if d["collective"] != "all_to_all_v":
        return float(d["nbytes"])
    return [[float(d["nbytes"]) * f for f in row] for row in d["split_fractions"]]


Bytes = "float | Sequence[Sequence[float]]"
# the engine's builders for the algorithms it runs by default (Simulation._phases, algorithm "ring")
ENGINE_PHASES = {"all_reduce": engine_collectives.ring_all_reduce, "all_gather": engine_collectives.ring_all_gather,
                 "reduce_scatter": engine_collectives.ring_reduce_scatter,
                 "all_to_all": engine_collectives.direct_all_to_all, "all_to_all_v": engine_collectives.direct_all_to_all_v}


def measured_device_ns(ctx: ValidationContext, op: str, n: int, nbytes: Bytes) -> float:
    """The profile's device time of one collective at its size (byte matrix for all_to_all_v)."""
    if op == "all_to_all_v":
        return ctx.cost.all_to_all_v_ns(nbytes)  # type: ignore[arg-type]
    return float(ctx.cost.collective_ns(op, n, float(nbytes)))  # type: ignore[arg-type]


def sized_step_latency_ns(ctx: ValidationContext, op: str, n: int, nbytes: Bytes) -> int:
    """Per-phase latency that makes the engine's run of this collective, alone on the fabric at the
    profile's large-message link efficiency, last the profile's measured device time at its size
    (never below zero: where NCCL beats the engine's efficiency the engine stays the slower)."""
    phases = len(ENGINE_PHASES[op](list(range(n)), nbytes))
    transfer = _engine_alone_ns(ctx, op, n, _freeze(nbytes))
    return max(0, int(round((measured_device_ns(ctx, op, n, nbytes) - transfer) / max(phases, 1))))


def _freeze(nbytes: Bytes) -> "float | tuple[tuple[float, ...], ...]":
    return float(nbytes) if isinstance(nbytes, (int, float)) else tuple(tuple(float(x) for x in row) for row in nbytes)


@lru_cache(maxsize=512)
def _engine_alone_ns(ctx: ValidationContext, op: str, n: int, nbytes: "float | tuple") -> int:
    """The engine's time for the collective alone, with no step latency (transfer + path latency)."""
    sim = ctx.simulation(n, overlap=False)
    task = sim.collective(op, list(range(n)), nbytes if isinstance(nbytes, float) else [list(r) for r in nbytes],
                          "alone", stream="comm")
    sim.run()
    return task.end_ns - task.start_ns


def predict_collective(ctx: ValidationContext, case: Measurement) -> Prediction:
    """Engine run of the eager loop; the median per-call time of the loop is the prediction."""
    d = dict(case.description)
    op, n = d["collective"], int(d["num_ranks"])
    sim = ctx.simulation(n, overlap=False)
    session_interval = session_host_interval_ns(case.extra)
    interval = session_interval if session_interval is not None else host_interval_ns(ctx, op, n)
    step_ns = sized_step_latency_ns(ctx, op, n, transfer_matrix(d))
    scales = [1.0] * n if session_interval is not None else ctx.collective_host_scales(case.extra, n)
    threads = [HostThread(sim, r, ctx, scales[r]) for r in range(n)]
    calls: list[tuple[list[Task], Task]] = []
    for i in range(LOOP_ITERATIONS):
        issued = [t.issue(interval, f"{op}.{i}") for t in threads]
        coll = sim.collective(op, list(range(n)), transfer_matrix(d), f"{op}.{i}", stream="comm",
                              step_latency_ns=step_ns, deps=issued)
        calls.append((issued, coll))
    sim.run()
    per_call = _event_times(calls)
    device = [c.end_ns - c.start_ns for _, c in calls]
    probed = "" if all(x == 1.0 for x in scales) else ", host x " + "/".join(f"{x:.2f}" for x in scales) + " by probe"
    if session_interval is not None:
        probed = ", host interval calibrated in the session's processes"
    return Prediction(
        case.case_id, case.kind, case.thermal, case.measured_ns, float(statistics.median(per_call)),
        method=f"{ctx.engine_label(n, overlap=False)}; eager loop of {LOOP_ITERATIONS} calls{probed}",
        clock_state="n/a",
        components={"host_interval_ns": float(interval), "device_ns": float(statistics.median(device)),
                    "step_latency_ns": float(step_ns), **{f"rank{r}_host_scale": float(x) for r, x in enumerate(scales)}},
    )


def _event_times(calls: list[tuple[list[Task], Task]]) -> list[float]:
    """Per call: end event minus start event, the minimum over ranks (all ranks see the same
    collective end; the start event is the later of the previous call's end and the issue)."""
    out = []
    prev_end = 0
    for issued, coll in calls:
        starts = [max(h.start_ns, prev_end) for h in issued]
        out.append(float(coll.end_ns - max(starts)))
        prev_end = coll.end_ns
    return out
