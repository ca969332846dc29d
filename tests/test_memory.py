"""Per-GPU memory budgets: exact hand-computed bytes for tiny models, ZeRO arithmetic,
schedule-driven activations, recompute, MoE sharding, KV caches and the DeepSeek-V3 layout."""
from __future__ import annotations

import dataclasses

import pytest

from moesim.costs.devices import GIB, get_device
from moesim.errors import ConfigError
from moesim.experiment.scenario import ParallelPlan
from moesim.memory import MemoryConfig, kv_cache_bytes_per_token, memory_budget, validate_budget
from moesim.workload import MoESpec, TransformerSpec, get_model, layers

# Tiny dense model (SwiGLU, RMSNorm, MHA, untied), hand-counted:
#   attention = h*a*d + 2*h*kv*d + a*d*h = 4 * 64 * 64 = 16384; FFN = 3 * 64 * 128 = 24576;
#   two norms = 128  ->  41088 params per layer.
#   embedding = 256 (already a multiple of 128) * 64 = 16384; head = 16384 + final norm 64 = 16448.
TINY = TransformerSpec(name="tiny", num_layers=4, hidden=64, num_heads=4, num_kv_heads=4, head_dim=16,
                       ffn_hidden=128, vocab=256, seq_len=32)
LAYER_PARAMS = 41088
EMBED_PARAMS, HEAD_PARAMS = 16384, 16448
TINY_PARAMS = 4 * LAYER_PARAMS + EMBED_PARAMS + HEAD_PARAMS  # 197184
# Activations per layer per microbatch (mbs 1, T = 32 tokens, bf16, FlashAttention, tp 1):
#   attention: norm in + QKV in 2*2*T*h = 8192; Q,K,V,out 2*T*(4+4+4+4)*16 = 16384; fp32 LSE 4*T*4 = 512
#   FFN: norm in + FFN in 8192; gate, up, product 2*T*3*128 = 24576
LAYER_ACT = 8192 + 16384 + 512 + 8192 + 24576  # 57856
# Head on the last stage: final-norm input 2*T*h + logits input 2*T*h + fp32 logits 4*T*256.
HEAD_ACT = 4096 + 4096 + 32768  # 40960

# Tiny MoE: 2 layers, 8 experts of width 32 (3 * 64 * 32 = 6144 params each), top-2.
TINY_MOE = MoESpec(name="tiny-moe", num_layers=2, hidden=64, num_heads=4, num_kv_heads=4, head_dim=16,
                   ffn_hidden=128, vocab=256, seq_len=32, num_experts=8, top_k=2, expert_ffn_hidden=32)
EXPERT_PARAMS = 6144

NO_RESERVE = MemoryConfig(framework_reserve_bytes=0)


def _cfg(**kw) -> MemoryConfig:
    return dataclasses.replace(NO_RESERVE, **kw)


def test_tiny_dense_budget_exact_bytes() -> None:
    budget = memory_budget(TINY, ParallelPlan(num_microbatches=4), "1f1b", NO_RESERVE, "H100")
    p = budget.parts
    assert p["weights_dense"] == 4 * LAYER_PARAMS * 2
    assert p["weights_embedding"] == (EMBED_PARAMS + HEAD_PARAMS) * 2
    assert p["gradients"] == TINY_PARAMS * 4          # fp32 main grads (plan.grad_dtype_bytes)
    assert p["optimizer_states"] == TINY_PARAMS * 12  # fp32 master + Adam m + v
    assert p["activations"] == 4 * LAYER_ACT + HEAD_ACT  # pp = 1: one microbatch in flight
    assert p["pipeline_buffers"] == p["a2a_buffers"] == p["kv_cache"] == p["router_state"] == 0
    assert budget.total_bytes == sum(p.values()) == TINY_PARAMS * 18 + 4 * LAYER_ACT + HEAD_ACT
    assert validate_budget(budget) == []


