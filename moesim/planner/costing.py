"""Per-layer and per-stage work the planner needs, computed once per layer type and cached.

The planner looks at hundreds of candidate layouts of one model; the stage tables of the
lowering would cost every layer of every stage through the cost model again for each. Here one
:class:`LayerCosts` per model and cost model asks the workload for the program of each *kind*
of layer (dense or MoE: every dense and every MoE layer of a transformer spec is alike) per
(pass, tp, micro-batch size, ep), splits it the way the lowering does (non-expert compute, the
routed experts under balanced routing, tensor-parallel collectives in all-reduce-equivalent
bytes) and caches it, so a stage is a sum of cached layer costs plus the embedding and head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moesim.costs.base import CostModel
from moesim.errors import ConfigError
from moesim.lowering.stage_costs import ADAM_BYTES_PER_PARAM, AR_EQUIVALENT
from moesim.ops import DTYPE_BYTES, MemoryOp
from moesim.schedules.model import Action, Schedule, actions_of
from moesim.workload import layers as wl
from moesim.workload import transformer as tf
from moesim.workload.common import CommOp
from moesim.workload.moe import MoESpec
from moesim.workload.transformer import TransformerSpec

PASSES = ("F", "B", "W")


@dataclass(frozen=True)
class PassCost:
    """One pass (F, B or W) over some layers on one GPU."""

    compute_ns: float = 0.0
    expert_ns: float = 0.0
    tp_bytes: float = 0.0
    tp_collectives: float = 0.0
    moe_layers: int = 0

    def __add__(self, other: "PassCost") -> "PassCost":
        return PassCost(self.compute_ns + other.compute_ns, self.expert_ns + other.expert_ns,
                        self.tp_bytes + other.tp_bytes, self.tp_collectives + other.tp_collectives,
                        self.moe_layers + other.moe_layers)

    def scaled(self, share: float) -> "PassCost":
        """``share`` of this pass (a recompute of some of its layers)."""
        return PassCost(share * self.compute_ns, share * self.expert_ns, share * self.tp_bytes,
                        share * self.tp_collectives, round(share * self.moe_layers))

    def times(self, n: int) -> "PassCost":
        return PassCost(n * self.compute_ns, n * self.expert_ns, n * self.tp_bytes, n * self.tp_collectives,
                        n * self.moe_layers)


@dataclass(frozen=True)
class Shard:
    """How one GPU's share of a layer is cut: tensor parallelism, micro-batch, SP, expert parallelism."""

    tp: int
    mbs: int
    sp: bool
    ep: int


