"""Launch a function on N local processes, one per GPU, under torch.distributed.

The measurement scripts start their own workers with ``torch.multiprocessing`` (spawn), so
they run with a plain ``python3`` and no launcher. NVLink multicast (NVLS) stays off in every
worker: it can put a shared host's GPUs out of service. Each worker returns a picklable dict;
a worker that raises returns its traceback instead, and a group that hangs past its deadline
is terminated (only the processes started here).
"""
from __future__ import annotations

import datetime as _dt
import os
import queue
import socket
import time
import traceback
import warnings
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}

Worker = Callable[[int, int, str, dict], dict]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, world: int, backend: str, port: int, worker: Worker, cfg: dict, out: "mp.Queue") -> None:
    os.environ.update(SAFE_ENV)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    try:
        device = "cuda" if backend == "nccl" else "cpu"
        warnings.filterwarnings("ignore", category=FutureWarning)
        if device == "cpu":
            torch.set_num_threads(1)  # a thread pool per rank oversubscribes small hosts
        kwargs: dict = {"timeout": _dt.timedelta(seconds=max(60, int(cfg.get("timeout_s", 300))))}
        if device == "cuda":
            torch.cuda.set_device(rank)
            kwargs["device_id"] = torch.device("cuda", rank)
        dist.init_process_group(backend, rank=rank, world_size=world, **kwargs)
        result = worker(rank, world, device, cfg)
        dist.barrier()
        dist.destroy_process_group()
        out.put((rank, result, ""))
    except Exception:
        out.put((rank, None, traceback.format_exc()))


def run_workers(worker: Worker, world: int, backend: str, cfg: dict, timeout_s: float) -> tuple[list[dict], list[str]]:
    """Run ``worker(rank, world, device, cfg)`` on ``world`` processes; returns (results by rank, errors)."""
    os.environ.update(SAFE_ENV)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_entry, args=(r, world, backend, port, worker, cfg, out)) for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, dict] = {}
    errors: list[str] = []
    t0 = time.monotonic()
    while len(results) + len(errors) < world:
        try:
            rank, res, err = out.get(timeout=max(1.0, timeout_s - (time.monotonic() - t0)))
        except queue.Empty:
            errors.append(f"workers timed out after {timeout_s:.0f} s")
            break
        if err:
            errors.append(f"rank {rank}: {err.strip().splitlines()[-1][:300]}")
            print(f"rank {rank} failed:\n{err}", flush=True)
        else:
            results[rank] = res
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)
    return [results[r] for r in sorted(results)], errors
