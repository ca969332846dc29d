"""Single-GPU kernel measurements: bf16 and fp8 GEMMs, SwiGLU expert FFNs, flash attention.

Inputs are views of a few large random buffers (never zeros: zeros run faster than real data),
allocated once per section. GEMMs use the ``nn.Linear`` layout, ``y[m, n] = x[m, k] @ w[n, k]^T``.
Attention is ``scaled_dot_product_attention`` (causal, bf16, batch and heads as separate
axes); its backward is timed with ``torch.autograd.grad`` so no gradient accumulation is counted. Each function returns a
:class:`Section` of long-format profile samples.
"""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from moesim.calibrate.grids import Grid
from moesim.calibrate.section import Section
from moesim.calibrate.timing import Budget, Timer


def randn(numel: int, device: str, seed: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """A flat buffer of seeded standard-normal values (the measurement inputs)."""
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(numel, generator=g, device=device, dtype=dtype)


def gemm_op(device: str, m: int, n: int, k: int) -> "Callable[[], torch.Tensor]":
    """One bf16 GEMM ``x[m, k] @ w[n, k]^T`` (the ``nn.Linear`` layout) on seeded random
    operands, as a zero-argument call (the probes' GEMM)."""
    a, w = randn(m * k, device, 1).view(m, k), randn(n * k, device, 2).view(n, k)
    return lambda: torch.mm(a, w.t())


def attention_op(device: str, direction: str, b: int, h: int, s: int, d: int) -> "Callable[[], object]":
    """Causal flash attention forward (``direction="fwd"``) or its backward (``torch.autograd.grad``
    of one stored forward) on seeded random ``[b, h, s, d]`` inputs, as a zero-argument call."""
    q, k, v = (randn(b * h * s * d, device, 10 + i).view(b, h, s, d).requires_grad_() for i in range(3))
    if direction == "fwd":
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out, dout = F.scaled_dot_product_attention(q, k, v, is_causal=True), randn(b * h * s * d, device, 13).view(b, h, s, d)
    return lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)


GEMM_LAYOUTS = ("fwd", "bwd_data", "bwd_weight")


def _gemm_call(layout: str, a_buf: torch.Tensor, w_buf: torch.Tensor, c_buf: torch.Tensor,
               m: int, n: int, k: int):
    """``C[m, n] = A[m, k] B[k, n]`` with the operand layouts of one training GEMM.

    ``fwd``: y = x w^T (x row-major, w [n, k] row-major); ``bwd_data``: dx = dy w (both
    row-major); ``bwd_weight``: dw = dy^T x (A is the transpose of a row-major [k, m] tensor).
    """
    c = c_buf[: m * n].view(m, n)
    if layout == "fwd":
        a, b = a_buf[: m * k].view(m, k), w_buf[: n * k].view(n, k).t()
    elif layout == "bwd_data":
        a, b = a_buf[: m * k].view(m, k), w_buf[: k * n].view(k, n)
    else:
        a, b = a_buf[: k * m].view(k, m).t(), w_buf[: k * n].view(k, n)
    return lambda: torch.mm(a, b, out=c)


def measure_gemm(timer: Timer, grid: Grid, device: str, budget: Budget, layouts: tuple[str, ...] = ("fwd",)) -> Section:
    """bf16 GEMM time over the full (M, N, K) grid, for each operand layout in ``layouts``."""
    sec = Section("gemm_bf16")
    mm, nk = max(grid.gemm_m), max(grid.gemm_nk)
    a_buf, w_buf = randn(mm * nk, device, 1), randn(nk * nk, device, 2)
    c_buf = torch.empty(mm * nk, device=device, dtype=torch.bfloat16)
    for layout in layouts:
        for m, n, k in itertools.product(grid.gemm_m, grid.gemm_nk, grid.gemm_nk):
            def one(m: int = m, n: int = n, k: int = k, layout: str = layout) -> dict:
                st = timer.time(_gemm_call(layout, a_buf, w_buf, c_buf, m, n, k))
                return {"op": "gemm", "dtype": "bf16", "layout": layout, "m": m, "n": n, "k": k, **st.fields()}
            sec.attempt(f"{layout} m={m} n={n} k={k}", budget, one)
    return sec