class LayerCosts:
    """Cached per-layer-type pass costs and parameter counts of one transformer (dense or MoE)
    model on one cost model. Layers are named by type (``moe`` True/False), so a spec with a
    different layer count but the same shapes (a padded or reduced proxy) reuses the costs."""

    def __init__(self, spec: TransformerSpec, cost: CostModel) -> None:
        if not isinstance(spec, TransformerSpec):
            raise ConfigError("model", f"the planner handles transformer and MoE specs, not {type(spec).__name__}",
                              "plan a TransformerSpec or MoESpec model")
        self.spec, self.cost = spec, cost
        self._cache: dict[tuple, PassCost] = {}
        self._params: dict[tuple, tuple[float, float]] = {}
        self._rep = {spec.is_moe_layer(i): i for i in reversed(range(spec.num_layers))}

    def _layer_index(self, moe: bool) -> int:
        """A layer of the model of the requested type."""
        if moe not in self._rep:
            raise ConfigError("model", f"{self.spec.name} has no {'MoE' if moe else 'dense'} layer",
                              "use a layer pattern of the model's own layer types")
        return self._rep[moe]

    def _program(self, kind: str, layer: int, s: Shard) -> list:
        sp = s.sp and s.tp > 1
        if kind == "F":
            return wl.forward_program(self.spec, layer, s.mbs, s.tp, sp, s.ep)
        if kind == "B":
            return wl.backward_input_program(self.spec, layer, s.mbs, s.tp, sp, s.ep)
        return list(wl.backward_weight_ops(self.spec, layer, s.mbs, s.tp, sp, s.ep))

    def _cost(self, items: list, moe: bool) -> PassCost:
        compute = expert = ar = count = 0.0
        for item in items:
            if isinstance(item, CommOp):
                if item.group == "tp":
                    eq = AR_EQUIVALENT.get(item.op, 1.0)
                    ar, count = ar + eq * item.bytes, count + eq
            elif getattr(item, "name", "").startswith("expert"):
                expert += self.cost.compute_ns(item)
            else:
                compute += self.cost.compute_ns(item)
        return PassCost(compute, expert, ar, count, int(moe))

    def layer(self, kind: str, moe: bool, shard: Shard) -> PassCost:
        """Pass ``kind`` of one dense (``moe`` False) or MoE layer on one GPU."""
        key = (kind, moe, shard)
        if key not in self._cache:
            self._cache[key] = self._cost(self._program(kind, self._layer_index(moe), shard), moe)
        return self._cache[key]

    def edges(self, kind: str, first: bool, last: bool, shard: Shard) -> PassCost:
        """Embedding (first stage) and output head + loss (last stage) work of pass ``kind``."""
        if not isinstance(self.spec, TransformerSpec) or not (first or last):
            return PassCost()
        key = (kind, "edges", first, last, shard)
        if key not in self._cache:
            s, sp = self.spec, shard.sp and shard.tp > 1
            args = (s, shard.mbs, shard.tp, sp)
            items: list = []
            if kind == "F":
                items = (tf.embedding_forward_program(*args) if first else []) + (tf.head_forward_program(*args) if last else [])
            elif kind == "B":
                items = tf.head_backward_input_program(*args) if last else []
            else:
                items = (list(tf.head_backward_weight_ops(*args)) if last else []) + (
                    tf.embedding_backward_program(*args) if first else [])
            self._cache[key] = self._cost(items, False)
        return self._cache[key]

    def stage(self, kind: str, layer_spec: Any, layers: range, first: bool, last: bool, shard: Shard) -> PassCost:
        """Pass ``kind`` over a virtual stage: ``layers`` of ``layer_spec`` (the model or a padded
        or reduced copy of it), plus the embedding and head the stage holds."""
        moe = sum(1 for i in layers if layer_spec.is_moe_layer(i))
        total = self.edges(kind, first, last, shard)
        if moe:
            total = total + self.layer(kind, True, shard).times(moe)
        if len(layers) > moe:
            total = total + self.layer(kind, False, shard).times(len(layers) - moe)
        return total

    def layer_params(self, moe: bool, tp: int, ep: int) -> tuple[float, float]:
        """(all, routed-expert) parameters of one dense or MoE layer on one GPU."""
        key = (moe, tp, ep)
        if key not in self._params:
            total = wl.weight_bytes(self.spec, self._layer_index(moe), tp, ep) / DTYPE_BYTES[self.spec.dtype]
            expert = 0.0
            if moe and isinstance(self.spec, MoESpec):
                expert = float(-(-self.spec.num_experts // ep) * self.spec.expert_params)
            self._params[key] = (total, expert)
        return self._params[key]

    def edge_params(self, first: bool, last: bool, tp: int) -> float:
        """Embedding (first stage) and head (last stage) parameters on one GPU."""
        if not isinstance(self.spec, TransformerSpec):
            return 0.0
        return (self.spec.embedding_params / tp if first else 0.0) + (self.spec.head_params / tp if last else 0.0)

    def optimizer_ns(self, params: float) -> float:
        """The Adam step over ``params`` parameters on one GPU (memory bound, as the lowering)."""
        return float(self.cost.compute_ns(MemoryOp("elementwise", ADAM_BYTES_PER_PARAM * params, "adam")))


def stage_layers(num_layers: int, num_stages: int, stage: int) -> range:
    """Layers of virtual ``stage`` when ``num_layers`` split evenly over ``num_stages``."""
    per = num_layers // num_stages
    return range(stage * per, (stage + 1) * per)


def send_bytes(spec: Any, mbs: int, tp: int) -> float:
    """One microbatch's activation (or its gradient) sent between pipeline stages, split over TP."""
    return mbs * spec.seq_len * spec.hidden * DTYPE_BYTES[spec.dtype] / tp


class StageView:
    """The virtual stages of one schedule under one shard: pass costs (cached per (kind, stage))
    and the parameters each pipeline rank holds. ``layer_spec`` must split evenly over the
    schedule's stages (see :func:`moesim.planner.shapes.padded_to_stages`)."""

    def __init__(self, costs: LayerCosts, layer_spec: Any, schedule: Schedule, shard: Shard) -> None:
        assert layer_spec.num_layers % schedule.num_stages == 0, "pad the spec to the stage count first"
        self.costs, self.layer_spec, self.schedule, self.shard = costs, layer_spec, schedule, shard
        self._passes: dict[tuple[str, int], PassCost] = {}

    def layers(self, stage: int) -> range:
        return stage_layers(self.layer_spec.num_layers, self.schedule.num_stages, stage)

    def pass_cost(self, kind: str, stage: int) -> PassCost:
        """Pass ``kind`` (F, B, W, or BW = B + W) of one microbatch over virtual ``stage``."""
        if kind == "BW":
            return self.pass_cost("B", stage) + self.pass_cost("W", stage)
        key = (kind, stage)
        if key not in self._passes:
            first, last = stage == 0, self.schedule.is_last_stage(stage)
            self._passes[key] = self.costs.stage(kind, self.layer_spec, self.layers(stage), first, last, self.shard)
        return self._passes[key]

    def actions(self, rank: int) -> list[Action]:
        """Every action pipeline rank ``rank`` runs in one step, in order."""
        return [a for step in self.schedule.steps[rank] for a in actions_of(step)]

    def owned_stages(self, rank: int) -> list[int]:
        """Virtual stages whose weights live on ``rank`` (DualPipe: both directions' copies)."""
        s = self.schedule
        return [st for path in range(s.num_paths) for st in range(s.num_stages) if s.rank_of(path, st) == rank]

    def rank_params(self, rank: int) -> tuple[float, float]:
        """(all, routed-expert) parameters on one GPU of pipeline rank ``rank``."""
        total = expert = 0.0
        tp, ep = self.shard.tp, self.shard.ep
        for st in self.owned_stages(rank):
            for layer in self.layers(st):
                t, e = self.costs.layer_params(self.layer_spec.is_moe_layer(layer), tp, ep)
                total, expert = total + t, expert + e
            total += self.costs.edge_params(st == 0, self.schedule.is_last_stage(st), tp)
        return total, expert
