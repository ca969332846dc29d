"""Grouped GEMMs over skewed token-count vectors (section ``grouped_gemm_v``).

``grouped_gemm_v``: ``torch._grouped_mm`` (bf16, one kernel for all local experts) over count
vectors of 8..256 experts with 0..32k tokens each, drawn uniform, Zipf-skewed, with half the
experts empty, with one hot expert, or split exactly equally, on MoE expert shapes (Qwen3-30B-A3B,
DeepSeek-V2-Lite, Qwen3-235B, DeepSeek-V3, Mixtral) in both projection directions, and as the
fused fc1 (gate and up as one ``2 * ffn`` wide projection, as Megatron-Core and Transformer Engine
run it) and its transpose, in the three layouts autograd runs. A total over the row or FLOP cap
is cut to it (whole rows per expert), so that many-expert shapes are measured at their largest
per-expert counts too:

* ``fwd``:   ``y[M, n] = x[M, k] @ W[G, k, n]`` with ``W`` the transposed view of a ``[G, n, k]``
  parameter (torchtitan's ``w.transpose(-2, -1)``), groups split by ``offs`` over M;
* ``dgrad``: the same product against a row-major ``[G, k, n]`` weight (the input gradient
  ``dy @ w`` of a ``[G, n_out, k_out]`` parameter, re-labelled so that ``n`` is the output width);
* ``wgrad``: ``dW[G, k, n] = x^T[k, M] @ dy[M, n]``, groups split by ``offs`` over the tokens.

Rows carry the whole count vector; the first vector of each (shape, layout, total) also carries
``dense_ns``, one dense ``torch.mm`` over the same total rows (the reference a grouped kernel is
compared with). Vectors are ordered in rounds (every shape first with a uniform and a Zipf vector,
then hot, empty and equal ones, then small and large totals) so that a budget cut drops the
last rounds, not whole shapes. A vector the kernel refuses (alignment) is retried with counts
rounded up to 16 and the row says so (``aligned``).

``--device cpu`` runs the section on tiny shapes in seconds. The FP8 GEMMs, the grouped FP8
kernel and the quantize kernels (section ``fp8_scaled``) are :mod:`moesim.calibrate.fp8`'s, on
this module's plan and count vectors.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from moesim.calibrate.grids import Grid
from moesim.calibrate.section import Section
from moesim.calibrate.timing import Budget, Timer

MAX_TOKENS_PER_EXPERT = 32768
ALIGN_ROWS = 16  # fp8 grouped kernels (and bf16 ones on some builds) want group offsets in 16s


@dataclass(frozen=True)
class ExpertShape:
    """One MoE model's expert FFN: ``hidden`` -> ``ffn`` -> ``hidden``, at several local expert counts."""

    model: str
    hidden: int
    ffn: int
    experts: tuple[int, ...]
    fused_fc1: bool = True  # also gate and up as one 2 * ffn wide projection (Megatron-Core, TE)

    def projections(self) -> tuple[tuple[int, int], ...]:
        """(n, k) of every expert GEMM this shape measures: up (or gate) and down, and with
        ``fused_fc1`` the fused fc1 and its transpose (what its input gradient multiplies)."""
        pairs = ((self.ffn, self.hidden), (self.hidden, self.ffn))
        return pairs + (((2 * self.ffn, self.hidden), (self.hidden, 2 * self.ffn)) if self.fused_fc1 else ())


@dataclass(frozen=True)
class GroupedPlan:
    """What one ``grouped_gemm_v`` run measures: shapes, mean tokens per expert, and caps."""

    shapes: tuple[ExpertShape, ...]
    avg_tokens: tuple[int, ...]  # round 0..1 use the middle two; round 2 the ends
    max_rows: int
    max_flops: float
    zipf: tuple[float, ...]
    fp8_shapes: tuple[tuple[int, int], ...]  # (n, k) for the fp8 grouped kernel
    fp8_experts: tuple[int, ...]
    cast_numel: tuple[int, ...]


