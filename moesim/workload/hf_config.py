"""Hugging Face ``config.json`` -> moesim model spec, with an account of every field.

:func:`read_hf_config` turns the dict of a model's ``config.json`` into a
:class:`~moesim.workload.transformer.TransformerSpec` or :class:`~moesim.workload.moe.MoESpec`
and says, field by field, what became of it: ``used`` (the spec field it set), ``no_cost``
(fields that change no time or memory: token ids, RoPE base, norm epsilon, loss coefficients,
inference switches) and ``not_modelled`` (fields that do change the cost but that moesim cannot
express yet, with the approximation it makes instead). A field in none of these lists, or an
architecture outside :data:`ARCHITECTURES`, is a :class:`~moesim.errors.ConfigError` naming it
(``strict=False`` lists unknown fields as not modelled instead). Nothing is dropped silently.

Architectures: Llama (``llama``), Mistral (``mistral``: a sliding window on every layer where
set), Qwen2 and Qwen3 dense (``qwen2``, ``qwen3``: Qwen3's QK-norm), Mixtral (``mixtral``),
Qwen2-MoE (``qwen2_moe``: Qwen1.5-MoE, Qwen2-57B-A14B, a shared expert of its own width),
Qwen3-MoE (``qwen3_moe``), OLMoE (``olmoe``), Phi-3.5-MoE (``phimoe``: LayerNorm), GPT-OSS
(``gpt_oss``: alternating sliding-window layers and attention sinks), DeepSeek-V2 and V3
(``deepseek_v2``, ``deepseek_v3``: MLA, shared experts, group-limited routing
``n_group``/``topk_group``, ``first_k_dense_replace``, V3's multi-token prediction
``num_nextn_predict_layers``). Qwen2-family sliding windows are read from ``layer_types``
(transformers versions place them differently when only ``use_sliding_window`` is set, so that
alone is refused). Spec fields that
only newer moesim versions have (MTP, sliding windows, sinks) are set where the spec class has
them (:data:`OPTIONAL_FIELDS`) and listed as not modelled where it does not.

The sequence length is not a model property: ``seq_len`` given, else the pre-training context
the config records (``initial_context_length``, then ``original_max_position_embeddings`` of
``rope_scaling`` or of transformers v5's ``rope_parameters`` (flat or per layer type; those given
must agree), then ``max_position_embeddings``); :attr:`HFImport.seq_len_from` says which. The
training precision is bf16: ``torch_dtype`` (v5: ``dtype``) is the checkpoint's storage dtype and is
listed as such. Files written by transformers v5 read as their v4 originals (Qwen3-MoE's
``num_local_experts``, DeepSeek's ``qk_head_dim`` and ``rope_interleave``, GPT-OSS's
``swiglu_alpha``). The shipped configs (``moesim/configs/*.json``, each with its
source URL under ``_moesim_source``) are read by :func:`shipped_config`; keys starting with ``_``
are metadata and ignored.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from moesim.errors import ConfigError
from moesim.workload.moe import MoESpec
from moesim.workload.transformer import TransformerSpec

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
ARCH_CLASSES = {"LlamaForCausalLM": "llama", "MixtralForCausalLM": "mixtral", "Qwen3MoeForCausalLM": "qwen3_moe",
                "GptOssForCausalLM": "gpt_oss", "DeepseekV3ForCausalLM": "deepseek_v3",
                "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3",
                "Qwen2MoeForCausalLM": "qwen2_moe", "OlmoeForCausalLM": "olmoe", "PhimoeForCausalLM": "phimoe",
                "DeepseekV2ForCausalLM": "deepseek_v2"}

# Fields that change neither time nor memory of a training step (any architecture).
NO_COST_COMMON = frozenset({
    "architectures", "model_type", "transformers_version", "bos_token_id", "eos_token_id", "pad_token_id",
    "initializer_range", "rms_norm_eps", "rope_theta", "rope_scaling", "use_cache", "attention_dropout",
    "max_position_embeddings", "pretraining_tp", "output_router_logits", "router_aux_loss_coef", "auto_map",
    "hidden_dropout", "tie_word_embeddings", "torch_dtype", "dtype", "initial_context_length", "rope_parameters",
})
# rope_interleave (transformers v5's DeepSeek-V3): whether the rotary dims are stored interleaved, a layout
# of the same rotary kernel's input
_DEEPSEEK_NO_COST = frozenset({"norm_topk_prob", "routed_scaling_factor", "ep_size", "aux_loss_alpha", "seq_aux",
                               "rope_interleave"})
# Per architecture: fields without cost (beyond the common ones) and fields moesim does not model.
NO_COST = {
    "llama": frozenset({"mlp_bias"}),
    "mixtral": frozenset({"router_jitter_noise"}),
    "qwen3_moe": frozenset({"norm_topk_prob", "max_window_layers", "use_sliding_window", "sliding_window"}),
    "gpt_oss": frozenset({"swiglu_limit", "experts_per_token"}),
    "deepseek_v3": _DEEPSEEK_NO_COST,
    "deepseek_v2": _DEEPSEEK_NO_COST,
    "mistral": frozenset(),
    "qwen2": frozenset(),
    "qwen3": frozenset(),
    "qwen2_moe": frozenset({"norm_topk_prob"}),
    "olmoe": frozenset({"norm_topk_prob"}),
    "phimoe": frozenset({"router_jitter_noise", "original_max_position_embeddings"}),
}
NOT_MODELLED = {
    "llama": {},
    "mixtral": {},
    "qwen3_moe": {},
    "gpt_oss": {"quantization_config": "MXFP4 expert weights of the inference checkpoint; the spec trains in its dtype",
                "attention_bias": "biases of the attention projections (< 0.1% of the FLOPs) are left out"},
    "deepseek_v3": {"quantization_config": "FP8 block-scaled weights of the checkpoint; set gemm_dtype/dispatch_dtype "
                                           "for FP8 training (the deepseek-v3 preset does, after the report)"},
    "deepseek_v2": {}, "mistral": {}, "qwen2": {}, "qwen3": {}, "qwen2_moe": {}, "olmoe": {},
    "phimoe": {"lm_head_bias": "the output head's bias (one add over [tokens, vocab]) is left out"},
}
# Spec fields that not every moesim version has: (spec field, what it expresses). Set only where
# the spec class defines them; otherwise the config field is reported as not modelled.
OPTIONAL_FIELDS = {
    "num_nextn_predict_layers": "multi-token prediction modules (DeepSeek-V3 MTP)",
    "sliding_window": "sliding-window attention width",
    "layer_types": "which layers use the sliding window",
    "attention_sinks": "learned attention sinks per head",
}


@dataclass(frozen=True)
class HFImport:
    """A spec read from a config and the fate of each of its fields."""

    spec: TransformerSpec
    architecture: str
    used: tuple[tuple[str, str], ...]
    not_modelled: tuple[tuple[str, str], ...]
    no_cost: tuple[str, ...]
    source: str = ""
    seq_len_from: str = ""   # where the spec's seq_len came from (the config field, or given)

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "source": self.source, "seq_len_from": self.seq_len_from,
                "spec": {f.name: getattr(self.spec, f.name) for f in dataclasses.fields(self.spec)},
                "used": dict(self.used), "not_modelled": dict(self.not_modelled), "no_cost": list(self.no_cost)}


class _Fields:
    """The config's keys, recording which were read (and into which spec field)."""

    def __init__(self, raw: dict[str, Any], where: str) -> None:
        self.raw = {k: v for k, v in raw.items() if not k.startswith("_")}
        self.where = where
        self.used: dict[str, str] = {}
        self.not_modelled: dict[str, str] = {}

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def int_(self, key: str, target: str, default: int | None = None, *, allow_zero: bool = False) -> int:
        value = self.raw.get(key)
        if value is None:
            if default is None:
                raise ConfigError(f"config.json: {key}", "missing", f"a {self.where} config needs {key}")
            if key in self.raw:   # an explicit null (newer transformers write their defaults so)
                self.used[key] = f"{target} (null: {default})"
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
            raise ConfigError(f"config.json: {key}", f"must be an integer >= {0 if allow_zero else 1}, got {value!r}")
        self.used[key] = target
        return value

    def value(self, key: str, target: str, default: Any = None) -> Any:
        if key in self.raw:
            self.used[key] = target
        return self.raw.get(key, default)

    def skip(self, key: str, why: str) -> None:
        """A field that changes the cost but is not modelled."""
        if key in self.raw:
            self.not_modelled[key] = why


