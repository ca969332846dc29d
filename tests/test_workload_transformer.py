"""Dense transformer spec: exact FLOPs/bytes of a tiny layer, TP sharding, collectives, memory."""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import ConfigError
from moesim.ops import Attention, Gemm, MemoryOp
from moesim.workload import transformer as tf
from moesim.workload.transformer import TransformerSpec

FAST = settings(max_examples=60, deadline=None)

# hidden 8, 2 heads of 4, 1 KV head, SwiGLU 16, 4-token sequences.
TINY = TransformerSpec(name="tiny", num_layers=2, hidden=8, num_heads=2, num_kv_heads=1, head_dim=4,
                       ffn_hidden=16, vocab=32, seq_len=4)
# GPT-shaped (MHA, GELU, ffn = 4h) for Korthikanti's formulas: h 64, a 4, s 32.
GPT = TransformerSpec(name="gpt", num_layers=2, hidden=64, num_heads=4, num_kv_heads=4, head_dim=16,
                      ffn_hidden=256, vocab=128, seq_len=32, activation="gelu", norm="layernorm")


def gemm_flops(ops) -> float:
    return sum(op.flops for op in ops if isinstance(op, Gemm))


def test_tiny_forward_ops_by_hand():
    ops = {op.name: op for op in tf.layer_forward_ops(TINY, 1)}
    assert ops["attn.qkv"] == Gemm(m=4, n=16, k=8, name="attn.qkv")      # (2 + 2*1) heads x 4
    assert ops["attn.out"] == Gemm(m=4, n=8, k=8, name="attn.out")
    assert ops["mlp.fc1"] == Gemm(m=4, n=32, k=8, name="mlp.fc1")       # gate and up, 2F wide
    assert ops["mlp.down"] == Gemm(m=4, n=8, k=16, name="mlp.down")
    assert ops["attn.core"].flops == 4 * 1 * 2 * 4 * 4 * 4 / 2           # causal
    assert ops["attn.norm"] == MemoryOp("norm", 2 * 2 * 4 * 8, "attn.norm")
    assert ops["mlp.swiglu"].bytes == 3 * 2 * 4 * 16
    # 2 * tokens * weights: 2 * 4 * (192 attention + 384 FFN) = 4608, plus attention 256.
    assert gemm_flops(ops.values()) == 4608
    assert sum(op.flops for op in ops.values()) == 4864


def test_tiny_params_and_flops_per_token():
    assert TINY.attention_params == 192
    assert TINY.dense_layer_params == 192 + 384 + 16
    assert TINY.total_params == 2 * 592 + 32 * 8 + 32 * 8 + 8
    assert tf.padded_vocab(TINY) == 128
    head = 2 * 4 * 128 * 8                                             # logits GEMM on the padded vocab
    assert TINY.forward_flops_per_token == (2 * 4864 + head) / 4
    # backward: GEMMs twice the forward, attention 2.5x
    assert TINY.training_flops_per_token == (2 * (4864 + 2 * 4608 + 640) + 3 * head) / 4


def test_backward_gemms_are_twice_forward():
    fwd = gemm_flops(tf.layer_forward_ops(TINY, 3))
    assert gemm_flops(tf.layer_backward_input_ops(TINY, 3)) == fwd
    assert gemm_flops(tf.layer_backward_weight_ops(TINY, 3)) == fwd
    bwd_attn = [op for op in tf.layer_backward_input_ops(TINY, 3) if isinstance(op, Attention)]
    assert len(bwd_attn) == 1 and bwd_attn[0].backward


def test_dgrad_and_wgrad_shapes():
    ops = {op.name: op for op in tf.layer_backward_input_ops(TINY, 1) + tf.layer_backward_weight_ops(TINY, 1)}
    assert (ops["mlp.down.dgrad"].m, ops["mlp.down.dgrad"].n, ops["mlp.down.dgrad"].k) == (4, 16, 8)
    assert (ops["mlp.down.wgrad"].m, ops["mlp.down.wgrad"].n, ops["mlp.down.wgrad"].k) == (16, 8, 4)


