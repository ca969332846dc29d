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

from moesim.costs.regions import sequence
from moesim.lowering.stage_costs import StageTable
from moesim.lowering.pipeline import StageWork
from moesim.ops import DTYPE_BYTES
from moesim.workload import moe as moe_ops
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


class MoEStageTable(StageTable):
    """StageWorkTable with per-layer MoE exchanges; dense parts costed as in StageTable."""

    def __init__(self, spec: moe_ops.MoESpec, schedule, cost, *, tp: int, ep: int, micro_batch_size: int,
                 sequence_parallel: bool, grad_dtype_bytes: int = 4, recompute: str = "none") -> None:
        super().__init__(spec, schedule, cost, tp=tp, micro_batch_size=micro_batch_size,
                         sequence_parallel=sequence_parallel, grad_dtype_bytes=grad_dtype_bytes, ep=ep,
                         recompute=recompute)
        self.tokens_per_rank = moe_ops.moe_input_tokens(spec, micro_batch_size, tp, self.sp)

    def _layer_segments(self, kind: str, layer: int, acc: list[ProgramItem]) -> tuple[list, list[ProgramItem]]:
        program = self._program(kind, layer)
        if not self.spec.is_moe_layer(layer):
            return [], acc + program
        if kind == "W":
            rest = [x for x in program if not _is_expert(x)]
            return [self._cost(acc + rest), Exchange(layer, "W", StageWork(0, 0.0))], []
        pre, post, shared = split_moe_program(program)
        return [self._cost(acc + pre), Exchange(layer, kind, self._cost(shared))], list(post)

    # -- gradients ---------------------------------------------------------------------------
    def _chunk_expert_params(self, rank: int, chunk: "int | None") -> float:
        stages = [st for path, st in self.layout.held[rank] if chunk is None or self.schedule.chunk_of(path, st) == chunk]
        layers = sum(1 for st in stages for layer in self._layer_range(st) if self.spec.is_moe_layer(layer))
        return layers * (self.spec.num_experts // self.ep) * self.spec.expert_params

    def expert_grad_bytes(self, rank: int, chunk: int) -> float:
        """Gradient bytes of the routed experts of one model chunk on one GPU (whole experts:
        ``num_experts / ep`` per MoE layer); they reduce over the expert-data-parallel group."""
        return self._chunk_expert_params(rank, chunk) * self.grad_dtype_bytes

    def expert_params(self, rank: int) -> float:
        return self._chunk_expert_params(rank, None)

    # -- expert costs and payloads -----------------------------------------------------------
    def expert_ns(self, phase: str, num_tokens: int) -> int:
        """One expert's FFN on ``num_tokens`` tokens in phase F, B (input grad) or W (weight grad):
        its kernels back to back (:mod:`moesim.costs.regions`)."""
        return self._expert(phase, num_tokens)[0]

    @lru_cache(maxsize=None)
    def expert_kernels(self, phase: str) -> int:
        """Kernels one expert's FFN launches in ``phase`` (independent of its token count)."""
        build = {"F": moe_ops.expert_forward_ops, "B": moe_ops.expert_backward_input_ops,
                 "W": moe_ops.expert_backward_weight_ops}[phase]
        return len(build(self.spec, 1))

    def expert_region_ns(self, phase: str, num_tokens: int) -> int:
        """What that expert's task saves when queued behind another on its stream."""
        return self._expert(phase, num_tokens)[1]

    @lru_cache(maxsize=None)
    def _expert(self, phase: str, num_tokens: int) -> tuple[int, int]:
        build = {"F": moe_ops.expert_forward_ops, "B": moe_ops.expert_backward_input_ops,
                 "W": moe_ops.expert_backward_weight_ops}[phase]
        return sequence([self.cost.compute_ns(op) for op in build(self.spec, num_tokens)], *self.region)

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
