"""Host time per eager call inside a multi-process NCCL program, and why it differs (torch, GPUs).

The profile's host table times each call type repeated back to back in one process. Inside the
validated two-process MoE program the same calls took 1.2-7x longer (lab/legacy_validate/ACCURACY_NOTEBOOK.md). This
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

``python3 -m lab.host_probe --out host_probe.json`` (runs worlds 2 and 1).

:func:`moesim.calibrate.host_rounds.in_process_probe` runs the same sequence (modes ``busy`` and
``caught_up``) inside an existing worker, so a measurement session can record the host speed of
the very processes that time its workloads (``validate_workloads`` does, before and after them),
and ``lab.host_reference`` can relate the profile's per-call host costs to it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from moesim.calibrate import provenance
from moesim.calibrate.dist import run_workers
from moesim.calibrate.host_rounds import ROUNDS, SEQUENCE, round_calls, run_rounds
from moesim.calibrate.moe_bench import PHASES, MoEConfig, MoELayer

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


def probe_worker(rank: int, world: int, device: str, cfg: dict) -> dict:
    calls = round_calls(rank, world)
    for fn in calls.values():
        fn()
    torch.cuda.synchronize()
    cores = sorted(os.sched_getaffinity(0))
    pin = cores[(4 + 4 * rank) % len(cores)]
    out: dict = {"rank": rank, "world": world, "pinned_core": pin, "affinity": [cores[0], cores[-1], len(cores)]}
    for mode, p in (("caught_up", None), ("busy", None), ("caught_up_pinned", pin)):
        out[mode] = run_rounds(calls, mode.removesuffix("_pinned"), p)
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
