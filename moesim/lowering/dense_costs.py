"""What each pipeline action costs for a dense transformer: the StageWorkTable of the lowering.

It splits the model's layers evenly over the schedule's virtual stages (stage 0 also runs the
embedding, the last stage the output head and loss), asks the workload for each layer's op
programs (compute ops and TP collectives in order) and the cost model for each op's time, and
caches the result per (kind, stage). TP collectives of one action are folded into one
all-reduce-equivalent collective: a ring all-reduce of S bytes costs the same as a reduce-scatter
plus an all-gather of S bytes, so the total time is unchanged while the event count drops.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from moesim.costs.base import CostModel
from moesim.errors import ConfigError
from moesim.lowering.pipeline import StageWork
from moesim.ops import DTYPE_BYTES, MemoryOp
from moesim.schedules.model import Action, Schedule
from moesim.workload import transformer as tf
from moesim.workload.common import CommOp, ProgramItem

# Adam with fp32 master weights: read param, grad, m, v, master; write param, m, v, master
# (bf16 param 2 B, fp32 grad 4 B, m/v/master 4 B each) -> 2+4+4+4+4 read + 2+4+4+4 write = 32 B.
ADAM_BYTES_PER_PARAM = 32.0
AR_EQUIVALENT = {"all_reduce": 1.0, "all_gather": 0.5, "reduce_scatter": 0.5}


def layers_per_stage(num_layers: int, num_stages: int) -> int:
    """Layers in each virtual stage; the split must be even."""
    if num_layers % num_stages:
        raise ConfigError("plan", f"the model's {num_layers} layers do not split evenly over {num_stages} virtual "
                          "pipeline stages", "choose pp (x vpp) dividing the layer count")
    return num_layers // num_stages


class DenseStageTable:
    """StageWorkTable for a dense :class:`~moesim.workload.transformer.TransformerSpec`."""

    def __init__(self, spec: tf.TransformerSpec, schedule: Schedule, cost: CostModel, *, tp: int,
                 micro_batch_size: int, sequence_parallel: bool, grad_dtype_bytes: int = 4) -> None:
        self.spec, self.schedule, self.cost = spec, schedule, cost
        self.tp, self.mbs, self.sp = tp, micro_batch_size, sequence_parallel and tp > 1
        self.grad_dtype_bytes = grad_dtype_bytes
        self.layers = layers_per_stage(spec.num_layers, schedule.num_stages)
        if spec.num_heads % tp or spec.num_kv_heads % tp and spec.num_kv_heads >= tp:
            raise ConfigError("plan.tp", f"tp={tp} does not divide num_heads={spec.num_heads}",
                              "choose a tp that divides the attention heads")

    # -- costing helpers -------------------------------------------------------------------
    def _cost(self, program: Sequence[ProgramItem], repeat: int = 1) -> StageWork:
        ns, flops, ar_bytes, count = 0, 0.0, 0.0, 0.0
        for item in program:
            if isinstance(item, CommOp):
                eq = AR_EQUIVALENT.get(item.op)
                if eq is None:
                    raise ConfigError("workload", f"unexpected collective {item.op!r} in a dense layer")
                ar_bytes += eq * item.bytes
                count += eq
            else:
                ns += self.cost.compute_ns(item)
                flops += item.flops
        return StageWork(ns * repeat, flops * repeat, ar_bytes * repeat, round(count * repeat))

    @staticmethod
    def _sum(*parts: StageWork) -> StageWork:
        return StageWork(sum(p.duration_ns for p in parts), sum(p.flops for p in parts),
                         sum(p.tp_bytes for p in parts), sum(p.tp_collectives for p in parts))

    @lru_cache(maxsize=None)
    def _kind_work(self, kind: str, first: bool, last: bool) -> StageWork:
        s, mbs, tp, sp = self.spec, self.mbs, self.tp, self.sp
        parts: list[StageWork] = []
        if kind == "F":
            parts.append(self._cost(tf.layer_forward_program(s, mbs, tp, sp), self.layers))
            if first:
                parts.append(self._cost(tf.embedding_forward_program(s, mbs, tp, sp)))
            if last:
                parts.append(self._cost(tf.head_forward_program(s, mbs, tp, sp)))
        if kind in ("B", "BW"):
            parts.append(self._cost(tf.layer_backward_input_program(s, mbs, tp, sp), self.layers))
            if last:
                parts.append(self._cost(tf.head_backward_input_program(s, mbs, tp, sp)))
        if kind in ("W", "BW"):
            parts.append(self._cost(tf.layer_backward_weight_ops(s, mbs, tp, sp), self.layers))
            if first:
                parts.append(self._cost(tf.embedding_backward_program(s, mbs, tp, sp)))
            if last:
                parts.append(self._cost(tf.head_backward_weight_ops(s, mbs, tp, sp)))
        return self._sum(*parts)

    # -- StageWorkTable --------------------------------------------------------------------
    def work(self, action: Action) -> StageWork:
        last = self.schedule.is_last_stage(action.stage)
        return self._kind_work(action.kind, action.stage == 0, last)

    def send_bytes(self, action: Action) -> float:
        """Activation (forward) or its gradient (backward) of one microbatch, split over TP."""
        tokens = self.mbs * self.spec.seq_len
        return tokens * self.spec.hidden * DTYPE_BYTES[self.spec.dtype] / self.tp

    def chunk_params(self, stage: int) -> float:
        """Parameters of one virtual stage on one TP rank."""
        lo = stage * self.layers
        params = sum(self.spec.layer_params(i) for i in range(lo, lo + self.layers))
        if stage == 0:
            params += self.spec.embedding_params
        if self.schedule.is_last_stage(stage):
            params += self.spec.head_params
        return params / self.tp

    def _owned(self, rank: int) -> list[tuple[int, int]]:
        """(path, stage) pairs whose weights live on pipeline rank ``rank``."""
        sched = self.schedule
        return [(path, st) for path in range(sched.num_paths) for st in range(sched.num_stages)
                if sched.rank_of(path, st) == rank]

    def grad_bytes(self, rank: int, chunk: int) -> float:
        owned = [st for path, st in self._owned(rank) if self.schedule.chunk_of(path, st) == chunk]
        return sum(self.chunk_params(st) for st in owned) * self.grad_dtype_bytes

    def local_params(self, rank: int) -> float:
        """Parameters one GPU of pipeline rank ``rank`` holds (DualPipe: both directions' copies)."""
        return sum(self.chunk_params(st) for _path, st in self._owned(rank))

    def optimizer_ns(self, rank: int) -> int:
        return self.cost.compute_ns(MemoryOp("elementwise", ADAM_BYTES_PER_PARAM * self.local_params(rank), "adam"))

    def activation_bytes(self, stage: int) -> float:
        """Activation bytes one microbatch keeps on one GPU for one virtual stage."""
        return self.layers * tf.activation_bytes_per_layer(self.spec, self.mbs, self.tp, self.sp)
