"""Host time per eager call inside a multi-process NCCL program, and why it differs (torch, GPUs).

The profile's host table times each call type repeated back to back in one process. Inside the
validated two-process MoE program the same calls took 1.2-7x longer (docs/accuracy.md). This
probe measures, per rank of an NCCL group of ``world`` processes, a *generic* mixed program: a
fixed rotation over the host table's call types (and a CUDA event record and an
``all_to_all_single`` with uneven split lists), on the host table's shapes (4096 rows, hidden
4096, FFN 2048), not the MoE layer's. Per call it reads the wall clock and the thread's CPU
clock (``time.thread_time_ns``): wall far above CPU means the thread was off the CPU (preempted
or blocked), wall equal to CPU means the work itself was slow. Modes:

* ``caught_up``: each round starts after a barrier and a sync, the GPU runs each kernel as it
  is issued (the state of a host-bound program: the only state in which host time matters);
* ``busy``: a 20 ms GPU sleep is queued first, so every launch goes into a non-empty queue
  (the profile's host-table method);
* ``caught_up_pinned``: as ``caught_up`` with the Python thread pinned to one core of its own.

It also times the validated MoE layer (t2048, uniform, contiguous) as the validation measured it
(CUDA events after a barrier and a sync) and on the host, and records per-thread CPU use of the
process over each mode (which threads compete: NCCL's, PyTorch's watchdog), the cgroup's CPU
throttling counters, context switches, core count and CPU model.

``python3 -m moesim.calibrate.host_probe --out host_probe.json`` (runs worlds 2 and 1).

:func:`in_process_probe` runs the same sequence (modes ``busy`` and ``caught_up``) inside an
existing worker, so a measurement session can record the host speed of the very processes
that time its workloads (``validate_workloads`` does, before and after them), and
``moesim.calibrate.host_reference`` can relate the profile's per-call host costs to it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from moesim.calibrate import hostops, provenance
from moesim.calibrate.dist import run_workers
from moesim.calibrate.moe_bench import PHASES, MoEConfig, MoELayer

ROUNDS = 40
WARM_ROUNDS = 5
BUSY_SLEEP_NS = 20e6
# the rotation: host-table call types in a fixed, generic order (not the MoE layer's order)
SEQUENCE = ("mm", "event_record", "silu", "index_select", "empty", "all_to_all_single_splits", "slice", "mul",
            "swiglu_ffn", "cat", "zeros", "mul_broadcast", "index_add_", "add", "copy_", "linear", "rms_norm",
            "softmax", "event_record", "all_to_all_single_splits", "index_select", "slice", "swiglu_ffn")


def _calls(rank: int, world: int) -> dict[str, Callable[[], object]]:
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


def _mode(calls: dict, mode: str, pin: "int | None", rounds: int = ROUNDS) -> dict:
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


def _moe(rank: int, world: int, pin: "int | None", repeats: int = 20) -> dict:
    layer = MoELayer(MoEConfig(2048, 4096, 2048, 8, 2, "uniform", 1.2, "contiguous"), rank, world, "cuda")
    for _ in range(3):
        layer.forward()
    saved = os.sched_getaffinity(0)
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    gpu, host, cpu = [], [], []
    for _ in range(repeats):
        dist.barrier()
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        marks = [torch.cuda.Event(enable_timing=True) for _ in PHASES]
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        start.record()
        layer.forward(marks)
        host.append(time.perf_counter_ns() - w0)
        cpu.append(time.thread_time_ns() - c0)
        torch.cuda.synchronize()
        gpu.append(start.elapsed_time(marks[-1]) * 1e6)
    os.sched_setaffinity(0, saved)
    return {"layer_ns": gpu, "host_wall_ns": host, "host_cpu_ns": cpu,
            "layer_ns_median": statistics.median(gpu), "host_wall_ns_median": statistics.median(host),
            "host_cpu_ns_median": statistics.median(cpu)}


PROBE_MODES = ("busy", "caught_up")
IN_PROCESS_ROUNDS = 20


def in_process_probe(rank: int, world: int, rounds: int = IN_PROCESS_ROUNDS) -> dict:
    """Median wall (and thread CPU) ns of one round of :data:`SEQUENCE` per mode, in this process
    (a worker with its process group initialised; every rank must call it at the same point)."""
    calls = _calls(rank, world)
    for fn in calls.values():
        fn()
    torch.cuda.synchronize()
    out: dict = {"sequence_calls": len(SEQUENCE), "rounds": rounds, "time": time.time()}
    for mode in PROBE_MODES:
        res = _mode(calls, mode, None, rounds)
        out[f"{mode}_round_ns"] = float(res["round_wall_ns_median"])
        out[f"{mode}_round_cpu_ns"] = float(res["round_cpu_ns_median"])
    del calls
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return out


def probe_worker(rank: int, world: int, device: str, cfg: dict) -> dict:
    calls = _calls(rank, world)
    for fn in calls.values():
        fn()
    torch.cuda.synchronize()
    cores = sorted(os.sched_getaffinity(0))
    pin = cores[(4 + 4 * rank) % len(cores)]
    out: dict = {"rank": rank, "world": world, "pinned_core": pin, "affinity": [cores[0], cores[-1], len(cores)]}
    for mode, p in (("caught_up", None), ("busy", None), ("caught_up_pinned", pin)):
        out[mode] = _mode(calls, mode.removesuffix("_pinned"), p)
    if world > 1:
        out["moe_t2048"] = _moe(rank, world, None)
        out["moe_t2048_pinned"] = _moe(rank, world, pin)
    return out


def environment() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "")
    mhz = [float(ln.split(":", 1)[1]) for ln in cpuinfo.splitlines() if ln.startswith("cpu MHz")]
    env = {"kernel": platform.release(), "cpu_count": os.cpu_count(), "affinity_count": len(os.sched_getaffinity(0)), "cpu_model": model,
           "cpu_mhz_median": statistics.median(mhz) if mhz else None,
           "loadavg": Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else ""}
    for f in ("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu.stat"):
        try:
            env[f] = Path(f).read_text().strip()
        except OSError:
            pass
    return env


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("host_probe.json"))
    p.add_argument("--worlds", default="2,1")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    doc: dict = {"provenance": provenance.collect("cuda", torch.cuda.device_count()), "environment": environment(),
                 "sequence": list(SEQUENCE), "rounds": ROUNDS}
    for world in (int(w) for w in args.worlds.split(",")):
        if world > torch.cuda.device_count():
            continue
        results, errors = run_workers(probe_worker, world, "nccl", {"timeout_s": 240}, timeout_s=240)
        doc[f"world{world}"] = {"ranks": results, "errors": errors}
        for r in results:
            print(f"world {world} rank {r['rank']}: " + ", ".join(
                f"{m} wall {r[m]['round_wall_ns_median'] / 1e3:.0f} us cpu {r[m]['round_cpu_ns_median'] / 1e3:.0f} us"
                for m in ("caught_up", "busy", "caught_up_pinned")), flush=True)
            for m in ("moe_t2048", "moe_t2048_pinned"):
                if m in r:
                    print(f"   {m}: layer {r[m]['layer_ns_median'] / 1e3:.0f} us host wall "
                          f"{r[m]['host_wall_ns_median'] / 1e3:.0f} cpu {r[m]['host_cpu_ns_median'] / 1e3:.0f}", flush=True)
        print(errors, flush=True)
    doc["environment_after"] = environment()
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