def read_hf_config(raw: Any, *, name: str | None = None, seq_len: int | None = None, strict: bool = True,
                   source: str = "", **overrides: Any) -> HFImport:
    """The spec of a ``config.json`` dict (see the module docstring). ``overrides`` replace spec
    fields afterwards (e.g. ``gemm_dtype="fp8"``), checked by the spec itself."""
    if not isinstance(raw, dict):
        raise ConfigError("config.json", f"must be a JSON object, got {type(raw).__name__}", source=source)
    arch = _architecture(raw, source)
    f = _Fields(raw, arch)
    kwargs = _READERS[arch](f)
    kwargs["name"] = name or str(raw.get("_name_or_path") or arch).rstrip("/").split("/")[-1]
    kwargs["seq_len"], seq_from = (seq_len, "given (--seq-len, or seq_len in a scenario)") if seq_len else _context(f)
    kwargs["dtype"] = _dtype(f)
    kwargs["tied_embeddings"] = bool(f.value("tie_word_embeddings", "tied_embeddings", False))
    kwargs["source"] = _source_text(raw, source)
    cls = MoESpec if "num_experts" in kwargs else TransformerSpec
    kwargs = _optional(cls, kwargs, f)
    for key in sorted(set(NOT_MODELLED[arch]) & set(f.raw) - set(f.used)):
        f.skip(key, NOT_MODELLED[arch][key])
    unknown = sorted(set(f.raw) - set(f.used) - set(f.not_modelled) - NO_COST_COMMON - NO_COST[arch])
    if unknown and strict:
        raise ConfigError(f"config.json: {', '.join(unknown)}", f"unknown field(s) for a {arch} model",
                          "check the file is a Hugging Face config of that architecture, or pass --ignore-unknown "
                          "to list them as not modelled", source=source)
    for key in unknown:
        f.skip(key, "unknown to moesim's reader (not modelled)")
    spec = dataclasses.replace(cls(**kwargs), **overrides) if overrides else cls(**kwargs)
    for key in ("torch_dtype", "dtype"):
        if key in f.used and spec.dtype != "bf16":
            f.used[key] = f.used[key].replace("trains in bf16", f"trains in {spec.dtype} (given)")
    no_cost = tuple(sorted((set(f.raw) & (NO_COST_COMMON | NO_COST[arch])) - set(f.used) - set(f.not_modelled)))
    return HFImport(spec, arch, tuple(sorted(f.used.items())), tuple(sorted(f.not_modelled.items())), no_cost, source,
                    seq_from)


