"""Section ``duty``: how a GEMM's time grows with the share of the GPU's time spent in GEMMs.

A power-limited GPU sets its SM clock from its recent power draw. GEMMs draw the most; the
memory-bound kernels around them in an MoE layer draw less, so the same GEMM runs faster in a
program that spends less of its time in GEMMs. For each GEMM duty of :data:`DUTIES` this section
runs a steady pattern of one GEMM followed by enough 64 MiB copies to fill the rest of the time,
for ``SETTLE_S`` seconds (power and temperature settle), then times the GEMM between CUDA events
inside the pattern; the same GEMM alone on a cool GPU (after ``COOL_IDLE_S`` idle, a few repeats)
is the reference. Rows: ``{"op": "duty", "class": "gemm", "shape", "duty" (the achieved share),
"time_ns", "cool_time_ns", "repeats", "sm_mhz", "power_w"}`` (NVML's means over the timed
window, where NVML is there), which ``gpu_clock="duty"`` reads (:mod:`moesim.costs.clock`).
Two GEMMs: a dense 16384x4096x4096 and a Qwen3-30B-A3B fc1 over 128 experts x 1,024 rows
(``torch._grouped_mm``).

The SM clock is one per GPU: a kernel between GEMMs runs at the clock the GEMMs' power holds, and
a compute-bound kernel's time follows that clock. Rows of ``"class": "attention"`` measure it for
causal flash attention (SDPA, ``[4, 32, 2048, 128]`` bf16, forward and backward): the pattern is
the dense GEMM, the attention call, then copies, its ``duty`` the GEMM's share of the period (at
most the GEMM's share beside the attention, :data:`ATTENTION_DUTIES`), the attention timed inside
it, ``cool_time_ns`` the same call alone on a cool GPU. Needs a CUDA GPU.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

from moesim.calibrate.clock_section import COOL_IDLE_S
from moesim.calibrate.section import Section
from moesim.calibrate.timing import Budget, Timer

DUTIES = (1.0, 0.85, 0.7, 0.55, 0.4, 0.25)
ATTENTION_DUTIES = (0.8, 0.7, 0.55, 0.4, 0.25)   # the GEMM's share of a pattern that also holds the attention
ATTENTION_SHAPE = (4, 32, 2048, 128)   # batch, heads, sequence, head_dim
COPY_BYTES = 64 * 2**20
SETTLE_S = 3.0
REPEATS = 40


def _gemms() -> dict[str, Callable[[], object]]:
    import torch

    g = torch.Generator(device="cuda").manual_seed(5)
    a = torch.randn(16384, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    b = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    x = torch.randn(131072, 2048, device="cuda", dtype=torch.bfloat16, generator=g)
    w = torch.randn(128, 1536, 2048, device="cuda", dtype=torch.bfloat16, generator=g)
    offs = torch.arange(1, 129, device="cuda", dtype=torch.int32) * 1024
    return {"dense_16384x4096x4096": lambda: torch.mm(a, b),
            "grouped_qwen3_fc1_128x1024": lambda: torch._grouped_mm(x, w.transpose(-2, -1), offs=offs)}


def _attentions() -> dict[str, Callable[[], object]]:
    """The attention calls the section times between GEMMs, forward and backward."""
    from moesim.calibrate.kernels import attention_op

    b, h, seq, d = ATTENTION_SHAPE
    return {f"sdpa_causal_b{b}_h{h}_s{seq}_d{d}_{direction}": attention_op("cuda", direction, b, h, seq, d)
            for direction in ("fwd", "bwd")}


def _timed(fn: Callable[[], object]) -> tuple[object, object]:
    """``fn`` issued between two timing events (read them after a synchronize)."""
    import torch

    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    fn()
    e.record()
    return s, e


def _events_ms(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        s, e = _timed(fn)
        e.synchronize()   # type: ignore[attr-defined]
        out.append(s.elapsed_time(e))   # type: ignore[attr-defined]
    return out


def _one(shape: str, fn: Callable[[], object], duty: float, copy: Callable[[], object], copy_ms: float,
         cool_ms: float, nvml: object, gemm: "Callable[[], object] | None" = None) -> dict:
    """One duty row: ``fn`` timed inside a steady pattern of ``fn`` (GEMM rows) or of ``gemm`` then
    ``fn`` (attention rows) followed by copies, the GEMM's share of the period ``duty``."""
    import torch

    fn_ms = statistics.median(_events_ms(fn, 5))
    gemm_ms = fn_ms if gemm is None else statistics.median(_events_ms(gemm, 5))
    fixed_ms = fn_ms if gemm is None else gemm_ms + fn_ms
    fill_ms = max(0.0, gemm_ms / duty - fixed_ms)   # copies after the fixed part make the GEMM share ``duty``
    copies = 0 if duty >= 1.0 else max(0 if gemm is not None else 1, round(fill_ms / copy_ms))
    period = fixed_ms + copies * copy_ms

    def pattern() -> None:
        if gemm is not None:
            gemm()
        fn()
        for _ in range(copies):
            copy()

    t0 = time.monotonic()
    while time.monotonic() - t0 < SETTLE_S:
        for _ in range(max(1, int(50 / period))):
            pattern()
        torch.cuda.synchronize()
    w0 = time.monotonic()
    marks = []
    for _ in range(REPEATS):
        if gemm is not None:
            gemm()
        marks.append(_timed(fn))
        for _ in range(copies):
            copy()
    torch.cuda.synchronize()
    state = nvml.window(w0, time.monotonic()) if nvml is not None else {}   # type: ignore[attr-defined]
    times = [s.elapsed_time(e) * 1e6 for s, e in marks]
    return {"op": "duty", "class": "gemm" if gemm is None else "attention", "shape": shape,
            "duty": round(gemm_ms / period, 4),
            "time_ns": round(statistics.median(times), 1), "cool_time_ns": round(cool_ms * 1e6, 1),
            "repeats": REPEATS, "p25_ns": round(sorted(times)[REPEATS // 4], 1),
            "p75_ns": round(sorted(times)[3 * REPEATS // 4], 1),
            **{k: state[k] for k in ("sm_mhz", "power_w") if k in state}}


def measure_duty(timer: Timer, grid: object, device: str, budget: Budget) -> Section:
    sec = Section("duty")
    if device != "cuda":
        sec.errors.append("duty: needs a CUDA GPU (it times a GEMM under a steady power draw)")
        return sec
    import torch

    from moesim.calibrate.clock_timer import Nvml

    src = torch.empty(COPY_BYTES // 2, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)

    def copy() -> None:
        dst.copy_(src)

    nvml = Nvml(torch.cuda.current_device())
    try:
        copy_ms = statistics.median(_events_ms(copy, 50))
        gemms = _gemms()
        for shape, fn in gemms.items():
            torch.cuda.synchronize()
            time.sleep(COOL_IDLE_S)
            cool_ms = statistics.median(_events_ms(fn, 10))
            for duty in DUTIES:
                sec.attempt(f"duty {shape} {duty}", budget,
                            lambda shape=shape, fn=fn, duty=duty: _one(shape, fn, duty, copy, copy_ms, cool_ms, nvml))
        dense = gemms["dense_16384x4096x4096"]
        for shape, att in _attentions().items():
            torch.cuda.synchronize()
            time.sleep(COOL_IDLE_S)
            cool_ms = statistics.median(_events_ms(att, 10))
            for duty in ATTENTION_DUTIES:
                sec.attempt(f"duty {shape} {duty}", budget,
                            lambda shape=shape, att=att, duty=duty: _one(shape, att, duty, copy, copy_ms, cool_ms,
                                                                         nvml, gemm=dense))
    finally:
        nvml.stop()
    return sec
