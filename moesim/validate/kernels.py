"""Stored single-GPU kernel measurements predicted by the product's cost model alone.

``data/validation/h200_measurements.json`` and ``h100_measurements.json`` (written by
``moesim.calibrate.validate_workloads``) hold, besides multi-GPU cases, single kernels timed
one at a time: GEMMs, SwiGLU FFNs, flash attention and memory ops. Each is described as the product's op
(:class:`~moesim.ops.Gemm`, :class:`~moesim.ops.Attention`, :class:`~moesim.ops.MemoryOp`; a
SwiGLU FFN as :func:`moesim.workload.common.ffn_forward_ops`, its kernels back to back by
:func:`moesim.costs.regions.sequence_ns`) and priced by the cost model ``moesim run`` builds for
the GPU (:func:`moesim.experiment.build.resolve_cost_model`). No clock or host figure recorded
with a case is read. Its ``thermal`` field names the protocol it ran under, which is a setting a
user chooses: ``as_found`` (a short burst on a cool GPU) is predicted with ``gpu_clock="boost"``,
``hot`` and ``steady`` (after GEMM load) with ``"sustained"`` (:mod:`moesim.costs.clock`); a
profile without a clock record prices every case at its own sustained clock and says so.

Multi-GPU entries (collectives, pipelines, expert-parallel MoE layers) belong to the multi-GPU
issue and are counted, not predicted (:func:`left_out`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from moesim.errors import ConfigError
from moesim.validate.compare import Comparison
from moesim.validate.measurements import Measurement, MeasurementSet

SMALL_KERNEL_NS = 50_000   # single kernels below 50 us are reported apart
# the clock setting each stored thermal protocol corresponds to
PROTOCOL_CLOCK = {"as_found": "boost", "hot": "sustained", "steady": "sustained"}
KERNEL_KINDS = ("gemm", "swiglu_ffn", "attention", "memory")
MULTI_GPU_KINDS = ("collective", "pipeline", "moe_layer")


def _gemm(d: dict) -> list[Any]:
    from moesim.ops import Gemm

    return [Gemm(m=int(d["m"]), n=int(d["n"]), k=int(d["k"]), dtype=d.get("dtype", "bf16"), name="gemm")]


def _swiglu(d: dict) -> list[Any]:
    from moesim.workload.common import ffn_forward_ops

    # moesim.calibrate.kernels.swiglu_ffn: three torch.mm, F.silu and a multiply (eager)
    return ffn_forward_ops(int(d["tokens"]), int(d["hidden"]), int(d["ffn"]), "swiglu", d.get("dtype", "bf16"), "swiglu",
                           fused_activation=False)


def _attention(d: dict) -> list[Any]:
    from moesim.ops import Attention

    return [Attention(batch=int(d["batch"]), heads=int(d["heads"]), kv_heads=int(d["kv_heads"]), seq_q=int(d["seq_q"]),
                      seq_kv=int(d["seq_kv"]), head_dim=int(d["head_dim"]), causal=bool(d["causal"]),
                      dtype=d.get("dtype", "bf16"), backward=bool(d["backward"]))]


# The stored memory cases name their kernels as the memory section does: its "gather" is an
# index_select (moesim.calibrate.memops); in the product's vocabulary "gather" is torch.gather.
STORED_VARIANTS = {"gather": "index_select"}


def _memory(d: dict) -> list[Any]:
    from moesim.ops import MemoryOp

    variant = STORED_VARIANTS.get(str(d["variant"]), str(d["variant"]))
    return [MemoryOp(str(d["kind"]), float(d["nbytes"]), name=str(d["variant"]), variant=variant)]


OPS: dict[str, Callable[[dict], list[Any]]] = {"gemm": _gemm, "swiglu_ffn": _swiglu, "attention": _attention,
                                              "memory": _memory}


def case_ops(case: Measurement) -> list[Any]:
    """The product's ops of one stored single-GPU case, in launch order."""
    from moesim.errors import ConfigError

    try:
        return OPS[case.kind](dict(case.description))
    except KeyError as exc:
        raise ConfigError(f"{case.case_id}: description.{exc.args[0]}", "missing") from None


def _pass_of(case: Measurement) -> str:
    if case.kind == "attention":
        return "bwd" if case.description.get("backward") else "fwd"
    return "fwd"


def ops_ns(cost: Any, ops: list[Any]) -> float:
    """The cost model's time of ``ops`` issued back to back (a single kernel keeps its own time)."""
    from moesim.costs.regions import kernel_region, sequence_ns

    times = [float(cost.compute_ns(op)) for op in ops]
    return sequence_ns(times, *kernel_region(cost)) if len(times) > 1 else times[0]


def predict_kernel(case: Measurement, cost: Any, gpu: str) -> Comparison:
    """The cost model's time of the case's ops (back to back when more than one)."""
    from moesim.experiment.block import op_provenance

    ops = case_ops(case)
    predicted = ops_ns(cost, ops)
    fallbacks = tuple(dict.fromkeys(f"{op.name or type(op).__name__}: {how}" for op in ops
                                    if (how := op_provenance(cost, op)) != "measured"))
    return Comparison(case_id=case.case_id, workload_class=f"kernel: {case.kind}", passes=_pass_of(case), gpu=gpu,
                      measured_ns=case.measured_ns, predicted_ns=predicted, small=case.measured_ns < SMALL_KERNEL_NS,
                      cost_model=getattr(cost, "name", type(cost).__name__), fallbacks=fallbacks)


def gpu_of(measurements: MeasurementSet) -> str:
    """H200 or H100 from the file's device name; ConfigError otherwise."""
    from moesim.errors import ConfigError

    for gpu in ("H200", "H100"):
        if gpu in measurements.device.upper():
            return gpu
    raise ConfigError("device", f"{measurements.device!r} is not an H200 or H100", source=measurements.path)


def predict_kernels(measurements: MeasurementSet, cost_model: str = "auto") -> list[Comparison]:
    """Every single-GPU kernel case of the file, in file order."""
    from moesim.experiment.build import resolve_cost_model

    gpu = gpu_of(measurements)
    costs = {"sustained": resolve_cost_model(cost_model, gpu)}
    out = []
    for c in measurements.cases:
        if c.kind not in KERNEL_KINDS:
            continue
        clock = PROTOCOL_CLOCK.get(c.thermal, "sustained")
        if clock not in costs:
            try:
                costs[clock] = resolve_cost_model(cost_model, gpu, gpu_clock=clock)
            except ConfigError:   # no clock record: the sustained model, named in the case's notes
                costs[clock] = None
        cost = costs[clock] or costs["sustained"]
        comparison = predict_kernel(c, cost, gpu)
        if costs[clock] is None:
            comparison = dataclasses.replace(comparison, notes=(comparison.notes + "; " if comparison.notes else "")
                                             + f"{c.thermal} case at the profile's sustained clock (no clock record)")
        out.append(comparison)
    return out


def left_out(measurements: MeasurementSet) -> dict[str, int]:
    """Multi-GPU cases per kind: not in this report (they belong to the multi-GPU issue)."""
    counts: dict[str, int] = {}
    for c in measurements.cases:
        if c.kind in MULTI_GPU_KINDS:
            counts[c.kind] = counts.get(c.kind, 0) + 1
    return counts
