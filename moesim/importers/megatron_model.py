"""The model Megatron-LM's arguments describe, for :mod:`moesim.importers.megatron`: the spec built
from the shape flags (``--num-layers``, ``--hidden-size``, ..., ``--num-experts``, MLA, windows,
sinks), or a ``--model`` preset's architecture checked against every shape flag given (a flag that
disagrees is an error naming both)."""
from __future__ import annotations

import ast
from typing import Any

from moesim.errors import ConfigError
from moesim.importers.common import preset_architecture
from moesim.importers.megatron_args import MODELLED, Args, flag_of

_SHAPE = (("num_layers", "num_layers"), ("hidden_size", "hidden"), ("ffn_hidden_size", "ffn_hidden"),
          ("num_attention_heads", "num_heads"), ("num_experts", "num_experts"), ("moe_router_topk", "top_k"),
          ("moe_ffn_hidden_size", "expert_ffn_hidden"), ("vocab_size", "vocab"), ("kv_channels", "head_dim"),
          ("q_lora_rank", "q_lora_rank"), ("kv_lora_rank", "kv_lora_rank"),
          ("qk_pos_emb_head_dim", "qk_rope_head_dim"), ("v_head_dim", "v_head_dim"),
          ("moe_router_score_function", "score_func"), ("padded_vocab_size", "vocab"))
# flags whose value maps onto a spec field: (dest, field, value -> field value)
_MAPPED = (("swiglu", "activation", lambda v: "swiglu" if v else "gelu"),
           ("quick_geglu", "activation", lambda v: "swiglu" if v else "gelu"),
           ("normalization", "norm", lambda v: "rmsnorm" if v == "RMSNorm" else "layernorm"),
           ("untie_embeddings_and_output_weights", "tied_embeddings", lambda v: not v),
           ("softmax_type", "attention_sinks", lambda v: v != "vanilla"))
# MoE flags Megatron reads only with --num-experts (on a dense model they have no effect)
_MOE_SHAPE = ("num_experts", "moe_router_topk", "moe_ffn_hidden_size", "moe_shared_expert_intermediate_size",
              "moe_layer_freq", "moe_router_score_function", "moe_router_num_groups", "moe_router_group_topk")


def model_fields(a: Args, given: list[str], model: str | None, notes: list[str]) -> tuple[dict[str, Any], set[str]]:
    """The model as a ``{spec: ..., fields}`` mapping, and the dests it consumed."""
    if model is not None:
        spec = _resolve_model(model)
        used = _check_against_model(a, spec, model)
        fields = preset_architecture(spec, model, "Megatron's arguments", notes)
        if not a.has("seq_length"):
            notes.append(f"no --seq-length: the sequence length {spec.seq_len} of --model {model}")
    else:
        fields, used = _spec_from_flags(a), set(MODELLED)
    if a.has("seq_length"):
        fields["seq_len"] = a.get("seq_length")
    fields["dtype"] = "bf16" if a.get("bf16") else ("fp16" if a.get("fp16") else "fp32")
    if fields["dtype"] == "fp32":
        notes.append("neither --bf16 nor --fp16: Megatron trains in fp32, and so does the simulation")
    if a.get("fp8"):
        fields["gemm_dtype"] = "fp8"
        notes.append(f"--fp8-format {a.get('fp8')} (recipe {a.get('fp8_recipe')}): the linear layers' GEMMs are "
                     "priced by the profile's FP8 rows")
    fields["num_nextn_predict_layers"] = a.get("mtp_num_layers") or 0   # no MTP block without --mtp-num-layers
    # the fused bias-activation: --no-bias-swiglu-fusion for SwiGLU, --no-bias-gelu-fusion for the other GLUs
    fields["activation_fusion"] = bool(a.get("bias_gelu_fusion") if a.get("quick_geglu")
                                       else a.get("bias_swiglu_fusion"))
    fields["qk_norm"] = bool(a.get("qk_layernorm"))   # as Megatron builds it: off unless --qk-layernorm
    # --no-rope-fusion: Megatron-Core's _apply_rotary_pos_emb_bshd, t * cos + _rotate_half(t) * sin
    fields["rope_impl"] = "fused" if a.get("apply_rope_fusion") else "rotate_half"
    if "num_experts" in fields:
        fields["expert_bias"] = bool(a.get("moe_router_enable_expert_bias"))
        fields["expert_linear_bias"] = bool(a.get("add_bias_linear"))   # Megatron's default: on
        # group-limited routing (Megatron's node- or device-limited routing) only when the arguments ask
        fields["n_groups"] = a.get("moe_router_num_groups") or 1
        fields["topk_groups"] = a.get("moe_router_group_topk") or 1
    if a.get("quick_geglu"):
        notes.append("--quick-geglu: a gated linear unit with a quick-GELU gate (x * sigmoid(1.702 x), GPT-OSS), "
                     "priced as SwiGLU (model.activation='swiglu': the same GEMMs and an elementwise kernel alike)")
    if a.get("softmax_type") == "off-by-one":
        notes.append("--softmax-type off-by-one: priced as an attention sink per head (model.attention_sinks), "
                     "the same extra softmax term with a fixed logit")
    if model is not None:
        changed = [f"{k}={fields[k]} (the preset has {before_model})" for k, before_model in
                   ((k, getattr(spec, k)) for k in _RUN_OVERRIDES if k in fields)
                   if fields[k] != before_model]
        if changed:
            notes.append(f"as Megatron builds the model from these arguments (not from --model {model}): "
                         + "; ".join(changed) + " — give the flags (e.g. --mtp-num-layers, --qk-layernorm, "
                         "--moe-router-num-groups / --moe-router-group-topk) for the preset's values")
    return fields, used | set(OVERRIDES)


