"""A :class:`~moesim.calibrate.timing.Timer` that also reads the SM clock the timed op ran at.

Power-capped GPUs change their SM clock on a millisecond scale, and a kernel's time follows
that clock for its compute-bound share, so a measurement is only comparable with another one
at a known clock. NVML reads the clock every few milliseconds and averages over whatever ran
in between (an L2-flushing write between repeats included), which cannot resolve one 100 us
kernel. This timer measures the clock *on the GPU, next to the timed kernel*: before the first
repeat and after every repeat it runs two ``torch.cuda._sleep`` spin kernels (``clock64``
loops of ``SHORT_CYCLES`` and ``LONG_CYCLES`` SM cycles) timed with CUDA events; the difference
of the cycle counts over the difference of their times is the SM clock at that instant, free of
the fixed launch and event cost. A repeat's clock is the mean of the probes just before and
just after it (the first repeat's: the probe after it; see
:func:`~moesim.calibrate.jsonio.per_repeat_clock_mhz`); an entry records the median over its repeats (``sm_mhz``), and NVML's power and
clock averaged over the timed window when NVML is there. The timed region (start to end event
around the op) is exactly :class:`Timer`'s: the probes run outside it. :class:`Nvml` samples NVML
in a thread for those windows.
"""
from __future__ import annotations

import statistics
import threading
import time

import torch

from moesim.calibrate.jsonio import per_repeat_clock_mhz
from moesim.calibrate.timing import Timer

SHORT_CYCLES = 20_000    # about 10 us at 1.98 GHz
LONG_CYCLES = 120_000    # about 60 us: the difference (100k cycles) gives the clock to about 1%
LEAD_CYCLES = 2_000_000  # about 1 ms of GPU work queued before the first probe (60 us was not enough)


class ClockProbe:
    """Two spin kernels of known cycle counts, timed by events; :meth:`mhz` after a sync."""

    def __init__(self) -> None:
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        e = self.events
        e[0].record()
        torch.cuda._sleep(SHORT_CYCLES)
        e[1].record()
        e[2].record()
        torch.cuda._sleep(LONG_CYCLES)
        e[3].record()

    def mhz(self) -> float:
        e = self.events
        short_ms, long_ms = e[0].elapsed_time(e[1]), e[2].elapsed_time(e[3])
        return (LONG_CYCLES - SHORT_CYCLES) / max(long_ms - short_ms, 1e-6) / 1e3


def clock_fields(per_repeat_mhz: list[float], nvml: "dict | None") -> dict:
    """The ``clock`` record of one entry: GPU-side clock over its repeats, NVML window means."""
    out: dict = {"sm_mhz": round(statistics.median(per_repeat_mhz), 1), "sm_mhz_min": round(min(per_repeat_mhz), 1),
                 "sm_mhz_max": round(max(per_repeat_mhz), 1),
                 "method": f"torch.cuda._sleep({LONG_CYCLES}) - _sleep({SHORT_CYCLES}) cycles over their event "
                           "times, before and after each repeat"}
    if nvml:
        out.update({f"nvml_{k}": v for k, v in nvml.items()})
    return out


class ClockedTimer(Timer):
    """:class:`Timer` whose every CUDA measurement also leaves ``last_clock`` (see module doc);
    ``nvml`` is an object with ``window(t0, t1) -> dict`` (:class:`Nvml`) or None."""

    def __init__(self, device: str, nvml: object = None, **kwargs: object) -> None:
        super().__init__(device, **kwargs)  # type: ignore[arg-type]
        self.nvml = nvml
        self.last_clock: dict = {}
        self.last_probe_mhz: list[float] = []

    def _repeats_begin(self) -> None:
        self._t0 = time.monotonic()
        # the GPU is idle here (the timer synchronized after its estimate): a probe issued now has
        # the launch latency of its first spin inside that spin's events and reads a clock that is
        # far too high (seen as sm_mhz_max up to 5e7). Queue a spin first so both probe spins run
        # back to back behind it, like every later probe.
        torch.cuda._sleep(LEAD_CYCLES)
        self._probes = [ClockProbe()]

    def _repeat_done(self) -> None:
        self._probes.append(ClockProbe())

    def _repeats_end(self) -> None:
        t1 = time.monotonic()
        mhz = [p.mhz() for p in self._probes]
        per_repeat = per_repeat_clock_mhz(mhz)
        self.last_probe_mhz = mhz  # the probe before the first repeat, then one after each repeat
        window = self.nvml.window(self._t0, t1) if self.nvml is not None else None  # type: ignore[attr-defined]
        self.last_clock = clock_fields(per_repeat, window)


class Nvml:
    """SM clock (MHz), power (W) and temperature (C) sampled every 2 ms in a thread; inert without NVML."""

    def __init__(self, index: int = 0) -> None:
        self.samples: list[tuple[float, float, float, float]] = []
        try:
            import pynvml
            pynvml.nvmlInit()
            self._n, self._h = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # no NVML: windows report nothing
            self._n = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        n = self._n
        while n is not None and not self._stop.is_set():
            self.samples.append((time.monotonic(), float(n.nvmlDeviceGetClockInfo(self._h, n.NVML_CLOCK_SM)),
                                 n.nvmlDeviceGetPowerUsage(self._h) / 1000.0,
                                 float(n.nvmlDeviceGetTemperature(self._h, n.NVML_TEMPERATURE_GPU))))
            time.sleep(0.002)

    def window(self, t0: float, t1: float) -> dict:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if not inside:
            return {}
        return {"sm_mhz": round(statistics.mean(s[1] for s in inside)), "power_w": round(statistics.mean(s[2] for s in inside)),
                "temp_c": round(statistics.mean(s[3] for s in inside), 1), "samples": len(inside)}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
