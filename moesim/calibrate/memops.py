"""Memory-bound kernel and launch-overhead measurements.

Each memory op is timed at several sizes; the recorded ``nbytes`` is what the kernel must move
through HBM (every input read once plus every output written once), which is the size axis the
calibrated model interpolates over. The variants and the ``MemoryOp.kind`` they calibrate:
copy, zeros (a fill: bytes written only) -> copy; add, mul, silu -> elementwise; rmsnorm,
layernorm -> norm; softmax (router over 256 experts) -> softmax; topk (k=8 of 256) -> topk;
gather (index_select), scatter (index_copy_) and index_add (``index_add_``, the scatter-add of an
MoE unpermute: every destination row receives two source rows, as with top-2 routing; bf16
atomics) of token rows -> permute. Every variant is timed cold (``cache: "cold"``: L2 evicted
before each repeat, as a layer's first touch of its data) and the ones that consume a tensor
another kernel has just written are also timed warm (``cache: "warm"``: repeated without the
eviction, so inputs that fit in the 60 MB L2 are read from it; a GPU-side wait, not a write,
keeps the host ahead of the GPU between repeats). Launch overhead is measured three
ways (see :func:`measure_launch`).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from moesim.calibrate.grids import Grid
from moesim.calibrate.kernels import randn
from moesim.calibrate.section import Section
from moesim.calibrate.timing import Budget, Timer, stats_from_ns, sync

ROW_HIDDEN = 4096  # row width of the norm and permute variants (a typical hidden size)
ROUTER_EXPERTS = 256  # router logits width for softmax and top-k
ROUTER_TOPK = 8

# variant -> (MemoryOp.kind, bytes moved per element of the main input)
VARIANTS: dict[str, tuple[str, float]] = {
    "copy": ("copy", 4.0),
    "add": ("elementwise", 6.0),
    "mul": ("elementwise", 6.0),
    "silu": ("elementwise", 4.0),
    "rmsnorm": ("norm", 4.0),
    "layernorm": ("norm", 4.0),
    "softmax": ("softmax", 4.0),
    "topk": ("topk", 2.0 + ROUTER_TOPK * 10.0 / ROUTER_EXPERTS),
    "gather": ("permute", 4.0 + 8.0 / ROW_HIDDEN),
    "scatter": ("permute", 4.0 + 8.0 / ROW_HIDDEN),
    "index_add": ("permute", 4.0 + 8.0 / ROW_HIDDEN),
    "zeros": ("copy", 2.0),
}
WARM_VARIANTS = ("copy", "add", "mul", "silu", "rmsnorm", "gather", "scatter", "index_add")
WARM_BUSY_US = 40.0  # GPU-side wait before each warm repeat: longer than one launch, touches no memory


def _kernel(variant: str, bufs: list[torch.Tensor], numel: int, device: str) -> Callable[[], object]:
    """The callable for one variant on ``numel`` input elements (views of the shared buffers)."""
    x, y, z = (b[:numel] for b in bufs)
    if variant == "copy":
        return lambda: y.copy_(x)
    if variant == "zeros":
        return lambda: z.zero_()
    if variant in ("add", "mul"):
        fn = torch.add if variant == "add" else torch.mul
        return lambda: fn(x, y, out=z)
    if variant == "silu":
        return lambda: F.silu(x)
    if variant in ("rmsnorm", "layernorm"):
        xr, w = x.view(-1, ROW_HIDDEN), y[:ROW_HIDDEN]
        if variant == "rmsnorm":
            return lambda: F.rms_norm(xr, (ROW_HIDDEN,), w)
        return lambda: F.layer_norm(xr, (ROW_HIDDEN,), w, z[:ROW_HIDDEN])
    if variant in ("softmax", "topk"):
        xr = x.view(-1, ROUTER_EXPERTS)
        if variant == "softmax":
            return lambda: torch.softmax(xr, dim=-1)
        return lambda: torch.topk(xr, ROUTER_TOPK, dim=-1)
    rows = numel // ROW_HIDDEN
    g = torch.Generator(device=device).manual_seed(7)
    idx = torch.randperm(rows, generator=g, device=device)
    xr, zr = x.view(rows, ROW_HIDDEN), z.view(rows, ROW_HIDDEN)
    if variant == "gather":
        return lambda: torch.index_select(xr, 0, idx, out=zr)
    if variant == "index_add":
        half = max(1, rows // 2)  # two source rows per destination row (top-2)
        dst = zr[:half]
        pairs = idx % half
        return lambda: dst.index_add_(0, pairs, xr)
    return lambda: zr.index_copy_(0, idx, xr)


def _numel_for(variant: str, nbytes: int) -> int:
    """Input elements that make ``variant`` move about ``nbytes``, rounded to whole rows."""
    row = ROW_HIDDEN if VARIANTS[variant][0] in ("norm", "permute") else ROUTER_EXPERTS
    numel = int(nbytes / VARIANTS[variant][1])
    return max(row, numel // row * row)


def measure_memory(timer: Timer, grid: Grid, device: str, budget: Budget, caches: tuple[str, ...] = ("cold", "warm"),
                   variants: "tuple[str, ...] | None" = None) -> Section:
    """Every memory variant at every size of the grid (cold), then the warm variants."""
    sec = Section("memory")
    chosen = tuple(VARIANTS) if variants is None else variants
    max_numel = max(_numel_for(v, max(grid.memory_nbytes)) for v in chosen)
    bufs = [randn(max_numel, device, 20 + i) for i in range(3)]
    warm = Timer(device, heat_ms=timer.heat_ms, flush_l2=False, busy_us=WARM_BUSY_US)
    plan = [(v, b, "cold", timer) for v in chosen for b in grid.memory_nbytes] if "cold" in caches else []
    plan += [(v, b, "warm", warm) for v in WARM_VARIANTS if v in chosen for b in grid.memory_warm_nbytes] \
        if "warm" in caches else []
    for variant, nbytes, cache, tm in plan:
        def one(variant: str = variant, nbytes: int = nbytes, cache: str = cache, tm: Timer = tm) -> dict:
            kind, per_elem = VARIANTS[variant]
            numel = _numel_for(variant, nbytes)
            st = tm.time(_kernel(variant, bufs, numel, device))
            return {"op": "memory", "kind": kind, "variant": variant, "dtype": "bf16", "cache": cache,
                    "nbytes": int(numel * per_elem), **st.fields()}
        sec.attempt(f"{variant} {nbytes} {cache}", budget, one)
    return sec


def measure_launch(device: str, budget: Budget, num_kernels: int = 2000) -> Section:
    """Launch overhead of tiny kernels.

    ``eager_back_to_back``: host wall time per kernel when ``num_kernels`` one-element adds are
    issued back to back from Python (launch throughput as a framework sees it).
    ``graph_back_to_back``: GPU time per kernel replaying the same kernels as a CUDA graph
    (the floor with no host in the way). ``single_kernel``: GPU time of one tiny kernel.
    """
    sec = Section("launch")
    x = randn(1, device, 30, torch.float32)

    def eager() -> dict:
        samples = []
        for _ in range(5):
            sync(device)
            t0 = time.perf_counter_ns()
            for _ in range(num_kernels):
                x.add_(1.0)
            sync(device)
            samples.append((time.perf_counter_ns() - t0) / num_kernels)
        return {"op": "launch", "variant": "eager_back_to_back", **stats_from_ns(samples).fields()}

    sec.attempt("eager", budget, eager)
    if device == "cuda":
        sec.attempt("graph", budget, lambda: _graph_launch(x, num_kernels))
        sec.attempt("single", budget, lambda: {"op": "launch", "variant": "single_kernel",
                                               **Timer(device, min_repeats=50).time(lambda: x.add_(1.0)).fields()})
    return sec


def _graph_launch(x: torch.Tensor, num_kernels: int) -> dict:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        x.add_(1.0)
        with torch.cuda.graph(graph, stream=stream):
            for _ in range(num_kernels):
                x.add_(1.0)
    torch.cuda.current_stream().wait_stream(stream)
    timer = Timer("cuda", warmup=1, min_repeats=5, max_repeats=10, flush_l2=False)
    st = timer.time(graph.replay)
    per = [v / num_kernels for v in (st.median_ns, st.p25_ns, st.p75_ns, st.min_ns, st.max_ns)]
    return {"op": "launch", "variant": "graph_back_to_back", "time_ns": round(per[0], 1), "repeats": st.repeats,
            "p25_ns": round(per[1], 1), "p75_ns": round(per[2], 1), "min_ns": round(per[3], 1), "max_ns": round(per[4], 1)}

