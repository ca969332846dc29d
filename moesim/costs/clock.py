"""The GPU clock a run's kernels see: ``gpu_clock = "sustained"`` (default) or ``"boost"``.

A calibrated profile times each shape after seconds of GEMM load (``--heat-ms``, ``--preheat-s``):
its rows hold the clock a GPU sustains in training, which power-limits large GEMMs well below
the maximum (H200 with the profile's protocol: 1,494-1,620 MHz for GEMMs, median 1,516; attention
1,506-1,989, median 1,750; section ``clock``). A short benchmark on
a cool GPU runs at the maximum SM clock instead (``nvidia-smi clocks.max.sm``: 1,980 MHz on the
lent H100s and H200s). ``"boost"`` prices compute-bound kernels (GEMMs, grouped GEMMs, attention)
at that clock: time x (sustained MHz of the class / maximum MHz); memory-bound kernels and
collectives are unchanged (HBM and links do not follow the SM clock).

Where the profile's ``clock`` rows also hold ``cool_time_ns`` (the same shape timed as a short
burst after seconds of idle GPU), ``"boost"`` scales each class by the median ratio of those burst
times to the profile's own prices of the same shapes (:func:`burst_factors`): a measured time
ratio, which a clock ratio is not (a GEMM's time follows the SM clock less than in proportion, and
the grid rows may have run hotter than the clock rows). Otherwise by the clock ratio below.

``"duty"`` follows the GPU's power limit: a GEMM's time depends on the share of the GPU's time
spent in GEMMs (``duty``). The profile's ``duty`` rows time a GEMM with that share of copies in
between, after seconds of it (section ``duty``; H100s at 700 W: flat up to 40% GEMM time, then
up to about 1.17x at 100%); the GEMMs of a run with GEMM duty d are priced at the burst time
times the measured multiplier at d (:func:`duty_multiplier`), d taken from a first simulation of
the same run at the burst clock (:func:`moesim.experiment.runner.build_at_duty`; the reduced
engine's :func:`moesim.scale.reduced.build_reduced`). The SM clock is one per GPU, so attention
between those GEMMs runs at the clock they hold: where the profile has ``duty`` rows of class
``attention`` (flash attention timed inside the GEMM pattern, section ``duty``), attention is
priced at its burst time times their measured multiplier at d; without them at its burst time,
which the cost model's name says.

The sustained clocks are the profile's own measurement (its ``clock`` rows, section ``clock`` of
``moesim calibrate``: each a shape's time and the SM clock it ran at; the median per class); a
profile without them, or a device with no known maximum clock, refuses ``"boost"``.
"""
from __future__ import annotations

from statistics import median
from typing import Any, Callable, Iterable, Mapping

from moesim.errors import ConfigError
from moesim.ops import Attention, ComputeOp, Gemm

GPU_CLOCKS = ("sustained", "boost", "duty")
CLOCK_CLASSES = ("gemm", "attention")   # the compute-bound classes a clock record covers


def check_clock(gpu_clock: Any, field: str = "gpu_clock") -> str:
    """``gpu_clock`` if it is one of :data:`GPU_CLOCKS`, else a ConfigError naming ``field``."""
    if not isinstance(gpu_clock, str) or gpu_clock not in GPU_CLOCKS:
        raise ConfigError(field, f"unknown GPU clock {gpu_clock!r}",
                          f"use one of: {', '.join(GPU_CLOCKS)} (sustained: the profile's protocol, GEMMs under full "
                          "load; boost: a short burst on a cool GPU; duty: the clock the run's own GEMM share holds)")
    return gpu_clock


def sustained_clocks(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Median SM clock per class of a profile's ``clock`` rows (classes without rows left out)."""
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(str(r["class"]), []).append(float(r["sm_mhz"]))
    return {c: float(median(v)) for c, v in by.items()}


def boost_factors(clocks: Mapping[str, float], max_sm_mhz: float, where: str) -> dict[str, float]:
    """Per compute-bound class, time at the maximum clock over time at the profile's sustained one."""
    missing = [c for c in CLOCK_CLASSES if c not in clocks]
    if missing:
        raise ConfigError("gpu_clock", f"'boost' needs the sustained SM clock of {', '.join(missing)} measured in the "
                          f"profile, and {where} has no such clock rows",
                          "use gpu_clock='sustained' (the profile's own protocol), or measure them with "
                          "moesim calibrate run --sections clock and merge that run into the profile")
    if max_sm_mhz <= 0:
        raise ConfigError("gpu_clock", f"'boost' needs the device's maximum SM clock, unknown for {where}",
                          "use gpu_clock='sustained'")
    return {c: min(1.0, float(clocks[c]) / max_sm_mhz) for c in CLOCK_CLASSES}


def burst_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The ``clock`` rows that hold a burst time (``cool_time_ns``)."""
    return [r for r in rows if r.get("cool_time_ns")]


def burst_factors(ratios: Mapping[str, Iterable[float]], where: str) -> dict[str, float]:
    """Per compute-bound class, the median over the profile's ``clock`` rows of (time as a short
    burst on a cool GPU) / (the profile's price of the same shape), at most 1."""
    by = {c: [float(x) for x in ratios.get(c, ()) if x > 0] for c in CLOCK_CLASSES}
    missing = [c for c, v in by.items() if not v]
    if missing:
        raise ConfigError("gpu_clock", f"'boost' needs burst times of {', '.join(missing)} in the profile's clock rows, "
                          f"and {where} has none", "use gpu_clock='sustained', or measure them with "
                          "moesim calibrate run --sections clock and merge that run into the profile")
    return {c: min(1.0, float(median(v))) for c, v in by.items()}


def duty_curve(rows: Iterable[Mapping[str, Any]], where: str) -> list[tuple[float, float]]:
    """(GEMM duty, time over the time at the lowest duty measured) from ``duty`` rows of one class:
    each shape of each run against its own lowest-duty row (a GEMM at <= 40% duty runs at the
    clock a burst on a cool GPU does), the median per duty (rounded to 0.05) over shapes and runs,
    sorted by duty; ConfigError where there are none."""
    groups: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("shape", ""), r.get("run")), []).append(r)
    by: dict[float, list[float]] = {}
    for group in groups.values():
        base = float(min(group, key=lambda r: float(r["duty"]))["time_ns"])
        for r in group:
            by.setdefault(round(float(r["duty"]) * 20) / 20, []).append(float(r["time_ns"]) / base)
    if not by:
        raise ConfigError("gpu_clock", f"'duty' needs the GEMM-duty rows of the profile, and {where} has none",
                          "use gpu_clock='boost' or 'sustained', or measure them with moesim calibrate run "
                          "--sections duty and merge that run into the profile")
    return sorted((d, float(median(v))) for d, v in by.items())


