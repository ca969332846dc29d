"""Compute/communication interference: a GEMM loop timed alone and while NCCL traffic runs.

Two experiments per collective (all_reduce and all_to_all at one large size):
``victim=gemm``: a loop of square bf16 GEMMs on the default stream, timed per GEMM with CUDA
events, first alone and then while a loop of collectives, issued first on a side stream and
long enough to cover the whole GEMM loop, runs concurrently. ``victim=collective``: the same
in reverse (collectives timed while GEMMs cover them). Loop lengths are agreed by all ranks
(an all-reduce of the wanted count, MAX) so every rank issues the same collectives.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from moesim.calibrate.collectives import ceil_div, make_collective
from moesim.calibrate.kernels import randn

NUM_GEMMS = 30
NUM_COLLECTIVES = 12
# The covering loop is planned this many times longer than the timed one (alone times): GEMMs
# slow down little under traffic, but collectives slow down 2-3x under GEMMs (measured).
COVER_BY_COMM = 1.5
COVER_BY_GEMM = 4.0


def _timed_loop(fn: Callable[[], object], count: int) -> list[tuple[torch.cuda.Event, torch.cuda.Event]]:
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(count)]
    for s, e in ev:
        s.record()
        fn()
        e.record()
    return ev


def _elapsed(ev: list[tuple[torch.cuda.Event, torch.cuda.Event]]) -> list[float]:
    return [s.elapsed_time(e) * 1e6 for s, e in ev]


def _agree_max(value: int) -> int:
    t = torch.tensor([value], device="cuda", dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def _alone(fn: Callable[[], object], count: int) -> list[float]:
    for _ in range(3):
        fn()
    ev = _timed_loop(fn, count)
    torch.cuda.synchronize()
    return _elapsed(ev)


def _concurrent(victim: Callable[[], object], n_victim: int, cover: Callable[[], object], n_cover: int,
                cover_is_comm: bool) -> list[float]:
    """Time ``victim`` while ``cover`` runs on the other stream; the comm side goes on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    dist.barrier()
    torch.cuda.synchronize()
    comm_fn, n_comm = (cover, n_cover) if cover_is_comm else (victim, n_victim)
    comp_fn, n_comp = (victim, n_victim) if cover_is_comm else (cover, n_cover)
    if cover_is_comm:  # start the covering traffic first, then the timed GEMMs
        with torch.cuda.stream(side):
            for _ in range(n_comm):
                comm_fn()
        ev = _timed_loop(comp_fn, n_comp)
    else:  # start the covering GEMMs first, then the timed collectives
        for _ in range(n_comp):
            comp_fn()
        with torch.cuda.stream(side):
            ev = _timed_loop(comm_fn, n_comm)
    torch.cuda.synchronize()
    return _elapsed(ev)


def overlap_measurements(rank: int, world: int, cfg: dict) -> dict:
    """Raw per-iteration times alone and concurrent, keyed ``collective|victim|alone|concurrent``."""
    n = int(cfg["overlap_gemm"])
    a, b = randn(n * n, "cuda", 50 + rank).view(n, n), randn(n * n, "cuda", 60 + rank).view(n, n)
    c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    gemm = lambda: torch.mm(a, b, out=c)  # noqa: E731
    out: dict[str, list[float]] = {}
    gemm_alone = _alone(gemm, NUM_GEMMS)
    gemm_ms = float(np.median(gemm_alone)) / 1e6
    for op in ("all_reduce", "all_to_all"):
        comm = make_collective(op, int(cfg["overlap_nbytes"]), rank, world, "cuda")
        comm_alone = _alone(comm, NUM_COLLECTIVES)
        comm_ms = float(np.median(comm_alone)) / 1e6
        n_cover_comm = _agree_max(ceil_div(COVER_BY_COMM * NUM_GEMMS * gemm_ms, comm_ms))
        n_cover_gemm = _agree_max(ceil_div(COVER_BY_GEMM * NUM_COLLECTIVES * comm_ms, gemm_ms))
        out[f"{op}|gemm|alone"] = gemm_alone
        out[f"{op}|gemm|concurrent"] = _concurrent(gemm, NUM_GEMMS, comm, n_cover_comm, True)
        out[f"{op}|collective|alone"] = comm_alone
        out[f"{op}|collective|concurrent"] = _concurrent(comm, NUM_COLLECTIVES, gemm, n_cover_gemm, False)
    return out


def overlap_samples(results: list[dict], world: int, cfg: dict) -> list[dict]:
    """Profile samples: median concurrent time (all ranks pooled) with the alone median beside it."""
    samples = []
    for op in ("all_reduce", "all_to_all"):
        for victim in ("gemm", "collective"):
            key = f"{op}|{victim}"
            alone = np.concatenate([r["overlap"][f"{key}|alone"] for r in results if "overlap" in r])
            conc = np.concatenate([r["overlap"][f"{key}|concurrent"] for r in results if "overlap" in r])
            if alone.size == 0 or conc.size == 0:
                continue
            p25, med, p75 = np.percentile(conc, [25, 50, 75])
            samples.append({
                "op": "overlap", "collective": op, "victim": victim, "num_ranks": world,
                "nbytes": int(cfg["overlap_nbytes"]), "gemm_size": int(cfg["overlap_gemm"]),
                "time_ns": round(float(med), 1), "repeats": int(conc.size), "p25_ns": round(float(p25), 1),
                "p75_ns": round(float(p75), 1), "min_ns": round(float(conc.min()), 1), "max_ns": round(float(conc.max()), 1),
                "alone_ns": round(float(np.median(alone)), 1),
            })
    return samples
