"""FP8 scaled GEMMs, the FP8 grouped GEMM and the FP8 quantize kernels (section ``fp8_scaled``).

``fp8_scaled``: ``torch._scaled_mm`` with rowwise scales (fp32 per row of A and per column of B,
as torchao / torchtitan rowwise float8) and blockwise scales (1x128 activation, 128x128 weight
blocks, where the installed torch and GPU accept them; otherwise an ``errors`` entry says so),
``torch._scaled_grouped_mm`` (rowwise, counts padded to 16; forward, dgrad and wgrad layouts, each
where the build runs it) where present, and the quantize
kernels a torchao-style eager rowwise/tensorwise cast launches, as ``memory`` rows of kind
``cast`` (``nbytes`` = bf16 read + fp8 written). ``--device cpu`` runs the section on tiny
shapes in seconds; what CPU torch lacks is recorded in the section's errors.
Shapes, expert counts and count vectors come from :mod:`moesim.calibrate.grouped`'s plan.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch

from moesim.calibrate.grids import Grid
from moesim.calibrate.grouped import (ALIGN_ROWS, aligned_counts, count_vector, fp8_big, group_offsets,
                                      plan_for)
from moesim.calibrate.kernels import randn
from moesim.calibrate.section import Section, error_line
from moesim.calibrate.timing import Budget, Timer

FP8_MAX = 448.0  # largest e4m3fn value
BLOCK = 128  # blockwise fp8 scale block edge


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
    a, w = fp8_big(256 * 256, device, 90).view(256, 256), fp8_big(256 * 256, device, 91).view(256, 256)
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
    a_buf, w_buf = fp8_big(max(ms) * max(nks), device, 92), fp8_big(max(nks) ** 2, device, 93)
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
    rows, groups, offs = sum(counts), len(counts), group_offsets(counts, device)
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
    bufs = (fp8_big(32 * 128, device, 97), fp8_big(32 * 128, device, 96), fp8_big(2 * 128 * 128, device, 98))
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
    bufs = (fp8_big(rows_max * kmax, device, 94), fp8_big(rows_max * kmax, device, 96),
            fp8_big(max(plan.fp8_experts) * max(n * k for n, k in plan.fp8_shapes), device, 95))
    kinds = ("uniform", "zipf1.2")
    for (n, k), experts, avg, kind in itertools.product(plan.fp8_shapes, plan.fp8_experts, avgs, kinds):
        counts = aligned_counts(count_vector(kind, experts, experts * avg, rng))
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
