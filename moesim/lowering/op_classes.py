"""Op classes: the groups a per-class time report (``moesim layer``) splits GPU time into.

A segment of the lowering runs many kernels as one task; :func:`class_times` keeps, next to the
segment's total, how much of it each class of op took (the cost model's time of each kernel),
so a report can split the task's recorded span over its kernels in that proportion.
Classes: ``GEMM`` (``GEMM fp8`` for FP8, ``grouped GEMM`` for a multi-group GEMM or a
:class:`~moesim.ops.GroupedGemm`), ``attention``, and ``memory: <kind>`` or
``memory: <kind>/<variant>`` for memory-bound kernels.
"""
from __future__ import annotations

from collections.abc import Iterable

from moesim.ops import Attention, Gemm, GroupedGemm, MemoryOp


def op_class(op: object) -> str:
    """The class of one compute op (see the module docstring)."""
    if isinstance(op, GroupedGemm) or (isinstance(op, Gemm) and op.groups > 1):
        return "grouped GEMM" + (" fp8" if op.dtype == "fp8" else "")
    if isinstance(op, Gemm):
        return "GEMM" + (" fp8" if op.dtype == "fp8" else "")
    if isinstance(op, Attention):
        return "attention"
    if isinstance(op, MemoryOp):
        variant = getattr(op, "variant", "")
        return f"memory: {op.kind}" + (f"/{variant}" if variant else "")
    return type(op).__name__


def class_times(ops: Iterable[object], times_ns: Iterable[int]) -> tuple[tuple[str, int], ...]:
    """``(class, ns)`` totals of ops and their times, in first-seen order."""
    totals: dict[str, int] = {}
    for op, ns in zip(ops, times_ns):
        key = op_class(op)
        totals[key] = totals.get(key, 0) + int(ns)
    return tuple(totals.items())
