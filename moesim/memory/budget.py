"""The per-GPU memory budget: :func:`memory_budget` and the :class:`Budget` it returns.

For every pipeline rank it adds up, per GPU of that rank (all GPUs of a rank are alike under
uniform TP/EP sharding): weights (dense = attention, norms and dense FFNs; embedding and head
on the ranks holding the first and last stage; shared experts; router; routed experts =
ceil(num_experts / ep) + replicas per MoE layer, / expert_tp), gradients, optimizer states,
the ZeRO-3 gather buffer, activations (per-microbatch bytes from the workload, walked over the
rank's step order so the count is the schedule's peak in-flight microbatch-chunks), the router
state inside them, all-to-all and pipeline buffers, the KV cache (inference) and the framework
reserve. The worst rank is the budget's verdict against the device's HBM.

Sharding assumptions (Megatron-Core MoE "parallel folding"): dense parameters are split over
tp and replicated over dp; routed experts are split over ep x expert_tp inside the tp x dp
ranks of a stage, so the expert-data-parallel group is ``tp*dp / (ep*expert_tp)``. ZeRO-1
(or the distributed optimizer) shards optimizer states, ZeRO-2 also gradients, ZeRO-3 also
weights: dense state over dp, expert state over the expert-DP group.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from moesim.costs.devices import GIB, DeviceSpec, get_device
from moesim.errors import ConfigError
from moesim.memory import parts as P
from moesim.memory.activations import check_modules_exist
from moesim.memory.config import DEFAULT_P2P_BUFFERS_PER_PATH, MemoryConfig
from moesim.memory.layout import (
    Layout,
    concurrent_microbatches,
    layout_from_schedule,
    looped_layout,
    peak_inflight,
    peak_live_bytes,
    split_layers,
)
from moesim.schedules import Schedule, generate
from moesim.workload.moe import MoESpec, moe_input_tokens
from moesim.workload.parallel import ParallelPlan
from moesim.workload.transformer import TransformerSpec

__all__ = ["PARTS", "Budget", "MemoryConfig", "RankBudget", "Sharding", "memory_budget"]

PARTS = ("weights_dense", "weights_embedding", "weights_shared_experts", "weights_router", "weights_experts",
         "gradients", "optimizer_states", "zero3_gather_buffer", "activations", "router_state", "a2a_buffers",
         "pipeline_buffers", "kv_cache", "framework_reserve")
WEIGHT_PARTS = {"dense": "weights_dense", "embedding": "weights_embedding",
                "shared_experts": "weights_shared_experts", "router": "weights_router", "experts": "weights_experts"}


@dataclass(frozen=True)
class Sharding:
    """The sizes the budget divided by, kept so ``validate_budget`` can check them."""

    num_layers: int
    num_stages: int
    tp: int
    dp: int
    pp: int
    vpp: int
    num_experts: int
    ep: int
    expert_tp: int
    expert_dp: int
    zero_stage: int
    shared_ffn_hidden: int = 0
    split_slots: int = 0  # embedding / loss / MTP slots counted as layers in the pipeline split


@dataclass(frozen=True)
class RankBudget:
    """One pipeline rank's parts (bytes per GPU of that rank)."""

    rank: int
    parts: dict[str, float] = field(hash=False)
    total_bytes: float
    peak_inflight: int
    num_layers: int


