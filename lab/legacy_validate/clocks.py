"""The GPU's clock state during a measurement: boost (burst) or sustained (power-capped).

The calibrated profile was measured at sustained clocks (every shape after a GEMM load). A GPU
that has idled runs compute-bound kernels faster for a short while, until its power controller
caps the clocks. The power probe (``data/validation/h200_power_probe.json``, an 8192^3 bf16 GEMM
timed in chunks from idle over 15 s) measures both rates and the length of that burst window.
This module reads them and answers two questions:

* which state a measurement ran in. A GPU pre-heated on purpose (``hot``, ``steady``) runs
  sustained. One that had idled (``as_found``) keeps boost clocks unless, somewhere in the
  run, it does more tensor work in one burst window than the power cap allows: the cap is
  expressed as the probe's sustained GEMM rate (a GEMM stream at the cap runs at that rate) and
  the controller's reaction time as the probe's burst window (how long a GEMM stream from idle
  keeps boost clocks). A run is its warm-up and timed repetitions back to back, idle before and
  after; communication, memory-bound kernels and idle gaps count as no tensor work;
* how much faster a kernel runs at boost: only its clock-bound share speeds up, by the probe's
  burst / sustained throughput ratio (memory- and latency-bound time does not). For a GEMM that
  share is its tensor-core share (FLOPs at the best measured rate / time); flash attention's
  non-tensor-core work (softmax) runs at the SM clock too, so its clock-bound share is all but
  its memory time (``lab.probes``: four of five shapes timed at boost clocks took
  0.77 to 0.86 of their sustained time, the fifth 0.97, against the GEMM stream's 0.84).

Where a measurement recorded the SM clock its repeats ran at (``measured.clock.sm_mhz``,
``validate_workloads --clock-probe``), no rule is needed: the clock-bound share scales by the
ratio of the clock the profile was measured at to the case's clock,
``t = t_profile (1 - phi + phi f_ref / f_case)``. The profile stores no clock, so ``f_ref`` per
kernel kind comes from :class:`ReferenceClocks`: shapes on the profile's grid re-run with the
profile's protocol and the same clock probe (``lab.clock_reference``); each gives
the clock at which the formula turns its measured time (at its measured clock) into the
profile's time; the median per kind is ``f_ref``. No validation case enters it.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from moesim.calibrate.jsonio import per_repeat_clock_mhz
from moesim.errors import ConfigError

if TYPE_CHECKING:
    from moesim.validate.measurements import Measurement

DEFAULT_PROBE = Path(__file__).resolve().parents[2] / "data" / "validation" / "h200_power_probe.json"
DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "data" / "validation" / "clock_reference.json"
CLOCK_STATES = ("boost", "sustained")


@dataclass(frozen=True)
class ClockModel:
    """Burst and sustained GEMM throughput from the power probe, and the burst window."""

    burst_tflops: float
    sustained_tflops: float
    burst_window_ns: int
    peak_flops_per_ns: float
    source: str

    def __post_init__(self) -> None:
        if not 0 < self.sustained_tflops <= self.burst_tflops:
            raise ConfigError("power probe", f"sustained rate {self.sustained_tflops} must be in (0, burst rate "
                              f"{self.burst_tflops}]", "re-run lab.power_probe", source=self.source)

    @property
    def sustained_over_burst(self) -> float:
        """Time ratio boost / sustained of a fully compute-bound kernel (< 1)."""
        return self.sustained_tflops / self.burst_tflops

    @property
    def sustained_flops_per_ns(self) -> float:
        """The power cap as a GEMM rate: the probe's sustained throughput (FLOP per ns)."""
        return self.sustained_tflops * 1e3

    def state_for(self, thermal: str, busy: Sequence[Sequence[tuple[float, float, float]]], period_ns: float,
                  repetitions: int) -> str:
        """The clock state of a run. ``busy`` holds, per GPU, one repetition's (start, end, FLOPs)
        kernels timed at boost clocks; the run repeats them every ``period_ns``, ``repetitions``
        times. ``sustained`` on a pre-heated GPU or when some burst window of the run averages
        more than the cap's FLOP rate on some GPU, ``boost`` otherwise."""
        if thermal != "as_found":
            return "sustained"
        rate = max((window_flop_rate(b, period_ns, repetitions, self.burst_window_ns) for b in busy), default=0.0)
        return "boost" if rate <= self.sustained_flops_per_ns else "sustained"

    def scale_ns(self, sustained_ns: float, flops: float, state: str, clock_bound_share: "float | None" = None) -> float:
        """A kernel's time in ``state`` given its sustained-clock time and FLOPs.

        The clock-bound share ``phi`` speeds up by the burst ratio; the rest is memory or latency
        bound and does not. ``phi`` is ``clock_bound_share`` when given, else the compute-bound
        share: FLOPs at the best measured rate / time (a kernel without FLOPs, a memory op, speeds up
        only with a given share).
        """
        if state not in CLOCK_STATES:
            raise ConfigError("clock state", f"unknown state {state!r}", f"use one of: {', '.join(CLOCK_STATES)}")
        if state == "sustained" or sustained_ns <= 0 or (flops <= 0 and clock_bound_share is None):
            return sustained_ns
        if clock_bound_share is not None:
            phi = min(1.0, max(0.0, clock_bound_share))
        else:
            phi = min(1.0, flops / self.peak_flops_per_ns / sustained_ns)
        return sustained_ns * (1.0 - phi * (1.0 - self.sustained_over_burst))