GPU_PLAN = GroupedPlan(
    shapes=(ExpertShape("qwen3_30b_a3b", 2048, 768, (128, 32, 8)),
            ExpertShape("deepseek_v2_lite", 2048, 1408, (64, 16)),
            ExpertShape("qwen3_235b_a22b", 4096, 1536, (128, 16)),
            ExpertShape("deepseek_v3", 7168, 2048, (256, 32, 8)),
            ExpertShape("mixtral_8x7b", 4096, 14336, (8,))),
    avg_tokens=(32, 256, 2048, 8192),
    max_rows=131072,
    max_flops=4e12,
    zipf=(0.8, 1.2, 2.0),
    fp8_shapes=((1536, 2048), (2048, 768), (2048, 7168), (7168, 2048)),
    fp8_experts=(8, 32, 128),
    cast_numel=tuple(2**p for p in range(18, 30, 1)),  # 256k .. 512M elements (bf16 512 KiB .. 1 GiB)
)
# Section ``grouped_gemm_v_more`` (asked for by name): more public MoE expert shapes, so that a
# model's shape lies nearer a measured one (an unmeasured shape borrows its nearest measured
# shape's ratio; moesim/costs/grouped.py): GLM-4.5, Qwen3-Coder-480B-A35B, Qwen3-Next-80B-A3B, DBRX.
# None of them is a shape of the held-out layer sets (calibrate/layer_cases.py).
MORE_PLAN = replace(
    GPU_PLAN,
    shapes=(ExpertShape("glm4_5", 5120, 1536, (160, 32, 8)),
            ExpertShape("qwen3_coder_480b", 6144, 2560, (160, 16)),
            ExpertShape("qwen3_next_80b", 2048, 512, (512, 64)),
            ExpertShape("dbrx", 6144, 10752, (16, 4))))
CPU_PLAN = GroupedPlan(
    shapes=(ExpertShape("tiny", 64, 32, (8, 4), fused_fc1=False),),
    avg_tokens=(2, 8, 32, 64),
    max_rows=512,
    max_flops=1e8,
    zipf=(1.2,),
    fp8_shapes=((32, 64),),
    fp8_experts=(4,),
    cast_numel=(4096, 16384),
)


CHUNK = 2**28  # elements per fill of a large buffer (keeps every kernel's index 32-bit)


def randn_big(numel: int, device: str, seed: int) -> torch.Tensor:
    """Like :func:`moesim.calibrate.kernels.randn` (seeded standard normals, bf16), filled in chunks,
    for buffers of more than 2^31 elements (256 experts' weights)."""
    out = torch.empty(numel, device=device, dtype=torch.bfloat16)
    g = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, numel, CHUNK):
        out[start:start + CHUNK].normal_(generator=g)
    return out


def fp8_big(numel: int, device: str, seed: int) -> torch.Tensor:
    """An e4m3 buffer of :func:`randn_big`'s normals cast chunk by chunk (no bf16 copy of the
    whole buffer)."""
    out = torch.empty(numel, device=device, dtype=torch.float8_e4m3fn)
    src = randn_big(min(numel, CHUNK), device, seed)
    for start in range(0, numel, CHUNK):
        part = out[start:start + CHUNK]
        part.copy_(src[: part.numel()])
    return out


def plan_for(device: str) -> GroupedPlan:
    return GPU_PLAN if device == "cuda" else CPU_PLAN