# set from the arguments on a --model as well (Megatron's defaults where not given), said when they differ
_RUN_OVERRIDES = ("num_nextn_predict_layers", "qk_norm", "expert_bias", "expert_linear_bias", "n_groups",
                  "topk_groups", "activation_fusion")
OVERRIDES = ("seq_length", "bf16", "fp16", "fp8", "mtp_num_layers", "bias_swiglu_fusion", "bias_gelu_fusion",
              "moe_router_enable_expert_bias", "add_bias_linear", "qk_layernorm", "apply_rope_fusion",
              "moe_router_num_groups", "moe_router_group_topk")  # set on a --model, not checked


def _check_against_model(a: Args, spec: Any, model: str) -> set[str]:
    """Every architecture flag given must agree with ``--model``: else a ConfigError naming both.
    Returns the dests checked."""
    moe = hasattr(spec, "num_experts")

    def conflict(flag: str, value: Any, what: str) -> ConfigError:
        return ConfigError(flag, f"{value} conflicts with --model {model} ({what})",
                           "drop the flag, or name the --model the arguments describe")
    if a.has("num_experts") and bool(a.get("num_experts")) != moe:
        raise conflict("--num-experts", a.get("num_experts"),
                       "a dense model: the arguments describe an MoE" if not moe else
                       f"{spec.num_experts} experts; --num-experts 0 is Megatron's dense model")
    used: set[str] = set()
    for dest, field, conv in [(d, f, lambda v: v) for d, f in _SHAPE] + list(_MAPPED):
        if not a.has(dest):
            continue
        if dest in _MOE_SHAPE and not moe:
            continue   # Megatron reads it only with --num-experts: no effect (said in the account)
        value = conv(a.get(dest))
        if getattr(spec, field) != value:
            raise conflict(flag_of(dest), a.get(dest), f"{field} = {getattr(spec, field)}")
        used.add(dest)
    if a.has("group_query_attention") or a.has("num_query_groups"):
        kv = a.get("num_query_groups") if a.get("group_query_attention") else spec.num_heads
        if kv != spec.num_kv_heads:
            gqa = a.get("group_query_attention")
            flag = "--num-query-groups" if gqa else "--num-query-groups/--group-query-attention"
            raise conflict(flag, f"{kv} KV heads" + ("" if gqa else " (Megatron reads --num-query-groups only with "
                                                                      "--group-query-attention)"),
                           f"num_kv_heads = {spec.num_kv_heads}")
        used |= {d for d in ("group_query_attention", "num_query_groups") if a.has(d)}
    mla = spec.kv_lora_rank > 0
    if a.has("multi_latent_attention") and not mla:
        raise conflict("--multi-latent-attention", "MLA", "no latent attention: kv_lora_rank = 0")
    if a.has("multi_latent_attention"):
        used.add("multi_latent_attention")
    if a.has("qk_head_dim") and mla:
        if a.get("qk_head_dim") != spec.head_dim:
            raise conflict("--qk-head-dim", a.get("qk_head_dim"), f"head_dim = {spec.head_dim}")
        used.add("qk_head_dim")
    if moe and a.has("moe_shared_expert_intermediate_size"):
        shared = spec.num_shared_experts * (spec.shared_expert_ffn_hidden or spec.expert_ffn_hidden)
        if a.get("moe_shared_expert_intermediate_size") != shared:
            raise conflict("--moe-shared-expert-intermediate-size", a.get("moe_shared_expert_intermediate_size"),
                           f"shared experts {shared} wide in all")
        used.add("moe_shared_expert_intermediate_size")
    if moe and a.has("moe_layer_freq"):
        mine = _freq_pattern(_layer_freq(a.get("moe_layer_freq"), spec.num_layers), spec.num_layers)
        theirs = _freq_pattern(spec.moe_layer_freq, spec.num_layers, spec.first_k_dense)
        if mine != theirs:
            raise conflict("--moe-layer-freq", f"{a.get('moe_layer_freq')} ({sum(mine)} MoE layers)",
                           f"{sum(theirs)} MoE layers of {spec.num_layers}, first_k_dense = {spec.first_k_dense}, "
                           f"moe_layer_freq = {spec.moe_layer_freq}")
        used.add("moe_layer_freq")
    window = _window(a, spec.num_layers)
    if window is not None:
        if _layer_windows(window[0], window[1], spec.num_layers) != _layer_windows(
                spec.sliding_window, spec.layer_types, spec.num_layers):
            raise conflict("--window-size/--window-attn-skip-freq", f"a {window[0]}-token window on "
                           f"{_windowed(window, spec.num_layers)} layers", f"sliding_window = {spec.sliding_window} on "
                           f"{_windowed((spec.sliding_window, spec.layer_types), spec.num_layers)} layers")
        used |= {d for d in ("window_size", "window_attn_skip_freq") if a.has(d)}
    return used


