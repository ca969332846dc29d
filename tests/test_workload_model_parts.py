"""Model parts published runs have: DeepSeek-V3's MTP module, MLA's HF-named shapes, gpt-oss
sliding-window attention and sinks."""
import dataclasses

import pytest

from moesim.errors import ConfigError
from moesim.ops import Attention
from moesim.workload import layers
from moesim.workload import transformer as tf
from moesim.workload.presets import get_model


def test_mtp_params_are_one_moe_layer_plus_projection_and_norms():
    spec = get_model("deepseek-v3")
    h = spec.hidden
    assert spec.num_nextn_predict_layers == 1
    assert spec.mtp_params == 3 * h + 2 * h * h + spec.layer_params(spec.num_layers - 1)
    # The report's 671B excludes the MTP module; HF's 14B adds the shared embedding and head.
    assert round(spec.total_params / 1e9) == 671
    assert 13.0e9 < spec.mtp_params + spec.embedding_params + spec.head_params < 14.5e9


def test_mtp_flops_are_a_layer_a_projection_and_a_head():
    spec = get_model("deepseek-v3")
    no_mtp = dataclasses.replace(spec, num_nextn_predict_layers=0)
    assert layers.mtp_training_flops_per_token(no_mtp) == 0.0
    last = spec.num_layers - 1
    fwd, bwd = spec.layer_flops_per_sequence(last)
    layer = (fwd + bwd) / spec.seq_len
    projection = 3 * 2 * (2 * spec.hidden) * spec.hidden
    head = 3 * 2 * spec.hidden * tf.padded_vocab(spec)
    mtp = layers.mtp_training_flops_per_token(spec)
    assert mtp == pytest.approx(layer + projection + head, rel=1e-9)


def test_mla_exposes_hf_head_dims():
    spec = get_model("deepseek-v3")
    assert (spec.q_lora_rank, spec.kv_lora_rank, spec.qk_rope_head_dim, spec.qk_nope_head_dim, spec.v_head_dim) == \
        (1536, 512, 64, 128, 128)


def test_sliding_window_layers_attend_to_the_window_only():
    spec = get_model("gpt-oss-120b")
    assert spec.attention_window(0) == 128 and spec.attention_window(1) == 0
    sliding = [op for op in tf.layer_forward_ops(spec, 1, layer_index=0) if isinstance(op, Attention)][0]
    full = [op for op in tf.layer_forward_ops(spec, 1, layer_index=1) if isinstance(op, Attention)][0]
    assert (sliding.seq_kv, sliding.causal) == (128, False)
    assert (full.seq_kv, full.causal) == (spec.seq_len, True)
    # W*S pairs against S^2/2: the window layer's core costs 2W/S of the full layer's.
    assert sliding.flops / full.flops == pytest.approx(2 * 128 / spec.seq_len)


def test_attention_sinks_add_one_logit_per_head():
    spec = get_model("gpt-oss-120b")
    without = dataclasses.replace(spec, attention_sinks=False)
    assert spec.attention_params - without.attention_params == spec.num_heads


def test_bad_layer_types_are_refused():
    spec = get_model("gpt-oss-120b")
    with pytest.raises(ConfigError, match="layer_types"):
        dataclasses.replace(spec, layer_types=("sliding_attention",))
    with pytest.raises(ConfigError, match="sliding_window"):
        dataclasses.replace(spec, sliding_window=0)
    with pytest.raises(ConfigError, match="layer_types"):
        dataclasses.replace(spec, layer_types=("local",) * spec.num_layers)


def test_model_flops_include_mtp_and_name_the_gemm_precision():
    spec = get_model("deepseek-v3")
    assert layers.model_flops_per_token(spec) == spec.training_flops_per_token + layers.mtp_training_flops_per_token(spec)
    assert layers.gemm_precision(spec) == "fp8" and layers.gemm_precision(get_model("llama3-8b")) == "bf16"


def test_recompute_program_reruns_what_each_megatron_module_frees():
    from moesim.ops import Attention
    from moesim.workload.common import CommOp
    spec = get_model("deepseek-v3")
    moe_layer, dense_layer = 10, 0

    def names(modules, layer=moe_layer, recompute="selective"):
        return [i.name for i in layers.recompute_program(spec, layer, 1, 2, True, 8, recompute, modules)]

    assert names(("core_attn",)) == ["attn.core"]
    assert names(("layernorm",)) == ["attn.norm", "moe.norm"]
    assert names(("mla_up_proj",)) == ["attn.q_up", "attn.kv_up", "attn.rope.q", "attn.rope.k"]
    assert names(("moe_act",)) == ["expert.swiglu"]
    moe = layers.recompute_program(spec, moe_layer, 1, 2, True, 8, "selective", ("moe",))
    assert [c.name for c in moe if isinstance(c, CommOp) and c.group == "ep"] == ["moe.dispatch", "moe.combine"]
    assert names(("mlp",), dense_layer) == ["mlp.sp_all_gather", "mlp.fc1", "mlp.swiglu", "mlp.down",
                                            "mlp.sp_reduce_scatter"]
    assert names(("mlp",)) == []  # Megatron's "mlp" is the dense MLP only
    assert layers.recompute_program(spec, moe_layer, 1, 2, True, 8, "none") == []
    full = layers.recompute_program(spec, moe_layer, 1, 2, True, 8, "full")
    assert full == layers.forward_program(spec, moe_layer, 1, 2, True, 8)
    assert [op for op in full if isinstance(op, Attention)]
