"""NCCL collectives predicted by an engine run of the measured eager loop.

The measurement issued the collective back to back from Python, bracketed by CUDA events, and
kept per iteration the minimum over ranks, then the median. Here each rank's host thread
issues ``LOOP_ITERATIONS`` calls, one every *host interval*, and the engine runs each
collective on the fabric (``h200x2_nvlink`` for two ranks, ranks ``0..n-1`` of ``dgx_h200``
beyond) with the profile's link efficiency and per-step latency. A call's time is from its
start event (after the previous call and its own issue) to its end, as the CUDA events saw it:
``max(host interval, device time)`` in steady state, the host interval for small messages and
the engine's transfer time for large ones.

The host interval of one eager call is the profile's eager time of collectives too small to
keep the GPU busy (4 KiB to 1 MiB, where the GPU waits for the host), at the same rank count.
"""
from __future__ import annotations

import statistics

from moesim.engine import Task
from moesim.validate.context import ValidationContext
from moesim.validate.host import HostThread
from moesim.validate.measurements import Measurement
from moesim.validate.prediction import Prediction

LOOP_ITERATIONS = 4
HOST_BOUND_SIZES = tuple(4**i * 4096 for i in range(5))  # 4 KiB .. 1 MiB, the profile's small sizes


def host_interval_ns(ctx: ValidationContext, op: str, num_ranks: int) -> int:
    """Host time per eager call: the median eager time of small (host-bound) collectives."""
    return int(round(statistics.median(ctx.cost.collective_ns(op, num_ranks, b, mode="eager")
                                       for b in HOST_BOUND_SIZES)))


def transfer_matrix(d: dict) -> "list[list[float]] | float":
    """Bytes per (src, dst) for all_to_all_v (send buffer times the split fractions), else nbytes."""
    if d["collective"] != "all_to_all_v":
        return float(d["nbytes"])
    return [[float(d["nbytes"]) * f for f in row] for row in d["split_fractions"]]


def predict_collective(ctx: ValidationContext, case: Measurement) -> Prediction:
    """Engine run of the eager loop; the median per-call time of the loop is the prediction."""
    d = dict(case.description)
    op, n = d["collective"], int(d["num_ranks"])
    sim = ctx.simulation(n, overlap=False)
    interval = host_interval_ns(ctx, op, n)
    step_ns = ctx.cost.collective_step_latency_ns(op, n, ctx.link_kind(n))
    threads = [HostThread(sim, r, ctx.launch_ns()) for r in range(n)]
    calls: list[tuple[list[Task], Task]] = []
    for i in range(LOOP_ITERATIONS):
        issued = [t.issue(interval, f"{op}.{i}") for t in threads]
        coll = sim.collective(op, list(range(n)), transfer_matrix(d), f"{op}.{i}", stream="comm",
                              step_latency_ns=step_ns, deps=issued)
        calls.append((issued, coll))
    sim.run()
    per_call = _event_times(calls)
    device = [c.end_ns - c.start_ns for _, c in calls]
    return Prediction(
        case.case_id, case.kind, case.thermal, case.measured_ns, float(statistics.median(per_call)),
        method=f"{ctx.engine_label(n, overlap=False)}; eager loop of {LOOP_ITERATIONS} calls",
        clock_state="n/a",
        components={"host_interval_ns": float(interval), "device_ns": float(statistics.median(device)),
                    "step_latency_ns": float(step_ns)},
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