def scale_to_clock(profile_ns: float, phi: float, ref_mhz: float, case_mhz: float) -> float:
    """A kernel's time at ``case_mhz`` from its profile time at ``ref_mhz``: only the clock-bound
    share ``phi`` follows the clock."""
    if profile_ns <= 0 or ref_mhz <= 0 or case_mhz <= 0:
        return profile_ns
    phi = min(1.0, max(0.0, phi))
    return profile_ns * (1.0 - phi + phi * ref_mhz / case_mhz)


def clock_of_profile(profile_ns: float, phi: float, measured_ns: float, measured_mhz: float) -> "float | None":
    """The inverse of :func:`scale_to_clock`: the clock ``f_ref`` at which the profile's time maps
    to ``measured_ns`` at ``measured_mhz``; None when no positive clock does (phi too small)."""
    numerator = measured_ns / profile_ns - 1.0 + phi
    if phi <= 0 or numerator <= 0:
        return None
    return measured_mhz * numerator / phi


@dataclass(frozen=True)
class ReferenceClocks:
    """The SM clock (MHz) the profile's samples ran at, per kernel kind (``gemm``, ``attention``)."""

    mhz: tuple          # ((kind, MHz), ...), hashable so contexts stay cache keys
    per_shape: tuple    # (op, direction, measured ns, profile ns, measured MHz, implied profile MHz)
    source: str

    def for_kind(self, kind: str) -> "float | None":
        return dict(self.mhz).get(kind)


def reference_clocks(samples: Sequence[dict], profile_share: "Callable[[dict], tuple[float, float]]",
                     source: str) -> ReferenceClocks:
    """Per-kind median of :func:`clock_of_profile` over reference samples; ``profile_share(sample)``
    gives the profile's time of the sample's shape and its clock-bound share."""
    per_kind: dict[str, list[float]] = {}
    rows = []
    for s in samples:
        mhz = (s.get("clock") or {}).get("sm_mhz")
        if not mhz:
            continue
        profile_ns, phi = profile_share(s)
        f = clock_of_profile(profile_ns, phi, float(s["time_ns"]), float(mhz))
        rows.append((s["op"], s.get("direction", ""), float(s["time_ns"]), profile_ns, float(mhz), f))
        if f is not None:
            per_kind.setdefault(s["op"], []).append(f)
    return ReferenceClocks(tuple(sorted((k, statistics.median(v)) for k, v in per_kind.items())), tuple(rows), source)


def load_reference_samples(path: "str | Path | None" = None) -> "tuple[list[dict], str] | None":
    """The reference pass's samples, or None when the file is absent (no telemetry scaling)."""
    p = Path(path) if path is not None else DEFAULT_REFERENCE
    if not p.is_file():
        return None
    return list(json.loads(p.read_text()).get("samples") or []), str(p)


