"""Published model shapes, by name: the registry ``MODELS`` and ``get_model``.

Each entry cites its source. Shapes are taken as published; what moesim cannot express is
approximated and said so next to the entry (e.g. DeepSeek MLA core attention, gpt-oss sliding
windows). ``seq_len`` is the pre-training sequence length where published, else an assumption
marked as such; change it with ``dataclasses.replace(spec, seq_len=...)``. The entries with a
Hugging Face ``config.json`` read it from ``moesim/configs/`` (:mod:`moesim.workload.hf_config`,
the reader ``moesim model from-hf`` uses) and add only what the config does not say: the
sequence length and, for DeepSeek-V3, the report's FP8 training and node-limited routing.

The ``lab-*`` entries are the three model presets of the "MoE Parallelism Planner" lab
(reference moe_and_hardware.md §7.2 ``SPEC_PRESETS``, used by the §7.3 scenarios). The lab gives
only params, hidden, sequence, layers, MoE layers, experts and top-2 (ffn_expansion 4); its
parameter count ignores the experts. We keep every number it gives, fill the rest GPT-style
(MHA with 128-wide heads, GELU, LayerNorm, tied 50257-token vocabulary) and size the routed
experts so the total matches the lab's parameter count. That makes the experts very narrow
(~150-1250 wide): the lab's models are not self-consistent, and this is the reading that keeps
its memory arithmetic.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from moesim.errors import ConfigError, unknown_name
from moesim.workload.common import ffn_params
from moesim.workload.hf_config import load_hf_config, shipped_config
from moesim.workload.moe import MoESpec
from moesim.workload.transformer import TransformerSpec


def _hf(name: str, source: str, **overrides: object) -> TransformerSpec:
    """The shipped Hugging Face config ``moesim/configs/<name>.json`` as a spec, with the preset's
    own choices (``seq_len``, training precision...) in ``overrides``; ``source`` cites both."""
    return dataclasses.replace(shipped_config(name, **overrides).spec, source=source)


def _bresenham_pattern(num_layers: int, num_moe: int) -> tuple[int, ...]:
    """``num_moe`` MoE layers spread evenly over ``num_layers`` (the lab splits them per stage)."""
    return tuple(int((i + 1) * num_moe // num_layers > i * num_moe // num_layers) for i in range(num_layers))


def _lab_model(name: str, params_billion: float, hidden: int, seq_len: int, layers: int,
               moe_layers: int, experts: int) -> MoESpec:
    """A lab preset: the lab's numbers, GPT-style fill-ins, experts sized to hit its params."""
    shape = dict(name=name, num_layers=layers, hidden=hidden, num_heads=hidden // 128, num_kv_heads=hidden // 128,
                 head_dim=128, ffn_hidden=4 * hidden, vocab=50257, seq_len=seq_len, activation="gelu",
                 norm="layernorm", tied_embeddings=True, num_experts=experts, top_k=2,
                 moe_layer_freq=_bresenham_pattern(layers, moe_layers),
                 source="AI Systems Performance Engineering lab moe_parallelism plan.py SPEC_PRESETS "
                        "(reference §7.2); expert width fitted to the lab's parameter count")
    probe = MoESpec(**shape, expert_ffn_hidden=1)  # type: ignore[arg-type]
    without_experts = probe.total_params - probe.num_moe_layers * experts * probe.expert_params
    per_expert = (params_billion * 1e9 - without_experts) / (moe_layers * experts)
    assert per_expert > 0, f"{name}: the lab's parameter count leaves no room for experts"
    width = max(1, round(per_expert / ffn_params(hidden, 1, "gelu")))
    return MoESpec(**shape, expert_ffn_hidden=width)  # type: ignore[arg-type]


