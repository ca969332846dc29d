"""Timing primitives: CUDA-event timing with warm-up, an L2 flush and median-of-repeats statistics.

On a GPU every repeat is bracketed by CUDA events on the current stream, after a write to a
buffer larger than the L2 cache so that each run starts cold (as a layer's weights and
activations usually do in training) and so that the GPU, not the host, sets the pace. The
repeat count adapts to the kernel's length so that each shape costs roughly ``target_ms``.
The CPU smoke mode times with the host clock. Only torch, numpy and the standard library are
imported, so this runs on the measurement machine.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

L2_FLUSH_BYTES = 256 * 2**20  # H200 L2 is 60 MB; four times that evicts it
HEAT_N = 8192  # heater GEMM edge
HEAT_GEMM_MS = 1.6  # one 8192^3 bf16 GEMM on an H200 at sustained clocks
BUSY_CYCLES_PER_NS = 2.0  # SM clock upper bound (1.98 GHz): a sleep of N cycles lasts at least N / 2 ns


def sync(device: str) -> None:
    """Wait for the GPU's queued work (``device == "cuda"``); nothing on the CPU."""
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated timings of one operation, in nanoseconds."""

    median_ns: float
    p25_ns: float
    p75_ns: float
    min_ns: float
    max_ns: float
    repeats: int

    def fields(self) -> dict[str, float | int]:
        """The profile-sample fields for these statistics (``time_ns`` is the median)."""
        return {
            "time_ns": round(self.median_ns, 1),
            "repeats": self.repeats,
            "p25_ns": round(self.p25_ns, 1),
            "p75_ns": round(self.p75_ns, 1),
            "min_ns": round(self.min_ns, 1),
            "max_ns": round(self.max_ns, 1),
        }


def stats_from_ns(samples_ns: "list[float] | np.ndarray") -> TimingStats:
    """Median, quartiles and range of raw per-repeat times."""
    arr = np.asarray(samples_ns, dtype=np.float64)
    assert arr.size > 0, "no timing samples"
    p25, med, p75 = np.percentile(arr, [25.0, 50.0, 75.0])
    return TimingStats(float(med), float(p25), float(p75), float(arr.min()), float(arr.max()), int(arr.size))


class Timer:
    """Times a zero-argument callable on ``device`` (``"cuda"`` or ``"cpu"``)."""

    def __init__(
        self,
        device: str,
        *,
        warmup: int = 2,
        min_repeats: int = 7,
        max_repeats: int = 40,
        target_ms: float = 30.0,
        flush_l2: bool = True,
        heat_ms: float = 0.0,
        busy_us: float = 0.0,
        lead_us: float = 0.0,
    ) -> None:
        self.device = device
        self.warmup = warmup
        self.min_repeats = min_repeats
        self.max_repeats = max_repeats
        self.target_ms = target_ms
        self.heat_ms = heat_ms if device == "cuda" else 0.0
        self._heat_bufs: tuple[torch.Tensor, ...] | None = None
        self.last_samples_ns: list[float] = []  # per-repeat times of the last CUDA timing
        self._flush_buf = None
        # without the flush, a GPU-side wait of busy_us before each repeat keeps the host ahead
        # (no launch gap inside the timed region) while leaving L2 as the previous repeat left it
        self.busy_cycles = int(busy_us * 1e3 * BUSY_CYCLES_PER_NS) if device == "cuda" and not flush_l2 else 0
        if device == "cuda" and flush_l2:
            self._flush_buf = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
        # with the flush, a GPU-side wait of lead_us after it keeps the host further ahead: a
        # timed op of several short kernels then never waits for its own launches, even on a
        # slow host (the flush alone is ~70 us of GPU time: not always enough)
        self.lead_cycles = int(lead_us * 1e3 * BUSY_CYCLES_PER_NS) if device == "cuda" and flush_l2 else 0

    def _repeats_for(self, est_ms: float) -> int:
        want = int(self.target_ms / max(est_ms, 1e-3))
        return max(self.min_repeats, min(self.max_repeats, want))

    def time(self, fn: Callable[[], object]) -> TimingStats:
        """Warm up, then time ``fn`` repeatedly; returns statistics of the per-call times."""
        if self.device == "cuda":
            return self._time_cuda(fn)
        return self._time_host(fn)

    def _flush(self) -> None:
        if self._flush_buf is not None:
            self._flush_buf.fill_(1.0)
            if self.lead_cycles:
                torch.cuda._sleep(self.lead_cycles)
        elif self.busy_cycles:
            torch.cuda._sleep(self.busy_cycles)

    def preheat(self, seconds: float) -> None:
        """Run large GEMMs for ``seconds`` so clocks and temperature reach their steady state."""
        if self.device != "cuda" or seconds <= 0:
            return
        self._heat(seconds * 1e3)
        torch.cuda.synchronize()

    def _heat(self, heat_ms: float | None = None) -> None:
        """Queue about ``heat_ms`` of large GEMMs so the timed runs find the GPU at its sustained,
        power-limited clocks, as in a training step, rather than at idle boost clocks."""
        heat_ms = self.heat_ms if heat_ms is None else heat_ms
        if heat_ms <= 0 or self.device != "cuda":
            return
        if self._heat_bufs is None:
            g = torch.Generator(device="cuda").manual_seed(99)
            a, b = (torch.randn(HEAT_N, HEAT_N, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            self._heat_bufs = (a, b, torch.empty_like(a))
        a, b, c = self._heat_bufs
        for _ in range(max(1, int(heat_ms / HEAT_GEMM_MS))):
            torch.mm(a, b, out=c)

    def _time_cuda(self, fn: Callable[[], object]) -> TimingStats:
        self._heat()
        for _ in range(self.warmup):
            fn()
        est = self._cuda_once(fn)
        repeats = self._repeats_for(est / 1e6)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        self._repeats_begin()
        for s, e in zip(starts, ends):
            self._flush()
            s.record()
            fn()
            e.record()
            self._repeat_done()
        torch.cuda.synchronize()
        self._repeats_end()
        self.last_samples_ns = [s.elapsed_time(e) * 1e6 for s, e in zip(starts, ends)]
        return stats_from_ns(self.last_samples_ns)

    # Hooks around the timed repeats (a subclass records what else ran, e.g. the SM clock).
    def _repeats_begin(self) -> None:
        """Before the first timed repeat is issued."""

    def _repeat_done(self) -> None:
        """After each timed repeat is issued (its end event recorded)."""

    def _repeats_end(self) -> None:
        """After the GPU has finished every repeat."""

    def _cuda_once(self, fn: Callable[[], object]) -> float:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self._flush()
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        return s.elapsed_time(e) * 1e6

    def _time_host(self, fn: Callable[[], object]) -> TimingStats:
        for _ in range(self.warmup):
            fn()
        t0 = time.perf_counter_ns()
        fn()
        repeats = self._repeats_for((time.perf_counter_ns() - t0) / 1e6)
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            fn()
            out.append(time.perf_counter_ns() - t0)
        return stats_from_ns(out)


class Budget:
    """A wall-clock deadline shared by the sections of one measurement run."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def left_s(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def expired(self) -> bool:
        return self.left_s() <= 0.0

    def sub(self, fraction: float, floor_s: float = 1.0) -> "Budget":
        """A child budget: ``fraction`` of what is left now, at least ``floor_s``."""
        return Budget(max(floor_s, self.left_s() * fraction))
