"""Grouped GEMMs over skewed token-count vectors, FP8 scaled GEMMs and the FP8 quantize kernels.

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

``fp8_scaled``: ``torch._scaled_mm`` with rowwise scales (fp32 per row of A and per column of B,
as torchao / torchtitan rowwise float8) and blockwise scales (1x128 activation, 128x128 weight
blocks, where the installed torch and GPU accept them; otherwise an ``errors`` entry says so),
``torch._scaled_grouped_mm`` (rowwise, counts padded to 16; forward, dgrad and wgrad layouts, each
where the build runs it) where present, and the quantize
kernels a torchao-style eager rowwise/tensorwise cast launches, as ``memory`` rows of kind
``cast`` (``nbytes`` = bf16 read + fp8 written). ``--device cpu`` runs both sections on tiny
shapes in seconds; what CPU torch lacks is recorded in the section's errors.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from moesim.calibrate.grids import Grid
from moesim.calibrate.kernels import randn
from moesim.calibrate.section import Section, error_line
from moesim.calibrate.timing import Budget, Timer

MAX_TOKENS_PER_EXPERT = 32768
ALIGN_ROWS = 16  # fp8 grouped kernels (and bf16 ones on some builds) want group offsets in 16s
FP8_MAX = 448.0  # largest e4m3fn value
BLOCK = 128  # blockwise fp8 scale block edge


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
def _offs(counts: list[int], device: str) -> torch.Tensor:
    return torch.tensor(np.cumsum(counts), device=device, dtype=torch.int32)


def grouped_call(layout: str, bufs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], counts: list[int],
                 n: int, k: int, device: str) -> Callable[[], torch.Tensor]:
    """One ``torch._grouped_mm`` of ``layout`` over ``counts`` on views of (activation, grad, weight) buffers."""
    a_buf, b_buf, w_buf = bufs
    rows, groups, offs = sum(counts), len(counts), _offs(counts, device)
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


def _aligned(counts: list[int]) -> list[int]:
    return [-(-c // ALIGN_ROWS) * ALIGN_ROWS for c in counts]


def measure_grouped_gemm_v(timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    """bf16 ``torch._grouped_mm`` over skewed count vectors (see the module docstring)."""
    sec = Section("grouped_gemm_v")
    if not hasattr(torch, "_grouped_mm"):
        sec.errors.append(f"grouped_gemm_v: torch {torch.__version__} has no torch._grouped_mm")
        return sec
    plan = plan_for(device)
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


def _time_grouped(timer: Timer, bufs: tuple, layout: str, counts: list[int], n: int, k: int, device: str) -> dict:
    """Time one grouped call; a refused vector is retried with counts rounded up to 16."""
    extra: dict = {}
    try:
        st = timer.time(grouped_call(layout, bufs, counts, n, k, device))
    except RuntimeError:
        counts, extra = _aligned(counts), {"aligned": ALIGN_ROWS}
        st = timer.time(grouped_call(layout, bufs, counts, n, k, device))
    return {"op": "grouped_gemm_v", "dtype": "bf16", "layout": layout, "scaling": "", "n": n, "k": k,
            "counts": counts, **extra, **st.fields()}


# -- fp8 -----------------------------------------------------------------------------------------
def _fp8(numel: int, device: str, seed: int) -> torch.Tensor:
    out = torch.empty(numel, device=device, dtype=torch.float8_e4m3fn)
    src = randn_big(min(numel, CHUNK), device, seed)
    for start in range(0, numel, CHUNK):  # chunk by chunk: no bf16 copy of the whole buffer
        part = out[start:start + CHUNK]
        part.copy_(src[: part.numel()])
    return out


def scaled_mm_call(scaling: str, a: torch.Tensor, w: torch.Tensor, layout: int = 0) -> Callable[[], torch.Tensor]:
    """``torch._scaled_mm(a[m, k], w[n, k]^T)`` with ``scaling`` scales (bf16 out, fast accumulation).

    ``layout`` picks one of the blockwise scale layouts torch versions accept (0: outer-dim-major
    ``scale_a`` [m, k/128] and ``scale_b`` [k/128, n/128]; 1: both contiguous; 2: the
    ``torch.nn.functional.scaled_mm`` recipe API, ``scale_b`` [round_up(k/128, 4), n/128])."""
    m, k = a.shape
    n = w.shape[0]
    dev = a.device
    if scaling == "tensorwise":
        sa = sb = torch.ones((), device=dev, dtype=torch.float32)
    elif scaling == "rowwise":
        sa, sb = torch.ones(m, 1, device=dev), torch.ones(1, n, device=dev)
    elif layout == 2:  # torch.nn.functional.scaled_mm with explicit block recipes (torch >= 2.10)
        from torch.nn.functional import ScalingType, scaled_mm
        kb = -(-k // BLOCK)
        l4 = -(-kb // 4) * 4
        sa = torch.ones(kb, m, device=dev).t()
        sb = torch.ones(-(-n // BLOCK), l4, device=dev).t()
        return lambda: scaled_mm(a, w.t(), sa, ScalingType.BlockWise1x128, sb, ScalingType.BlockWise128x128,
                                 output_dtype=torch.bfloat16)
    elif layout == 0:
        sa = torch.ones(-(-k // BLOCK), m, device=dev).t()
        sb = torch.ones(-(-n // BLOCK), -(-k // BLOCK), device=dev).t()
    else:
        sa = torch.ones(m, -(-k // BLOCK), device=dev)
        sb = torch.ones(-(-k // BLOCK), -(-n // BLOCK), device=dev)
    return lambda: torch._scaled_mm(a, w.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16,
                                    use_fast_accum=scaling != "blockwise")


def _probe_blockwise(device: str) -> tuple[int | None, str]:
    """The first blockwise scale layout this torch and GPU run (None and the error if none)."""
    a, w = _fp8(256 * 256, device, 90).view(256, 256), _fp8(256 * 256, device, 91).view(256, 256)
    errs = []
    for layout in (0, 1, 2):
        try:
            scaled_mm_call("blockwise", a, w, layout)()
            return layout, ""
        except (RuntimeError, ValueError, TypeError, ImportError) as exc:
            errs.append(f"layout {layout}: {error_line(exc, 120)}")
    return None, "; ".join(errs)


def measure_fp8_scaled(timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    """FP8 GEMMs by scale layout, the FP8 grouped GEMM and the quantize kernels (module docstring)."""
    sec = Section("fp8_scaled")
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        sec.errors.append(f"fp8_scaled: torch {torch.__version__} has no float8_e4m3fn / _scaled_mm")
        return sec
    _fp8_gemms(sec, timer, grid, device, budget)
    _fp8_grouped(sec, timer, device, budget)
    _casts(sec, timer, device, budget)
    return sec


def _fp8_gemms(sec: Section, timer: Timer, grid: Grid, device: str, budget: Budget) -> None:
    ms, nks = (grid.fp8_m, grid.fp8_nk) if device == "cuda" else ((16, 32), (128, 256))
    a_buf, w_buf = _fp8(max(ms) * max(nks), device, 92), _fp8(max(nks) ** 2, device, 93)
    scalings = ["rowwise"]
    block_layout, err = _probe_blockwise(device)
    if block_layout is None:
        sec.errors.append(f"fp8_scaled: blockwise (1x128 x 128x128) _scaled_mm not supported by torch "
                          f"{torch.__version__} on {device}: {err}")
    else:
        scalings.append("blockwise")
    for scaling, m, n, k in itertools.product(scalings, ms, nks, nks):
        def one(scaling=scaling, m=m, n=n, k=k) -> dict:
            a, w = a_buf[: m * k].view(m, k), w_buf[: n * k].view(n, k)
            st = timer.time(scaled_mm_call(scaling, a, w, block_layout or 0))
            extra = {"scale_layout": block_layout} if scaling == "blockwise" else {}
            return {"op": "gemm", "dtype": "fp8", "layout": "fwd", "scaling": scaling, "m": m, "n": n, "k": k,
                    **extra, **st.fields()}
        sec.attempt(f"{scaling} m={m} n={n} k={k}", budget, one)


FP8_GROUPED_LAYOUTS = ("fwd", "dgrad", "wgrad")


def fp8_grouped_call(layout: str, bufs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], counts: list[int],
                     n: int, k: int, device: str, scales_2d: int = 0) -> Callable[[], torch.Tensor]:
    """One rowwise ``torch._scaled_grouped_mm`` of ``layout`` for a projection ``[n, k]`` (forward
    ``y = x w^T``) on views of (activation, grad, weight) fp8 buffers, operands in the layouts the
    kernel takes (A K-contiguous, B column-major: the transposed fp8 copies a framework keeps):
    fwd ``x[rows,k] @ w^T`` (3-D weights), dgrad ``dy[rows,n] @ w`` (3-D), wgrad ``x^T @ dy`` with
    the groups along the token dimension (2-D x 2-D, one ``[k, n]`` result per group).
    ``scales_2d`` picks the wgrad scale shapes (:data:`_WGRAD_SCALES`)."""
    a_buf, g_buf, w_buf = bufs
    rows, groups, offs = sum(counts), len(counts), _offs(counts, device)
    ones = lambda *shape: torch.ones(*shape, device=device)  # noqa: E731
    if layout == "fwd":
        a, b = a_buf[: rows * k].view(rows, k), w_buf[: groups * n * k].view(groups, n, k).transpose(-2, -1)
        sa, sb = ones(rows), ones(groups, n)
    elif layout == "dgrad":
        a, b = g_buf[: rows * n].view(rows, n), w_buf[: groups * n * k].view(groups, k, n).transpose(-2, -1)
        sa, sb = ones(rows), ones(groups, k)
    else:
        a, b = a_buf[: k * rows].view(k, rows), g_buf[: n * rows].view(n, rows).t()
        sa, sb = _WGRAD_SCALES[scales_2d](k, n, groups, ones)
    return lambda: torch._scaled_grouped_mm(a, b, sa, sb, offs=offs, out_dtype=torch.bfloat16, use_fast_accum=True)


# 2-D x 2-D rowwise scale shapes torch builds have taken: per (group, row of A) and (group, column of B)
_WGRAD_SCALES = (lambda k, n, g, ones: (ones(k * g), ones(n * g)),
                 lambda k, n, g, ones: (ones(g, k), ones(g, n)))


def _probe_fp8_grouped(layout: str, device: str) -> tuple["int | None", str]:
    """(wgrad scale-shape choice, or 0; None where the layout does not run here, with the error)."""
    bufs = (_fp8(32 * 128, device, 97), _fp8(32 * 128, device, 96), _fp8(2 * 128 * 128, device, 98))
    err = ""
    for choice in range(len(_WGRAD_SCALES) if layout == "wgrad" else 1):
        try:
            fp8_grouped_call(layout, bufs, [16, 16], 128, 128, device, choice)()
            return choice, ""
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
            err = error_line(exc, 160)
    return None, err


def _fp8_grouped(sec: Section, timer: Timer, device: str, budget: Budget) -> None:
    if not hasattr(torch, "_scaled_grouped_mm"):
        sec.errors.append(f"fp8_scaled: torch {torch.__version__} has no torch._scaled_grouped_mm")
        return
    layouts = {}
    for layout in FP8_GROUPED_LAYOUTS:  # one tiny call each: what the build and GPU run, and why not
        choice, err = _probe_fp8_grouped(layout, device)
        if choice is None:
            sec.errors.append(f"fp8_scaled: torch._scaled_grouped_mm ({layout}) not runnable with torch "
                              f"{torch.__version__} on {device}: {err}")
        else:
            layouts[layout] = choice
    if not layouts:
        return
    plan, rng = plan_for(device), np.random.default_rng(17)
    avgs = plan.avg_tokens[1:3]
    kmax = max(max(nk) for nk in plan.fp8_shapes)
    rows_max = max(plan.fp8_experts) * (max(avgs) + ALIGN_ROWS)
    bufs = (_fp8(rows_max * kmax, device, 94), _fp8(rows_max * kmax, device, 96),
            _fp8(max(plan.fp8_experts) * max(n * k for n, k in plan.fp8_shapes), device, 95))
    kinds = ("uniform", "zipf1.2")
    for (n, k), experts, avg, kind in itertools.product(plan.fp8_shapes, plan.fp8_experts, avgs, kinds):
        counts = _aligned(count_vector(kind, experts, experts * avg, rng))
        if 2.0 * sum(counts) * n * k > plan.max_flops:
            continue
        for layout, choice in layouts.items():
            def one(layout=layout, choice=choice, n=n, k=k, counts=counts, kind=kind) -> dict:
                st = timer.time(fp8_grouped_call(layout, bufs, counts, n, k, device, choice))
                return {"op": "grouped_gemm_v", "dtype": "fp8", "layout": layout, "scaling": "rowwise", "n": n,
                        "k": k, "counts": counts, "aligned": ALIGN_ROWS, "vector": kind, **st.fields()}
            sec.attempt(f"scaled_grouped {layout} n={n} k={k} {kind} G={experts} rows={sum(counts)}", budget, one)


def quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchao-style rowwise float8 cast (eager): per-row amax -> fp32 scale -> scaled, clamped e4m3."""
    amax = x.abs().amax(dim=-1, keepdim=True).float()
    scale = FP8_MAX / amax.clamp(min=1e-12)
    return (x.float() * scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale.reciprocal()


def quantize_tensorwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchao-style tensorwise float8 cast (eager): one amax -> one fp32 scale -> scaled, clamped e4m3."""
    scale = FP8_MAX / x.abs().max().float().clamp(min=1e-12)
    return (x.float() * scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale.reciprocal()


CAST_VARIANTS: dict[str, Callable[[torch.Tensor], object]] = {
    "quantize_rowwise": quantize_rowwise,
    "quantize_tensorwise": quantize_tensorwise,
    "cast_fp8": lambda x: x.to(torch.float8_e4m3fn),  # one kernel: what a fused quantize approaches
}
CAST_ROW = 4096  # row width of the rowwise variant


def _casts(sec: Section, timer: Timer, device: str, budget: Budget) -> None:
    numels = plan_for(device).cast_numel
    x_buf = randn(max(numels), device, 96)
    for variant, numel in itertools.product(CAST_VARIANTS, numels):
        def one(variant=variant, numel=numel) -> dict:
            x = x_buf[:numel].view(-1, CAST_ROW if numel >= CAST_ROW else numel)
            st = timer.time(lambda: CAST_VARIANTS[variant](x))
            return {"op": "memory", "kind": "cast", "variant": variant, "dtype": "bf16", "cache": "cold",
                    "nbytes": 3 * numel, **st.fields()}
        sec.attempt(f"{variant} numel={numel}", budget, one)