MODELS: dict[str, TransformerSpec] = {
    # meta-llama/Meta-Llama-3-{8B,70B} config.json; Llama 3 paper (arXiv:2407.21783) Table 3:
    # GQA with 8 KV heads, 128,256-token vocabulary, 8K pre-training sequences.
    "llama3-8b": _hf("llama3-8b", "meta-llama/Meta-Llama-3 config.json; arXiv:2407.21783 Table 3"),
    "llama3-70b": _hf("llama3-70b", "meta-llama/Meta-Llama-3 config.json; arXiv:2407.21783 Table 3"),
    # Brown et al. 2020 (arXiv:2005.14165) Table 2.1: 96 layers, d_model 12288, 96 heads of 128,
    # 2048 context; FFN 4 * d_model; GPT-2 BPE vocabulary (50257), tied embeddings. Learned
    # position embeddings (2048 x 12288) and biases are omitted (<0.1% of params).
    "gpt3-175b": TransformerSpec(
        name="gpt3-175b", num_layers=96, hidden=12288, num_heads=96, num_kv_heads=96, head_dim=128,
        ffn_hidden=49152, vocab=50257, seq_len=2048, activation="gelu", norm="layernorm",
        tied_embeddings=True, source="arXiv:2005.14165 Table 2.1"),
    # mistralai/Mixtral-8x7B-v0.1 config.json; arXiv:2401.04088: 46.7B total, 12.9B active.
    # seq_len is an assumption (32K context; the training sequence length is unpublished).
    "mixtral-8x7b": _hf("mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1 config.json; arXiv:2401.04088", seq_len=4096),
    # mistral-community/Mixtral-8x22B-v0.1 config.json (vocab 32000); Mistral: 141B total, 39B
    # active. seq_len is an assumption (64K context).
    "mixtral-8x22b": _hf("mixtral-8x22b", "mistral-community/Mixtral-8x22B-v0.1 config.json; "
                         "mistral.ai/news/mixtral-8x22b", seq_len=4096),
    # DeepSeek-V3 report (arXiv:2412.19437) §4.2 and config_671B.json (reference §1.1): 61 layers,
    # first 3 dense (FFN 18432), 256 routed + 1 shared experts of 2048, top-8 with 8 groups /
    # top-4 groups, at most 4 nodes per token, sigmoid gate, 129280 vocab, 4K sequences, FP8
    # dispatch. MLA (q_lora 1536, kv_lora 512, 128 heads of 128 + 64 rope, v 128) is exact in
    # the projections; the core attention uses head_dim (192 + 128)/2 = 160, which matches its
    # FLOPs. One MTP module (D = 1, config num_nextn_predict_layers) is declared; as in the
    # report's 671B it is outside total_params (spec.mtp_params). The linear layers'
    # GEMMs (forward, input and weight gradients) run in FP8 as the report trains them (§3.3.1);
    # attention core, router and output head stay bf16, and so do activations in memory.
    "deepseek-v3": _hf("deepseek-v3", "arXiv:2412.19437 §3.3.1, §4.2; deepseek-ai/DeepSeek-V3 config_671B.json",
                       max_nodes_per_token=4, dispatch_dtype="fp8", gemm_dtype="fp8"),
    # Qwen/Qwen3-30B-A3B config.json; Qwen3 report (arXiv:2505.09388): 30.5B total, 3.3B
    # active, 4K-token pre-training stages. Per-head q/k RMSNorms omitted (tiny).
    "qwen3-30b-a3b": _hf("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B config.json; arXiv:2505.09388", seq_len=4096),
    # Qwen/Qwen3-235B-A22B config.json; arXiv:2505.09388: 235B total, 22B active.
    "qwen3-235b-a22b": _hf("qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B config.json; arXiv:2505.09388", seq_len=4096),
    # openai/gpt-oss-120b config.json (reference §7.2: hidden 2880, 36 layers, 128 experts,
    # top-4, 64 heads of 64, 8 KV heads; vocab 201088, initial context 4096); model card
    # (arXiv:2508.10925): 116.8B total, 5.1B active excluding the embedding table. Layers
    # alternate a 128-token sliding window (even layers, config layer_types) and full causal
    # attention; every head has a learned attention sink. The experts' biases are kept
    # (expert_linear_bias: Megatron-Core adds fc2's outside the GEMM); the attention biases'
    # parameters (<0.1%) are left out.
    "gpt-oss-120b": _hf("gpt-oss-120b", "openai/gpt-oss-120b config.json; arXiv:2508.10925"),
    "lab-gpt-oss-120b": _lab_model("lab-gpt-oss-120b", 120, hidden=10240, seq_len=4096, layers=96,
                                   moe_layers=32, experts=256),
    "lab-deepseek-r1-678b": _lab_model("lab-deepseek-r1-678b", 678, hidden=14336, seq_len=4096, layers=128,
                                       moe_layers=48, experts=256),
    "lab-moe-175b": _lab_model("lab-moe-175b", 175, hidden=12288, seq_len=2048, layers=96, moe_layers=24,
                               experts=128),
}


def get_model(name: str) -> TransformerSpec:
    """The registered model spec called ``name``."""
    if name not in MODELS:
        raise unknown_name("model", name, list(MODELS))
    return MODELS[name]


def model_by_name_or_path(text: str, seq_len: "int | None" = None, field: str = "model") -> TransformerSpec:
    """A preset called ``text``, or the model of a Hugging Face ``config.json`` (or of the directory
    holding one) at ``seq_len`` (None: the context the config records). ``text`` is a path when it
    ends in ``.json``, holds a path separator or names a directory; ``field`` names the setting in
    the error for a path that does not exist."""
    path = Path(text)
    if text.endswith(".json") or "/" in text or "\\" in text or path.is_dir():
        if not path.exists():
            raise ConfigError(field, f"{text!r} is neither a preset name nor an existing file",
                              "give a preset name (e.g. qwen3-30b-a3b) or the path of a Hugging Face config.json "
                              "(or of the directory holding one)")
        return load_hf_config(path, seq_len=seq_len).spec
    return get_model(text)
