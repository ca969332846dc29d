"""Host issue right after the host waited for the GPU: section ``host_after_sync``.

A host thread that has just waited for a device-to-host read (``.item()``, ``.tolist()``,
``.cpu()``: Megatron's MoE forward reads the GPU three times, a per-expert loop once) issues its
next calls slower than in steady state, and the slowness fades over the following calls: on an
H100, the host_classes section's mixed chain (:func:`~moesim.calibrate.host_classes.mixed_chain`,
no autograd) took 49 us to its first call in steady state and 93 us right after a read, +90 us by
its 8th call and +100-170 us in all, reached within ~64 calls (``lab/after_sync_probe.py``,
2026-12-07). moesim's per-class host rows are steady-state times, so a program with syncs was
issued too fast.

The section issues the mixed chain ``CALLS`` calls long with a timestamp after every call, in two
states alternated round by round: ``steady`` (a long ``torch.cuda._sleep`` queued first, so the
host never waits) and ``after_sync`` (GPU work queued, then ``.item()`` of a value it produces, then
the chain at once). One row per mark ``k`` (calls 1, 2, 4, ... ``CALLS``): ``steady_ns`` the median
steady time from the chain's start to the end of call ``k``, ``time_ns`` the same right after the
read. The cost model reads the rows as a curve of after-sync issue time against steady issue time
(:meth:`moesim.costs.calibrated.CalibratedCostModel.host_after_sync_curve`). The read waits
``GPU_WAIT_NS`` (5 ms); how the slowness depends on the length of the wait is not measured (a
host-bound program's reads wait less).
Rows: ``{"op": "host_after_sync", "calls", "steady_ns", "time_ns", "repeats", ...}``.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from moesim.calibrate.host_classes import CPU_SIZES, GPU_SIZES, classes, mixed_chain
from moesim.calibrate.section import Section
from moesim.calibrate.timing import BUSY_CYCLES_PER_NS, Budget, stats_from_ns

CALLS = 256
MARKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ROUNDS = 30
GPU_WAIT_NS = 5e6     # GPU work queued before the read (the host waits for it)
STEADY_SLEEP_NS = 40e6  # queued before a steady chain: longer than any chain's issue


def issue_stamps(chain, n: int, autograd: bool = False) -> list[int]:
    """Host ns from the chain's start to the end of each call (``autograd``: recording a graph, as
    a training forward does; else under ``torch.no_grad``)."""
    stamps = []
    y = chain.x0
    with torch.set_grad_enabled(autograd):
        t0 = time.perf_counter_ns()
        for i in range(n):
            y = chain.step(y, i)
            stamps.append(time.perf_counter_ns() - t0)
    return stamps


def after_sync_rows(device: str, calls: int = CALLS, rounds: int = ROUNDS) -> list[dict]:
    """The section's rows (module docstring); on a CPU the same protocol without a GPU (smoke)."""
    sizes = GPU_SIZES if device == "cuda" else CPU_SIZES
    chain = mixed_chain(classes(sizes, device))
    cuda = device == "cuda"
    probe = torch.zeros(1, device=device)
    for _ in range(3):
        issue_stamps(chain, calls)
    if cuda:
        torch.cuda.synchronize()
    stamps: dict[str, list[list[int]]] = {"steady": [], "after_sync": []}
    for r in range(rounds):
        for state in (("steady", "after_sync") if r % 2 == 0 else ("after_sync", "steady")):
            if cuda:
                torch.cuda.synchronize()
            if state == "steady":
                if cuda:
                    torch.cuda._sleep(int(STEADY_SLEEP_NS * BUSY_CYCLES_PER_NS))
                stamps[state].append(issue_stamps(chain, calls))
            else:
                if cuda:
                    torch.cuda._sleep(int(GPU_WAIT_NS * BUSY_CYCLES_PER_NS))
                probe.add_(1.0)
                probe.item()
                stamps[state].append(issue_stamps(chain, calls))
    if cuda:
        torch.cuda.synchronize()
    steady, after = np.array(stamps["steady"], dtype=float), np.array(stamps["after_sync"], dtype=float)
    rows = []
    for k in (m for m in MARKS if m <= calls):
        st = stats_from_ns(after[:, k - 1])
        rows.append({"op": "host_after_sync", "calls": k, "steady_ns": round(float(np.median(steady[:, k - 1])), 1),
                     **st.fields()})
    return rows


def measure_host_after_sync(timer: object, grid: object, device: str, budget: Budget) -> Section:
    """Section ``host_after_sync`` (module docstring)."""
    sec = Section("host_after_sync")
    sec.attempt("mixed chain", budget, lambda: after_sync_rows(device, calls=CALLS if device == "cuda" else 32,
                                                               rounds=ROUNDS if device == "cuda" else 4))
    return sec