def test_tiny_dense_two_stages_per_rank() -> None:
    budget = memory_budget(TINY, ParallelPlan(pp=2, num_microbatches=4), "1f1b", NO_RESERVE)
    r0, r1 = budget.per_rank
    assert r0.parts["weights_dense"] == r1.parts["weights_dense"] == 2 * LAYER_PARAMS * 2
    assert (r0.parts["weights_embedding"], r1.parts["weights_embedding"]) == (EMBED_PARAMS * 2, HEAD_PARAMS * 2)
    # 1F1B: rank 0 holds p = 2 microbatches of its 2 layers, the last rank 1 (plus the head).
    assert (r0.peak_inflight, r1.peak_inflight) == (2, 1)
    assert r0.parts["activations"] == 2 * 2 * LAYER_ACT
    assert r1.parts["activations"] == 2 * LAYER_ACT + HEAD_ACT
    # Forward/backward send + recv of one hidden state, 2 * T * h bytes.
    assert r0.parts["pipeline_buffers"] == 4 * 2 * 32 * 64
    assert budget.worst_rank == 0 and budget.total_bytes == r0.total_bytes


def test_weights_match_workload_per_layer_bytes() -> None:
    budget = memory_budget(TINY, ParallelPlan(tp=2, num_microbatches=2), "1f1b", NO_RESERVE)
    expected = sum(layers.weight_bytes(TINY, i, tp=2) for i in range(4))
    assert budget.parts["weights_dense"] == expected


@pytest.mark.parametrize("stage, shard_opt, shard_grad, shard_weights", [
    (0, 1, 1, 1), (1, 4, 1, 1), (2, 4, 4, 1), (3, 4, 4, 4)])
def test_zero_stages_shard_over_dp(stage: int, shard_opt: int, shard_grad: int, shard_weights: int) -> None:
    budget = memory_budget(TINY, ParallelPlan(dp=4, num_microbatches=2), "1f1b", _cfg(zero_stage=stage))
    p = budget.parts
    assert p["optimizer_states"] == 12 * TINY_PARAMS / shard_opt
    assert p["gradients"] == 4 * TINY_PARAMS / shard_grad
    assert p["weights_dense"] == 2 * 4 * LAYER_PARAMS / shard_weights
    # ZeRO-3 gathers the largest module (a layer here) and prefetches the next: 2 x bf16 layer.
    assert p["zero3_gather_buffer"] == (2 * 2 * LAYER_PARAMS if stage == 3 else 0)


def test_distributed_optimizer_is_zero1_and_bf16_states_are_8_bytes() -> None:
    plan = ParallelPlan(dp=8, num_microbatches=2)
    dist = memory_budget(TINY, plan, "1f1b", _cfg(distributed_optimizer=True))
    assert dist.parts["optimizer_states"] == 12 * TINY_PARAMS / 8
    assert dist.sharding.zero_stage == 1
    bf16_states = memory_budget(TINY, plan, "1f1b", _cfg(zero_stage=1, optimizer_state_dtype="bf16"))
    assert bf16_states.parts["optimizer_states"] == 8 * TINY_PARAMS / 8  # DeepSeek-V3: BF16 moments
    sgd = memory_budget(TINY, plan, "1f1b", _cfg(optimizer="sgd"))
    assert sgd.parts["optimizer_states"] == 8 * TINY_PARAMS  # fp32 master + momentum


def _uniform_spec(num_layers: int = 8) -> TransformerSpec:
    return dataclasses.replace(TINY, num_layers=num_layers)


