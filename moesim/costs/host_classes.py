"""Host (CPU issue) time of eager PyTorch per op class, from a profile's ``host_op`` and ``sync`` rows.

``moesim.calibrate.host_classes`` measures, per class (``linear``, ``grouped_mm``, ``sdpa``,
``rms_norm``, ``index_add``, ...), the host time of ONE eager call in three phases: ``plain``
(no autograd), ``fwd`` (forward with autograd recording) and ``bwd`` (the backward's host time
for one forward call of the class, all of its backward kernels together). This module maps a
:data:`~moesim.ops.ComputeOp` to the calls that issue it (:func:`op_calls`) and prices them
(:class:`HostClassTable`); :meth:`CalibratedCostModel.host_op_ns` and ``sync_ns`` are the API.

How ``host_op_ns(op, phase)`` reads ``op`` (``moesim.lowering.host`` passes every op a task
issues, with ``phase="bwd"`` for the ops of a backward list):

* ``Gemm`` -> ``linear``; ``GroupedGemm`` -> ``grouped_mm``; ``Attention`` -> ``sdpa``;
* ``MemoryOp`` with a ``variant`` -> the calls of that expression (:data:`VARIANT_CALLS`: e.g.
  ``routing_map`` is ``zeros`` + ``cast`` + ``scatter_add`` + ``cast``, ``prob_mul`` is ``view`` +
  ``mul``); without one ->
  its kind's representative (:data:`KIND_CALLS`; an ``elementwise`` op named ``*rope*`` is
  ``rope``);
* ``phase="bwd"``: the workload lists a GEMM's backward as two ops (dgrad and wgrad; a grouped
  GEMM's likewise), so each carries half of the class's measured backward
  (:data:`BACKWARD_OPS`); attention and memory ops list one backward op each, which carries the
  whole. A class autograd records no backward for (``argsort``, ``histc``, ``zeros``, ``split``)
  costs its forward issue in any phase: in a backward list it is an op issued there.

A class the profile lacks costs ``fallback_ns`` (the caller's per-kernel figure) per missing call
and is named in the returned labels, which the cost model adds to ``fallback_ops``; never silent.
``sync`` rows price the device-to-host copy that ``.tolist()`` forces (``queued``: from the end of
the queued GPU work until the host holds the values; ``idle``: issue to values on an idle GPU).

Host speed: the profile's host rows come from several runs, each on its own machine and moment,
and the lent machines' hosts differ up to ~1.8x in speed. :func:`run_speeds` reads each run's speed
against the mean the cost model prices; ``Scenario.host_speed`` (:data:`HOST_SPEEDS`) prices at
the mean (default) or at the slowest or fastest run (:func:`speed_factor`).

Mixed programs: a class's ``host_op`` row comes from a chain of calls of that one class, where the
same dispatch path runs back to back. A ``host_mix`` row times a chain rotating through several
classes (each call after a call of another class, as in a model's program); its ratio to the mean
of those classes' own rows of the same run is the profile's mixed-program factor per phase (H100,
2026-12-06: plain 2.1, fwd 1.86, bwd 1.44), and every measured call is charged that many times
its chain time, except the ops of a per-expert loop's body, which repeat back to back as a chain
does (``mixed=False``). A profile without ``host_mix`` rows charges the chain times (factor 1).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from moesim.costs.fitting import Curve
from moesim.errors import ConfigError
from moesim.ops import Attention, ComputeOp, Gemm, GroupedGemm, MemoryOp

HOST_PHASES = ("fwd", "bwd", "plain")
SYNC_VARIANTS = ("queued", "idle")
KIND_CALLS: dict[str, tuple[str, ...]] = {
    "copy": ("cast",), "elementwise": ("mul",), "norm": ("rms_norm",), "softmax": ("softmax",),
    "topk": ("topk",), "permute": ("index_select",), "sort": ("argsort",), "histogram": ("histc",),
    "cast": ("cast",),
}
VARIANT_CALLS: dict[str, tuple[str, ...]] = {
    # moesim.costs.moe_kernels variants: the calls of each measured expression
    "softmax_fp32": ("softmax",), "sigmoid_fp32": ("sigmoid",), "cast_fp32": ("cast",), "cast_bf16": ("cast",),
    "topk": ("topk",),
    "argsort": ("argsort",), "histc": ("histc",), "bincount": ("histc",), "cumsum": ("cumsum",),
    "gather": ("view", "gather"), "index_select": ("index_select",),
    "routing_map": ("zeros", "cast", "scatter_add", "cast"), "masked_select": ("view", "cast", "index_select"),
    "scatter_add": ("view", "scatter_add"), "index_add": ("index_add",), "prob_mul": ("view", "mul"),
    "zeros": ("zeros",),
    # the memory section's variants
    "copy": ("cast",), "add": ("add",), "mul": ("mul",), "silu": ("silu",), "rmsnorm": ("rms_norm",),
    "layernorm": ("rms_norm",), "softmax": ("softmax",), "scatter": ("index_select",),
}
NAME_CALLS = {"rope": ("rope",), "residual": ("add",)}  # name hints for variant-less ops
BACKWARD_OPS = {"linear": 2, "grouped_mm": 2}  # backward ops a workload lists per forward call
NO_BACKWARD_CALLS = ("argsort", "histc", "zeros", "split")
HOST_SPEEDS = ("mean", "slowest", "fastest")
MIN_RUN_CLASSES = 10   # a run's speed is read off at least this many (call, phase) rows another run measured too


def op_calls(op: ComputeOp) -> tuple[str, ...]:
    """The host-op classes whose calls issue ``op`` (see the module docstring)."""
    if isinstance(op, GroupedGemm):
        return ("grouped_mm",)
    if isinstance(op, Gemm):
        return ("linear",)
    if isinstance(op, Attention):
        return ("sdpa",)
    if isinstance(op, MemoryOp):
        if op.variant in VARIANT_CALLS:
            return VARIANT_CALLS[op.variant]
        for hint, calls in NAME_CALLS.items():
            if hint in (op.name or "").split(".")[-1] or f".{hint}" in (op.name or ""):
                return calls
        return KIND_CALLS.get(op.kind, ("mul",))
    raise ConfigError("op", f"{type(op).__name__} is not a compute op",
                      "pass a Gemm, GroupedGemm, Attention or MemoryOp")


def mix_factors(host_rows: list[Mapping[str, Any]], mix_rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """Per phase, a ``host_mix`` row's time over the mean of its classes' ``host_op`` rows of the
    same run (every run's ``host_op`` rows where the row names no run); several runs' ratios
    average in log space."""
    logs: dict[str, list[float]] = defaultdict(list)
    for m in mix_rows:
        own = [r for r in host_rows if r["phase"] == m["phase"] and r["call"] in m["classes"]
               and r.get("run") == m.get("run")]
        if len({r["call"] for r in own}) < len(m["classes"]):
            own = [r for r in host_rows if r["phase"] == m["phase"] and r["call"] in m["classes"]]
        if own:
            logs[m["phase"]].append(float(np.log(m["time_ns"] / np.mean([r["time_ns"] for r in own]))))
    return {phase: float(np.exp(np.mean(v))) for phase, v in logs.items()}


def run_speeds(host_rows: list[Mapping[str, Any]]) -> dict[Any, float]:
    """Per profile run (``run``), its host's speed as a factor on the mean the cost model prices:
    the geometric mean, over every (call, phase, probe expert count) the run measured and another
    run measured too, of the run's time over the geometric mean of those runs' times of it. A run
    with fewer than :data:`MIN_RUN_CLASSES` such rows (one that measured a few framework classes)
    is left out."""
    per_key: dict[tuple, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in host_rows:
        per_key[(r["call"], r["phase"], _probe_experts(r))][r.get("run")].append(float(np.log(r["time_ns"])))
    logs: dict[Any, list[float]] = defaultdict(list)
    for runs in per_key.values():
        if len(runs) < 2:
            continue
        own = {run: float(np.mean(v)) for run, v in runs.items()}
        mean = float(np.mean(list(own.values())))
        for run, v in own.items():
            logs[run].append(v - mean)
    return {run: float(np.exp(np.mean(v))) for run, v in logs.items() if len(v) >= MIN_RUN_CLASSES}


def check_host_speed(value: Any, field: str = "host_speed") -> str:
    """``value`` if it is one of :data:`HOST_SPEEDS`, else a ConfigError naming ``field``."""
    if not isinstance(value, str) or value not in HOST_SPEEDS:
        raise ConfigError(field, f"unknown host speed {value!r}",
                          "use 'mean' (the profile's host rows averaged over its runs), 'slowest' or 'fastest' "
                          "(its slowest or fastest host run)")
    return value


def speed_factor(speeds: Mapping[Any, float], choice: str, where: str) -> float:
    """The factor on the profile's mean host times for ``choice`` (:data:`HOST_SPEEDS`)."""
    if check_host_speed(choice) == "mean":
        return 1.0
    if len(speeds) < 2:
        raise ConfigError("host_speed", f"{choice!r} needs host rows of two or more runs (each with "
                          f"{MIN_RUN_CLASSES}+ classes another run measured too), and {where} has {len(speeds)}",
                          "use host_speed='mean', or merge host_classes runs of other machines into the profile "
                          "(moesim calibrate run --sections host_classes; python -m moesim.calibrate.merge)")
    return max(speeds.values()) if choice == "slowest" else min(speeds.values())


def check_phase(phase: str) -> str:
    if phase not in HOST_PHASES:
        raise ConfigError("phase", f"unknown host phase {phase!r}", f"use one of: {', '.join(HOST_PHASES)}")
    return phase


def _probe_experts(row: Mapping[str, Any]) -> "int | None":
    probe = row.get("probe")
    e = probe.get("num_experts") if isinstance(probe, Mapping) else None
    return int(e) if e is not None else None


def expert_growth(rows: list[Mapping[str, Any]]) -> tuple[tuple[int, float], ...]:
    """((expert count, ns added over the smallest count), ...) of one (call, phase)'s rows: within
    each run (``run``) that measured the smallest count and another, the difference of the two,
    averaged over such runs per count; the smallest count adds 0. Differences are taken within a
    run, so a run measured on a faster or slower host moves the level (averaged over every run at
    the smallest count), not the slope."""
    least = min(_probe_experts(r) for r in rows)
    runs: dict[Any, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        runs[r.get("run")][_probe_experts(r)].append(float(r["time_ns"]))
    diffs: dict[int, list[float]] = defaultdict(list)
    for counts in runs.values():
        if least not in counts:
            continue
        ref = float(np.mean(counts[least]))
        for e, v in counts.items():
            if e != least:
                diffs[e].append(float(np.mean(v)) - ref)
    return ((least, 0.0), *sorted((e, float(np.mean(d))) for e, d in diffs.items()))


@dataclass(frozen=True)
class HostClassTable:
    """Measured host ns per (call, phase) and the sync curves of one profile."""

    times: Mapping[tuple[str, str], float]
    sync: Mapping[str, Curve]
    mix: Mapping[str, float] = None  # type: ignore[assignment]  # phase -> mixed-program factor
    # (call, phase) -> ((local experts, ns added over the smallest count), ...): classes measured
    # at several expert counts (``probe.num_experts``; class ``megatron_moe_layer``)
    growth: Mapping[tuple[str, str], tuple[tuple[int, float], ...]] = None  # type: ignore[assignment]
    speeds: Mapping[Any, float] = None  # type: ignore[assignment]  # run -> host speed factor (run_speeds)

    @classmethod
    def from_rows(cls, host_rows: list[Mapping[str, Any]], sync_rows: list[Mapping[str, Any]],
                  mix_rows: "list[Mapping[str, Any]] | None" = None) -> "HostClassTable":
        """Repeated (call, phase) rows (several runs) average in log space. A class whose rows
        name their probe's expert count (``probe.num_experts``) at several counts keeps its time
        at the smallest count, and its growth with the count (:func:`expert_growth`)."""
        logs: dict[tuple[str, str], list[float]] = defaultdict(list)
        by_experts: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
        for r in host_rows:
            e = _probe_experts(r)
            if e is not None:
                by_experts[(r["call"], r["phase"])].append(r)
            else:
                logs[(r["call"], r["phase"])].append(float(np.log(r["time_ns"])))
        growth = {}
        for key, rows in by_experts.items():
            points = expert_growth(rows)   # starts at the smallest count
            logs[key] += [float(np.log(r["time_ns"])) for r in rows if _probe_experts(r) == points[0][0]]
            if len(points) > 1:
                growth[key] = points
        by_variant: dict[str, list] = defaultdict(list)
        for r in sync_rows:
            by_variant[r["variant"]].append(r)
        return cls({k: float(np.exp(np.mean(v))) for k, v in logs.items()},
                   {v: Curve(rows) for v, rows in by_variant.items()}, mix_factors(host_rows, mix_rows or []), growth,
                   run_speeds(host_rows))

    def mix_factor(self, phase: str) -> float:
        return (self.mix or {}).get(phase, 1.0)

    def calls(self) -> list[tuple[str, str]]:
        return sorted(self.times)

    def call_ns(self, call: str, phase: str, local_experts: "int | None" = None) -> "float | None":
        """One call's host ns in ``phase``; a class with no backward costs its forward issue. A
        class measured at several expert counts, given the GPU's ``local_experts``: its time at
        the smallest count plus the growth, linear between the measured counts and past the
        largest along the last segment (the growth is Python per expert chunk; a falling last
        segment, run-to-run noise, is held flat there), and the smallest count's time below it
        (not extrapolated down: nothing measured there)."""
        if call in NO_BACKWARD_CALLS and phase == "bwd":
            phase = "fwd"
        base = self.times.get((call, phase))
        points = (self.growth or {}).get((call, phase))
        if base is None or local_experts is None or not points:
            return base
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        if local_experts <= xs[-1]:
            return base + float(np.interp(local_experts, xs, ys))
        slope = max(0.0, (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
        return base + ys[-1] + slope * (local_experts - xs[-1])

    def op_ns(self, op: ComputeOp, phase: str, fallback_ns: float, mixed: bool = True) -> tuple[float, list[str]]:
        """(host ns of issuing ``op`` in ``phase``, the calls priced by ``fallback_ns``); ``mixed``
        False: the op repeats back to back with the same neighbours (a per-expert loop's body),
        the chain context its class was measured in, so no mixed-program factor."""
        check_phase(phase)
        total, missing = 0.0, []
        for call in op_calls(op):
            ns = self.call_ns(call, phase)
            if ns is None:
                missing.append(f"{call}/{phase}")
                ns = fallback_ns
            else:
                if phase == "bwd" and call not in NO_BACKWARD_CALLS:
                    ns /= BACKWARD_OPS.get(call, 1)
                ns *= self.mix_factor(phase) if mixed else 1.0
            total += ns
        return total, missing

    def sync_ns(self, nbytes: float, variant: str = "queued") -> "float | None":
        """Device-to-host copy of ``nbytes``: the ``variant`` curve, else the other one, else None."""
        if variant not in SYNC_VARIANTS:
            raise ConfigError("variant", f"unknown sync variant {variant!r}", f"use one of: {', '.join(SYNC_VARIANTS)}")
        for v in (variant, *SYNC_VARIANTS):
            if v in self.sync:
                return self.sync[v](max(float(nbytes), 1.0))
        return None

    def module_call_ns(self, phase: str = "fwd") -> "float | None":
        """``nn.Module.__call__`` overhead per module call (``module_linear`` - ``linear``), the
        isolated part of a module's Python glue; None where either is unmeasured."""
        a, b = self.times.get(("module_linear", check_phase(phase))), self.times.get(("linear", phase))
        return None if a is None or b is None else max(0.0, a - b)