@FAST
@given(tp=st.sampled_from([1, 2, 4]), mbs=st.integers(1, 3), sp=st.booleans(),
       act=st.sampled_from(["swiglu", "gelu"]))
def test_tp_divides_gemm_work_exactly(tp, mbs, sp, act):
    spec = replace(GPT, activation=act)
    one = gemm_flops(tf.layer_forward_ops(spec, mbs))
    shard = tf.layer_forward_ops(spec, mbs, tp, sp)
    assert gemm_flops(shard) * tp == one
    for name in ("attn.qkv", "mlp.fc1" if act == "swiglu" else "mlp.up"):
        op = next(o for o in shard if o.name == name)
        full = next(o for o in tf.layer_forward_ops(spec, mbs) if o.name == name)
        assert op.n * tp == full.n and op.m == full.m
    att = next(o for o in shard if isinstance(o, Attention))
    assert att.flops * tp == next(o for o in tf.layer_forward_ops(spec, mbs) if isinstance(o, Attention)).flops


@FAST
@given(tp=st.sampled_from([1, 2, 4]), mbs=st.integers(1, 4), sp=st.booleans())
def test_backward_flops_ratio_holds_under_tp(tp, mbs, sp):
    fwd = gemm_flops(tf.layer_forward_ops(GPT, mbs, tp, sp))
    assert gemm_flops(tf.layer_backward_input_ops(GPT, mbs, tp, sp)) == fwd
    assert gemm_flops(tf.layer_backward_weight_ops(GPT, mbs, tp, sp)) == fwd


def test_kv_heads_replicate_when_tp_exceeds_them():
    qkv = next(o for o in tf.layer_forward_ops(TINY, 1, tp=2) if o.name == "attn.qkv")
    assert qkv.n == (1 + 2 * 1) * 4                                    # 1 query head + 1 replicated KV head


def test_tp_collectives():
    size = 2.0 * 2 * 32 * 64                                           # bf16 x tokens x hidden
    plain = tf.layer_tp_collectives(GPT, 2, tp=2, sp=False)
    assert [(c.op, c.bytes) for c in plain["forward"]] == [("all_reduce", size)] * 2
    assert [(c.op, c.bytes) for c in plain["backward"]] == [("all_reduce", size)] * 2
    seq = tf.layer_tp_collectives(GPT, 2, tp=2, sp=True)
    assert [c.op for c in seq["forward"]] == ["all_gather", "reduce_scatter"] * 2
    assert [c.op for c in seq["backward"]] == ["all_gather", "all_gather", "reduce_scatter"] * 2
    assert tf.layer_tp_collectives(GPT, 2, tp=1, sp=True) == {"forward": [], "backward": []}


def test_sp_shards_norms_and_residuals():
    norm = lambda sp: next(o for o in tf.layer_forward_ops(GPT, 2, 4, sp) if o.name == "attn.norm")  # noqa: E731
    assert norm(False).bytes == 4 * norm(True).bytes


def test_korthikanti_activation_formulas_exactly():
    s, b, h, a, t = 32, 2, 64, 4, 2
    sbh = s * b * h
    kw = dict(flash_attention=False, dropout=True)
    assert tf.activation_bytes_per_layer(GPT, b, **kw) == sbh * (34 + 5 * a * s / h)
    assert tf.activation_bytes_per_layer(GPT, b, t, False, **kw) == sbh * (10 + 24 / t + 5 * a * s / (h * t))
    assert tf.activation_bytes_per_layer(GPT, b, t, True, **kw) == sbh * (34 + 5 * a * s / h) / t
    assert tf.activation_bytes_per_layer(GPT, b, t, True, "selective", **kw) == sbh * 34 / t
    assert tf.activation_bytes_per_layer(GPT, b, t, False, "selective", **kw) == sbh * (10 + 24 / t)
    assert tf.activation_bytes_per_layer(GPT, b, 1, False, "full") == 2 * sbh
    assert tf.activation_bytes_per_layer(GPT, b, t, True, "full") == 2 * sbh / t


