"""The record every validation prediction produces, and the errors computed from it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Prediction:
    """moesim's prediction of one stored measurement.

    ``method`` says what produced ``predicted_ns`` (cost model call or engine run, fabric,
    calibration); ``clock_state`` the GPU clock state assumed (boost, sustained, or n/a for
    communication only); ``components`` a breakdown (ns) for the report.
    """

    case_id: str
    kind: str
    thermal: str
    measured_ns: float
    predicted_ns: float
    method: str
    clock_state: str
    components: Mapping[str, float] = field(default_factory=dict)
    notes: str = ""

    @property
    def error(self) -> float:
        """Signed relative error, predicted / measured - 1."""
        return self.predicted_ns / self.measured_ns - 1.0

    @property
    def abs_error(self) -> float:
        return abs(self.error)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.case_id, "kind": self.kind, "thermal": self.thermal,
            "measured_ns": round(self.measured_ns, 1), "predicted_ns": round(self.predicted_ns, 1),
            "error": round(self.error, 5), "method": self.method, "clock_state": self.clock_state,
            "components": {k: round(float(v), 1) for k, v in self.components.items()}, "notes": self.notes,
        }
