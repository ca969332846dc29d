"""Published model presets: parameter counts against their sources, FLOPs, registry errors."""
from __future__ import annotations

import pytest

from moesim.errors import ConfigError
from moesim.workload import MODELS, MoESpec, get_model

# (name, total params, activated params or None, relative tolerance), from the sources cited
# in presets.py: Llama 3 paper, GPT-3 paper, Mixtral paper / Mistral, DeepSeek-V3 report §4.2,
# Qwen3 report, gpt-oss model card.
PUBLISHED = [
    ("llama3-8b", 8.03e9, None, 0.01),
    ("llama3-70b", 70.6e9, None, 0.01),
    ("gpt3-175b", 175e9, None, 0.01),
    ("mixtral-8x7b", 46.7e9, 12.9e9, 0.01),
    ("mixtral-8x22b", 141e9, 39e9, 0.01),
    ("deepseek-v3", 671e9, 37e9, 0.02),
    ("qwen3-30b-a3b", 30.5e9, 3.3e9, 0.02),
    ("qwen3-235b-a22b", 235e9, 22e9, 0.01),
]


@pytest.mark.parametrize("name, total, active, tol", PUBLISHED)
def test_parameter_counts_match_publications(name, total, active, tol):
    spec = get_model(name)
    assert spec.total_params == pytest.approx(total, rel=tol)
    if active is not None:
        assert spec.activated_params == pytest.approx(active, rel=tol)


def test_gpt_oss_counts_active_without_the_embedding_table():
    spec = get_model("gpt-oss-120b")
    assert spec.total_params == pytest.approx(116.8e9, rel=0.01)
    assert spec.activated_params - spec.embedding_params == pytest.approx(5.13e9, rel=0.01)


def test_deepseek_v3_training_flops_per_token():
    # [INS] (secondary): 250 GFLOPs per token for DeepSeek-V3 training.
    assert get_model("deepseek-v3").training_flops_per_token == pytest.approx(250e9, rel=0.05)


def test_dense_training_flops_are_about_six_n():
    spec = get_model("llama3-70b")
    ratio = spec.training_flops_per_token / (6 * spec.total_params)
    assert 1.0 < ratio < 1.15                                           # attention adds a little


@pytest.mark.parametrize("name, params_billion, moe_layers", [
    ("lab-gpt-oss-120b", 120, 32), ("lab-deepseek-r1-678b", 678, 48), ("lab-moe-175b", 175, 24),
])
def test_lab_presets_keep_the_lab_numbers(name, params_billion, moe_layers):
    spec = get_model(name)
    assert isinstance(spec, MoESpec) and spec.top_k == 2
    assert spec.num_moe_layers == moe_layers
    assert spec.total_params == pytest.approx(params_billion * 1e9, rel=0.01)


def test_every_preset_builds_ops():
    from moesim.workload import layers

    for spec in MODELS.values():
        last = spec.num_layers - 1
        assert layers.forward_program(spec, last, 1)
        assert spec.source


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        get_model("gpt-5")
    assert err.value.field == "model" and "deepseek-v3" in str(err.value)
