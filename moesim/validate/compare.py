"""Predicted against measured: the per-case record and the summary per workload class.

A :class:`Comparison` is one case (what ran, the measured and the predicted time, whether it is
below its size threshold). :func:`summarize` groups cases by (workload class, pass, GPU) and,
inside each group, by size (cases at or above the threshold, and the flagged small ones apart),
giving the count, median and maximum absolute relative error and the count above 15%. A case
whose prediction moves with the host CPU carries a ``band``: the predictions at the profile's
fastest and slowest host runs (``Scenario.host_speed``); the summary counts the measured times
inside it.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Sequence

OVER = 0.15            # the bound on any one case
MEDIAN_TARGET = 0.05   # the bound on the median of layers and blocks of >= 1 ms
SIZES = ("main", "small")


@dataclass(frozen=True)
class Comparison:
    """One case: ``small`` marks a case below its class's size threshold (1 ms for layers and
    blocks, 50 us for single kernels), reported apart. ``notes`` names what of the workload the
    product's vocabulary does not describe, ``fallbacks`` the op classes priced without a
    measurement (a roofline or a stand-in curve, as the block result labels them)."""

    case_id: str
    workload_class: str
    passes: str
    gpu: str
    measured_ns: float
    predicted_ns: float
    small: bool = False
    cost_model: str = ""
    notes: str = ""
    fallbacks: tuple[str, ...] = ()   # op classes the cost model priced by a fallback (labelled, never silent)
    band: "tuple[float, float] | None" = None   # predicted ns at the fastest and the slowest host run

    @property
    def in_band(self) -> bool:
        return self.band is not None and self.band[0] <= self.measured_ns <= self.band[1]

    @property
    def error(self) -> float:
        """Signed relative error, predicted / measured - 1."""
        return self.predicted_ns / self.measured_ns - 1.0

    @property
    def abs_error(self) -> float:
        return abs(self.error)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.case_id, "class": self.workload_class, "pass": self.passes, "gpu": self.gpu,
                "measured_ns": round(self.measured_ns, 1), "predicted_ns": round(self.predicted_ns, 1),
                "error": round(self.error, 5), "small": self.small, "cost_model": self.cost_model, "notes": self.notes,
                "fallbacks": list(self.fallbacks),
                **({"host_band_ns": [round(b, 1) for b in self.band]} if self.band else {})}


@dataclass(frozen=True)
class ClassSummary:
    """Error statistics of one (class, pass, GPU, size) group."""

    workload_class: str
    passes: str
    gpu: str
    size: str           # "main" (at or above the threshold) or "small"
    cases: int
    median_abs: float
    max_abs: float
    worst_case: str
    over: int           # cases with |error| > 15%
    banded: int = 0     # cases with a host band
    in_band: int = 0    # of those, measured inside it

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.workload_class, "pass": self.passes, "gpu": self.gpu, "size": self.size,
                "cases": self.cases, "median_abs_error": round(self.median_abs, 5),
                "max_abs_error": round(self.max_abs, 5), "worst_case": self.worst_case, "over_15pct": self.over,
                **({"host_band": {"cases": self.banded, "measured_inside": self.in_band}} if self.banded else {})}


def summary_of(group: Sequence[Comparison], workload_class: str, passes: str, gpu: str, size: str) -> ClassSummary:
    """The statistics of one non-empty group."""
    worst = max(group, key=lambda c: c.abs_error)
    return ClassSummary(workload_class, passes, gpu, size, len(group),
                        statistics.median(c.abs_error for c in group), worst.abs_error, worst.case_id,
                        sum(c.abs_error > OVER for c in group), sum(c.band is not None for c in group),
                        sum(c.in_band for c in group))


def summarize(cases: Sequence[Comparison]) -> list[ClassSummary]:
    """One summary per (class, pass, GPU) in first-appearance order, its main cases first, then
    its small ones; a size with no cases is left out."""
    keys = list(dict.fromkeys((c.workload_class, c.passes, c.gpu) for c in cases))
    out = []
    for cls, passes, gpu in keys:
        group = [c for c in cases if (c.workload_class, c.passes, c.gpu) == (cls, passes, gpu)]
        for size in SIZES:
            part = [c for c in group if c.small == (size == "small")]
            if part:
                out.append(summary_of(part, cls, passes, gpu, size))
    return out