def measure_gemm_bwd_layouts(timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    """The two backward layouts of :func:`measure_gemm` (data and weight gradients)."""
    return measure_gemm(timer, grid, device, budget, layouts=("bwd_data", "bwd_weight"))


def measure_gemm_fp8(timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    """fp8 (e4m3, tensor-wise scales, bf16 output) GEMM time via ``torch._scaled_mm``."""
    sec = Section("gemm_fp8")
    if device != "cuda" or not grid.fp8_m:
        return sec
    mm, nk = max(grid.fp8_m), max(grid.fp8_nk)
    fp8 = torch.float8_e4m3fn
    a_buf = randn(mm * nk, device, 3).to(fp8)
    w_buf = randn(nk * nk, device, 4).to(fp8)
    one_f = torch.ones((), device=device, dtype=torch.float32)
    for m, n, k in itertools.product(grid.fp8_m, grid.fp8_nk, grid.fp8_nk):
        def one(m: int = m, n: int = n, k: int = k) -> dict:
            a, w = a_buf[: m * k].view(m, k), w_buf[: n * k].view(n, k)
            st = timer.time(lambda: torch._scaled_mm(a, w.t(), scale_a=one_f, scale_b=one_f, out_dtype=torch.bfloat16))
            return {"op": "gemm", "dtype": "fp8", "layout": "fwd", "m": m, "n": n, "k": k, **st.fields()}
        sec.attempt(f"m={m} n={n} k={k}", budget, one)
    return sec


GROUPED_COUNTS = (4, 8, 16, 32)
GROUPED_M = (64, 128, 256, 512, 1024, 2048, 4096)
GROUPED_NK = ((2048, 4096), (4096, 2048), (2048, 7168), (7168, 2048))  # (n, k): expert up and down


def measure_grouped_gemm(timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    """bf16 grouped GEMM (``torch._grouped_mm``, one kernel for all experts) at equal rows per group."""
    sec = Section("grouped_gemm")
    if device != "cuda" or not hasattr(torch, "_grouped_mm"):
        return sec
    gmax, mmax = max(GROUPED_COUNTS), max(GROUPED_M)
    kmax = max(k for _, k in GROUPED_NK)
    a_buf, w_buf = randn(gmax * mmax * kmax, device, 70), randn(gmax * kmax * kmax, device, 71)
    for (n, k), groups, m in itertools.product(GROUPED_NK, GROUPED_COUNTS, GROUPED_M):
        def one(n: int = n, k: int = k, groups: int = groups, m: int = m) -> dict:
            a = a_buf[: groups * m * k].view(groups * m, k)
            w = w_buf[: groups * n * k].view(groups, n, k).transpose(-2, -1)
            offs = torch.arange(m, groups * m + 1, m, device=device, dtype=torch.int32)
            st = timer.time(lambda: torch._grouped_mm(a, w, offs=offs))
            return {"op": "grouped_gemm", "dtype": "bf16", "groups": groups, "m": m, "n": n, "k": k, **st.fields()}
        sec.attempt(f"g={groups} m={m} n={n} k={k}", budget, one)
    return sec


def swiglu_ffn(x: torch.Tensor, wg: torch.Tensor, wu: torch.Tensor, wd: torch.Tensor) -> torch.Tensor:
    """One expert's SwiGLU FFN: ``(silu(x wg^T) * (x wu^T)) wd^T`` as three GEMMs and two pointwise ops."""
    return torch.mm(F.silu(torch.mm(x, wg.t())) * torch.mm(x, wu.t()), wd.t())


def rms_norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """RMSNorm over the last axis with weight ``w`` (``F.rms_norm``), as a Llama layer applies it."""
    return F.rms_norm(x, (x.shape[-1],), w)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` (halves rotated by ``cos``/``sin``), as a Llama layer applies it."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


def measure_swiglu(timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    """Per-expert SwiGLU FFN time at token counts from 1 to 16384."""
    sec = Section("swiglu_ffn")
    th, fmax = max(grid.ffn_tokens) * max(grid.ffn_hidden), max(grid.ffn_hidden) * max(grid.ffn_ffn)
    x_buf = randn(th, device, 5)
    w_bufs = [randn(fmax, device, 6 + i) for i in range(3)]
    for hidden, ffn in itertools.product(grid.ffn_hidden, grid.ffn_ffn):
        wg, wu = (b[: ffn * hidden].view(ffn, hidden) for b in w_bufs[:2])
        wd = w_bufs[2][: ffn * hidden].view(hidden, ffn)
        for tokens in grid.ffn_tokens:
            def one(t: int = tokens, h: int = hidden, f: int = ffn, wg=wg, wu=wu, wd=wd) -> dict:
                x = x_buf[: t * h].view(t, h)
                st = timer.time(lambda: swiglu_ffn(x, wg, wu, wd))
                return {"op": "swiglu_ffn", "dtype": "bf16", "tokens": t, "hidden": h, "ffn": f, **st.fields()}
            sec.attempt(f"t={tokens} h={hidden} f={ffn}", budget, one)
    return sec


GQA_GROUP = 4  # query heads per KV head (Llama-3-8B 32/8, Llama-3-70B 64/8, Qwen3 32/4 is 8)


def measure_attention_gqa(timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    """Causal attention with grouped KV heads as plain PyTorch writes it:
    ``F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)`` with ``heads /
    GQA_GROUP`` KV heads (k, v not repeated). SDPA runs another kernel for it than for the
    ``attention`` section's equal-heads call, so these rows carry ``kv_heads`` and
    ``call: "enable_gqa"``; the grid's largest head_dim only, its batch x heads x seq cells with at
    least 2 heads."""
    return _gqa_section("attention_gqa", "enable_gqa", False, timer, grid, device, budget)


def measure_attention_flash(timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    """The same grouped-KV call with SDPA held to its FlashAttention-2 backend
    (``with torch.nn.attention.sdpa_kernel(SDPBackend.FLASH_ATTENTION)``, as a user who forces the
    backend runs it): rows ``call: "enable_gqa_flash"``, the :func:`measure_attention_gqa` grid."""
    return _gqa_section("attention_flash", "enable_gqa_flash", True, timer, grid, device, budget)


def _backend(flash: bool):
    if not flash:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel(SDPBackend.FLASH_ATTENTION)


def _gqa_section(name: str, call: str, flash: bool, timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    sec = Section(name)
    shapes = [(d, b, h, s) for d, b, h, s in attention_shapes(grid) if h >= 2 and d == max(grid.attn_head_dim)]
    if not shapes:
        return sec
    numel = max(b * h * s * d for d, b, h, s in shapes)
    bufs = [randn(numel, device, 20 + i) for i in range(4)]
    for d, b, h, s in shapes:
        n, kvh = b * h * s * d, max(1, h // GQA_GROUP)
        nk = b * kvh * s * d
        for direction in ("fwd", "bwd"):
            def one(d: int = d, b: int = b, h: int = h, s: int = s, n: int = n, kvh: int = kvh, nk: int = nk,
                    direction: str = direction) -> dict:
                q = bufs[0][:n].view(b, h, s, d).detach().requires_grad_()
                k, v = (buf[:nk].view(b, kvh, s, d).detach().requires_grad_() for buf in bufs[1:3])
                def attn() -> torch.Tensor:
                    with _backend(flash):
                        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                if direction == "fwd":
                    st = timer.time(attn)
                else:
                    out, dout = attn(), bufs[3][:n].view(b, h, s, d)
                    st = timer.time(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
                    del out
                return {"op": "attention", "dtype": "bf16", "direction": direction, "causal": True, "call": call,
                        "batch": b, "heads": h, "kv_heads": kvh, "seq": s, "head_dim": d, **st.fields()}
            sec.attempt(f"{call} {direction} d={d} b={b} h={h} s={s}", budget, one)
    return sec


def attention_shapes(grid: Grid) -> list[tuple[int, int, int, int]]:
    """(head_dim, batch, heads, seq) of the attention grid: every combination whose
    batch x heads x seq stays within ``grid.attn_max_tokens``."""
    return [(d, b, h, s) for d, b, h, s in itertools.product(grid.attn_head_dim, grid.attn_batch, grid.attn_heads,
                                                             grid.attn_seq)
            if b * h * s <= grid.attn_max_tokens]


def measure_attention(timer: Timer, grid: Grid, device: str, budget: Budget) -> Section:
    """Causal flash-attention forward and backward over batch, heads, sequence length and head_dim.

    Batch and heads are separate axes: the same batch x heads runs at different speeds
    depending on how it is split (cuDNN's flash kernel on H200)."""
    sec = Section("attention")
    shapes = attention_shapes(grid)
    numel = max(b * h * s * d for d, b, h, s in shapes)
    bufs = [randn(numel, device, 10 + i) for i in range(4)]
    for d, b, h, s in shapes:
        n = b * h * s * d
        for direction in ("fwd", "bwd"):
            def one(d: int = d, b: int = b, h: int = h, s: int = s, n: int = n, direction: str = direction) -> dict:
                q, k, v = (buf[:n].view(b, h, s, d).detach().requires_grad_() for buf in bufs[:3])
                if direction == "fwd":
                    st = timer.time(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
                else:
                    out, dout = F.scaled_dot_product_attention(q, k, v, is_causal=True), bufs[3][:n].view(b, h, s, d)
                    st = timer.time(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
                    del out
                return {"op": "attention", "dtype": "bf16", "direction": direction, "causal": True,
                        "batch": b, "heads": h, "seq": s, "head_dim": d, **st.fields()}
            sec.attempt(f"{direction} d={d} b={b} h={h} s={s}", budget, one)
    return sec
