"""Hugging Face config.json import: the shipped real configs give the presets exactly, every field
is accounted for, and bad files are refused naming the field."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moesim.cli import app
from moesim.errors import ConfigError
from moesim.workload.hf_config import CONFIG_DIR, load_hf_config, read_hf_config, shipped_config, shipped_names
from moesim.workload.presets import MODELS

PRESET_CHOICES = {  # what each preset adds to its config.json (the rest must come from the file)
    "deepseek-v3": {"max_nodes_per_token": 4, "dispatch_dtype": "fp8", "gemm_dtype": "fp8"},
    "mixtral-8x7b": {"seq_len": 4096}, "mixtral-8x22b": {"seq_len": 4096},
    "qwen3-30b-a3b": {"seq_len": 4096}, "qwen3-235b-a22b": {"seq_len": 4096},
}


def _raw(name: str) -> dict:
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", shipped_names())
def test_shipped_config_gives_the_preset(name: str) -> None:
    spec = shipped_config(name, **PRESET_CHOICES.get(name, {})).spec
    preset = MODELS[name]
    assert dataclasses.replace(spec, source=preset.source) == preset
    assert _raw(name)["_moesim_source"]["url"].startswith("https://huggingface.co/")


@pytest.mark.parametrize("name", shipped_names())
def test_every_field_is_accounted_for(name: str) -> None:
    imp = shipped_config(name)
    seen = {k for k, _ in imp.used} | {k for k, _ in imp.not_modelled} | set(imp.no_cost)
    assert seen >= {k for k in _raw(name) if not k.startswith("_")}


def test_deepseek_v3_parts() -> None:
    spec = shipped_config("deepseek-v3").spec
    assert (spec.kv_lora_rank, spec.q_lora_rank, spec.qk_rope_head_dim, spec.head_dim) == (512, 1536, 64, 128)
    assert (spec.n_groups, spec.topk_groups, spec.first_k_dense, spec.num_shared_experts) == (8, 4, 3, 1)
    assert spec.num_nextn_predict_layers == 1 and spec.score_func == "sigmoid" and spec.seq_len == 4096
    assert spec.num_moe_layers == 58


def test_gpt_oss_window_and_sinks() -> None:
    imp = shipped_config("gpt-oss-120b")
    assert imp.spec.sliding_window == 128 and imp.spec.attention_sinks
    assert imp.spec.layer_types.count("sliding_attention") == 18
    assert dict(imp.not_modelled).keys() == {"attention_bias", "quantization_config"}


def test_qwen3_sparse_step_and_dense_layers() -> None:
    raw = {**_raw("qwen3-30b-a3b"), "decoder_sparse_step": 2, "mlp_only_layers": [1]}
    spec = read_hf_config(raw, name="q").spec
    assert spec.moe_layer_freq[:4] == (0, 0, 0, 1)
    assert spec.num_moe_layers == 23


def test_unknown_architecture_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown architecture 'bert'"):
        read_hf_config({"model_type": "bert", "architectures": ["BertModel"]})


def test_unknown_field_is_named_or_listed() -> None:
    raw = {**_raw("llama3-8b"), "rope_magic": 3}
    with pytest.raises(ConfigError, match="rope_magic"):
        read_hf_config(raw)
    imp = read_hf_config(raw, strict=False)
    assert "rope_magic" in dict(imp.not_modelled)


def test_bad_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        read_hf_config({**_raw("llama3-8b"), "num_hidden_layers": "32"})
    with pytest.raises(ConfigError, match="hidden_act"):
        read_hf_config({**_raw("llama3-8b"), "hidden_act": "gelu"})
    with pytest.raises(ConfigError, match="vocab_size: missing"):
        read_hf_config({k: v for k, v in _raw("llama3-8b").items() if k != "vocab_size"})


def test_directory_and_bad_json(tmp_path: Path) -> None:
    (tmp_path / "my-model").mkdir()
    (tmp_path / "my-model" / "config.json").write_text(json.dumps(_raw("mixtral-8x7b")))
    assert load_hf_config(tmp_path / "my-model").spec.name == "my-model"
    (tmp_path / "bad.json").write_text('{"model_type": "llama", ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_hf_config(tmp_path / "bad.json")


def test_cli_from_hf() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["model", "from-hf", str(CONFIG_DIR / "gpt-oss-120b.json")])
    assert out.exit_code == 0, out.output
    assert "not modelled" in out.output and "attention_bias" in out.output and "sliding_window" in out.output
    js = runner.invoke(app, ["model", "from-hf", str(CONFIG_DIR / "qwen3-30b-a3b.json"), "--format", "json",
                             "--seq-len", "2048"])
    assert json.loads(js.output)["spec"]["seq_len"] == 2048
    bad = runner.invoke(app, ["model", "from-hf", "/nonexistent/config.json"])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_gpt_oss_experts_carry_biases() -> None:
    assert shipped_config("gpt-oss-120b").spec.expert_linear_bias      # GptOssExperts' gate_up / down biases
    assert not shipped_config("qwen3-30b-a3b").spec.expert_linear_bias


def test_deepseek_topk_method_sets_the_expert_bias() -> None:
    assert shipped_config("deepseek-v3").spec.expert_bias            # noaux_tc
    assert not shipped_config("qwen3-30b-a3b").spec.expert_bias
    raw = {**_raw("deepseek-v3"), "topk_method": "group_limited_greedy"}
    assert not read_hf_config(raw, name="dsv3-greedy").spec.expert_bias
    with pytest.raises(ConfigError, match="topk_method"):
        read_hf_config({**_raw("deepseek-v3"), "topk_method": "magic"}, name="dsv3-bad")


# -- architectures beyond the shipped configs: public models' config.json fields (tests/data/hf_configs) --
HF_DATA = Path(__file__).resolve().parent / "data" / "hf_configs"
MORE = {  # file: (architecture, spec kind, total / activated parameters in billions, what else must hold)
    "mistral7b": ("mistral", "TransformerSpec", 7.24, 7.24, {"sliding_window": 4096, "num_kv_heads": 8}),
    "qwen25_7b": ("qwen2", "TransformerSpec", 7.62, 7.62, {"sliding_window": 0, "num_kv_heads": 4}),
    "qwen3_8b": ("qwen3", "TransformerSpec", 8.19, 8.19, {"qk_norm": True, "head_dim": 128}),
    "qwen15moe": ("qwen2_moe", "MoESpec", 14.32, 2.69, {"num_experts": 60, "top_k": 4, "num_shared_experts": 1,
                                                        "shared_expert_ffn_hidden": 5632, "expert_ffn_hidden": 1408}),
    "olmoe": ("olmoe", "MoESpec", 6.92, 1.28, {"num_experts": 64, "top_k": 8, "expert_ffn_hidden": 1024,
                                               "qk_norm": True}),
    "phimoe": ("phimoe", "MoESpec", 41.87, 6.64, {"num_experts": 16, "top_k": 2, "norm": "layernorm",
                                                  "seq_len": 4096}),
    "dsv2lite": ("deepseek_v2", "MoESpec", 15.71, 2.66, {"num_experts": 64, "top_k": 6, "num_shared_experts": 2,
                                                         "first_k_dense": 1, "kv_lora_rank": 512, "q_lora_rank": 0,
                                                         "expert_bias": False}),
}


@pytest.mark.parametrize("name", sorted(MORE))
def test_more_architectures_read_every_field(name: str) -> None:
    arch, kind, total, active, fields = MORE[name]
    imp = load_hf_config(HF_DATA / f"{name}.json")
    assert (imp.architecture, type(imp.spec).__name__) == (arch, kind)
    assert imp.spec.total_params / 1e9 == pytest.approx(total, abs=0.01)
    assert imp.spec.activated_params / 1e9 == pytest.approx(active, abs=0.01)
    assert {k: getattr(imp.spec, k) for k in fields} == fields
    seen = {k for k, _ in imp.used} | {k for k, _ in imp.not_modelled} | set(imp.no_cost)
    assert seen >= set(json.loads((HF_DATA / f"{name}.json").read_text()))


def test_what_the_new_readers_leave_out_is_listed() -> None:
    left = {name: dict(load_hf_config(HF_DATA / f"{name}.json").not_modelled) for name in MORE}
    assert "(q/k/v biases)" in left["qwen25_7b"] and "(q/k/v biases)" in left["qwen15moe"]
    assert "(shared expert gate)" in left["qwen15moe"]
    assert {"attention_bias", "lm_head_bias", "input_jitter_noise"} <= set(left["phimoe"])
    assert left["mistral7b"] == {} and left["qwen3_8b"] == {} and left["olmoe"] == {}


def test_qwen2_family_sliding_windows_come_from_layer_types() -> None:
    raw = json.loads((HF_DATA / "qwen25_7b.json").read_text())
    with pytest.raises(ConfigError) as e:   # where the sliding layers are differs between transformers versions
        read_hf_config({**raw, "use_sliding_window": True})
    assert "layer_types" in str(e.value)
    kinds = ["full_attention"] * 4 + ["sliding_attention"] * 24
    spec = read_hf_config({**raw, "use_sliding_window": True, "sliding_window": 4096, "layer_types": kinds}).spec
    assert (spec.sliding_window, spec.layer_types) == (4096, tuple(kinds))
    assert spec.attention_window(3) == 0 and spec.attention_window(4) == 4096
    full = read_hf_config({**raw, "layer_types": ["full_attention"] * 28}).spec
    assert full.sliding_window == 0
    with pytest.raises(ConfigError, match="layer_types"):
        read_hf_config({**raw, "layer_types": ["sliding_attention"]})


def test_explicit_nulls_take_the_default_and_say_so() -> None:
    """Newer transformers write defaults as null (DeepSeek-V2's n_group / topk_group)."""
    raw = {**json.loads((HF_DATA / "dsv2lite.json").read_text()), "n_group": None, "topk_group": None}
    imp = read_hf_config(raw)
    assert (imp.spec.n_groups, imp.spec.topk_groups) == (1, 1)
    assert dict(imp.used)["n_group"] == "n_groups (null: 1)"
