"""Host (CPU issue) time of one eager PyTorch call, per op type.

An eager program's Python thread spends host time on every call: argument checks, dispatch,
output allocation and the kernel launch. When the GPU is faster than the thread, that time is
the program's pace, so the simulator needs it per op, not one figure for all. The method: queue
a long ``torch.cuda._sleep`` so the GPU stays busy (the thread never waits for it and the
launch queue never drains), then issue ``calls_per_round`` calls of one op back to back and
divide the host wall time by the count; median over rounds. Shapes are a typical MoE layer's
(hidden 4096, 4096 token rows, expert FFN 2048); the host cost barely depends on them. Calls
that launch no kernel (``empty``, ``slice``) are measured too, since real programs make them.
:func:`host_collective_calls` does the same for NCCL calls inside the distributed workers
(every rank issues the same calls). Only torch, numpy and the standard library are imported.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from moesim.calibrate.kernels import randn, swiglu_ffn
from moesim.calibrate.section import Section
from moesim.calibrate.timing import Budget, stats_from_ns, sync

HIDDEN, ROWS, FFN = 4096, 4096, 2048
SMOKE_SHAPE = (64, 64, 32)  # CPU smoke mode: host cost only, tiny kernels
CALLS_PER_ROUND = 200
ROUNDS = 5
WARMUP_CALLS = 20
SLEEP_MARGIN = 3.0  # GPU sleep = margin x the estimated host time of a round
GPU_CYCLES_PER_NS = 2.0  # upper bound of the SM clock (1.98 GHz), so the sleep lasts at least as long


def _single_gpu_calls(device: str) -> dict[str, Callable[[], object]]:
    """name -> zero-argument call, on preallocated inputs."""
    h, t, f = (HIDDEN, ROWS, FFN) if device == "cuda" else SMOKE_SHAPE
    x, y = (randn(t * h, device, 60 + i).view(t, h) for i in range(2))
    w = randn(f * h, device, 62).view(f, h)
    wd = randn(f * h, device, 63).view(h, f)
    gate = randn(t, device, 64).view(t, 1)
    out = torch.empty_like(x)
    g = torch.Generator(device=device).manual_seed(65)
    perm = torch.randperm(t, generator=g, device=device)
    pairs = torch.randperm(t, generator=g, device=device) % (t // 2)
    parts = [x[i * t // 4:(i + 1) * t // 4] for i in range(4)]
    norm_w = randn(h, device, 66)
    logits = randn(t * 256, device, 67).view(t, 256)
    one = torch.ones(1, device=device)
    calls: dict[str, Callable[[], object]] = {
        "launch_add1": lambda: one.add_(1.0),   # the profile's launch figure (one-element add)
        "mm": lambda: torch.mm(x, w.t()),
        "linear": lambda: F.linear(x, w),
        "silu": lambda: F.silu(x),
        "mul": lambda: x * y,
        "mul_broadcast": lambda: x * gate,
        "add": lambda: x + y,
        "copy_": lambda: out.copy_(x),
        "zeros": lambda: torch.zeros(t, h, device=device, dtype=torch.bfloat16),
        "empty": lambda: torch.empty(t, h, device=device, dtype=torch.bfloat16),
        "slice": lambda: x[t // 4:t // 2],
        "index_select": lambda: x.index_select(0, perm),
        "index_copy_": lambda: out.index_copy_(0, perm, x),
        "index_add_": lambda: out[: t // 2].index_add_(0, pairs, x),
        "cat": lambda: torch.cat(parts),
        "rms_norm": lambda: F.rms_norm(x, (h,), norm_w),
        "softmax": lambda: torch.softmax(logits, dim=-1),
        "topk": lambda: torch.topk(logits, 8, dim=-1),
        "swiglu_ffn": lambda: swiglu_ffn(x[: t // 4], w, w, wd),  # 3 mm + silu + mul, as one Python call
    }
    seq = 1024 if device == "cuda" else 16
    q = randn(4 * seq * 128, device, 68).view(1, 4, seq, 128)
    calls["sdpa_fwd"] = lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True)
    if device == "cuda" and hasattr(torch, "_grouped_mm"):
        wg = randn(4 * f * h, device, 69).view(4, f, h).transpose(-2, -1)
        offs = torch.arange(t // 4, t + 1, t // 4, device=device, dtype=torch.int32)
        calls["grouped_mm"] = lambda: torch._grouped_mm(x, wg, offs=offs)
    return calls


def _busy_gpu(device: str, ns: float) -> None:
    """Keep the GPU busy for at least ``ns`` so the issuing thread never waits for it."""
    if device == "cuda":
        torch.cuda._sleep(int(ns * GPU_CYCLES_PER_NS))



def time_host_calls(fn: Callable[[], object], device: str, calls: int = CALLS_PER_ROUND,
                    rounds: int = ROUNDS, before_round: Callable[[], None] = lambda: None) -> list[float]:
    """Host ns per call of ``fn`` issued ``calls`` times back to back, one value per round."""
    for _ in range(WARMUP_CALLS):
        fn()
    sync(device)
    t0 = time.perf_counter_ns()
    fn()
    estimate = max(time.perf_counter_ns() - t0, 5_000)
    sync(device)
    out = []
    for _ in range(rounds):
        before_round()
        _busy_gpu(device, SLEEP_MARGIN * estimate * calls)
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter_ns() - t0) / calls)
        sync(device)
    return out


def host_sample(call: str, per_call_ns: list[float], gpu_busy: bool, **extra: object) -> dict:
    """One profile sample (op ``host``) from per-round host times."""
    return {"op": "host", "call": call, "gpu_busy": gpu_busy, **extra, **stats_from_ns(per_call_ns).fields()}


def measure_host_ops(timer: object, grid: object, device: str, budget: Budget) -> Section:
    """Host time per call of every single-GPU op in :func:`_single_gpu_calls`."""
    sec = Section("host_ops")
    calls = _single_gpu_calls(device)
    for name, fn in calls.items():
        sec.attempt(name, budget, lambda name=name, fn=fn: host_sample(name, time_host_calls(fn, device), device == "cuda"))
    return sec


def _collective_calls(rank: int, world: int, device: str) -> dict[str, Callable[[], object]]:
    """NCCL calls as the validated programs make them (1 MiB per rank, the MoE's split lists)."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    elems = ((1 << 20) // 2 if device == "cuda" else 4096) // world * world
    buf = randn(elems, device, 80 + rank, dtype)
    out = torch.empty_like(buf)
    send = [elems // world + (64 if j == 0 else -64 if j == 1 else 0) for j in range(world)]
    recv = [elems // world + (64 if rank == 0 else -64 if rank == 1 else 0) for _ in range(world)]
    rbuf = torch.empty(sum(recv), dtype=dtype, device=device)
    peer = rank ^ 1
    calls: dict[str, Callable[[], object]] = {
        "all_reduce": lambda: dist.all_reduce(buf),
        "all_gather": lambda: dist.all_gather_into_tensor(out, buf[: elems // world]),
        "reduce_scatter": lambda: dist.reduce_scatter_tensor(out[: elems // world], buf),
        "all_to_all_single": lambda: dist.all_to_all_single(out, buf),
        "all_to_all_single_splits": lambda: dist.all_to_all_single(rbuf, buf, output_split_sizes=recv,
                                                                   input_split_sizes=send),
    }
    if peer < world:
        ops = [dist.P2POp(dist.isend, buf, peer), dist.P2POp(dist.irecv, out, peer)]
        calls["batch_isend_irecv"] = lambda: [w.wait() for w in dist.batch_isend_irecv(ops)]
    return calls


def host_collective_calls(rank: int, world: int, device: str, calls: int = 100) -> dict[str, list[float]]:
    """Host ns per NCCL call (per round) on this rank; every rank runs the same sequence."""
    out = {}
    for name, fn in _collective_calls(rank, world, device).items():
        out[name] = time_host_calls(fn, device, calls=calls, before_round=dist.barrier)
        dist.barrier()
    return out


def host_collective_samples(results: list[dict], world: int, device: str) -> list[dict]:
    """Profile samples from every rank's per-round host times: the median over ranks and rounds."""
    samples = []
    names = sorted(set().union(*(r.get("host_calls", {}).keys() for r in results)))
    for name in names:
        rounds = [t for r in results for t in r.get("host_calls", {}).get(name, [])]
        if rounds:
            samples.append(host_sample(name, rounds, device == "cuda", num_ranks=world))
    return samples