def load_clock_model(peak_flops_per_ns: float, path: "str | Path | None" = None) -> ClockModel:
    """Read the power probe; ``peak_flops_per_ns`` is the profile's best achieved GEMM rate."""
    p = Path(path) if path is not None else DEFAULT_PROBE
    if not p.is_file():
        raise ConfigError("power probe", f"no file at {p}", f"pass --power-probe with a file such as {DEFAULT_PROBE}")
    chunks = json.loads(p.read_text()).get("chunks") or []
    burst = [c["tflops"] for c in chunks if str(c.get("phase", "")).startswith("burst")]
    sustained = [c for c in chunks if c.get("phase") == "sustained"]
    if not burst or not sustained:
        raise ConfigError("power probe", "needs burst_* and sustained chunks", "re-run lab.power_probe",
                          source=str(p))
    burst_tflops = statistics.mean(burst)
    sustained_tflops = statistics.median(c["tflops"] for c in sustained)
    return ClockModel(burst_tflops, sustained_tflops, _burst_window_ns(chunks, burst_tflops, sustained_tflops),
                      peak_flops_per_ns, str(p))


def _burst_window_ns(chunks: list[dict], burst: float, sustained: float) -> int:
    """Time from the first chunk after idle to the first sustained chunk below the midpoint
    of the burst and sustained rates: how long the GPU keeps boost clocks under GEMM load."""
    start = next(c["t_s"] for c in chunks if str(c.get("phase", "")).startswith("burst"))
    midpoint = 0.5 * (burst + sustained)
    throttled = next((c["t_s"] for c in chunks if c.get("phase") == "sustained" and c["tflops"] < midpoint), None)
    if throttled is None:
        return 10**18  # never throttled: every measurement counts as boost
    return int(round((throttled - start) * 1e9))


def window_flop_rate(busy: Sequence[tuple[float, float, float]], period_ns: float, repetitions: int,
                     window_ns: float) -> float:
    """Highest average FLOP rate (FLOP/ns) over any ``window_ns`` stretch of a run that repeats
    ``busy`` (start, end, FLOPs) every ``period_ns``, ``repetitions`` times, idle around it."""
    if not busy or period_ns <= 0 or repetitions < 1:
        return 0.0
    shifts = np.arange(repetitions)[:, None] * float(period_ns)
    starts = (np.array([b[0] for b in busy])[None, :] + shifts).ravel()
    ends = (np.array([b[1] for b in busy])[None, :] + shifts).ravel()
    flops = np.tile([b[2] for b in busy], repetitions)
    rates = flops / np.maximum(ends - starts, 1.0)
    times = np.concatenate([starts, ends])
    order = np.argsort(times, kind="stable")
    times, steps = times[order], np.concatenate([rates, -rates])[order]
    cumulative = np.concatenate([[0.0], np.cumsum(np.maximum(np.cumsum(steps)[:-1], 0.0) * np.diff(times))])
    candidates = np.concatenate([times, times - window_ns])
    done = np.interp(candidates + window_ns, times, cumulative) - np.interp(candidates, times, cumulative)
    return float(done.max() / window_ns)


def recorded_clock_mhz(case: "Measurement") -> "float | None":
    """The SM clock (MHz) the entry's repeats ran at, when it was recorded: the median over repeats
    of :func:`~moesim.calibrate.jsonio.per_repeat_clock_mhz` where the entry stored its probes
    (run 12 on), else the stored median (earlier sessions: their first repeat's clock included the
    probe before it, which read launch latency)."""
    extra = case.extra if hasattr(case.extra, "get") else {}
    probes = (extra.get("per_repeat") or {}).get("probe_mhz") if isinstance(extra.get("per_repeat"), dict) else None
    if isinstance(probes, list) and len(probes) >= 2 and all(isinstance(x, (int, float)) and x > 0 for x in probes):
        return float(statistics.median(per_repeat_clock_mhz(probes)))
    clock = extra.get("clock")
    mhz = clock.get("sm_mhz") if isinstance(clock, dict) else None
    return float(mhz) if isinstance(mhz, (int, float)) and mhz > 0 else None