def _freq_pattern(freq: Any, layers: int, first_k_dense: int = 0) -> tuple[int, ...]:
    """A moe_layer_freq (int N: layer i is MoE when i % N == 0, Megatron's and HF's rule; or a 0/1
    tuple) as one 0/1 entry per layer, the first ``first_k_dense`` dense."""
    if isinstance(freq, int):
        return tuple(int(i >= first_k_dense and i % freq == 0) for i in range(layers))
    return tuple(freq)


def _window(a: Args, layers: int) -> tuple[int, tuple[str, ...]] | None:
    """``(sliding_window, layer_types)`` of ``--window-size`` / ``--window-attn-skip-freq`` (None: no
    window flag). Megatron's window (left, right) with the causal mask covers left + 1 tokens (HF's
    ``sliding_window``); ``is_layer_window_attention``: with skip freq N the 1-indexed layers not
    divisible by N are windowed, a list marks them with 1; no skip freq: every layer."""
    if not a.has("window_size"):
        if a.has("window_attn_skip_freq"):
            raise ConfigError("--window-attn-skip-freq", "without --window-size (Megatron then uses no window)",
                              "give --window-size L,0, or drop --window-attn-skip-freq")
        return None
    text = str(a.get("window_size")).strip().strip("()")
    try:
        left, right = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError("--window-size", f"cannot read {a.get('window_size')!r}",
                          "give the left and right window as Megatron does, e.g. 127,0") from None
    if right not in (0, -1) or left < -1:
        raise ConfigError("--window-size", f"({left}, {right}): moesim models causal sliding windows (L, 0)",
                          "give --window-size L,0")
    if left == -1:
        return 0, ()
    freq = a.get("window_attn_skip_freq")
    if freq is None:
        return left + 1, ()
    text = str(freq).strip()
    if text.isdigit():
        n = int(text)
        if n < 1:
            raise ConfigError("--window-attn-skip-freq", f"must be >= 1, got {n}")
        marks = [int((i + 1) % n != 0) for i in range(layers)]
    else:
        try:
            marks = _eval_list(ast.parse(text, mode="eval").body)
        except (SyntaxError, ValueError):
            raise ConfigError("--window-attn-skip-freq", f"cannot read {text!r}",
                              "give an int or a list such as \"[1,0]*18\"") from None
        if len(marks) != layers or any(v not in (0, 1) for v in marks):
            raise ConfigError("--window-attn-skip-freq", f"needs {layers} entries of 0 or 1, got {len(marks)}")
    return left + 1, tuple("sliding_attention" if m else "full_attention" for m in marks)


def _layer_windows(window: int, kinds: tuple[str, ...], layers: int) -> tuple[int, ...]:
    """The window of every layer (0: full attention)."""
    if not window:
        return (0,) * layers
    return tuple(window if not kinds or kinds[i] == "sliding_attention" else 0 for i in range(layers))


def _windowed(window: tuple[int, tuple[str, ...]], layers: int) -> str:
    count = sum(1 for w in _layer_windows(window[0], window[1], layers) if w)
    return f"{count} of {layers}"


def _resolve_model(model: str) -> Any:
    from moesim.workload.presets import model_by_name_or_path

    return model_by_name_or_path(model, field="--model")


