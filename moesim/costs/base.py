"""The one interface every cost model implements.

``costs/`` answers "how long does this GEMM / attention / memory op / collective step take on
this device". Two implementations exist: a datasheet roofline (``roofline.py``, labelled
``uncalibrated``) and a calibrated model built from a measured profile (``calibrated.py``).
The engine never sees a cost model: the lowering layer asks it for durations and latencies and
hands plain integers to the engine. So a new cost model plugs in without touching the engine.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from moesim.ops import ComputeOp

LINK_KINDS = ("nvlink", "nvswitch", "pcie", "ib", "ethernet", "c2c")


@runtime_checkable
class CostModel(Protocol):
    """Per-op costs on one device kind.

    Attributes:
        name: what produced these costs, e.g. ``"h200_sxm profile (calibrated)"`` or
            ``"roofline:H200 (uncalibrated)"``. Every simulation result repeats it.
        calibrated: True only when the numbers come from real measurements.
        device: the device kind, e.g. ``"H200"``.
        hbm_bytes: usable HBM per GPU, for memory verdicts.
        peak_flops: dense bf16 peak FLOP/s, for MFU.
    """

    name: str
    calibrated: bool
    device: str
    hbm_bytes: float
    peak_flops: float

    def compute_ns(self, op: ComputeOp) -> int:
        """Time of one compute op on one GPU in integer nanoseconds (>= 1)."""
        ...

    def link_efficiency(self, kind: str) -> float:
        """Fraction (0, 1] of a link's datasheet bandwidth that transfers achieve on it."""
        ...

    def collective_step_latency_ns(self, op: str, num_ranks: int, link_kind: str) -> int:
        """Fixed latency per algorithm step of a collective (launch, sync, protocol)."""
        ...

    def p2p_latency_ns(self, link_kind: str) -> int:
        """Fixed latency of one point-to-point send/recv (beyond path latency)."""
        ...

    def overlap_slowdown(self) -> float:
        """Compute-time multiplier (>= 1) while a collective runs concurrently on the GPU."""
        ...


def cost_sources(cost: object) -> dict[str, str]:
    """Per op class, where a cost model's times come from (measured, borrowed, roofline, fallbacks):
    its ``sources()`` where it has one, else its name for every class."""
    sources = getattr(cost, "sources", None)
    return dict(sources()) if callable(sources) else {"all op classes": str(getattr(cost, "name", "unknown"))}


def profile_identity(cost: object) -> "dict[str, str] | None":
    """The identity of the calibration profile behind a cost model (name, device, date, source,
    short sha256: ``Profile.identity``), or None for a model without one (the roofline)."""
    profile = getattr(cost, "profile", None)
    identity = getattr(profile, "identity", None)
    return dict(identity()) if callable(identity) else None
