"""MoE spec: validation, layer layout, expert/router ops, payload sizes, balanced block."""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import ConfigError
from moesim.ops import Gemm
from moesim.workload import layers
from moesim.workload import moe
from moesim.workload.moe import MoESpec
from moesim.workload.presets import get_model

FAST = settings(max_examples=60, deadline=None)

SMALL = MoESpec(name="small-moe", num_layers=4, hidden=64, num_heads=4, num_kv_heads=2, head_dim=16,
                ffn_hidden=256, vocab=128, seq_len=32, num_experts=8, top_k=2, expert_ffn_hidden=32,
                num_shared_experts=1, first_k_dense=1)


def gemm_flops(ops) -> float:
    return sum(op.flops for op in ops if isinstance(op, Gemm))


@pytest.mark.parametrize("field, changes", [
    ("top_k", dict(top_k=9)),
    ("n_groups", dict(n_groups=3)),
    ("topk_groups", dict(n_groups=4, topk_groups=5)),
    ("top_k", dict(n_groups=4, topk_groups=1, top_k=3)),       # only 2 experts in 1 group of 4
    ("first_k_dense", dict(first_k_dense=5)),
    ("moe_layer_freq", dict(moe_layer_freq=(1, 0))),
    ("moe_layer_freq", dict(first_k_dense=4)),                   # no MoE layer left
    ("score_func", dict(score_func="relu")),
    ("dispatch_dtype", dict(dispatch_dtype="fp4")),
    ("num_experts", dict(num_experts=0)),
    ("num_shared_experts", dict(num_shared_experts=-1)),
])
def test_validation_names_the_field(field, changes):
    with pytest.raises(ConfigError) as err:
        replace(SMALL, **changes)
    assert err.value.field == field


def test_layer_layout():
    assert [SMALL.is_moe_layer(i) for i in range(4)] == [False, True, True, True]
    every_other = replace(SMALL, first_k_dense=0, moe_layer_freq=2)
    assert [every_other.is_moe_layer(i) for i in range(4)] == [True, False, True, False]
    pattern = replace(SMALL, first_k_dense=0, moe_layer_freq=(0, 1, 1, 0))
    assert pattern.num_moe_layers == 2
    v3 = get_model("deepseek-v3")
    assert [v3.is_moe_layer(i) for i in range(4)] == [False, False, False, True] and v3.num_moe_layers == 58


def test_params_by_hand():
    h, f, E = 64, 32, 8
    expert = 3 * h * f
    moe_layer = SMALL.attention_params + 2 * h + h * E + expert + E * expert  # + router + shared
    assert SMALL.layer_params(1) == moe_layer
    assert SMALL.layer_params(0) == SMALL.dense_layer_params
    assert SMALL.layer_activated_params(1) == moe_layer - (E - 2) * expert
    assert SMALL.total_params == SMALL.dense_layer_params + 3 * moe_layer + 2 * 128 * h + h


def test_dispatch_and_combine_bytes_match_deepseek():
    v3 = get_model("deepseek-v3")
    assert moe.dispatch_bytes_per_token(v3) == 7408                     # FP8: 7168 + 56*4 + 16
    assert moe.combine_bytes_per_token(v3) == 14336                     # BF16
    assert moe.dispatch_bytes_per_token(replace(v3, dispatch_dtype="bf16")) == 14336


@FAST
@given(tokens=st.integers(0, 5000), groups=st.integers(1, 8), act=st.sampled_from(["swiglu", "gelu"]))
def test_expert_backward_is_twice_forward(tokens, groups, act):
    spec = replace(SMALL, activation=act)
    fwd = moe.expert_forward_ops(spec, tokens, groups)
    assert len([o for o in fwd if isinstance(o, Gemm)]) == 2   # SwiGLU: gate and up as one fc1 of width 2F
    assert gemm_flops(fwd) == 2 * tokens * groups * (3 if act == "swiglu" else 2) * 64 * 32
    assert gemm_flops(moe.expert_backward_input_ops(spec, tokens, groups)) == gemm_flops(fwd)
    assert gemm_flops(moe.expert_backward_weight_ops(spec, tokens, groups)) == gemm_flops(fwd)


