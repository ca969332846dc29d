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


def span_op_classes(span: object, duration: float, cost: object = None, host_stream: str = "host",
                    host_class: str = "host") -> list[tuple[str, float]]:
    """A recorded span's time by op class: split by its segment's ``op_ns`` (:func:`class_times`),
    or by ``cost``'s times of the ops it lists (``args["ops"]``: MoE expert and token-movement
    tasks), else named by its stream and category."""
    stream, args = getattr(span, "stream", ""), getattr(span, "args", None) or {}
    if stream == host_stream:
        return [(host_class, duration)]
    if stream != "compute":
        return [(f"comm: {getattr(span, 'category', '')}", duration)]
    parts = dict(args.get("op_ns") or {})
    if not parts and args.get("ops") and cost is not None:
        for op in args["ops"]:
            parts[op_class(op)] = parts.get(op_class(op), 0) + cost.compute_ns(op)   # type: ignore[attr-defined]
    total = sum(parts.values())
    if total > 0:
        return [(k, duration * v / total) for k, v in parts.items()]
    if args.get("host_sync"):
        return [("sync: counts to host", duration)]
    return [(f"compute: {getattr(span, 'category', '')}", duration)]


def gemm_duty(rec: object, cost: object = None) -> float:
    """The share of a recorded run's time its GPUs spend in GEMM kernels (dense and grouped; mean
    over the GPUs that ran compute): what ``gpu_clock="duty"`` prices the clock at."""
    spans = getattr(rec, "spans", ())
    end = float(getattr(rec, "end_ns", 0))
    ranks = {s.rank for s in spans if s.rank is not None and s.stream == "compute"}
    if end <= 0 or not ranks:
        return 0.0
    gemm = sum(ns for s in spans if s.rank is not None and s.stream == "compute"
               for name, ns in span_op_classes(s, s.end_ns - s.start_ns, cost) if "GEMM" in name)
    return min(1.0, gemm / (end * len(ranks)))
