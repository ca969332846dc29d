"""Gradient accumulation as PyTorch autograd does it: ``.grad += g``, one add per parameter tensor.

With ``Scenario.grad_accumulation = "add"`` every weight-gradient action of a model chunk after
its first microbatch is followed by one elementwise add kernel per parameter tensor the GPU holds
for that chunk, reading the stored gradient and the new one and writing the sum: 3 x the tensor's
elements x the gradient element size (``plan.grad_dtype_bytes``), priced by the cost model as
``MemoryOp("elementwise", ..., variant="add")``. ``"fused"`` (Megatron's
gradient_accumulation_fusion: the wgrad GEMM accumulates into the fp32 main gradient) adds nothing.

Parameter tensors of a virtual stage, summing exactly to the table's ``chunk_params``:

* each weight-gradient GEMM of a layer (its W pass) is one tensor of its output size; the routed
  experts' GEMMs of one projection are one tensor over all local experts (a grouped ``[E, k, n]``
  weight, as torchtitan stores them), or one tensor per expert with ``per_expert`` (a per-expert
  module loop, as Megatron's SequentialMLP or a Python loop over ``nn.Linear`` experts);
* what the GEMMs do not cover (norm scales, latent norms) is split into tensors of ``hidden``
  elements (rounded up), one per norm;
* the embedding table (first stage) and the output head and final norm (last stage) are one
  tensor each.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

from moesim.lowering.pipeline import StageWork
from moesim.ops import Gemm, GroupedGemm, MemoryOp
from moesim.schedules.model import Action
from moesim.workload import layers as wl
from moesim.workload import moe_exec

CATEGORY = "grad_accum"


def _weight_elements(op: Any) -> float:
    """Elements of the weight gradient a W-pass GEMM produces (0 for other ops)."""
    if isinstance(op, GroupedGemm):
        return float(op.groups * op.k * op.n)
    if isinstance(op, Gemm):
        return float(op.m * op.n * op.groups)
    return 0.0


def _split(params: float, size: float) -> list[float]:
    """``params`` elements as tensors of about ``size`` elements (at least one when params > 0)."""
    if params < 0.5:
        return []
    n = max(1, math.ceil(params / size - 1e-9))
    return [params / n] * n


def layer_tensors(table: Any, layer: int, per_expert: bool) -> list[float]:
    """Element counts of the parameter tensors one GPU holds for ``layer`` (see the module docstring)."""
    spec = table.spec
    ops = wl.backward_weight_ops(spec, table.kind_of(layer), table.mbs, table.tp, table.sp, table.ep)
    is_expert = [getattr(op, "name", "").startswith("expert") for op in ops]
    tensors = [size for op, expert in zip(ops, is_expert) if not expert and (size := _weight_elements(op))]
    expert_total = sum(_weight_elements(op) for op, expert in zip(ops, is_expert) if expert)
    if expert_total:
        # the routed experts' weights (this GPU's share, as the workload shards them) split as the
        # framework stores them (torchtitan w1 / w3 / w2, Megatron fc1 / fc2): one stacked tensor
        # per projection, or one per local expert
        local = max(1, getattr(spec, "num_experts", 1) // max(1, table.ep))
        shapes = [n * k for _, n, k in moe_exec.expert_projections(spec, getattr(table, "token_movement", "torchtitan"))]
        for part in (expert_total * w / sum(shapes) for w in shapes):
            tensors += [part / local] * local if per_expert else [part]
    rest = table.layer_params(layer) - sum(tensors)
    return tensors + _split(rest, float(spec.hidden))


def stage_tensors(table: Any, stage: int, per_expert: bool = False) -> list[float]:
    """Element counts of every parameter tensor of virtual ``stage`` on one GPU (sum: ``chunk_params``)."""
    layers = list(table._layer_range(stage))   # an MTP module's decoder layer included
    tensors = [size for layer in layers for size in layer_tensors(table, layer, per_expert)]
    edges = table.chunk_params(stage) - sum(table.layer_params(layer) for layer in layers)
    if edges >= 0.5:
        spec, tp = table.spec, table.tp
        embedding = spec.embedding_params / tp if stage == 0 else 0.0
        head = spec.head_params / tp - spec.norm_params / tp if table.schedule.is_last_stage(stage) else 0.0
        parts = [x for x in (embedding, head) if x >= 0.5]
        tensors += parts + _split(edges - sum(parts), float(spec.hidden))
    return tensors


def accumulation_ops(table: Any, stage: int, grad_dtype_bytes: float, per_expert: bool = False) -> list[MemoryOp]:
    """One ``.grad += g`` add kernel per parameter tensor of ``stage``."""
    return [MemoryOp("elementwise", 3.0 * size * grad_dtype_bytes, f"{CATEGORY}.add", variant="add")
            for size in stage_tensors(table, stage, per_expert)]


def accumulation_work(table: Any, stage: int, grad_dtype_bytes: float, per_expert: bool = False) -> StageWork:
    """The add kernels of ``stage`` as one segment on the compute stream, costed as the table
    costs its other segments (kernel region and, where the table prices it, host time)."""
    work = table._cost(accumulation_ops(table, stage, grad_dtype_bytes, per_expert))
    return replace(work, label=CATEGORY, category=CATEGORY)


def make_accumulation(table: Any, grad_dtype_bytes: float, per_expert: bool = False) -> Callable[[Action], StageWork]:
    """``LoweringOptions.accumulate``: the add segment after a weight-gradient action (cached per stage)."""
    cache: dict[int, StageWork] = {}

    def accumulate(action: Action) -> StageWork:
        if action.stage not in cache:
            cache[action.stage] = accumulation_work(table, action.stage, grad_dtype_bytes, per_expert)
        return cache[action.stage]

    return accumulate