def test_router_ops():
    gate, scores, topk = moe.router_forward_ops(SMALL, 100)
    assert (gate.m, gate.n, gate.k) == (100, 8, 64)
    assert scores.kind == "softmax" and topk.kind == "topk"
    assert gemm_flops(moe.router_backward_input_ops(SMALL, 100)) == gate.flops
    assert gemm_flops(moe.router_backward_weight_ops(SMALL, 100)) == gate.flops


@FAST
@given(pairs=st.integers(0, 10000), ep=st.sampled_from([1, 2, 4, 8]))
def test_balanced_loads_cover_all_pairs(pairs, ep):
    loads = moe.balanced_expert_loads(SMALL, pairs, ep)
    assert sum(count for _, count in loads) == 8 // ep
    assert sum(t * c for t, c in loads) == pairs
    assert max(t for t, _ in loads) - min(t for t, _ in loads) <= 1


@pytest.mark.parametrize("ep", [1, 2, 8])
def test_balanced_block_flops_do_not_depend_on_ep(ep):
    base = gemm_flops(layers.forward_program(SMALL, 1, 2))
    prog = layers.forward_program(SMALL, 1, 2, ep=ep)
    assert gemm_flops(prog) == base
    a2a = [c for c in prog if isinstance(c, moe.CommOp) and c.group == "ep"]
    assert [c.name for c in a2a] == ["moe.dispatch", "moe.combine"]
    assert a2a[0].bytes == 2 * 32 * 2 * moe.dispatch_bytes_per_token(SMALL)   # tokens x top-k x bytes


def test_moe_layer_flops_per_sequence_counts_top_k_experts():
    fwd, bwd = SMALL.layer_flops_per_sequence(1)
    dense_fwd, _ = SMALL.layer_flops_per_sequence(0)
    T = 32
    expected_ffn = 2 * T * (2 * 3 * 64 * 32 + 3 * 64 * 32 + 64 * 8)     # top-2 experts, shared, router
    attention_only = dense_fwd - 2 * T * 3 * 64 * 256
    assert fwd == attention_only + expected_ffn
    assert gemm_flops(layers.backward_weight_ops(SMALL, 1, 1)) == gemm_flops(layers.forward_program(SMALL, 1, 1))


def test_moe_needs_sequence_parallel_with_tp():
    with pytest.raises(ConfigError) as err:
        layers.forward_program(SMALL, 1, 1, tp=2, sp=False)
    assert err.value.field == "sequence_parallel"
    prog = layers.forward_program(SMALL, 1, 1, tp=2, sp=True)
    gate = next(o for o in prog if getattr(o, "name", "") == "router.gate")
    assert gate.m == 16                                                 # 32 tokens split over 2 ranks


def test_weight_and_activation_bytes():
    per_rank = layers.weight_bytes(SMALL, 1, tp=1, ep=4)
    full = layers.weight_bytes(SMALL, 1, tp=1, ep=1)
    assert full - per_rank == 2 * 6 * SMALL.expert_params               # 6 of 8 experts live elsewhere
    assert full == 2 * SMALL.layer_params(1)
    assert layers.activation_bytes(SMALL, 1, 1, recompute="full") == 2 * 32 * 64
    # MoE block, by hand (bf16, 32 tokens, 64 token-expert pairs): norm in + router in 8192,
    # fp32 probs 1024, received tokens + expert outputs 16384, expert SwiGLU 12288, shared 6144.
    assert moe.moe_block_activation_bytes(SMALL, 1) == 8192 + 1024 + 16384 + 12288 + 6144
    # attention: norm + QKV input 8192, Q/K/V/out 12288, fp32 log-sum-exp 512
    assert layers.activation_bytes(SMALL, 1, 1) == 44032 + 8192 + 12288 + 512
    assert layers.activation_bytes(SMALL, 1, 1, ep=8) == layers.activation_bytes(SMALL, 1, 1)


def test_layer_index_is_checked():
    with pytest.raises(ConfigError) as err:
        layers.forward_program(SMALL, 4, 1)
    assert err.value.field == "layer_index"


def test_mla_attention_core_matches_qk_plus_pv_flops():
    v3 = get_model("deepseek-v3")
    core = next(o for o in layers.forward_program(v3, 0, 1) if getattr(o, "name", "") == "attn.core")
    s, a = 4096, 128
    # causal: half of 2*s^2*(192 QK) + 2*s^2*(128 PV) per head
    assert core.flops == a * (2 * s * s * 192 + 2 * s * s * 128) / 2
