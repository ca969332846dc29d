"""NCCL collective timings and the compute slowdown while a collective runs concurrently.

Runs inside the workers that :mod:`moesim.calibrate.dist` starts (one process per GPU;
:func:`moesim.calibrate.comm_worker.collectives_worker` is the worker's body). Every
rank issues the same sequence, so the number of iterations per size is fixed in advance, never
adapted per rank. Sizes follow nccl-tests: ``nbytes`` is the all-reduce buffer, the all-gather
output, the reduce-scatter input, the all-to-all send buffer per rank, and the message of a
send/recv. ``all_to_all_v`` sends ``ZIPF_WEIGHTS``-shaped uneven splits (every rank sends most
to rank 0: a hot-expert pattern); ``send_recv`` sends one way between rank pairs (0->1, 2->3, ...);
``exchange`` sends both ways at once. A collective's time per iteration is the minimum over
ranks (the late rank's view: duration once every participant has arrived); the median over
iterations is recorded.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from moesim.calibrate.kernels import randn
from moesim.calibrate.timing import stats_from_ns

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "all_to_all_v", "send_recv", "exchange")
GRAPH_COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "all_to_all_v", "send_recv")
GRAPH_MAX_NBYTES = 16 << 20  # above this the eager and graph times agree
GRAPH_TOP_NBYTES = 1 << 30   # graph-timed up to here: the device time of every size, no host in it
GRAPH_OPS_PER_REPLAY = 20
GRAPH_BYTES_PER_REPLAY = 20 * GRAPH_MAX_NBYTES  # larger sizes capture fewer ops (at least 4) per graph
ZIPF_S = 2.0

# bus-bandwidth factor per collective (nccl-tests convention): busbw = algbw * factor(n)
BUS_FACTOR: dict[str, Callable[[int], float]] = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "all_to_all_v": lambda n: (n - 1) / n,
    "send_recv": lambda n: 1.0,
    "exchange": lambda n: 1.0,
}


def zipf_split_fractions(world: int, s: float = ZIPF_S) -> list[list[float]]:
    """Fraction of each rank's send buffer going to each destination: ``[src][dst]``."""
    w = np.array([1.0 / (j + 1) ** s for j in range(world)])
    w /= w.sum()
    return [[float(x) for x in w] for _ in range(world)]


def _splits(elems: int, fractions: list[float], align: int) -> list[int]:
    sizes = [int(elems * f) // align * align for f in fractions]
    sizes[-1] += elems - sum(sizes)
    return sizes


def make_collective(op: str, nbytes: int, rank: int, world: int, device: str) -> Callable[[], None]:
    """A closure issuing one ``op`` of ``nbytes`` on preallocated random buffers."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    elems = max(world, nbytes // dtype.itemsize // world * world)
    buf = randn(elems, device, 40 + rank, dtype)
    out = torch.empty_like(buf)
    if op == "all_reduce":
        return lambda: dist.all_reduce(buf)
    if op == "all_gather":
        return lambda: dist.all_gather_into_tensor(out, buf[: elems // world])
    if op == "reduce_scatter":
        return lambda: dist.reduce_scatter_tensor(out[: elems // world], buf)
    if op == "all_to_all":
        return lambda: dist.all_to_all_single(out, buf)
    if op == "all_to_all_v":
        frac = zipf_split_fractions(world)
        send = _splits(elems, frac[rank], 8)
        recv = [_splits(elems, frac[src], 8)[rank] for src in range(world)]
        rbuf = torch.empty(sum(recv), dtype=dtype, device=device)
        return lambda: dist.all_to_all_single(rbuf, buf, output_split_sizes=recv, input_split_sizes=send)
    if op in ("send_recv", "exchange"):
        return _p2p(op, buf, out, rank, world)
    raise ValueError(f"unknown collective {op!r}")


def _p2p(op: str, buf: torch.Tensor, out: torch.Tensor, rank: int, world: int) -> Callable[[], None]:
    peer = rank ^ 1
    if peer >= world:
        return lambda: None
    if op == "send_recv":
        ops = [dist.P2POp(dist.isend, buf, peer)] if rank % 2 == 0 else [dist.P2POp(dist.irecv, out, peer)]
    else:
        ops = [dist.P2POp(dist.isend, buf, peer), dist.P2POp(dist.irecv, out, peer)]

    def run() -> None:
        for w in dist.batch_isend_irecv(ops):
            w.wait()
    return run


def iterations_for(nbytes: int) -> tuple[int, int]:
    """(warm-up, timed) iterations for a size; identical on every rank."""
    if nbytes <= 1 << 20:
        return 5, 30
    if nbytes <= 64 << 20:
        return 3, 20
    if nbytes <= 256 << 20:
        return 2, 10
    return 2, 6


def time_iterations(fn: Callable[[], None], warmup: int, iters: int, device: str) -> list[float]:
    """Per-iteration times (ns) of back-to-back calls, by CUDA events or the host clock."""
    for _ in range(warmup):
        fn()
    if device != "cuda":
        out = []
        for _ in range(iters):
            t0 = time.perf_counter_ns()
            fn()
            out.append(float(time.perf_counter_ns() - t0))
        return out
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for s, e in ev:
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e6 for s, e in ev]


def graph_ops_for(nbytes: int) -> int:
    """Ops captured per graph: ``GRAPH_OPS_PER_REPLAY``, fewer (at least 4) for large messages."""
    return max(4, min(GRAPH_OPS_PER_REPLAY, GRAPH_BYTES_PER_REPLAY // max(nbytes, 1)))


def time_graph(fn: Callable[[], None], replays: int = 7, ops: int = GRAPH_OPS_PER_REPLAY) -> list[float]:
    """Per-op times (ns) of ``fn`` captured ``ops`` times in one CUDA graph.

    Graph replay removes the host's launch cost, leaving the device-side time.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(ops):
            fn()
    graph.replay()
    times = time_iterations(graph.replay, 2, replays, "cuda")
    return [t / ops for t in times]


def collective_samples(results: list[dict], world: int, key: str = "times", mode: str = "eager") -> list[dict]:
    """Profile samples from all ranks' raw times: min over ranks per iteration, then statistics.

    ``mode`` is ``"eager"`` (one host launch per collective) or ``"graph"`` (CUDA-graph replay).
    """
    samples = []
    all_keys = set().union(*(r.get(key, {}).keys() for r in results))
    for k in sorted(all_keys, key=lambda s: (s.split("|")[0], int(s.split("|")[1]))):
        per_rank = [r[key][k] for r in results if k in r.get(key, {})]
        if len(per_rank) != world:
            continue
        per_iter = np.min(np.array(per_rank), axis=0)
        op, nbytes = k.split("|")[0], int(k.split("|")[1])
        st = stats_from_ns(per_iter)
        algbw = nbytes / st.median_ns  # bytes per ns == GB/s
        sample = {"op": "collective", "collective": op, "mode": mode, "num_ranks": world, "nbytes": nbytes,
                  **st.fields(), "algbw_gbps": round(algbw, 3), "busbw_gbps": round(algbw * BUS_FACTOR[op](world), 3)}
        if op == "all_to_all_v":
            sample["split_fractions"] = [[round(f, 4) for f in row] for row in zipf_split_fractions(world)]
        samples.append(sample)
    return samples


def ceil_div(a: float, b: float) -> int:
    return int(math.ceil(a / max(b, 1e-9)))
