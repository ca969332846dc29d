"""Segments of each pipeline action for an MoE model: compute, then the MoE exchange, per layer.

For an MoE layer the workload's program is ``[attention.., norm, router, permute, DISPATCH,
experts (balanced), COMBINE, unpermute, shared experts.., residual]``. This table cuts it at the
two expert-parallel all-to-alls: what precedes the dispatch and what follows the combine become
:class:`StageWork` segments (dense layers in between fold into them); the balanced expert
compute is dropped and replaced, in an :class:`Exchange` segment, by per-GPU expert work sized
from the actual routing counts and placement; the shared experts move into the exchange so they
run while the dispatch is in flight. Backward mirrors this; W (weight gradients) has a per-GPU
expert segment with no communication.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from moesim.lowering.dense_costs import DenseStageTable
from moesim.lowering.pipeline import StageWork
from moesim.ops import DTYPE_BYTES
from moesim.schedules.model import Action
from moesim.workload import layers as wl
from moesim.workload import moe as moe_ops
from moesim.workload import transformer as tf
from moesim.workload.common import CommOp, ProgramItem


@dataclass(frozen=True)
class Exchange:
    """The MoE block of ``layer`` in ``phase`` F (dispatch, experts, combine), B (mirrored) or W
    (expert weight gradients only); ``shared`` runs while the first all-to-all is in flight."""

    layer: int
    phase: str
    shared: StageWork


def _is_ep(item: ProgramItem) -> bool:
    return isinstance(item, CommOp) and item.group == "ep"


def _is_shared(item: ProgramItem) -> bool:
    return getattr(item, "name", "").startswith("shared")


def _is_expert(item: ProgramItem) -> bool:
    return getattr(item, "name", "").startswith("expert")


def split_moe_program(program: list[ProgramItem]) -> tuple[list, list, list]:
    """(before the first EP all-to-all, after the second, shared-expert items), experts dropped."""
    cut = [i for i, item in enumerate(program) if _is_ep(item)]
    assert len(cut) == 2, f"an MoE block program has two expert-parallel all-to-alls, found {len(cut)}"
    pre, post = program[:cut[0]], program[cut[1] + 1:]
    shared = [x for x in pre + post if _is_shared(x)]
    return [x for x in pre if not _is_shared(x)], [x for x in post if not _is_shared(x)], shared


class MoEStageTable(DenseStageTable):
    """StageWorkTable with per-layer MoE exchanges; costs of the dense parts as the dense table."""

    def __init__(self, spec: moe_ops.MoESpec, schedule, cost, *, tp: int, ep: int, micro_batch_size: int,
                 sequence_parallel: bool, grad_dtype_bytes: int = 4) -> None:
        super().__init__(spec, schedule, cost, tp=tp, micro_batch_size=micro_batch_size,
                         sequence_parallel=sequence_parallel, grad_dtype_bytes=grad_dtype_bytes)
        self.ep = ep
        self.tokens_per_rank = moe_ops.moe_input_tokens(spec, micro_batch_size, tp, self.sp)

    # -- segments --------------------------------------------------------------------------
    def _layer_range(self, stage: int) -> range:
        return range(stage * self.layers, (stage + 1) * self.layers)

    def _program(self, kind: str, layer: int) -> list[ProgramItem]:
        s, mbs, tp, sp, ep = self.spec, self.mbs, self.tp, self.sp, self.ep
        if kind == "F":
            return wl.forward_program(s, layer, mbs, tp, sp, ep)
        if kind == "B":
            return wl.backward_input_program(s, layer, mbs, tp, sp, ep)
        return list(wl.backward_weight_ops(s, layer, mbs, tp, sp, ep))

    def _pass(self, kind: str, stage: int) -> list:
        """Segments of one pass (F, B or W) over the stage's layers."""
        first, last = stage == 0, self.schedule.is_last_stage(stage)
        s, mbs, tp, sp = self.spec, self.mbs, self.tp, self.sp
        layers = list(self._layer_range(stage))
        acc: list[ProgramItem] = []
        if kind == "F" and first:
            acc += tf.embedding_forward_program(s, mbs, tp, sp)
        if kind == "B" and last:
            acc += tf.head_backward_input_program(s, mbs, tp, sp)
        if kind == "W" and last:
            acc += tf.head_backward_weight_ops(s, mbs, tp, sp)
        out: list = []
        for layer in (reversed(layers) if kind == "B" else layers):
            program = self._program(kind, layer)
            if not s.is_moe_layer(layer):
                acc += program
            elif kind == "W":
                acc += [x for x in program if not _is_expert(x)]
                out += [self._cost(acc), Exchange(layer, "W", StageWork(0, 0.0))]
                acc = []
            else:
                pre, post, shared = split_moe_program(program)
                out += [self._cost(acc + pre), Exchange(layer, kind, self._cost(shared))]
                acc = list(post)
        if kind == "F" and last:
            acc += tf.head_forward_program(s, mbs, tp, sp)
        if kind == "W" and first:
            acc += tf.embedding_backward_program(s, mbs, tp, sp)
        out.append(self._cost(acc))
        return out

    @lru_cache(maxsize=None)
    def _segments(self, kind: str, stage: int) -> tuple:
        if kind == "BW":
            return tuple(self._pass("B", stage) + self._pass("W", stage))
        return tuple(self._pass(kind, stage))

    def segments(self, action: Action) -> tuple:
        """Compute and exchange segments of ``action``, first and last always compute."""
        return self._segments(action.kind, action.stage)

    def work(self, action: Action) -> StageWork:
        segs = [x for x in self.segments(action) if isinstance(x, StageWork)]
        return self._sum(*segs)

    def chunk_params(self, stage: int) -> float:
        """Parameters of one virtual stage on one GPU: dense parts / tp, routed experts / ep.

        (Expert gradients are reduced over the whole DP group here; Megatron reduces them over
        the expert-data-parallel group dp/ep, which moves the same bytes per GPU with a smaller
        ring.)"""
        s = self.spec
        total = 0.0
        for layer in self._layer_range(stage):
            params = s.layer_params(layer)
            if s.is_moe_layer(layer):
                routed = s.num_experts * s.expert_params
                params = (params - routed) / self.tp + routed / self.ep
            else:
                params /= self.tp
            total += params
        if stage == 0:
            total += s.embedding_params / self.tp
        if self.schedule.is_last_stage(stage):
            total += s.head_params / self.tp
        return total

    def activation_bytes(self, stage: int) -> float:
        return sum(wl.activation_bytes(self.spec, layer, self.mbs, self.tp, self.sp, self.ep)
                   for layer in self._layer_range(stage))

    # -- expert costs and payloads -----------------------------------------------------------
    @lru_cache(maxsize=None)
    def expert_ns(self, phase: str, num_tokens: int) -> int:
        """One expert's FFN on ``num_tokens`` tokens in phase F, B (input grad) or W (weight grad)."""
        build = {"F": moe_ops.expert_forward_ops, "B": moe_ops.expert_backward_input_ops,
                 "W": moe_ops.expert_backward_weight_ops}[phase]
        return sum(self.cost.compute_ns(op) for op in build(self.spec, num_tokens))

    @lru_cache(maxsize=None)
    def expert_flops(self, phase: str, num_tokens: int) -> float:
        build = {"F": moe_ops.expert_forward_ops, "B": moe_ops.expert_backward_input_ops,
                 "W": moe_ops.expert_backward_weight_ops}[phase]
        return sum(op.flops for op in build(self.spec, num_tokens))

    def bytes_per_token(self, phase: str) -> tuple[float, float]:
        """(outbound, return) bytes per routed token: dispatch/combine forward, gradients backward."""
        if phase == "F":
            return moe_ops.dispatch_bytes_per_token(self.spec), moe_ops.combine_bytes_per_token(self.spec)
        grad = self.spec.hidden * DTYPE_BYTES[self.spec.dtype]
        return grad, grad