def _spec_from_flags(a: Args) -> dict[str, Any]:
    need = [d for d in ("num_layers", "hidden_size", "num_attention_heads", "seq_length") if a.get(d) is None]
    if need:
        raise ConfigError("--megatron-args", f"the model needs {', '.join('--' + d.replace('_', '-') for d in need)}",
                          "give them, or name the model with --model (a preset or a config.json)")
    if a.get("vocab_size") is None and a.get("padded_vocab_size") is None:
        raise ConfigError("--vocab-size", "missing: Megatron takes the vocabulary from the tokenizer",
                          "give --vocab-size N, or name the model with --model")
    h, heads = a.get("hidden_size"), a.get("num_attention_heads")
    gated = bool(a.get("swiglu") or a.get("quick_geglu"))
    ffn = a.get("ffn_hidden_size")
    if ffn is None:   # validate_args: SwiGLU keeps ~8h/3 rounded down to a multiple of 64; else 4h
        ffn = int((4 * h * 2 / 3) / 64) * 64 if a.get("swiglu") else 4 * h
    if a.get("kv_channels") is None and h % heads:
        raise ConfigError("--num-attention-heads", f"{heads} does not divide --hidden-size {h} (Megatron asserts it "
                          "when --kv-channels is not given)",
                          "give --kv-channels, or a head count dividing the hidden size")
    f: dict[str, Any] = {"spec": "TransformerSpec", "name": "megatron-model", "num_layers": a.get("num_layers"),
                         "hidden": h, "num_heads": heads, "head_dim": a.get("kv_channels") or h // heads,
                         "num_kv_heads": a.get("num_query_groups") if a.get("group_query_attention") else heads,
                         "ffn_hidden": ffn, "vocab": a.get("padded_vocab_size") or a.get("vocab_size"),
                         "seq_len": a.get("seq_length"),
                         "activation": "swiglu" if gated else "gelu",
                         "norm": "rmsnorm" if a.get("normalization") == "RMSNorm" else "layernorm",
                         "tied_embeddings": not a.get("untie_embeddings_and_output_weights"),
                         "attention_sinks": a.get("softmax_type") != "vanilla",
                         "source": "Megatron-LM arguments"}
    window = _window(a, a.get("num_layers"))
    if window is not None:
        f.update(sliding_window=window[0], layer_types=window[1])
    if a.get("multi_latent_attention"):
        f.update(num_kv_heads=heads, head_dim=a.get("qk_head_dim"), q_lora_rank=a.get("q_lora_rank") or 0,
                 kv_lora_rank=a.get("kv_lora_rank"), qk_rope_head_dim=a.get("qk_pos_emb_head_dim"),
                 v_head_dim=a.get("v_head_dim"))
    if a.get("num_experts"):
        f.update(_moe_fields(a, ffn))
    return f


def _moe_fields(a: Args, ffn: int) -> dict[str, Any]:
    expert = a.get("moe_ffn_hidden_size") or ffn   # validate_args: unset -> ffn_hidden_size
    shared = a.get("moe_shared_expert_intermediate_size") or 0
    score = a.get("moe_router_score_function")
    if score not in ("softmax", "sigmoid"):
        raise ConfigError("--moe-router-score-function", f"{score!r} is not modelled", "use softmax or sigmoid")
    f = {"spec": "MoESpec", "num_experts": a.get("num_experts"), "top_k": a.get("moe_router_topk"),
         "expert_ffn_hidden": expert, "score_func": score,
         "moe_layer_freq": _layer_freq(a.get("moe_layer_freq"), a.get("num_layers")),
         "n_groups": a.get("moe_router_num_groups") or 1, "topk_groups": a.get("moe_router_group_topk") or 1}
    if shared:
        f.update(num_shared_experts=1, shared_expert_ffn_hidden=shared)
    return f


def _layer_freq(value: Any, layers: int) -> int | tuple[int, ...]:
    """Megatron's ``--moe-layer-freq``: an int, or a Python list expression such as ``([0]*3+[1]*58)``."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        pattern = _eval_list(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError):
        raise ConfigError("--moe-layer-freq", f"cannot read {text!r}", "give an int or a list such as "
                          "\"([0]*3+[1]*58)\"") from None
    if len(pattern) != layers or any(v not in (0, 1) for v in pattern):
        raise ConfigError("--moe-layer-freq", f"needs {layers} entries of 0 or 1, got {len(pattern)}")
    return tuple(pattern)


def _eval_list(node: ast.AST) -> list[int]:
    """Lists of ints joined by + and repeated by * (nothing else is evaluated)."""
    if isinstance(node, ast.List) and all(isinstance(e, ast.Constant) and isinstance(e.value, int) for e in node.elts):
        return [e.value for e in node.elts]  # type: ignore[attr-defined]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _eval_list(node.left) + _eval_list(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = node.left, node.right
        if isinstance(right, ast.Constant) and isinstance(right.value, int):
            return _eval_list(left) * right.value
        if isinstance(left, ast.Constant) and isinstance(left.value, int):
            return _eval_list(right) * left.value
    raise ValueError("not a list expression")


# -- plan, MoE, memory, overlap ------------------------------------------------------------------