def load_hf_config(path: str | Path, **kwargs: Any) -> HFImport:
    """:func:`read_hf_config` of a ``config.json`` file, or of the one in directory ``path``."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise ConfigError("config.json", f"{str(p)!r} does not exist", "give a config.json or a directory holding one")
    try:
        raw = json.loads(p.read_text())
    except (ValueError, RecursionError) as err:  # also a 5,000-digit number and lists nested 10^5 deep
        raise ConfigError("config.json", f"not valid JSON ({str(err)[:160]})", "give the model's Hugging Face config.json",
                          source=str(p)) from None
    if kwargs.get("name") is None and isinstance(raw, dict) and not raw.get("_name_or_path"):
        kwargs["name"] = p.stem if p.stem != "config" else p.parent.name
    return read_hf_config(raw, source=kwargs.pop("source", str(p)), **kwargs)


def shipped_config(name: str, **kwargs: Any) -> HFImport:
    """The shipped ``moesim/configs/<name>.json`` read as a spec called ``name``."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        from moesim.errors import unknown_name

        raise unknown_name("shipped config", name, shipped_names())
    return load_hf_config(path, name=name, **kwargs)


def shipped_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


# -- the readers ----------------------------------------------------------------------------------
def _architecture(raw: dict[str, Any], source: str) -> str:
    kind = raw.get("model_type")
    if kind in _READERS:
        return str(kind)
    classes = raw.get("architectures") or []
    for cls in classes if isinstance(classes, list) else []:
        if cls in ARCH_CLASSES:
            return ARCH_CLASSES[cls]
    shown = kind if kind is not None else (classes or "none given")
    raise ConfigError("config.json: model_type", f"unknown architecture {shown!r}",
                      f"moesim reads model_type {', '.join(sorted(_READERS))} "
                      f"(architectures {', '.join(sorted(ARCH_CLASSES))})", source=source)


