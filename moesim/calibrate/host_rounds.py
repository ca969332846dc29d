"""The in-process host probe: how fast this process's host thread issues a fixed mix of eager calls.

A validation session (:mod:`moesim.calibrate.validate_workloads`) runs :func:`in_process_probe`
inside each rank's worker right before and right after its timed workloads, so every stored
session records the host speed of the very processes that timed it (``measured.host_probe``).
One round is :data:`SEQUENCE`, a fixed rotation over the host table's call types (plus a CUDA
event record and an ``all_to_all_single`` with uneven split lists) on the host table's shapes;
per call it reads the wall clock and the thread's CPU clock. Modes: ``busy`` (a 20 ms GPU sleep
queued first, so every launch goes into a non-empty queue: the profile's host-table method) and
``caught_up`` (each round after a barrier and a sync). The standalone study around it (pinned
threads, per-thread CPU use, the MoE layer) is ``lab/host_probe.py``.
"""
from __future__ import annotations

import os
import resource
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from moesim.calibrate import hostops

ROUNDS = 40
WARM_ROUNDS = 5
BUSY_SLEEP_NS = 20e6
# the rotation: host-table call types in a fixed, generic order (not the MoE layer's order)
SEQUENCE = ("mm", "event_record", "silu", "index_select", "empty", "all_to_all_single_splits", "slice", "mul",
            "swiglu_ffn", "cat", "zeros", "mul_broadcast", "index_add_", "add", "copy_", "linear", "rms_norm",
            "softmax", "event_record", "all_to_all_single_splits", "index_select", "slice", "swiglu_ffn")


def round_calls(rank: int, world: int) -> dict[str, Callable[[], object]]:
    """The calls :data:`SEQUENCE` names, on CUDA, for this rank of a ``world``-process NCCL group."""
    calls = hostops._single_gpu_calls("cuda")
    rows, h = hostops.ROWS, hostops.HIDDEN
    # uneven splits: rank r sends a quarter of its rows to one peer and three quarters to another
    send = [rows // 4 if (rank + j) % 2 == 0 else 3 * rows // 4 for j in range(world)] if world > 1 else [rows]
    recv = [rows // 4 if (j + rank) % 2 == 0 else 3 * rows // 4 for j in range(world)] if world > 1 else [rows]
    x = torch.randn(sum(send), h, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(sum(recv), h, device="cuda", dtype=torch.bfloat16)
    ev = torch.cuda.Event(enable_timing=True)
    calls["all_to_all_single_splits"] = lambda: dist.all_to_all_single(out, x, output_split_sizes=recv,
                                                                       input_split_sizes=send)
    calls["event_record"] = lambda: ev.record()
    return calls


def _threads() -> dict[str, float]:
    """CPU seconds per thread of this process, keyed ``tid:name``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            out[f"{tid}:{name}"] = (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
    return out


def _cgroup_cpu() -> dict[str, int]:
    try:
        text = Path("/sys/fs/cgroup/cpu.stat").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split() for line in text.splitlines() if len(line.split()) == 2)}


def _delta(after: dict, before: dict) -> dict:
    return {k: round(after[k] - before.get(k, 0), 4) for k in after if after[k] - before.get(k, 0)}


def run_rounds(calls: dict, mode: str, pin: "int | None", rounds: int = ROUNDS) -> dict:
    """Median wall and thread-CPU ns per round and per call over ``rounds`` rounds in ``mode``
    (``busy`` or ``caught_up``), the thread pinned to core ``pin`` when given."""
    saved = os.sched_getaffinity(0)
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    wall: dict[str, list[int]] = {}
    cpu: dict[str, list[int]] = {}
    rounds_wall, rounds_cpu = [], []
    th0, cg0, ru0 = _threads(), _cgroup_cpu(), resource.getrusage(resource.RUSAGE_THREAD)
    for r in range(WARM_ROUNDS + rounds):
        dist.barrier()
        torch.cuda.synchronize()
        if mode == "busy":
            torch.cuda._sleep(int(BUSY_SLEEP_NS * hostops.GPU_CYCLES_PER_NS))
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        laps = []
        for i, name in enumerate(SEQUENCE):
            a, b = time.perf_counter_ns(), time.thread_time_ns()
            calls[name]()
            laps.append((f"{i:02d}:{name}", time.perf_counter_ns() - a, time.thread_time_ns() - b))
        w1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        torch.cuda.synchronize()
        if r < WARM_ROUNDS:
            continue
        rounds_wall.append(w1 - w0)
        rounds_cpu.append(c1 - c0)
        for key, dw, dc in laps:
            wall.setdefault(key, []).append(dw)
            cpu.setdefault(key, []).append(dc)
    ru1 = resource.getrusage(resource.RUSAGE_THREAD)
    res = {
        "round_wall_ns_median": statistics.median(rounds_wall), "round_cpu_ns_median": statistics.median(rounds_cpu),
        "calls_wall_ns_median": {k: statistics.median(v) for k, v in wall.items()},
        "calls_cpu_ns_median": {k: statistics.median(v) for k, v in cpu.items()},
        "thread_cpu_s": _delta(_threads(), th0), "cgroup_cpu_stat_delta": _delta(_cgroup_cpu(), cg0),
        "main_thread_ctx_switches": {"voluntary": ru1.ru_nvcsw - ru0.ru_nvcsw, "involuntary": ru1.ru_nivcsw - ru0.ru_nivcsw},
    }
    os.sched_setaffinity(0, saved)
    return res


PROBE_MODES = ("busy", "caught_up")
IN_PROCESS_ROUNDS = 20


def in_process_probe(rank: int, world: int, rounds: int = IN_PROCESS_ROUNDS) -> dict:
    """Median wall (and thread CPU) ns of one round of :data:`SEQUENCE` per mode, in this process
    (a worker with its process group initialised; every rank must call it at the same point)."""
    calls = round_calls(rank, world)
    for fn in calls.values():
        fn()
    torch.cuda.synchronize()
    out: dict = {"sequence_calls": len(SEQUENCE), "rounds": rounds, "time": time.time()}
    for mode in PROBE_MODES:
        res = run_rounds(calls, mode, None, rounds)
        out[f"{mode}_round_ns"] = float(res["round_wall_ns_median"])
        out[f"{mode}_round_cpu_ns"] = float(res["round_cpu_ns_median"])
    del calls
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return out