def test_flash_attention_default_drops_score_tensors():
    s, b, h, a = 32, 2, 64, 4
    # no dropout masks (2sbh) and no scores; FlashAttention's fp32 log-sum-exp (4 bytes x a x s x b)
    assert tf.activation_bytes_per_layer(GPT, b) == s * b * h * 32 + 4 * a * s * b


def test_weight_bytes_per_layer():
    assert tf.weight_bytes_per_layer(GPT) == 2 * GPT.dense_layer_params
    # norms (4h with LayerNorm bias) stay replicated
    assert tf.weight_bytes_per_layer(GPT, 4) == 2 * ((GPT.dense_layer_params - 4 * 64) / 4 + 4 * 64)


def test_head_and_embedding_ops():
    logits = next(o for o in tf.head_forward_ops(GPT, 1, tp=2) if o.name == "head.logits")
    assert tf.padded_vocab(GPT, 2) == 256                              # padded to 128 * tp
    assert (logits.m, logits.n, logits.k) == (32, 256 // 2, 64)
    assert gemm_flops(tf.head_backward_input_ops(GPT, 1)) == gemm_flops(tf.head_forward_ops(GPT, 1))
    assert gemm_flops(tf.head_backward_weight_ops(GPT, 1)) == gemm_flops(tf.head_forward_ops(GPT, 1))
    assert [o.name for o in tf.embedding_forward_ops(GPT, 1)] == ["embed.lookup"]
    comms = [c.op for c in tf.embedding_forward_program(GPT, 1, 2, True) if isinstance(c, tf.CommOp)]
    assert comms == ["reduce_scatter"]
    assert tf.embedding_backward_ops(GPT, 1)[0].name == "embed.wgrad_scatter_add"


def test_recompute_ops():
    assert tf.recompute_forward_ops(GPT, 1, recompute="none") == []
    assert [o.name for o in tf.recompute_forward_ops(GPT, 1, recompute="selective")] == ["attn.core"]
    assert tf.recompute_forward_ops(GPT, 1, recompute="full") == tf.layer_forward_program(GPT, 1)


@pytest.mark.parametrize("field, value", [
    ("num_layers", 0), ("hidden", -1), ("activation", "relu"), ("norm", "batchnorm"), ("dtype", "int3"),
    ("num_kv_heads", 3), ("rope_impl", "yarn"),
])
def test_validation_names_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        replace(GPT, **{field: value})
    assert err.value.field == field


def test_bad_parallel_arguments_name_the_field():
    with pytest.raises(ConfigError) as err:
        tf.layer_forward_ops(GPT, 1, tp=3)
    assert err.value.field == "tp"
    with pytest.raises(ConfigError) as err:
        tf.layer_forward_ops(GPT, 0)
    assert err.value.field == "micro_batch_size"
    with pytest.raises(ConfigError) as err:
        tf.activation_bytes_per_layer(GPT, 1, recompute="some")
    assert err.value.field == "recompute"


def test_unfused_swiglu_is_silu_then_mul_and_two_backward_kernels_plus_the_input_grad_add():
    eager = replace(TINY, activation_fusion=False)
    T, F, h, e = 4, 16, 8, 2
    fwd = [(op.name, op.bytes) for op in tf.mlp_forward_program(eager, 1) if isinstance(op, MemoryOp)]
    assert ("mlp.silu", 2 * e * T * F) in fwd and ("mlp.mul", 3 * e * T * F) in fwd
    assert all(name != "mlp.swiglu" for name, _ in fwd)
    bwd = [op.name for op in tf.mlp_backward_input_program(eager, 1)]
    assert bwd[bwd.index("mlp.down.dgrad"):bwd.index("mlp.dx_add.bwd") + 1] == [
        "mlp.down.dgrad", "mlp.mul.bwd", "mlp.silu.bwd", "mlp.gate.dgrad", "mlp.up.dgrad", "mlp.dx_add.bwd"]
    add = next(op for op in tf.mlp_backward_input_program(eager, 1) if op.name == "mlp.dx_add.bwd")
    assert add.bytes == 3 * e * T * h
    # the same GEMM work; the fused default (Megatron) runs gate and up as one fc1 GEMM of width 2F
    # and keeps one activation kernel each way
    assert gemm_flops(tf.mlp_forward_program(eager, 1)) == gemm_flops(tf.mlp_forward_program(TINY, 1))
    assert [op.name for op in tf.mlp_backward_weight_ops(eager, 1)] == ["mlp.gate.wgrad", "mlp.up.wgrad",
                                                                         "mlp.down.wgrad"]
    assert [(op.name, op.n) for op in tf.mlp_backward_weight_ops(TINY, 1)][0] == ("mlp.fc1.wgrad", 2 * TINY.ffn_hidden)
    assert gemm_flops(tf.mlp_backward_weight_ops(eager, 1)) == gemm_flops(tf.mlp_backward_weight_ops(TINY, 1))
    assert [op.name for op in tf.mlp_forward_program(TINY, 1) if isinstance(op, MemoryOp)].count("mlp.swiglu") == 1
    with pytest.raises(ConfigError, match="activation_fusion"):
        replace(TINY, activation_fusion="no")


def test_rope_is_one_op_on_the_queries_and_one_on_the_keys():
    T, d, e = 4, 4, 2
    ropes = {op.name: op.bytes for op in tf.attention_forward_program(TINY, 1) if "rope" in op.name}
    assert ropes == {"attn.rope.q": 2 * e * T * TINY.num_heads * d, "attn.rope.k": 2 * e * T * TINY.num_kv_heads * d}
    back = [op.name for op in tf.attention_backward_input_program(TINY, 1) if "rope" in op.name]
    assert back == ["attn.rope.q.bwd", "attn.rope.k.bwd"]
    assert {op.variant for op in tf.attention_forward_program(TINY, 1) if "rope" in op.name} == {""}   # one fused kernel
    # an eager form is its measured program each way, on the same bytes
    eager = replace(TINY, rope_impl="rotate_half")
    fwd = {op.name: (op.bytes, op.variant) for op in tf.attention_forward_program(eager, 1) if "rope" in op.name}
    assert fwd == {"attn.rope.q": (ropes["attn.rope.q"], "rope_rotate_half"),
                   "attn.rope.k": (ropes["attn.rope.k"], "rope_rotate_half")}
    assert {op.variant for op in tf.attention_backward_input_program(eager, 1) if "rope" in op.name} == \
        {"rope_rotate_half_bwd"}


def test_qk_norm_is_one_norm_per_query_and_key_tensor_each_way():
    """Qwen3's q_norm / k_norm (Megatron's --qk-layernorm): after the QKV GEMM, before RoPE."""
    spec = replace(TINY, qk_norm=True)
    fwd = [op.name for op in tf.attention_forward_program(spec, 1)]
    assert fwd[fwd.index("attn.qkv"):fwd.index("attn.rope.q")] == ["attn.qkv", "attn.q_layernorm", "attn.k_layernorm"]
    ops = {op.name: op for op in tf.attention_forward_program(spec, 1) if isinstance(op, MemoryOp)}
    T, e = spec.seq_len, 2
    assert ops["attn.q_layernorm"].bytes == 2 * e * T * spec.num_heads * spec.head_dim
    assert ops["attn.k_layernorm"].bytes == 2 * e * T * spec.num_kv_heads * spec.head_dim
    bwd = [op.name for op in tf.attention_backward_input_program(spec, 1)]
    assert bwd.index("attn.k_layernorm.bwd") < bwd.index("attn.q_layernorm.bwd") < bwd.index("attn.qkv.dgrad")
    assert "attn.q_layernorm" not in [op.name for op in tf.attention_forward_program(TINY, 1)]