# -- count vectors -----------------------------------------------------------------------------
def count_vector(kind: str, experts: int, total: int, rng: np.random.Generator) -> list[int]:
    """Token counts of ``experts`` experts summing to about ``total`` (each <= 32768).

    ``uniform``: multinomial with equal probabilities; ``zipfS``: probabilities ~ 1 / rank^S over a
    random ranking; ``empty``: half the experts get nothing, the rest uniform; ``hot``: one expert
    draws 40% of the tokens; ``equal``: exact equal split.
    """
    if kind == "equal":
        counts = np.full(experts, total // experts)
    else:
        if kind == "uniform":
            p = np.ones(experts)
        elif kind.startswith("zipf"):
            p = 1.0 / np.arange(1, experts + 1) ** float(kind[4:])
            p = p[rng.permutation(experts)]
        elif kind == "empty":
            p = np.zeros(experts)
            p[rng.choice(experts, size=max(1, experts // 2), replace=False)] = 1.0
        elif kind == "hot":
            p = np.full(experts, 0.6 / max(1, experts - 1))
            p[rng.integers(experts)] = 0.4
        else:
            raise ValueError(f"unknown count-vector kind {kind!r}")
        counts = rng.multinomial(total, p / p.sum())
    return [int(c) for c in np.minimum(counts, MAX_TOKENS_PER_EXPERT)]


def vector_kinds(round_: int, zipf: tuple[float, ...]) -> tuple[str, ...]:
    """Round 0: uniform and the middle Zipf exponent; 1: hot, empty, equal; 2: uniform and the
    mildest Zipf (at the small and large totals); 3: the other exponents."""
    z = tuple(f"zipf{s:g}" for s in zipf)
    mid = z[len(z) // 2]
    return (("uniform", mid), ("hot", "empty", "equal"), ("uniform", z[0]), tuple(x for x in z if x != mid))[round_]


def grouped_specs(plan: GroupedPlan) -> Iterator[tuple[int, str, int, int, str, list[int], str]]:
    """(round, layout, n, k, model, counts, kind) in measuring order (round by round)."""
    rng = np.random.default_rng(13)
    mid, ends = plan.avg_tokens[1:3], plan.avg_tokens[::3]
    rounds = ((0, mid), (1, mid), (2, ends), (3, mid))
    seen: set[tuple] = set()
    for round_, avgs in rounds:
        for s, layout in itertools.product(plan.shapes, ("fwd", "dgrad", "wgrad")):
            for (n, k), experts, avg in itertools.product(s.projections(), s.experts, avgs):
                total = capped_total(plan, experts, avg, n, k)
                for kind in vector_kinds(round_, plan.zipf):
                    if total < experts or (layout, n, k, experts, total, kind) in seen:
                        continue
                    seen.add((layout, n, k, experts, total, kind))
                    yield round_, layout, n, k, s.model, count_vector(kind, experts, total, rng), kind


def capped_total(plan: GroupedPlan, experts: int, avg: int, n: int, k: int) -> int:
    """``experts * avg`` rows, cut to the plan's row and FLOP caps (a whole number of rows per
    expert), so that many-expert shapes are still measured at their largest per-expert counts
    instead of dropped; 0 where not even one row per expert fits."""
    cap = min(plan.max_rows, int(plan.max_flops / (2.0 * n * k)))
    return min(experts * avg, cap // experts * experts)


# -- calls ---------------------------------------------------------------------------------------
def group_offsets(counts: list[int], device: str) -> torch.Tensor:
    """``offs`` of a grouped call: the int32 running sum of the counts, on ``device``."""
    return torch.tensor(np.cumsum(counts), device=device, dtype=torch.int32)


def grouped_call(layout: str, bufs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], counts: list[int],
                 n: int, k: int, device: str) -> Callable[[], torch.Tensor]:
    """One ``torch._grouped_mm`` of ``layout`` over ``counts`` on views of (activation, grad, weight) buffers."""
    a_buf, b_buf, w_buf = bufs
    rows, groups, offs = sum(counts), len(counts), group_offsets(counts, device)
    if layout == "fwd":
        x, w = a_buf[: rows * k].view(rows, k), w_buf[: groups * n * k].view(groups, n, k).transpose(-2, -1)
        return lambda: torch._grouped_mm(x, w, offs=offs)
    if layout == "dgrad":
        dy, w = a_buf[: rows * k].view(rows, k), w_buf[: groups * k * n].view(groups, k, n)
        return lambda: torch._grouped_mm(dy, w, offs=offs)
    x, dy = a_buf[: rows * k].view(rows, k), b_buf[: rows * n].view(rows, n)
    return lambda: torch._grouped_mm(x.t(), dy, offs=offs)


def dense_call(layout: str, bufs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], rows: int,
               n: int, k: int) -> Callable[[], torch.Tensor]:
    """The dense ``torch.mm`` doing a grouped call's FLOPs as one GEMM (same operand layouts)."""
    a_buf, b_buf, w_buf = bufs
    if layout == "wgrad":
        x, dy = a_buf[: rows * k].view(rows, k), b_buf[: rows * n].view(rows, n)
        return lambda: torch.mm(x.t(), dy)
    a = a_buf[: rows * k].view(rows, k)
    w = w_buf[: n * k].view(n, k).t() if layout == "fwd" else w_buf[: k * n].view(k, n)
    return lambda: torch.mm(a, w)


def aligned_counts(counts: list[int]) -> list[int]:
    """``counts`` each rounded up to a multiple of ``ALIGN_ROWS``."""
    return [-(-c // ALIGN_ROWS) * ALIGN_ROWS for c in counts]


def measure_grouped_gemm_v(timer: Timer, grid: Grid, device: str, budget: Budget,
                           plan: "GroupedPlan | None" = None) -> Section:
    """bf16 ``torch._grouped_mm`` over skewed count vectors (see the module docstring); ``plan``:
    the shapes and caps (default: the device's standard plan)."""
    sec = Section("grouped_gemm_v")
    if not hasattr(torch, "_grouped_mm"):
        sec.errors.append(f"grouped_gemm_v: torch {torch.__version__} has no torch._grouped_mm")
        return sec
    plan = plan or plan_for(device)
    specs = list(grouped_specs(plan))
    rows_max = max(-(-sum(s[5]) // ALIGN_ROWS) * ALIGN_ROWS + ALIGN_ROWS * len(s[5]) for s in specs)
    kmax = max(max(n, k) for s in plan.shapes for n, k in s.projections())
    wmax = max(max(s.experts) * n * k for s in plan.shapes for n, k in s.projections())
    bufs = (randn_big(rows_max * kmax, device, 80), randn_big(rows_max * kmax, device, 81), randn_big(wmax, device, 82))
    dense_done: set[tuple] = set()
    for round_, layout, n, k, model, counts, kind in specs:
        def one(layout=layout, n=n, k=k, model=model, counts=counts, kind=kind, round_=round_) -> dict:
            row = _time_grouped(timer, bufs, layout, counts, n, k, device)
            key = (layout, n, k, sum(row["counts"]))
            if key not in dense_done:
                dense_done.add(key)
                row["dense_ns"] = timer.time(dense_call(layout, bufs, sum(row["counts"]), n, k)).median_ns
            return {**row, "vector": kind, "model": model, "round": round_}
        sec.attempt(f"{layout} n={n} k={k} {kind} G={len(counts)} rows={sum(counts)}", budget, one)
    return sec


def measure_grouped_gemm_v_more(timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    """The ``grouped_gemm_v`` rows of :data:`MORE_PLAN`'s shapes (the CPU smoke plan on a CPU)."""
    return measure_grouped_gemm_v(timer, grid, device, budget, MORE_PLAN if device == "cuda" else CPU_PLAN)


def _time_grouped(timer: Timer, bufs: tuple, layout: str, counts: list[int], n: int, k: int, device: str) -> dict:
    """Time one grouped call; a refused vector is retried with counts rounded up to 16."""
    extra: dict = {}
    try:
        st = timer.time(grouped_call(layout, bufs, counts, n, k, device))
    except RuntimeError:
        counts, extra = aligned_counts(counts), {"aligned": ALIGN_ROWS}
        st = timer.time(grouped_call(layout, bufs, counts, n, k, device))
    return {"op": "grouped_gemm_v", "dtype": "bf16", "layout": layout, "scaling": "", "n": n, "k": k,
            "counts": counts, **extra, **st.fields()}


# -- Transformer Engine's grouped GEMM (section ``grouped_gemm_te``) ---------------------------
TE_STREAMS = 4   # TE's compute streams (transformer_engine/common/util/multi_stream.cpp)
# Megatron-Core's expert-parallel layouts leave few experts a GPU: TE's per-group loop is measured
# at 4-32 local experts of the same expert shapes (fused fc1 included, as TEGroupedMLP runs it)
TE_PLAN = replace(GPU_PLAN, shapes=(*(replace(s, experts=(32, 16, 8, 4)) for s in GPU_PLAN.shapes[:4]),
                                    ExpertShape("gpt_oss_120b", 2880, 2880, (16, 8, 4))),
                  avg_tokens=(64, 256, 1024, 4096))


def te_grouped_call(layout: str, bufs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], counts: list[int],
                    n: int, k: int, device: str) -> Callable[[], None]:
    """Transformer Engine's grouped GEMM on Hopper as ``nvte_multi_tensor_gemm`` takes its default
    cuBLAS path (``multi_stream_cublas_gemm``): the caller's stream records an event, ``TE_STREAMS``
    streams wait for it, group ``i``'s GEMM runs on stream ``i % TE_STREAMS`` and the caller's
    stream waits for all of them; one stream on a CPU. bf16 buffers: ``torch.mm`` per group;
    fp8 (e4m3) buffers: ``torch._scaled_mm`` per group with one fp32 scale per operand (TE's
    current / delayed scaling), both operands K-major as Hopper's FP8 GEMM takes them (the
    transposed fp8 copies TE's quantize writes: ``w^T`` for dgrad, ``x^T`` and ``dy^T`` per group
    for wgrad), so every group's rows must be a multiple of 16 (:func:`aligned_counts`)."""
    a_buf, b_buf, w_buf = bufs
    rows, groups = sum(counts), len(counts)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    live = [i for i in range(groups) if counts[i] > 0]
    if a_buf.dtype == torch.float8_e4m3fn:
        one = torch.ones((), device=a_buf.device, dtype=torch.float32)

        def mm(a: torch.Tensor, b_nk: torch.Tensor) -> Callable[[], torch.Tensor]:   # a[m, K] @ b_nk[n, K]^T
            return lambda: torch._scaled_mm(a, b_nk.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                            use_fast_accum=True)
        if layout == "fwd":
            x, w = a_buf[: rows * k].view(rows, k), w_buf[: groups * n * k].view(groups, n, k)
            calls = [mm(x[starts[i]:starts[i + 1]], w[i]) for i in live]
        elif layout == "dgrad":   # dy[rows, k] @ w[k, n]: the K-major copy w^T[n, k]
            x, wt = a_buf[: rows * k].view(rows, k), w_buf[: groups * n * k].view(groups, n, k)
            calls = [mm(x[starts[i]:starts[i + 1]], wt[i]) for i in live]
        else:                     # dW[k, n] = x^T dy: x^T[k, c] and dy^T[n, c], per group contiguous
            calls = [mm(a_buf[starts[i] * k: starts[i + 1] * k].view(k, counts[i]),
                        b_buf[starts[i] * n: starts[i + 1] * n].view(n, counts[i])) for i in live]
    else:
        x = a_buf[: rows * k].view(rows, k)
        if layout == "fwd":
            w = w_buf[: groups * n * k].view(groups, n, k)
            calls = [(lambda i=i: torch.mm(x[starts[i]:starts[i + 1]], w[i].t())) for i in range(groups)]
        elif layout == "dgrad":
            w = w_buf[: groups * k * n].view(groups, k, n)
            calls = [(lambda i=i: torch.mm(x[starts[i]:starts[i + 1]], w[i])) for i in range(groups)]
        else:
            dy = b_buf[: rows * n].view(rows, n)
            calls = [(lambda i=i: torch.mm(x[starts[i]:starts[i + 1]].t(), dy[starts[i]:starts[i + 1]]))
                     for i in range(groups)]
    if device != "cuda":
        return lambda: [c() for c in calls] and None
    streams = [torch.cuda.Stream() for _ in range(max(1, min(TE_STREAMS, len(calls))))]

    def run() -> None:
        main = torch.cuda.current_stream()
        start = torch.cuda.Event()
        start.record(main)
        for s in streams:
            s.wait_event(start)
        for i, c in enumerate(calls):
            with torch.cuda.stream(streams[i % len(streams)]):
                c()
        for s in streams:
            done = torch.cuda.Event()
            done.record(s)
            main.wait_event(done)
    return run


def _te_graph_time(timer: Timer, fn: Callable[[], None]) -> dict:
    """One TE-pattern call captured in a CUDA graph (its fork over the streams and join
    included), the replay timed by the section's ``timer`` under the protocol every other row
    has (queued heat, an L2 flush before each repeat): the per-group launches, issued by TE from
    C++, neither show nor starve the GPU, as a Python loop timed directly would."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    try:
        return {**timer.time(graph.replay).fields(), "timing": "cuda_graph"}
    finally:
        del graph


def measure_grouped_gemm_te(timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    """Transformer Engine's grouped GEMM (:func:`te_grouped_call`) over :data:`TE_PLAN`'s count
    vectors (the CPU smoke plan on a CPU), the three layouts, each call timed as a CUDA graph's
    replay (:func:`_te_graph_time`), bf16 and, for the first two rounds'
    vectors (each right after its bf16 row, so that a budget cut keeps both alike), fp8 with
    per-tensor scales (TE's current scaling), counts rounded up to 16; rows
    ``{"op": "grouped_gemm_te", "dtype", "layout", "scaling": "" | "tensorwise", "n", "k", "counts",
    "time_ns", ...}`` priced by :mod:`moesim.costs.grouped` for ``GroupedGemm(impl="te")``."""
    sec = Section("grouped_gemm_te")
    plan = TE_PLAN if device == "cuda" else CPU_PLAN
    specs = list(grouped_specs(plan))
    rows_max = max(sum(s[5]) + ALIGN_ROWS * len(s[5]) for s in specs)
    kmax = max(max(n, k) for s in plan.shapes for n, k in s.projections())
    wmax = max(max(s.experts) * n * k for s in plan.shapes for n, k in s.projections())
    bufs = {"bf16": (randn_big(rows_max * kmax, device, 83), randn_big(rows_max * kmax, device, 84),
                     randn_big(wmax, device, 85))}
    fp8_ok, why = _fp8_te_runs(device)
    if fp8_ok:
        bufs["fp8"] = (fp8_big(rows_max * kmax, device, 86), fp8_big(rows_max * kmax, device, 87),
                       fp8_big(wmax, device, 88))
    else:
        sec.errors.append(f"grouped_gemm_te: no fp8 rows: {why}")
    for round_, layout, n, k, model, counts, kind in specs:
        for dtype in ("bf16", "fp8") if fp8_ok and round_ <= 1 else ("bf16",):
            def one(layout=layout, n=n, k=k, model=model, counts=counts, kind=kind, round_=round_, dtype=dtype) -> dict:
                cs = aligned_counts(counts) if dtype == "fp8" else counts
                call = te_grouped_call(layout, bufs[dtype], cs, n, k, device)
                st = _te_graph_time(timer, call) if device == "cuda" else timer.time(call).fields()
                return {"op": "grouped_gemm_te", "dtype": dtype, "layout": layout,
                        "scaling": "tensorwise" if dtype == "fp8" else "", "n": n, "k": k, "counts": cs,
                        **({"aligned": ALIGN_ROWS} if dtype == "fp8" else {}),
                        "streams": TE_STREAMS if device == "cuda" else 1, **st, "vector": kind,
                        "model": model, "round": round_}
            sec.attempt(f"te {dtype} {layout} n={n} k={k} {kind} G={len(counts)} rows={sum(counts)}", budget, one)
    return sec


def _fp8_te_runs(device: str) -> tuple[bool, str]:
    """Whether one tiny per-tensor-scaled ``torch._scaled_mm`` runs here (and why not)."""
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return False, f"torch {torch.__version__} has no float8_e4m3fn / _scaled_mm"
    try:
        bufs = (fp8_big(32 * 32, device, 1), fp8_big(32 * 32, device, 2), fp8_big(32 * 32, device, 3))
        te_grouped_call("wgrad", bufs, [16, 16], 32, 16, device)()
        te_grouped_call("fwd", bufs, [16, 16], 32, 16, device)()
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
        return False, f"torch._scaled_mm does not run on {device} with torch {torch.__version__}: {str(exc)[:160]}"
    return True, ""