def test_activations_follow_schedule_peak_inflight() -> None:
    spec, p, m = _uniform_spec(8), 4, 8
    chunk = 2 * LAYER_ACT  # 8 layers over 4 stages
    one_f = memory_budget(spec, ParallelPlan(pp=p, num_microbatches=m), "1f1b", NO_RESERVE)
    assert [r.peak_inflight for r in one_f.per_rank] == [4, 3, 2, 1]  # min(p - r, m)
    assert one_f.per_rank[0].parts["activations"] == p * chunk
    gpipe = memory_budget(spec, ParallelPlan(pp=p, num_microbatches=m), "gpipe", NO_RESERVE)
    assert all(r.peak_inflight == m for r in gpipe.per_rank)
    assert gpipe.per_rank[0].parts["activations"] == m * chunk
    inter = memory_budget(spec, ParallelPlan(pp=p, vpp=2, num_microbatches=m), "interleaved", NO_RESERVE)
    # p + (p - 1)/v stages' worth on rank 0 = 11 chunks of one layer.
    assert inter.per_rank[0].peak_inflight == 11
    assert inter.per_rank[0].parts["activations"] == 11 * LAYER_ACT > one_f.per_rank[0].parts["activations"]


def test_zero_bubble_keeps_weight_grad_inputs_until_w() -> None:
    spec, p = _uniform_spec(8), 4
    chunk = 2 * LAYER_ACT
    zb = memory_budget(spec, ParallelPlan(pp=p, num_microbatches=8), "zb-h1", NO_RESERVE)
    # ZB paper: stage i (1-based) keeps (p - i + 1) M_B + (i - 1) M_W; rank 1 -> 3 M_B + 1 M_W.
    assert zb.per_rank[1].parts["activations"] == pytest.approx((3 + 32 / 34) * chunk, rel=1e-12)
    assert zb.per_rank[0].parts["activations"] == pytest.approx(4 * chunk, rel=1e-12)


def test_dualpipe_holds_two_stages_of_parameters_and_pp_plus_one_activations() -> None:
    spec = _uniform_spec(8)
    dual = memory_budget(spec, ParallelPlan(pp=4, num_microbatches=8), "dualpipe", NO_RESERVE)
    one_f = memory_budget(spec, ParallelPlan(pp=4, num_microbatches=8), "1f1b", NO_RESERVE)
    assert dual.per_rank[1].parts["weights_dense"] == 2 * one_f.per_rank[1].parts["weights_dense"]
    assert all(r.peak_inflight == 5 for r in dual.per_rank)
    # Rank 0 runs the first and the last stage: embedding and head on one GPU.
    assert dual.per_rank[0].parts["weights_embedding"] == (EMBED_PARAMS + HEAD_PARAMS) * 2


def test_recompute_full_below_selective_below_none() -> None:
    plan = ParallelPlan(pp=2, num_microbatches=4)
    def rank0(cfg: MemoryConfig) -> float:
        return memory_budget(TINY, plan, "1f1b", cfg).per_rank[0].parts["activations"]

    acts = {mode: rank0(_cfg(recompute=mode, flash_attention=False)) for mode in ("none", "selective", "full")}
    assert acts["full"] < acts["selective"] < acts["none"]
    # Without FlashAttention "none" also keeps the bf16 scores, 2 * a * s^2 = 8192 B per layer.
    assert acts["none"] - acts["selective"] == 2 * 2 * 2 * 4 * 32 * 32  # 2 in flight x 2 layers on rank 0
    # Full: each layer keeps only its input, 2 * T * h = 4096 B.
    assert acts["full"] == 2 * 2 * 4096
    with_flash = {mode: rank0(_cfg(recompute=mode)) for mode in ("none", "selective", "full")}
    assert with_flash["full"] < with_flash["selective"] <= with_flash["none"]