def duty_multiplier(curve: list[tuple[float, float]], duty: float) -> float:
    """A GEMM's time at GEMM duty ``duty`` over its time at low duty (the burst clock): the curve
    interpolated linearly, held flat beyond its ends, and never below 1."""
    if not 0.0 <= duty <= 1.0:
        raise ConfigError("gemm_duty", f"must be a share in [0, 1], got {duty!r}")
    if duty <= curve[0][0]:
        return max(1.0, curve[0][1])
    for (d0, m0), (d1, m1) in zip(curve, curve[1:]):
        if duty <= d1:
            return max(1.0, m0 + (m1 - m0) * (duty - d0) / (d1 - d0))
    return max(1.0, curve[-1][1])


def clock_factors(gpu_clock: str, clock_rows: Iterable[Mapping[str, Any]], duty_rows: Iterable[Mapping[str, Any]],
                  price: Callable[[ComputeOp], float], max_sm_mhz: float, gemm_duty: float,
                  where: str) -> tuple[dict[str, float], str]:
    """The factors on a profile's sustained-clock GEMM and attention times for ``gpu_clock``
    (``"boost"`` or ``"duty"``), and the phrase the cost model's name gains; ``price`` is the
    cost model's own sustained-clock time of an op (the burst rows are ratios to it)."""
    clock_rows = list(clock_rows)
    if gpu_clock == "duty" and not burst_rows(clock_rows):
        raise ConfigError("gpu_clock", f"'duty' needs burst times in the clock rows, and {where} has none",
                          "use gpu_clock='sustained', or measure them with moesim calibrate run --sections "
                          "clock and merge that run into the profile")
    burst = _boost_factors(clock_rows, price, max_sm_mhz, where)
    if gpu_clock == "boost":
        return burst, (f" at the boost clock (GEMMs x{burst['gemm']:.3f}, attention "
                       f"x{burst['attention']:.3f} of the profile's sustained-clock times)")
    duty_rows = list(duty_rows)
    held = duty_multiplier(duty_curve([r for r in duty_rows if r.get("class", "gemm") == "gemm"], where), gemm_duty)
    attention_rows = [r for r in duty_rows if r.get("class") == "attention"]
    attention_held = duty_multiplier(duty_curve(attention_rows, where), gemm_duty) if attention_rows else 1.0
    attention = f"attention x{burst['attention']:.3f}" + (f" x{attention_held:.3f}" if attention_rows else "")
    return ({"gemm": burst["gemm"] * held, "attention": burst["attention"] * attention_held},
            f" at the clock of GEMM duty {gemm_duty:.2f} (GEMMs x{burst['gemm']:.3f} x{held:.3f}, "
            f"{attention} of the profile's sustained-clock times"
            + ("" if attention_rows else "; attention at the burst clock: no attention duty rows") + ")")


def _boost_factors(rows: list[Mapping[str, Any]], price: Callable[[ComputeOp], float], max_sm_mhz: float,
                   where: str) -> dict[str, float]:
    """``"boost"``: burst over profile time per class where the clock rows hold burst times, else
    the sustained clock over the maximum."""
    burst = burst_rows(rows)
    if not burst:
        return boost_factors(sustained_clocks(rows), max_sm_mhz, where)
    ratios: dict[str, list[float]] = {}
    for r in burst:
        if r["class"] == "gemm":
            op: ComputeOp = Gemm(m=int(r["m"]), n=int(r["n"]), k=int(r["k"]), dtype="bf16")
        else:
            op = Attention(batch=int(r["batch"]), heads=int(r["heads"]), kv_heads=int(r["heads"]), seq_q=int(r["seq"]),
                           seq_kv=int(r["seq"]), head_dim=int(r["head_dim"]), causal=True,
                           backward=r.get("direction") == "bwd")
        ratios.setdefault(str(r["class"]), []).append(float(r["cool_time_ns"]) / price(op))
    return burst_factors(ratios, where)