def _attention(f: _Fields) -> dict[str, Any]:
    heads = f.int_("num_attention_heads", "num_heads")
    hidden = f.int_("hidden_size", "hidden")
    head_dim = f.int_("head_dim", "head_dim", default=hidden // heads)
    if not f.has("head_dim"):
        f.used.setdefault("hidden_size", "hidden")
    for key in ("attention_bias",):
        if f.raw.get(key) not in (None, False) and key not in NOT_MODELLED[f.where]:
            f.skip(key, "attention projection biases are left out")
        elif f.raw.get(key) is False:
            f.used[key] = "(no biases, as moesim's spec)"
    return dict(num_layers=f.int_("num_hidden_layers", "num_layers"), hidden=hidden, num_heads=heads,
                num_kv_heads=f.int_("num_key_value_heads", "num_kv_heads", default=heads), head_dim=head_dim,
                vocab=f.int_("vocab_size", "vocab"), activation=_activation(f))


def _activation(f: _Fields) -> str:
    act = f.value("hidden_act", "activation", "silu")
    if act != "silu":
        raise ConfigError("config.json: hidden_act", f"{act!r} is not modelled for a {f.where} model",
                          "these architectures use a gated SiLU (SwiGLU) MLP: hidden_act 'silu'")
    return "swiglu"


def _llama(f: _Fields) -> dict[str, Any]:
    kw = _attention(f)
    if f.raw.get("mlp_bias"):
        f.skip("mlp_bias", "MLP biases are left out")
    return {**kw, "ffn_hidden": f.int_("intermediate_size", "ffn_hidden")}


def _mixtral(f: _Fields) -> dict[str, Any]:
    kw = _attention(f)
    ffn = f.int_("intermediate_size", "ffn_hidden, expert_ffn_hidden")
    kw["_optional"] = _every_layer_window(f)
    return {**kw, "ffn_hidden": ffn, "expert_ffn_hidden": ffn, "num_experts": f.int_("num_local_experts", "num_experts"),
            "top_k": f.int_("num_experts_per_tok", "top_k")}


def _experts(f: _Fields, *names: str) -> int:
    """The routed expert count under any of ``names`` (transformers v5 saves Qwen3-MoE's ``num_experts``
    as ``num_local_experts``); names that are both given must agree."""
    given = {n: f.raw[n] for n in names if f.raw.get(n) is not None}
    if len(given) > 1 and len({json.dumps(v) for v in given.values()}) > 1:
        raise ConfigError(f"config.json: {', '.join(given)}",
                          "disagree (" + ", ".join(f"{k}={v!r}" for k, v in given.items()) + ")",
                          f"both name the routed experts of a {f.where} model (transformers v5 writes "
                          f"{names[-1]}): keep one, or make them equal")
    if not given:
        raise ConfigError(f"config.json: {' or '.join(names)}", "missing", f"a {f.where} config needs the number "
                          f"of routed experts as {' or '.join(names)}")
    return [f.int_(n, "num_experts") for n in given][0]


def _every_layer_window(f: _Fields) -> dict[str, Any]:
    """``sliding_window`` on every layer where the config sets it (Mixtral, Mistral, Phi-3.5-MoE)."""
    return {"sliding_window": (("sliding_window",), f.raw.get("sliding_window"))}


def _qwen3_moe(f: _Fields) -> dict[str, Any]:
    kw = _attention(f)
    pattern = _sparse_layers(f, kw["num_layers"])
    if f.raw.get("use_sliding_window"):
        f.skip("sliding_window", "sliding-window attention priced as full causal attention")
    if f.has("shared_expert_intermediate_size"):
        raise ConfigError("config.json: shared_expert_intermediate_size", "Qwen3-MoE has no shared experts",
                          "this looks like a Qwen2-MoE / Qwen3-Next config, which moesim does not read")
    return {**kw, "ffn_hidden": f.int_("intermediate_size", "ffn_hidden"),
            "expert_ffn_hidden": f.int_("moe_intermediate_size", "expert_ffn_hidden"),
            "num_experts": _experts(f, "num_experts", "num_local_experts"),
            "top_k": f.int_("num_experts_per_tok", "top_k"), "moe_layer_freq": pattern,
            "qk_norm": True}   # Qwen3MoeAttention's q_norm / k_norm, whatever the config says


def _mistral(f: _Fields) -> dict[str, Any]:
    """Llama's layer with a sliding window on every layer where ``sliding_window`` is set."""
    kw = _llama(f)
    kw["_optional"] = _every_layer_window(f)
    return kw


def _qwen_window(f: _Fields, layers: int) -> dict[str, Any]:
    """Qwen2-family sliding windows: none where ``use_sliding_window`` is false (its fields then
    change nothing), else the layers ``layer_types`` names (required: transformers versions place
    them differently from ``max_window_layers`` alone)."""
    keys = ("use_sliding_window", "sliding_window", "max_window_layers")
    kinds = f.raw.get("layer_types")
    if kinds is not None:
        if not isinstance(kinds, list) or len(kinds) != layers \
                or any(k not in ("sliding_attention", "full_attention") for k in kinds):
            raise ConfigError("config.json: layer_types", f"need {layers} entries of 'sliding_attention' or "
                              f"'full_attention', got {str(kinds)[:80]}")
        if "sliding_attention" in kinds:
            f.used.update({k: "(layer_types names the sliding layers)"
                           for k in ("use_sliding_window", "max_window_layers") if k in f.raw})
            return {"_optional": {"sliding_window": (("sliding_window",), f.int_("sliding_window", "sliding_window")),
                                  "layer_types": (("layer_types",), tuple(kinds))}}
        f.used["layer_types"] = "(every layer full attention)"
    elif f.raw.get("use_sliding_window"):
        raise ConfigError("config.json: use_sliding_window", "is true and layer_types is not given",
                          "give layer_types (one 'sliding_attention' or 'full_attention' per layer): transformers "
                          "versions place Qwen2-family sliding layers differently")
    f.used.update({k: "(no sliding window)" for k in keys if k in f.raw})
    return {}


def _qwen_biases(f: _Fields) -> None:
    """Qwen2's q, k and v projections carry biases (``qkv_bias``, default true)."""
    if f.raw.get("qkv_bias", True):
        f.not_modelled["(q/k/v biases)"] = "the q, k and v projection biases (an add each, < 0.1% of the FLOPs) are left out"
    if "qkv_bias" in f.raw:
        f.used.setdefault("qkv_bias", "(read: the biases are left out)")


def _qwen2(f: _Fields) -> dict[str, Any]:
    kw = _llama(f)
    _qwen_biases(f)
    return {**kw, **_qwen_window(f, kw["num_layers"])}


def _qwen3(f: _Fields) -> dict[str, Any]:
    kw = _llama(f)
    return {**kw, **_qwen_window(f, kw["num_layers"]), "qk_norm": True}   # Qwen3Attention's q_norm / k_norm


def _sparse_layers(f: _Fields, layers: int) -> "int | tuple[int, ...]":
    """Qwen's MoE layer pattern: ``decoder_sparse_step`` minus the ``mlp_only_layers``."""
    step = f.int_("decoder_sparse_step", "moe_layer_freq", default=1)
    dense_only = f.value("mlp_only_layers", "moe_layer_freq", []) or []
    if not isinstance(dense_only, list) or any(not isinstance(i, int) or not 0 <= i < layers for i in dense_only):
        raise ConfigError("config.json: mlp_only_layers", f"must list layer indices below {layers}, got {dense_only!r}")
    pattern = tuple(int(i not in dense_only and (i + 1) % step == 0) for i in range(layers))
    return 1 if all(pattern) else pattern


def _qwen2_moe(f: _Fields) -> dict[str, Any]:
    kw = _attention(f)
    _qwen_biases(f)
    kw.update(_qwen_window(f, kw["num_layers"]))
    shared = f.int_("shared_expert_intermediate_size", "shared_expert_ffn_hidden", default=0, allow_zero=True)
    if shared:
        f.not_modelled["(shared expert gate)"] = ("the shared expert's sigmoid gate (a [tokens, hidden] x [hidden, 1] "
                                                  "GEMV, a sigmoid and a multiply per layer) is left out")
    return {**kw, "ffn_hidden": f.int_("intermediate_size", "ffn_hidden"),
            "expert_ffn_hidden": f.int_("moe_intermediate_size", "expert_ffn_hidden"),
            "num_experts": f.int_("num_experts", "num_experts"), "top_k": f.int_("num_experts_per_tok", "top_k"),
            "moe_layer_freq": _sparse_layers(f, kw["num_layers"]),
            "num_shared_experts": 1 if shared else 0, "shared_expert_ffn_hidden": shared}


def _olmoe(f: _Fields) -> dict[str, Any]:
    kw = _attention(f)
    if f.raw.get("clip_qkv") is not None:
        f.skip("clip_qkv", "the clamp of q, k and v (three elementwise kernels a layer) is left out")
    elif "clip_qkv" in f.raw:
        f.used["clip_qkv"] = "(none)"
    ffn = f.int_("intermediate_size", "ffn_hidden, expert_ffn_hidden")
    # OlmoeAttention's q_norm / k_norm span the whole projection: the same elements as per-head norms
    return {**kw, "ffn_hidden": ffn, "expert_ffn_hidden": ffn,
            "num_experts": f.int_("num_experts", "num_experts"),
            "top_k": f.int_("num_experts_per_tok", "top_k"), "qk_norm": True}


def _phimoe(f: _Fields) -> dict[str, Any]:
    kw = _attention(f)
    if f.raw.get("input_jitter_noise"):
        f.skip("input_jitter_noise", "the training-time random multiply of the MoE input (one elementwise kernel and "
                                     "its random numbers a layer) is left out")
    elif "input_jitter_noise" in f.raw:
        f.used["input_jitter_noise"] = "(0: none)"
    ffn = f.int_("intermediate_size", "ffn_hidden, expert_ffn_hidden")
    kw["_optional"] = _every_layer_window(f)
    return {**kw, "ffn_hidden": ffn, "expert_ffn_hidden": ffn, "num_experts": f.int_("num_local_experts", "num_experts"),
            "top_k": f.int_("num_experts_per_tok", "top_k"), "norm": "layernorm"}   # PhimoeDecoderLayer's nn.LayerNorm


def _gpt_oss(f: _Fields) -> dict[str, Any]:
    kw = _attention(f)
    ffn = f.int_("intermediate_size", "ffn_hidden, expert_ffn_hidden")
    top_k = f.int_("num_experts_per_tok", "top_k", default=f.raw.get("experts_per_token"))
    kinds = f.raw.get("layer_types") or []
    if f.has("layer_types") and (not isinstance(kinds, list) or len(kinds) != kw["num_layers"]
                                 or any(k not in ("sliding_attention", "full_attention") for k in kinds)):
        raise ConfigError("config.json: layer_types", f"need {kw['num_layers']} entries of 'sliding_attention' or "
                          f"'full_attention', got {str(kinds)[:80]}")
    if "swiglu_alpha" in f.raw:   # transformers v5: the GLU's gate * sigmoid(alpha * gate), 1.702 in GptOssExperts
        alpha = f.raw["swiglu_alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ConfigError("config.json: swiglu_alpha", f"must be a positive number, got {alpha!r}",
                              "GPT-OSS's GLU alpha is 1.702")
        f.used["swiglu_alpha"] = (f"(GLU alpha {alpha}: a constant inside the activation kernel moesim prices "
                                  f"as SwiGLU, the same time and memory for any alpha)")
    window = f.raw.get("sliding_window")
    kw["_optional"] = {"sliding_window": (("sliding_window",), window),
                       "layer_types": (("layer_types",), tuple(kinds) or None),
                       "attention_sinks": (("model_type",), True)}
    # GptOssExperts carries gate_up_proj_bias and down_proj_bias whatever the config says
    return {**kw, "ffn_hidden": ffn, "expert_ffn_hidden": ffn, "num_experts": f.int_("num_local_experts", "num_experts"),
            "top_k": top_k, "expert_linear_bias": True}


def _deepseek_v3(f: _Fields) -> dict[str, Any]:
    kw = _attention(f)
    kw["head_dim"] = f.int_("qk_nope_head_dim", "head_dim")
    if "head_dim" in f.raw:   # newer transformers store the rotary width there
        f.used["head_dim"] = "(HF's derived width; moesim's head_dim is qk_nope_head_dim)"
    if f.raw.get("mlp_bias"):
        f.skip("mlp_bias", "MLP biases are left out")
    elif "mlp_bias" in f.raw:
        f.used["mlp_bias"] = "(no biases, as moesim's spec)"
    f.used["num_attention_heads"] = "num_heads"
    layers = kw["num_layers"]
    freq = f.int_("moe_layer_freq", "moe_layer_freq", default=1)
    kw.update(ffn_hidden=f.int_("intermediate_size", "ffn_hidden"),
              q_lora_rank=f.int_("q_lora_rank", "q_lora_rank", default=0, allow_zero=True),
              kv_lora_rank=f.int_("kv_lora_rank", "kv_lora_rank"),
              qk_rope_head_dim=f.int_("qk_rope_head_dim", "qk_rope_head_dim", default=0, allow_zero=True),
              v_head_dim=f.int_("v_head_dim", "v_head_dim", default=0, allow_zero=True),
              num_experts=f.int_("n_routed_experts", "num_experts"), top_k=f.int_("num_experts_per_tok", "top_k"),
              expert_ffn_hidden=f.int_("moe_intermediate_size", "expert_ffn_hidden, shared_expert_ffn_hidden"),
              num_shared_experts=f.int_("n_shared_experts", "num_shared_experts", default=0, allow_zero=True),
              first_k_dense=min(layers, f.int_("first_k_dense_replace", "first_k_dense", default=0, allow_zero=True)),
              moe_layer_freq=freq, n_groups=f.int_("n_group", "n_groups", default=1),
              topk_groups=f.int_("topk_group", "topk_groups", default=1))
    if f.raw.get("q_lora_rank", 0) is None:
        f.used["q_lora_rank"] = "q_lora_rank (null: 0)"
    if "qk_head_dim" in f.raw:   # transformers v5 saves the derived q/k width
        qk = f.raw["qk_head_dim"]
        if qk != kw["head_dim"] + kw["qk_rope_head_dim"] or isinstance(qk, bool):
            nope, rope = kw["head_dim"], kw["qk_rope_head_dim"]
            raise ConfigError("config.json: qk_head_dim", f"is {qk!r}, but qk_nope_head_dim + qk_rope_head_dim = "
                              f"{nope} + {rope} = {nope + rope}",
                              "transformers derives it as their sum: correct it or the two widths")
        f.used["qk_head_dim"] = "(checked: qk_nope_head_dim + qk_rope_head_dim)"
    # transformers' DeepseekV3 routes by sigmoid scores plus a per-expert bias whatever the config says, and
    # its v5 configs no longer carry scoring_func / topk_method; DeepSeek-V2 routes by softmax, greedy
    v3 = f.where == "deepseek_v3"
    defaults = {"scoring_func": "sigmoid" if v3 else "softmax", "topk_method": "noaux_tc" if v3 else "greedy"}
    for key, default in defaults.items():
        if key not in f.raw:
            f.used[f"({key} absent)"] = f"{default} ({'transformers DeepseekV3' if v3 else 'DeepSeek-V2'}'s routing)"
    score = f.value("scoring_func", "score_func", defaults["scoring_func"])
    if score not in ("softmax", "sigmoid"):
        raise ConfigError("config.json: scoring_func", f"unknown {score!r}", "moesim models 'softmax' or 'sigmoid'")
    kw["score_func"] = score
    method = f.value("topk_method", "expert_bias (noaux_tc: a bias per expert before top-k)", defaults["topk_method"])
    if method not in ("greedy", "group_limited_greedy", "noaux_tc"):
        raise ConfigError("config.json: topk_method", f"unknown {method!r}",
                          "use greedy, group_limited_greedy or noaux_tc (DeepSeek's values)")
    kw["expert_bias"] = method == "noaux_tc"
    kw["_optional"] = {"num_nextn_predict_layers": (("num_nextn_predict_layers",),
                                                    f.raw.get("num_nextn_predict_layers") or None)}
    return kw


_READERS: dict[str, Callable[[_Fields], dict[str, Any]]] = {
    "llama": _llama, "mixtral": _mixtral, "qwen3_moe": _qwen3_moe, "gpt_oss": _gpt_oss, "deepseek_v3": _deepseek_v3,
    "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "qwen2_moe": _qwen2_moe, "olmoe": _olmoe,
    "phimoe": _phimoe, "deepseek_v2": _deepseek_v3,   # DeepSeek-V2's fields are V3's less MTP and expert bias
}


def _optional(cls: type, kwargs: dict[str, Any], f: _Fields) -> dict[str, Any]:
    """Set the :data:`OPTIONAL_FIELDS` the spec class has; report the config fields of the rest."""
    wanted = kwargs.pop("_optional", {})
    names = {fl.name for fl in dataclasses.fields(cls)}
    for target, (keys, value) in wanted.items():
        if value is None:
            f.used.update({key: f"{target} (none)" for key in keys if key in f.raw and key != "model_type"})
            continue
        if target in names:
            kwargs[target] = value
            for key in keys:
                f.used[key] = target if key not in f.used else f"{f.used[key]}, {target}"
        else:
            for key in keys:
                if key == "model_type":
                    f.not_modelled["(attention sinks)"] = f"{OPTIONAL_FIELDS[target]}: not in this moesim's spec"
                else:
                    f.skip(key, f"{OPTIONAL_FIELDS[target]}: not in this moesim's spec "
                                f"({'sliding layers priced as full causal attention' if 'sliding' in target else 'left out'})")
    return kwargs


def _context(f: _Fields) -> tuple[int, str]:
    """The pre-training sequence length the config records, and where it came from (see the module
    docstring). ``rope_scaling`` (transformers v4) and ``rope_parameters`` (v5, flat or one dict per
    layer type) are read alike, so both formats of a file give the same length."""
    if f.raw.get("initial_context_length") is not None \
            and _positive("initial_context_length", f.raw["initial_context_length"]):
        return _context_from(f, "initial_context_length", f.raw["initial_context_length"])
    found: dict[str, int] = {}
    if "original_max_position_embeddings" in f.raw:   # Phi-3.5-MoE keeps it at the top level as well
        value = f.raw["original_max_position_embeddings"]
        if value is not None and _positive("original_max_position_embeddings", value):
            found["original_max_position_embeddings"] = value
    for key in ("rope_scaling", "rope_parameters"):
        rope = f.raw.get(key)
        if rope is None:
            continue
        if not isinstance(rope, dict):
            raise ConfigError(f"config.json: {key}", f"must be an object, got {str(rope)[:60]}",
                              "give the RoPE settings as transformers writes them ({rope_type: ..., ...})")
        nested = rope and all(isinstance(v, dict) or v is None for v in rope.values())   # v5: one per layer type
        for part, inner in (rope.items() if nested else ((None, rope),)):
            value = (inner or {}).get("original_max_position_embeddings")
            name = ".".join(k for k in (key, part, "original_max_position_embeddings") if k)
            if value is not None and _positive(name, value):
                found[name] = value
    if len(set(found.values())) > 1:
        values = ", ".join(f"{k}={v}" for k, v in found.items())
        raise ConfigError(f"config.json: {', '.join(found)}", f"disagree on the pre-training context ({values})",
                          "make them agree, or give the sequence length (--seq-len)")
    if found:
        return _context_from(f, ", ".join(found), next(iter(found.values())))
    if f.raw.get("max_position_embeddings") is not None \
            and _positive("max_position_embeddings", f.raw["max_position_embeddings"]):
        return _context_from(f, "max_position_embeddings", f.raw["max_position_embeddings"])
    raise ConfigError("config.json: max_position_embeddings", "missing: no sequence length in the config",
                      "give the sequence length (--seq-len)")


def _positive(key: str, value: Any) -> bool:
    """``value`` is a positive integer, else an error naming ``key``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return True
    raise ConfigError(f"config.json: {key}", f"must be a positive integer, got {str(value)[:40]!r}",
                      "give a context length in tokens, or the sequence length (--seq-len)")


def _context_from(f: _Fields, keys: str, value: int) -> tuple[int, str]:
    for key in keys.split(", "):
        f.used[key.split(".")[0]] = f"seq_len {value} (the default training sequence length; --seq-len replaces it)"
    what = "the pre-training context" if keys != "max_position_embeddings" else \
        "the longest position the model takes; the config records no shorter pre-training context"
    return value, f"config.json {keys} ({what}): the default training sequence length, --seq-len replaces it"


def _dtype(f: _Fields) -> str:
    """The training precision: bf16. ``torch_dtype`` (v4) / ``dtype`` (v5) is the dtype the checkpoint
    is stored in (OLMoE's is float32), not the precision it was or will be trained in; it is listed
    as read, with its value, and changes nothing (set the spec's ``dtype`` to train otherwise)."""
    for key in ("torch_dtype", "dtype"):
        if key in f.raw:
            f.used[key] = (f"(checkpoint storage dtype {f.raw[key]!r}, not the training precision: the spec trains "
                           f"in bf16; a scenario's model: {{hf: ..., dtype: ...}} changes it)")
    return "bf16"


def _source_text(raw: dict[str, Any], source: str) -> str:
    meta = raw.get("_moesim_source")
    url = meta.get("url") if isinstance(meta, dict) else None
    return f"{url} (shipped as {Path(source).name})" if url else (source or "Hugging Face config.json")
