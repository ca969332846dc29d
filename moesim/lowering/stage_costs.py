"""What each pipeline action costs: the StageWorkTable of the lowering, for any model.

The model's layers split over the schedule's virtual stages, evenly when they divide (stage 0 also runs the
embedding, the last stage the output head and loss, for transformer specs; custom block models
have neither). For an action the table walks the stage's layers (backward in reverse), asks the
workload for each layer's program (compute ops and TP collectives in order) and the cost model
for each op's time, and returns *segments*: :class:`StageWork` (compute plus the TP traffic it
carries) and, for MoE models (:mod:`moesim.lowering.moe_costs`), exchanges. A dense model gives
one segment per pass. Results are cached per (kind, stage).

TP collectives of a segment are folded into one all-reduce-equivalent collective: a ring
all-reduce of S bytes costs the same as a reduce-scatter plus an all-gather of S bytes, so the
total time is unchanged while the event count drops.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

from moesim.costs.base import CostModel
from moesim.costs.regions import kernel_region, sequence
from moesim.errors import ConfigError
from moesim.lowering.fp8_quantize import with_quantize
from moesim.lowering.host import HostPricing, host_pricing
from moesim.lowering.op_classes import class_times
from moesim.lowering.pipeline import StageWork
from moesim.memory.layout import layout_from_schedule, split_layers
from moesim.ops import DTYPE_BYTES, Attention, MemoryOp
from moesim.schedules.model import Action, Schedule
from moesim.workload import layers as wl
from moesim.workload import transformer as tf
from moesim.workload.common import CommOp, ProgramItem

# Adam with fp32 master weights: read param, grad, m, v, master; write param, m, v, master
# (bf16 param 2 B, fp32 grad 4 B, m/v/master 4 B each) -> 2+4+4+4+4 read + 2+4+4+4 write = 32 B.
ADAM_BYTES_PER_PARAM = 32.0
AR_EQUIVALENT = {"all_reduce": 1.0, "all_gather": 0.5, "reduce_scatter": 0.5}


def stage_layer_ranges(num_layers: int, num_stages: int, leading: int = 0, trailing: int = 0) -> tuple[range, ...]:
    """The layers of each virtual stage, split as the memory budget splits them
    (:func:`moesim.memory.layout.split_layers`: the first stages take one slot more, as Megatron's
    uneven split; ``leading`` / ``trailing`` slots for the embedding and the loss and MTP modules
    where ``memory.account_for_*_in_pipeline_split`` asks, as ``MemoryConfig.split_slots`` gives
    them: then the first or last stage may hold the embedding or the loss and MTP modules alone,
    as Megatron's ``Et|(tt|)*30mL`` layout does). Without them fewer layers than stages is an error."""
    if num_layers < num_stages:
        raise ConfigError("plan", f"the model's {num_layers} layers cannot fill {num_stages} virtual pipeline "
                          "stages (a stage would hold no layer)", "use fewer stages (pp x vpp <= layers)")
    return split_layers(num_layers, num_stages, leading, trailing)


def program_work(cost: CostModel, program: Sequence[ProgramItem], region: tuple[float, float],
                 host: "HostPricing | None" = None) -> StageWork:
    """One segment: its kernels back to back on one stream (:mod:`moesim.costs.regions`: each at
    its in-stream time, the region cost once; unchanged for a cost model without one), its
    FLOPs and the TP collectives it carries; ``region`` is :func:`~moesim.costs.regions.kernel_region`.
    With ``host`` pricing per op class (:class:`~moesim.lowering.host.HostPricing`) the segment
    also carries the host time of issuing its ops (each op in its own phase, so a recomputed
    forward inside a backward is priced as a forward call), computed once here."""
    times, ops, flops, ar_bytes, count, calls = [], [], 0.0, 0.0, 0.0, 0
    for item in program:
        if isinstance(item, CommOp):
            eq = AR_EQUIVALENT.get(item.op)
            if eq is None:
                raise ConfigError("workload", f"unexpected collective {item.op!r} outside an MoE exchange")
            ar_bytes += eq * item.bytes
            count += eq
            calls += 1
        else:
            times.append(cost.compute_ns(item))
            ops.append(item)
            flops += item.flops
    ns, region_ns = sequence(times, *region)
    host_ns = host.ops_ns(ops, None) if host is not None and host.per_op else 0
    return StageWork(ns, flops, ar_bytes, round(count), region_ns=region_ns, kernels=len(times),
                     host_ns=host_ns, tp_calls=calls, op_ns=class_times(ops, times))


class StageTable:
    """StageWorkTable for dense transformer and custom block models."""

    token_movement = "torchtitan"   # an MoE layer's router and token movement (MoEStageTable: the scenario's)
    expert_tp = 1   # each GPU holds 1/expert_tp of its routed experts (MoEStageTable: ParallelPlan.expert_tp)

    def __init__(self, spec, schedule: Schedule, cost: CostModel, *, tp: int, micro_batch_size: int,
                 sequence_parallel: bool, grad_dtype_bytes: int = 4, ep: int = 1, recompute: str = "none",
                 autograd: bool = True, recompute_modules: "tuple[str, ...] | None" = None,
                 recompute_at: "Callable[[int], str] | None" = None,
                 split_slots: tuple[int, int] = (0, 0)) -> None:
        self.spec, self.schedule, self.cost = spec, schedule, cost
        self.region = kernel_region(cost)  # (region_ns, floor_ns): 0 for the roofline
        self.host = host_pricing(cost, autograd=autograd)  # host time per op class (segments' host_ns);
        # autograd=False: a forward-only run under torch.no_grad
        self.recompute = recompute
        # which layers of a model chunk "full" recomputes (MemoryConfig.recompute_at; None: every layer)
        self.recompute_at = recompute_at
        # --recompute-modules under "selective" (None: Megatron's default, the attention core)
        self.recompute_modules = tuple(recompute_modules) if recompute_modules is not None else None
        self.tp, self.mbs, self.sp, self.ep = tp, micro_batch_size, sequence_parallel and tp > 1, ep
        self.grad_dtype_bytes = grad_dtype_bytes
        # the split the memory budget uses (MemoryConfig.split_slots); refuses stages with no layer
        stage_layer_ranges(spec.num_layers, schedule.num_stages, *split_slots)
        self.layout = layout_from_schedule(schedule, spec.num_layers, *split_slots)
        self.has_embedding = isinstance(spec, tf.TransformerSpec)
        # DeepSeek-V3's MTP modules train on the last stage (a forward-only run has no MTP loss)
        self.mtp_depth = spec.num_nextn_predict_layers if self.has_embedding and autograd else 0
        if self.has_embedding and spec.num_heads % tp:
            raise ConfigError("plan.tp", f"tp={tp} does not divide num_heads={spec.num_heads}",
                              "choose a tp that divides the attention heads")

    # -- costing helpers -------------------------------------------------------------------
    def _cost(self, program: Sequence[ProgramItem]) -> StageWork:
        """One segment of ``program``, each FP8 GEMM preceded by its operand's quantize kernels
        (:mod:`moesim.lowering.fp8_quantize`; nothing added without FP8 GEMMs)."""
        return program_work(self.cost, with_quantize(program, DTYPE_BYTES[self.spec.dtype]), self.region, self.host)

    @staticmethod
    def _sum(*parts: StageWork) -> StageWork:
        return StageWork(sum(p.duration_ns for p in parts), sum(p.flops for p in parts),
                         sum(p.tp_bytes for p in parts), sum(p.tp_collectives for p in parts),
                         region_ns=parts[0].region_ns if parts else 0, kernels=sum(p.kernels for p in parts),
                         host_ns=sum(p.host_ns for p in parts), tp_calls=sum(p.tp_calls for p in parts))

    def _layer_range(self, stage: int) -> "range | tuple[int, ...]":
        """The layers one pass of ``stage`` runs; on the last stage of a training run of a model
        with MTP, the MTP modules' decoder layers follow as layers ``num_layers + d``."""
        layers = self.layout.stage_layers[stage]
        if self.mtp_depth and self.schedule.is_last_stage(stage):
            return (*layers, *range(self.spec.num_layers, self.spec.num_layers + self.mtp_depth))
        return layers

    def kind_of(self, layer: int) -> int:
        """The model layer whose shapes ``layer`` has (an MTP decoder layer: the last one's)."""
        return self.spec.kind_of_layer(layer) if layer >= self.spec.num_layers else layer

    @property
    def moe_layers(self) -> list[int]:
        """Every MoE layer a step runs, the MTP modules' included (the routing draws one per layer)."""
        if not getattr(self.spec, "num_experts", 0):
            return []
        return [layer for layer in range(self.spec.num_layers + self.mtp_depth) if self.spec.is_moe_layer(layer)]

    def _program(self, kind: str, layer: int) -> list[ProgramItem]:
        """A pass of ``layer``; an MTP decoder layer (``layer >= num_layers``) carries its module's
        embedding, norms and projection (:func:`moesim.workload.layers.mtp_pre_forward`)."""
        s, mbs, tp, sp, ep = self.spec, self.mbs, self.tp, self.sp, self.ep
        mtp = layer >= s.num_layers
        kind_layer = self.kind_of(layer)
        if kind == "F":
            pre = wl.mtp_pre_forward(s, mbs, tp, sp) if mtp else []
            return pre + wl.forward_program(s, kind_layer, mbs, tp, sp, ep, self.token_movement)
        if kind == "B":
            post = wl.mtp_pre_backward_input(s, mbs) if mtp else []
            return wl.backward_input_program(s, kind_layer, mbs, tp, sp, ep, self.token_movement) + post
        extra = wl.mtp_pre_weight_ops(s, mbs, tp, sp) if mtp else []
        return list(wl.backward_weight_ops(s, kind_layer, mbs, tp, sp, ep)) + extra

    def _edges(self, kind: str, stage: int) -> tuple[list[ProgramItem], list[ProgramItem]]:
        """Embedding / head work before and after the layers of a pass on this stage."""
        if not self.has_embedding:
            return [], []
        s, mbs, tp, sp = self.spec, self.mbs, self.tp, self.sp
        first, last = stage == 0, self.schedule.is_last_stage(stage)
        before: list[ProgramItem] = []
        after: list[ProgramItem] = []
        heads = 1 + self.mtp_depth   # on the last stage: the model's head, then each MTP module's (shared weights)
        if kind == "F":
            before = tf.embedding_forward_program(s, mbs, tp, sp) if first else []
            after = tf.head_forward_program(s, mbs, tp, sp) * heads if last else []
        elif kind == "B":
            before = tf.head_backward_input_program(s, mbs, tp, sp) * heads if last else []
        else:
            before = list(tf.head_backward_weight_ops(s, mbs, tp, sp)) * heads if last else []
            after = tf.embedding_backward_program(s, mbs, tp, sp) if first else []
        return before, after

    def _recomputed(self, layer: int, position: int = 0) -> list[ProgramItem]:
        """What the backward of ``layer`` (at ``position`` in its model chunk) re-runs first:
        nothing, the attention core ("selective") or the layer's forward ("full", on the layers
        ``recompute_at`` names; for an MoE layer its attention part only, since re-running the
        expert exchange is not what frameworks do)."""
        s, mbs, tp, sp = self.spec, self.mbs, self.tp, self.sp
        if self.recompute == "none":
            return []
        if self.recompute == "full" and self.recompute_at is not None and self.recompute_at(position) == "kept":
            return []
        if not self.has_embedding:
            return self._program("F", layer) if self.recompute == "full" else []
        if self.recompute == "selective" and self.recompute_modules is not None:
            return self._recomputed_modules(layer)
        if s.is_moe_layer(layer):
            attention = tf.attention_forward_program(s, mbs, tp, sp)
            if self.recompute == "full":
                return attention
            return [op for op in attention if isinstance(op, Attention)]
        return tf.recompute_forward_ops(s, mbs, tp, sp, self.recompute)

    def _recomputed_modules(self, layer: int) -> list[ProgramItem]:
        """The forward items of ``layer`` its ``--recompute-modules`` re-run before backward
        (:func:`moesim.workload.layers.recompute_program`). Of an MoE layer, the attention part and
        the pre-MoE norm; the MoE block's ``moe_act`` and ``shared_experts`` re-run inside the
        expert exchange (:class:`moesim.lowering.moe_costs.MoEStageTable`); ``moe`` (the whole
        block, dispatch included) frees memory (:mod:`moesim.memory.activations`) but its re-run is
        not simulated: :attr:`unsimulated_recompute` names it."""
        items = wl.recompute_program(self.spec, self.kind_of(layer), self.mbs, self.tp, self.sp, self.ep, "selective",
                                     self.recompute_modules, getattr(self, "token_movement", "torchtitan"))
        if not self.spec.is_moe_layer(layer):
            return items
        return [i for i in items if i.name.startswith("attn.") or i.name == "moe.norm"]

    @property
    def unsimulated_recompute(self) -> tuple[str, ...]:
        """Recompute modules whose memory saving is counted but whose re-run is not simulated."""
        if self.recompute != "selective" or not self.recompute_modules or not getattr(self.spec, "num_experts", 0):
            return ()
        return tuple(m for m in self.recompute_modules if m == "moe")

    def _layer_segments(self, kind: str, layer: int, acc: list[ProgramItem]) -> tuple[list, list[ProgramItem]]:
        """Segments a layer closes (none for a dense layer) and the open compute after it."""
        return [], acc + self._program(kind, layer)

    def _pass(self, kind: str, stage: int) -> list:
        """Segments of one pass (F, B or W) over the stage's layers, first and last compute."""
        before, after = self._edges(kind, stage)
        layers = list(self._layer_range(stage))
        out: list = []
        acc: list[ProgramItem] = list(before)
        for layer in (reversed(layers) if kind == "B" else layers):
            if kind == "B":
                acc = acc + self._recomputed(layer, layers.index(layer))
            closed, acc = self._layer_segments(kind, layer, acc)
            out += closed
        out.append(self._cost(acc + after))
        return out

    @lru_cache(maxsize=None)
    def _segments(self, kind: str, stage: int) -> tuple:
        if kind == "BW":
            return tuple(self._pass("B", stage) + self._pass("W", stage))
        return tuple(self._pass(kind, stage))

    # -- StageWorkTable --------------------------------------------------------------------
    def segments(self, action: Action) -> tuple:
        """Compute (and exchange) segments of ``action``; the first and last are compute."""
        return self._segments(action.kind, action.stage)

    def work(self, action: Action) -> StageWork:
        """Total compute of ``action`` (all its StageWork segments)."""
        return self._sum(*[x for x in self.segments(action) if isinstance(x, StageWork)])

    def send_bytes(self, action: Action) -> float:
        """Activation (forward) or its gradient (backward) of one microbatch, split over TP."""
        tokens = self.mbs * self.spec.seq_len
        return tokens * self.spec.hidden * DTYPE_BYTES[self.spec.dtype] / self.tp

    def layer_params(self, layer: int) -> float:
        """Parameters of one layer held by one GPU."""
        return wl.weight_bytes(self.spec, self.kind_of(layer), self.tp, self.ep,
                               self.expert_tp) / DTYPE_BYTES[self.spec.dtype]

    def chunk_params(self, stage: int) -> float:
        """Parameters of one virtual stage on one GPU (embedding and head included)."""
        params = sum(self.layer_params(layer) for layer in self._layer_range(stage))
        if self.has_embedding and stage == 0:
            params += self.spec.embedding_params / self.tp
        if self.has_embedding and self.schedule.is_last_stage(stage):
            params += self.spec.head_params / self.tp
            if self.mtp_depth:   # MTP norms and projections (replicated over TP, as Megatron's MTP)
                params += self.spec.mtp_extra_params
        return params

    def grad_bytes(self, rank: int, chunk: int) -> float:
        owned = [st for path, st in self.layout.held[rank] if self.schedule.chunk_of(path, st) == chunk]
        return sum(self.chunk_params(st) for st in owned) * self.grad_dtype_bytes

    def local_params(self, rank: int) -> float:
        """Parameters one GPU of pipeline rank ``rank`` holds (DualPipe: both directions' copies)."""
        return sum(self.chunk_params(st) for _path, st in self.layout.held[rank])

    @property
    def param_dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.spec.dtype]

    def expert_params(self, rank: int) -> float:
        """Routed-expert parameters one GPU of pipeline rank ``rank`` holds (0 for a dense model)."""
        return 0.0

    def optimizer_ns(self, rank: int, dense_shards: int = 1, expert_shards: int = 1) -> int:
        """Adam over this GPU's parameters; with ZeRO-1 over its shard (dense / ``dense_shards``,
        routed experts / ``expert_shards``)."""
        experts = self.expert_params(rank)
        params = (self.local_params(rank) - experts) / dense_shards + experts / expert_shards
        return self.cost.compute_ns(MemoryOp("elementwise", ADAM_BYTES_PER_PARAM * params, "adam"))