@dataclass(frozen=True)
class Budget:
    """The per-GPU memory budget of a plan: the worst GPU's parts and every rank's."""

    model: str
    device: str
    schedule: str
    mode: str
    parts: dict[str, float] = field(hash=False)
    total_bytes: float
    hbm_bytes: float
    worst_rank: int
    per_rank: tuple[RankBudget, ...]
    sharding: Sharding
    notes: tuple[str, ...] = ()

    @property
    def margin_bytes(self) -> float:
        """HBM left on the worst GPU (negative when over)."""
        return self.hbm_bytes - self.total_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.hbm_bytes

    @property
    def used_fraction(self) -> float:
        """Share of HBM the worst GPU uses (above 1 when over)."""
        return self.total_bytes / self.hbm_bytes

    def verdict(self) -> str:
        """One line: fits with a margin, or over by how much."""
        used = f"{self.total_bytes / GIB:.2f} GiB of {self.hbm_bytes / GIB:.2f} GiB ({100 * self.used_fraction:.1f}%)"
        worst = f"(worst GPU: pipeline rank {self.worst_rank})"
        if self.fits:
            return f"fits: {used}, margin {self.margin_bytes / GIB:.2f} GiB {worst}"
        return f"over by {-self.margin_bytes / GIB:.2f} GiB: {used} {worst}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model": self.model, "device": self.device, "schedule": self.schedule, "mode": self.mode,
            "parts": dict(self.parts), "total_bytes": self.total_bytes, "hbm_bytes": self.hbm_bytes,
            "margin_bytes": self.margin_bytes, "fits": self.fits, "used_fraction": self.used_fraction,
            "worst_rank": self.worst_rank, "verdict": self.verdict(), "sharding": asdict(self.sharding),
            "per_rank": [{"rank": r.rank, "parts": dict(r.parts), "total_bytes": r.total_bytes,
                          "peak_inflight": r.peak_inflight, "num_layers": r.num_layers} for r in self.per_rank],
            "notes": list(self.notes),
        }


def memory_budget(spec: Any, plan: "ParallelPlan", schedule_name: str = "1f1b",
                  config: MemoryConfig | None = None, device: DeviceSpec | str = "H100") -> Budget:
    """Per-GPU memory of ``spec`` under ``plan`` and pipeline schedule ``schedule_name``.

    ``config`` defaults to :class:`MemoryConfig` (), ``device`` is a :class:`DeviceSpec` or a
    registry name. In inference mode (``config.inference``) the schedule is not used: stages
    are looped over pp x vpp and nothing is kept for backward.
    """
    config = config or MemoryConfig()
    dev = device if isinstance(device, DeviceSpec) else get_device(device)
    if config.active_recompute_modules and isinstance(spec, TransformerSpec) and config.recompute_modules is not None:
        check_modules_exist(spec, config.recompute_modules)
    if config.inference:
        layout = looped_layout(plan.pp, plan.vpp, spec.num_layers)
        sharding = _sharding(spec, plan, config, layout)
        ranks = [_inference_rank(spec, plan, config, layout, r) for r in range(layout.num_ranks)]
        sched_label = "none"
    else:
        split_layers(spec.num_layers, plan.pp, *config.split_slots(spec))  # more ranks than layers: refused before
        schedule = make_schedule(schedule_name, plan)                      # generating (pp = 100,000 took seconds)
        layout = layout_from_schedule(schedule, spec.num_layers, *config.split_slots(spec))
        sharding = _sharding(spec, plan, config, layout)
        ranks = [_training_rank(spec, plan, config, sharding, layout, schedule, r) for r in range(layout.num_ranks)]
        sched_label = schedule_name
    worst = max(ranks, key=lambda r: (r.total_bytes, -r.rank))
    return Budget(model=getattr(spec, "name", "model"), device=dev.name, schedule=sched_label,
                  mode="inference" if config.inference else "training", parts=dict(worst.parts),
                  total_bytes=worst.total_bytes, hbm_bytes=float(dev.hbm_bytes), worst_rank=worst.rank,
                  per_rank=tuple(ranks), sharding=sharding, notes=_notes(spec, config, sharding, layout))


def make_schedule(name: str, plan: "ParallelPlan") -> Schedule:
    """The training schedule for ``plan`` (vpp chunks only for 'interleaved', as the runner)."""
    if plan.vpp > 1 and name != "interleaved":
        raise ConfigError("plan.vpp", f"vpp={plan.vpp} is only used by the 'interleaved' schedule, not {name!r}",
                          "set vpp=1 or schedule='interleaved'")
    return generate(name, plan.pp, plan.num_microbatches, plan.vpp if name == "interleaved" else None)