def test_mla_kv_cache_smaller_than_gqa_equivalent() -> None:
    v3 = get_model("deepseek-v3")
    assert kv_cache_bytes_per_token(v3) == (512 + 64) * 2 * 61 == 70272  # the ~70 KB of reference §1.1
    mha = dataclasses.replace(v3, q_lora_rank=0, kv_lora_rank=0, qk_rope_head_dim=0)
    gqa = dataclasses.replace(mha, num_kv_heads=8)
    cfg = _cfg(inference=True, batch=4, context_len=4096)

    def kv(spec: TransformerSpec, tp: int) -> float:
        return memory_budget(spec, ParallelPlan(tp=tp, num_microbatches=1), "1f1b", cfg, "H200").parts["kv_cache"]

    assert kv(v3, 1) < kv(gqa, 1) < kv(mha, 1)
    assert kv(v3, 1) == 4 * 4096 * 70272
    assert kv(gqa, 1) == 4 * 4096 * 61 * 8 * (128 + 128) * 2
    # Under TP every rank keeps the whole MLA latent while GQA heads split: at tp 8 the GQA-8
    # cache per GPU (1 head) is smaller, which is why DeepSeek serves MLA with DP attention.
    assert kv(v3, 8) == kv(v3, 1) and kv(gqa, 8) == kv(gqa, 1) / 8 < kv(v3, 8)


def test_inference_kv_cache_exact_and_no_training_state() -> None:
    cfg = _cfg(inference=True, batch=3, context_len=100)
    one = memory_budget(TINY, ParallelPlan(num_microbatches=1), "1f1b", cfg)
    per_token_layer = 4 * (16 + 16) * 2  # 4 KV heads x (K 16 + V 16) x bf16
    assert one.parts["kv_cache"] == 3 * 100 * 4 * per_token_layer
    assert one.parts["gradients"] == one.parts["optimizer_states"] == 0
    assert one.mode == "inference"
    split = memory_budget(TINY, ParallelPlan(tp=2, pp=2, num_microbatches=1), "1f1b", cfg)
    assert split.parts["kv_cache"] == one.parts["kv_cache"] / 4  # half the heads, half the layers
    fp8 = memory_budget(TINY, ParallelPlan(num_microbatches=1), "1f1b", dataclasses.replace(cfg, kv_cache_dtype="fp8"))
    assert fp8.parts["kv_cache"] == one.parts["kv_cache"] / 2


def test_moe_expert_weights_scale_with_one_over_ep_and_replicas_add_their_weight() -> None:
    plan = ParallelPlan(dp=4, num_microbatches=2)
    experts = {ep: memory_budget(TINY_MOE, plan, "1f1b", _cfg(ep=ep)).parts["weights_experts"] for ep in (1, 2, 4)}
    assert experts[1] == 2 * 8 * EXPERT_PARAMS * 2
    assert experts[2] == experts[1] / 2 and experts[4] == experts[1] / 4
    with_replica = memory_budget(TINY_MOE, plan, "1f1b", _cfg(ep=4, num_redundant_experts=1))
    assert with_replica.parts["weights_experts"] - experts[4] == 2 * 1 * EXPERT_PARAMS * 2  # 2 MoE layers
    # Without replicas the layer weights equal the workload's per-layer figure.
    budget = memory_budget(TINY_MOE, plan, "1f1b", _cfg(ep=2))
    layer_parts = ("weights_dense", "weights_shared_experts", "weights_router", "weights_experts")
    assert sum(budget.parts[k] for k in layer_parts) == sum(layers.weight_bytes(TINY_MOE, i, 1, 2) for i in range(2))


def test_expert_optimizer_shards_over_expert_dp_group() -> None:
    plan = ParallelPlan(dp=8, num_microbatches=2)
    budget = memory_budget(TINY_MOE, plan, "1f1b", _cfg(ep=4, zero_stage=1))
    assert budget.sharding.expert_dp == 2  # tp*dp / ep
    expert_params = 2 * 2 * EXPERT_PARAMS  # 2 layers x 2 local experts
    dense_params = sum(budget.parts[k] for k in ("weights_dense", "weights_embedding", "weights_router")) / 2
    assert budget.parts["optimizer_states"] == pytest.approx(12 * expert_params / 2 + 12 * dense_params / 8)


