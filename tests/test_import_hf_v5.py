"""Configs written by transformers v5 read as their v4 originals: rope_parameters (v5's home of
rope_scaling and rope_theta), Qwen3-MoE's num_local_experts, DeepSeek's qk_head_dim and
rope_interleave, GPT-OSS's swiglu_alpha. The *_v5.json files in tests/data/hf_configs were written
by transformers 5.25.0 (``Config.from_dict(v4).save_pretrained``) from the v4 file named in each."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moesim.cli import app
from moesim.errors import ConfigError
from moesim.workload.hf_config import CONFIG_DIR, load_hf_config, read_hf_config

HF_DATA = Path(__file__).resolve().parent / "data" / "hf_configs"
PAIRS = {  # v5 file: (its v4 original, seq_len, the field it came from)
    "llama31_8b_v5": (HF_DATA / "llama31_8b.json", 8192, "rope_parameters.original_max_position_embeddings"),
    "deepseek_v3_v5": (CONFIG_DIR / "deepseek-v3.json", 4096, "rope_parameters.original_max_position_embeddings"),
    "qwen3_moe_v5": (CONFIG_DIR / "qwen3-30b-a3b.json", 40960, "max_position_embeddings"),
    "gpt_oss_v5": (CONFIG_DIR / "gpt-oss-120b.json", 4096, "initial_context_length"),
    "dsv2lite_v5": (HF_DATA / "dsv2lite.json", 4096, "rope_parameters.original_max_position_embeddings"),
}


def _raw(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def _spec(imp):  # the spec less its name and source
    return dataclasses.replace(imp.spec, name="m", source="")


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_v5_file_gives_the_v4_spec(name: str) -> None:
    old_path, seq_len, field = PAIRS[name]
    new, old = load_hf_config(HF_DATA / f"{name}.json"), load_hf_config(old_path)
    assert _spec(new) == _spec(old)
    assert new.spec.seq_len == old.spec.seq_len == seq_len
    assert new.seq_len_from.startswith(f"config.json {field} (")
    assert "default training sequence length" in new.seq_len_from
    seen = {k for k, _ in new.used} | {k for k, _ in new.not_modelled} | set(new.no_cost)
    assert seen >= set(_raw(HF_DATA / f"{name}.json"))


def test_llama31_context_is_the_pretraining_one_in_both_formats() -> None:
    old = load_hf_config(HF_DATA / "llama31_8b.json")
    new = load_hf_config(HF_DATA / "llama31_8b_v5.json")
    assert (old.spec.seq_len, new.spec.seq_len) == (8192, 8192)       # not max_position_embeddings 131072
    assert old.seq_len_from.startswith("config.json rope_scaling.original_max_position_embeddings")
    assert dict(new.used)["rope_parameters"].startswith("seq_len 8192")
    assert load_hf_config(HF_DATA / "llama31_8b_v5.json", seq_len=2048).seq_len_from.startswith("given")


def test_from_hf_states_the_sequence_length_and_its_source() -> None:
    out = CliRunner().invoke(app, ["model", "from-hf", str(HF_DATA / "deepseek_v3_v5.json")])
    assert out.exit_code == 0, out.output
    assert "sequence length 4096: config.json rope_parameters.original_max_position_embeddings" in out.output
    js = CliRunner().invoke(app, ["model", "from-hf", str(HF_DATA / "llama31_8b_v5.json"), "--format", "json"])
    doc = json.loads(js.output)
    assert doc["spec"]["seq_len"] == 8192 and "rope_parameters.original_max_position_embeddings" in doc["seq_len_from"]


def test_rope_contexts_must_agree_and_be_integers() -> None:
    raw = _raw(HF_DATA / "llama31_8b_v5.json")
    both = {**raw, "rope_scaling": {**raw["rope_parameters"], "original_max_position_embeddings": 4096}}
    with pytest.raises(ConfigError) as e:
        read_hf_config(both)
    assert ("rope_scaling.original_max_position_embeddings, rope_parameters.original_max_position_embeddings"
            in str(e.value))
    assert "4096" in str(e.value) and "8192" in str(e.value)
    agree = {**raw, "rope_scaling": dict(raw["rope_parameters"])}
    assert read_hf_config(agree).spec.seq_len == 8192
    bad = {**raw, "rope_parameters": {**raw["rope_parameters"], "original_max_position_embeddings": "8k"}}
    with pytest.raises(ConfigError, match="original_max_position_embeddings: must be a positive integer"):
        read_hf_config(bad)
    with pytest.raises(ConfigError, match="rope_parameters: must be an object"):
        read_hf_config({**raw, "rope_parameters": [1, 2]})
    nested = {**raw, "rope_parameters": {"full_attention": raw["rope_parameters"],      # v5: one dict per layer type
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}
    imp = read_hf_config(nested)
    assert imp.spec.seq_len == 8192
    assert "rope_parameters.full_attention.original_max_position_embeddings" in imp.seq_len_from
    plain = {**raw, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}
    assert read_hf_config(plain).spec.seq_len == 131072   # no pre-training context recorded: the longest position


def test_qwen3_moe_experts_under_either_name() -> None:
    raw = _raw(HF_DATA / "qwen3_moe_v5.json")
    assert raw["num_local_experts"] == 128 and "num_experts" not in raw
    imp = read_hf_config(raw)
    assert imp.spec.num_experts == 128 and dict(imp.used)["num_local_experts"] == "num_experts"
    same = read_hf_config({**raw, "num_experts": 128})
    assert same.spec.num_experts == 128 and {"num_experts", "num_local_experts"} <= set(dict(same.used))
    with pytest.raises(ConfigError) as e:
        read_hf_config({**raw, "num_experts": 64})
    assert "num_experts, num_local_experts" in str(e.value) and "disagree" in str(e.value)
    with pytest.raises(ConfigError, match="num_experts or num_local_experts: missing"):
        read_hf_config({k: v for k, v in raw.items() if k != "num_local_experts"})


def test_deepseek_qk_head_dim_is_checked_and_rope_interleave_listed() -> None:
    raw = _raw(HF_DATA / "deepseek_v3_v5.json")
    imp = read_hf_config(raw)
    assert raw["qk_head_dim"] == 192 and dict(imp.used)["qk_head_dim"].startswith("(checked")
    assert "rope_interleave" in imp.no_cost
    with pytest.raises(ConfigError) as e:
        read_hf_config({**raw, "qk_head_dim": 128})
    assert "qk_head_dim" in str(e.value) and "128 + 64 = 192" in str(e.value)


def test_deepseek_v3_without_routing_fields_routes_as_transformers_does() -> None:
    """transformers v5's own DeepSeek-V3 configs carry no scoring_func / topk_method; its model routes
    by sigmoid scores with a per-expert bias (V2: softmax, greedy)."""
    raw = {k: v for k, v in _raw(HF_DATA / "deepseek_v3_v5.json").items() if k not in ("scoring_func", "topk_method")}
    imp = read_hf_config(raw)
    assert (imp.spec.score_func, imp.spec.expert_bias) == ("sigmoid", True)
    assert dict(imp.used)["(scoring_func absent)"].startswith("sigmoid")
    v2 = {k: v for k, v in _raw(HF_DATA / "dsv2lite_v5.json").items() if k not in ("scoring_func", "topk_method")}
    assert (read_hf_config(v2).spec.score_func, read_hf_config(v2).spec.expert_bias) == ("softmax", False)


def test_gpt_oss_swiglu_alpha_is_listed() -> None:
    raw = _raw(HF_DATA / "gpt_oss_v5.json")
    imp = read_hf_config(raw)
    assert raw["swiglu_alpha"] == 1.702 and "GLU alpha 1.702" in dict(imp.used)["swiglu_alpha"]
    assert imp.spec.activation == "swiglu"
    with pytest.raises(ConfigError, match="swiglu_alpha: must be a positive number"):
        read_hf_config({**raw, "swiglu_alpha": "fast"})