def _sharding(spec: Any, plan: "ParallelPlan", config: MemoryConfig, layout: Layout) -> Sharding:
    is_moe = isinstance(spec, MoESpec)
    return Sharding(num_layers=spec.num_layers, num_stages=layout.num_stages, tp=plan.tp, dp=plan.dp, pp=plan.pp,
                    vpp=plan.vpp, num_experts=spec.num_experts if is_moe else 0, ep=config.ep,
                    expert_tp=config.expert_tp, expert_dp=max(1, plan.tp * plan.dp // (config.ep * config.expert_tp)),
                    zero_stage=0 if config.inference else config.effective_zero_stage,
                    shared_ffn_hidden=spec.shared_ffn_hidden if is_moe else 0,
                    split_slots=0 if config.inference else sum(config.split_slots(spec)))


def _rank_params(spec: Any, plan: "ParallelPlan", config: MemoryConfig, layout: Layout,
                 rank: int) -> tuple[dict[str, float], float]:
    """(parameters on one GPU of ``rank`` by kind of :data:`WEIGHT_PARTS`, largest module:
    one layer, the embedding or the head, which ZeRO-3 gathers whole)."""
    cache: dict[Any, dict[str, float]] = {}
    totals = dict.fromkeys(WEIGHT_PARTS, 0.0)
    largest = 0.0
    for i in layout.param_layers(rank):
        # Every dense (and every MoE) layer of a transformer spec is alike; custom layers differ.
        key = spec.is_moe_layer(i) if isinstance(spec, TransformerSpec) else i
        if key not in cache:
            cache[key] = P.layer_params(spec, i, plan.tp, config)
        layer = cache[key]
        for kind, count in layer.items():
            totals[kind] += count
        largest = max(largest, sum(layer.values()))
    first, last = layout.holds_first(rank), layout.holds_last(rank)
    if last:
        for kind, count in P.mtp_params(spec, plan.tp, config).items():
            totals[kind] += count
    embedding = P.embedding_params(spec, plan.tp) if first else 0.0
    head = P.head_params(spec, plan.tp, first) if last else 0.0
    totals["embedding"] = embedding + head
    return totals, max(largest, embedding, head)


def _state_parts(params: dict[str, float], largest: float, plan: "ParallelPlan", config: MemoryConfig,
                 sharding: Sharding) -> dict[str, float]:
    """Weights, gradients, optimizer states and the ZeRO-3 gather buffer of one GPU."""
    z = sharding.zero_stage

    def shard(kind: str, from_stage: int) -> float:
        group = sharding.expert_dp if kind == "experts" else plan.dp
        return group if z >= from_stage else 1

    out = {WEIGHT_PARTS[k]: params[k] * config.param_bytes / shard(k, 3) for k in WEIGHT_PARTS}
    grad = config.grad_bytes(plan.grad_dtype_bytes)
    out["gradients"] = sum(params[k] * grad / shard(k, 2) for k in WEIGHT_PARTS)
    out["optimizer_states"] = sum(params[k] * config.optimizer_bytes_per_param / shard(k, 1) for k in WEIGHT_PARTS)
    # ZeRO-3 gathers a layer's full weights before using it and prefetches the next one, in the
    # precision the GEMMs read (FSDP's mixed-precision param dtype: bf16 over fp32 parameters)
    out["zero3_gather_buffer"] = 2 * largest * min(config.param_bytes, 2.0) if z == 3 else 0.0
    return out


def _training_rank(spec: Any, plan: "ParallelPlan", config: MemoryConfig, sharding: Sharding, layout: Layout,
                   schedule: Schedule, rank: int) -> RankBudget:
    params, largest = _rank_params(spec, plan, config, layout, rank)
    parts = dict.fromkeys(PARTS, 0.0)
    parts.update(_state_parts(params, largest, plan, config, sharding))
    mbs, tp, sp = plan.micro_batch_size, plan.tp, plan.sequence_parallel
    chunk_bytes = {(path, stage): P.chunk_activation(spec, layout.stage_layers[stage], stage == layout.num_stages - 1,
                                                     mbs, tp, sp, config)
                   for path, stage in layout.held[rank]}
    parts["activations"], parts["router_state"] = peak_live_bytes(schedule, rank, chunk_bytes,
                                                                  config.w_retained_fraction)
    if _holds_moe(spec, layout, rank):
        routed = moe_input_tokens(spec, mbs, tp, sp)
        parts["a2a_buffers"] = P.a2a_buffer_bytes(spec, routed, config, concurrent_microbatches(schedule, rank))
    if plan.pp > 1:
        count = DEFAULT_P2P_BUFFERS_PER_PATH * schedule.num_paths if config.p2p_buffers is None else config.p2p_buffers
        parts["pipeline_buffers"] = count * P.p2p_tensor_bytes(spec, spec.seq_len * mbs, tp, sp)
    parts["framework_reserve"] = float(config.framework_reserve_bytes)
    return _rank(rank, parts, peak_inflight(schedule, rank), len(layout.param_layers(rank)))


def _inference_rank(spec: Any, plan: "ParallelPlan", config: MemoryConfig, layout: Layout, rank: int) -> RankBudget:
    params, _ = _rank_params(spec, plan, config, layout, rank)
    parts = dict.fromkeys(PARTS, 0.0)
    parts.update({WEIGHT_PARTS[k]: params[k] * config.param_bytes for k in WEIGHT_PARTS})
    held = layout.param_layers(rank)
    tp, sp, tokens = plan.tp, plan.sequence_parallel, config.tokens_per_step
    parts["activations"] = P.inference_activation_bytes(spec, held, tokens, tp, sp, config)
    context = config.context_len or spec.seq_len
    parts["kv_cache"] = config.batch * context * len(held) * P.kv_bytes_per_token_layer(spec, tp, config.kv_cache_dtype)
    if _holds_moe(spec, layout, rank):
        routed = tokens / (tp if sp and tp > 1 else 1)
        parts["a2a_buffers"] = P.a2a_buffer_bytes(spec, routed, config, 1)
    if plan.pp > 1:
        count = config.p2p_buffers if config.p2p_buffers is not None else 2  # forward send + recv
        parts["pipeline_buffers"] = count * P.p2p_tensor_bytes(spec, tokens, tp, sp)
    parts["framework_reserve"] = float(config.framework_reserve_bytes)
    return _rank(rank, parts, 1 if held else 0, len(held))


def _holds_moe(spec: Any, layout: Layout, rank: int) -> bool:
    return isinstance(spec, MoESpec) and any(spec.is_moe_layer(i) for i in layout.param_layers(rank))


def _rank(rank: int, parts: dict[str, float], inflight: int, num_layers: int) -> RankBudget:
    return RankBudget(rank=rank, parts=parts, total_bytes=float(sum(parts.values())), peak_inflight=inflight,
                      num_layers=num_layers)


def _notes(spec: Any, config: MemoryConfig, sharding: Sharding, layout: Layout) -> tuple[str, ...]:
    sizes = sorted({len(r) for r in layout.stage_layers})
    notes = [f"layers per virtual stage: {'/'.join(map(str, sizes))} over {layout.num_stages} stages"]
    if isinstance(spec, MoESpec):
        notes.append(f"routed experts per GPU per MoE layer: {P.local_experts(spec, config)} "
                     f"(ceil({spec.num_experts}/{config.ep}) + {config.num_redundant_experts} redundant)"
                     f"{f', /{config.expert_tp} expert-TP' if config.expert_tp > 1 else ''}; "
                     f"expert-DP group {sharding.expert_dp}")
    if not config.inference:
        notes.append(f"{config.options()}; optimizer {config.optimizer} "
                     f"({config.optimizer_bytes_per_param:g} B/param before sharding)")
    if getattr(spec, "num_nextn_predict_layers", 0) and not config.inference:
        notes.append(f"the last stage also holds {spec.num_nextn_predict_layers} MTP module(s)")
    return tuple(notes)