def test_router_state_and_a2a_buffers() -> None:
    plan = ParallelPlan(dp=2, num_microbatches=2)
    budget = memory_budget(TINY_MOE, plan, "1f1b", _cfg(ep=2))
    assert budget.parts["router_state"] == 2 * 4 * 32 * 8  # 2 layers x fp32 x T x experts
    # one send + one receive buffer of T*top_k pairs x 2h bytes (bf16 dispatch = combine size)
    assert budget.parts["a2a_buffers"] == 2 * 32 * 2 * 128
    assert memory_budget(TINY_MOE, plan, "1f1b", _cfg(ep=1)).parts["a2a_buffers"] == 0
    assert memory_budget(TINY_MOE, plan, "1f1b", _cfg(ep=2, recompute="full")).parts["router_state"] == 0
    fixed = memory_budget(TINY_MOE, plan, "1f1b", _cfg(ep=2, a2a_buffer_bytes=GIB))
    assert fixed.parts["a2a_buffers"] == GIB


def test_deepseek_v3_report_layout_is_plausible() -> None:
    # DeepSeek-V3 report §3.2 (reference §1.2): 2048 H800, PP16 DualPipe x EP64 x ZeRO-1 DP, no TP.
    v3 = get_model("deepseek-v3")
    plan = ParallelPlan(tp=1, dp=128, pp=16, num_microbatches=32)
    budget = memory_budget(v3, plan, "dualpipe", MemoryConfig(ep=64, zero_stage=1), "H800")
    rank = budget.per_rank[budget.worst_rank]
    weights = sum(v for k, v in rank.parts.items() if k.startswith("weights_"))
    state = weights + rank.parts["gradients"] + rank.parts["optimizer_states"]
    print(f"\nDeepSeek-V3 PP16/EP64/ZeRO-1 worst GPU: weights {weights / GIB:.1f} GiB, "
          f"weights+grads+optimizer {state / GIB:.1f} GiB; {budget.verdict()}")
    # Loose bounds: DualPipe puts 2 x ~3.8 layers on a GPU, ~1.7B replicated params (attention,
    # shared expert) plus 4 routed experts x ~7 MoE layers (~1.3B): ~3B bf16 params = ~6 GiB;
    # fp32 grads ~12 GiB; Adam 12 B/param sharded over DP 128 (dense) / expert-DP 2 (experts) ~8 GiB.
    # Rank 0 holds stage 0 and the last stage: + embedding and head (2 x 0.93B) + the MTP module.
    assert 4 * GIB < weights < 13 * GIB
    assert 15 * GIB < state < 45 * GIB
    assert budget.sharding.expert_dp == 2 and rank.peak_inflight == 17  # PP + 1
    assert [f.split(":")[0] for f in validate_budget(budget)] == ["layers_divisible"]  # 61 layers / 16


def test_verdict_fits_and_over_with_margin() -> None:
    plan = ParallelPlan(num_microbatches=2)
    ok = memory_budget(TINY, plan, "1f1b", _cfg(framework_reserve_bytes=GIB), "H100")
    assert ok.fits and ok.margin_bytes == 80 * GIB - ok.total_bytes
    assert ok.verdict().startswith("fits:") and 0 < ok.used_fraction < 0.02
    over = memory_budget(TINY, plan, "1f1b", _cfg(framework_reserve_bytes=81 * GIB), get_device("H100"))
    assert not over.fits and over.margin_bytes < -GIB
    assert over.verdict().startswith(f"over by {-over.margin_bytes / GIB:.2f} GiB")
    roomy = memory_budget(TINY, plan, "1f1b", _cfg(framework_reserve_bytes=81 * GIB), "H200")
    assert roomy.fits and roomy.hbm_bytes == 141 * GIB


def test_to_dict_is_json_ready() -> None:
    import json

    budget = memory_budget(TINY_MOE, ParallelPlan(pp=2, dp=2, num_microbatches=4), "1f1b", _cfg(ep=2))
    data = json.loads(json.dumps(budget.to_dict()))
    assert data["total_bytes"] == budget.total_bytes and len(data["per_rank"]) == 2
    assert set(data["parts"]) == set(budget.parts) and data["fits"] is True


def test_validate_reports_sharding_and_sum_failures() -> None:
    plan = ParallelPlan(dp=2, num_microbatches=2)
    bad_ep = memory_budget(TINY_MOE, plan, "1f1b", _cfg(ep=3))
    reasons = validate_budget(bad_ep)
    assert any(r.startswith("experts_divisible") for r in reasons)
    assert any(r.startswith("expert_dp_whole") for r in reasons)
    uneven = memory_budget(TINY, ParallelPlan(pp=3, num_microbatches=3), "1f1b", NO_RESERVE)
    assert [r.split(":")[0] for r in validate_budget(uneven)] == ["layers_divisible"]
    good = memory_budget(TINY, plan, "1f1b", NO_RESERVE)
    broken = dataclasses.replace(good, total_bytes=good.total_bytes + 1)
    assert any(r.startswith("sums") for r in validate_budget(broken))
    negative = dataclasses.replace(good, parts={**good.parts, "activations": -1.0})
    assert any(r.startswith("non_negative") for r in validate_budget(negative))


def test_validate_against_baseline_flags_regressions() -> None:
    plan = ParallelPlan(num_microbatches=2)
    baseline = memory_budget(TINY, plan, "1f1b", NO_RESERVE)
    assert validate_budget(baseline, baseline) == []
    over = memory_budget(TINY, plan, "1f1b", _cfg(framework_reserve_bytes=100 * GIB))
    assert validate_budget(over) == []  # over budget is a verdict, not a broken invariant
    assert any("'fits'" in r for r in validate_budget(over, baseline))
    uneven = memory_budget(TINY, ParallelPlan(pp=3, num_microbatches=3), "1f1b", NO_RESERVE)
    assert any("regression: 'layers_divisible'" in r for r in validate_budget(uneven, baseline))


@pytest.mark.parametrize("kwargs, field", [
    ({"recompute": "some"}, "recompute"), ({"zero_stage": 4}, "zero_stage"), ({"optimizer": "lion"}, "optimizer"),
    ({"param_dtype": "int3"}, "param_dtype"), ({"ep": 0}, "ep"),
    ({"num_redundant_experts": -1}, "num_redundant_experts"),
    ({"framework_reserve_bytes": -5}, "framework_reserve_bytes"), ({"w_retained_fraction": 1.5}, "w_retained_fraction"),
    ({"batch": 0}, "batch"), ({"kv_cache_dtype": "x"}, "kv_cache_dtype"),
])
def test_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        MemoryConfig(**kwargs)
    assert info.value.field == field


def test_bad_plan_schedule_pairing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="vpp"):
        memory_budget(TINY, ParallelPlan(pp=2, vpp=2, num_microbatches=4), "1f1b")
    with pytest.raises(ConfigError, match="sequence_parallel"):
        memory_budget(TINY_MOE, ParallelPlan(tp=2, sequence_parallel=False, num_microbatches=2), "1f1b")


def test_custom_block_model_budget_and_no_kv_cache() -> None:
    from moesim.workload.custom import custom_model_from_dict

    spec = custom_model_from_dict({"name": "mlp-block", "num_layers": 2, "seq_len": 16, "hidden": 8, "layer": {
        "gemms": [{"name": "up", "m": "tokens", "n": 32, "k": 8, "tp": "column"},
                  {"name": "down", "m": "tokens", "n": 8, "k": 32, "tp": "row"}]}})
    plan = ParallelPlan(pp=2, sequence_parallel=False, num_microbatches=2)
    budget = memory_budget(spec, plan, "1f1b", NO_RESERVE)
    assert budget.parts["weights_dense"] == layers.weight_bytes(spec, 0) == 2 * (8 * 32 + 32 * 8)
    assert budget.parts["weights_embedding"] == 0 and validate_budget(budget) == []
    with pytest.raises(ConfigError, match="no KV cache"):
        memory_budget(spec, plan, "1f1b", _cfg(inference=True))
