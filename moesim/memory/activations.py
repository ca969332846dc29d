"""The tensors one decoder layer keeps for backward, by name, by the Megatron module that frees them.

Each :class:`Kept` is one saved tensor of one microbatch on one GPU: its bytes and the
``--recompute-modules`` entries that free it (Megatron-Core ``TransformerConfig.recompute_modules``).
"output-discarding" modules (``layernorm``, ``mla_up_proj``, ``moe_act``) free their *output*,
recomputed from the input that stays; "normal" checkpointed modules (``core_attn``, ``mlp``,
``moe``, ``shared_experts``) keep only their input, which the layer keeps anyway. So a tensor is
freed when any module in its ``freed_by`` is recomputed. ``recompute="full"`` keeps only each
layer's input (Megatron ``--recompute-granularity full --recompute-method uniform
--recompute-num-layers 1``).

Precision of what is kept (:class:`~moesim.memory.config.MemoryConfig`):

* ``fp8_linear_inputs``: an FP8 linear layer (Transformer Engine, DeepSeek's framework) saves
  the FP8 copy of its input for the weight gradient, 1 B per element plus one fp32 scale per
  1x128 tile (DeepSeek-V3 §3.3.2), instead of the bf16 tensor;
* ``fp8_swiglu_inputs``: DeepSeek-V3 §3.3.3 also caches the MoE SwiGLU inputs in FP8;
* ``probs_on_expert_output``: torchtitan multiplies the expert outputs by the router scores,
  so backward keeps those outputs (T*k*h, in fp32: torchtitan casts them up for the product);
  Megatron's grouped MLP applies the probabilities
  inside the activation, which keeps its input anyway.

Tensors of one layer, T tokens of the microbatch, T/tp per GPU under sequence parallelism (Ts),
heads and FFN widths per TP rank; the names of :func:`layer_tensors`:

* ``attn.norm_in`` (residual, Ts*h), ``attn.norm_out`` (QKV / down-projection input, Ts*h;
  ``layernorm``);
* GQA: ``attn.qkv`` (Q, K, V after RoPE, the FlashAttention inputs), ``attn.qk_norm_in`` (with
  ``qk_norm``: Q and K before their norms). MLA: ``attn.q_norm_in``,
  ``attn.kv_norm_in`` (latents before their RMSNorms), ``attn.q_up_in``, ``attn.kv_up_in`` (the
  normed latents, GEMM inputs), ``attn.k_rope`` and ``attn.qkv`` (the up-projected Q, K, V;
  ``mla_up_proj``);
* ``attn.lse`` (FlashAttention's fp32 log-sum-exp) or, without FlashAttention, ``attn.scores``
  (softmax output, dropout mask and output; ``core_attn``); ``attn.out_in`` (the core's output,
  the out-projection input); ``attn.dropout_mask``;
* ``mlp.norm_in``, ``mlp.norm_out`` (``layernorm``); dense FFN ``mlp.fc1_out`` (activation
  input), ``mlp.fc2_in`` (activation output; both ``mlp``); with an unfused SwiGLU
  (``activation_fusion`` False; the routed experts: ``MemoryConfig.expert_activation_fusion``)
  each FFN also keeps ``*silu_out`` (``silu(gate)``);
* MoE: ``moe.router_probs`` (fp32 T*E), ``moe.expert_in`` (received, permuted tokens: the
  grouped GEMM input), ``moe.fc1_out``, ``moe.fc2_in`` (``moe_act``), ``moe.pair_probs`` (fp32 per
  pair), ``moe.expert_out`` (only with ``probs_on_expert_output``), ``moe.shared_fc1_out``,
  ``moe.shared_fc2_in`` (``shared_experts``); everything of the MoE block goes with ``moe``.

Under balanced routing every GPU receives as many token-expert pairs as it sends (Ts*k), so
the kept bytes do not depend on ep.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES
from moesim.workload import moe as moe_ops
from moesim.workload.moe import MoESpec
from moesim.workload.transformer import TransformerSpec

# Megatron-Core TransformerConfig.recompute_modules choices that change memory (the a2a_overlap_*
# ones only re-split segments for EP overlap and are not modelled).
RECOMPUTE_MODULES = ("core_attn", "moe_act", "layernorm", "mla_up_proj", "mlp", "moe", "shared_experts")
DEFAULT_RECOMPUTE_MODULES = ("core_attn",)  # Megatron's default under --recompute-granularity selective
FP8_TILE = 128  # one fp32 scale per 1x128 activation tile (DeepSeek-V3 §3.3.2; TE blockwise recipe)


@dataclass(frozen=True)
class Kept:
    """One tensor a layer keeps per microbatch on one GPU, and the recompute modules that free it."""

    name: str
    bytes: float
    freed_by: tuple[str, ...] = ()


def fp8_bytes(elements: float) -> float:
    """Bytes of ``elements`` cached in FP8 with one fp32 scale per 1x128 tile."""
    return elements * (1.0 + 4.0 / FP8_TILE)


def modules_of(spec: Any, layer_index: int) -> set[str]:
    """The recompute modules layer ``layer_index`` of ``spec`` has."""
    found = {"core_attn", "layernorm"} if spec.attention else {"layernorm"}
    if spec.attention and spec.is_mla:
        found.add("mla_up_proj")
    if spec.is_moe_layer(layer_index):
        found |= {"moe", "moe_act"} | ({"shared_experts"} if spec.num_shared_experts else set())
    else:
        found.add("mlp")
    return found


def check_modules_exist(spec: Any, modules: tuple[str, ...]) -> None:
    """ConfigError naming a recompute module the model has in none of its layers."""
    present: set[str] = set()
    for i in range(spec.num_layers):
        present |= modules_of(spec, i)
    missing = [m for m in modules if m not in present]
    if missing:
        raise ConfigError("memory.recompute_modules",
                          f"{', '.join(missing)} does not exist in model {getattr(spec, 'name', spec)!r} "
                          f"(its layers have: {', '.join(sorted(present))})",
                          "drop it from recompute_modules")


class _Shape:
    """Per-GPU sizes of one microbatch of one layer."""

    def __init__(self, spec: TransformerSpec, mbs: int, tp: int, sp: bool):
        self.T = spec.tokens(mbs)
        self.sharded = sp and tp > 1
        self.Ts = self.T // tp if self.sharded else self.T
        self.heads = spec.num_heads // tp
        self.kv_heads = max(1, spec.num_kv_heads // tp)
        self.e = float(DTYPE_BYTES[spec.dtype])
        self.tp = tp


def _linear_in(config: Any, spec: TransformerSpec, elements: float) -> float:
    """Bytes a linear layer keeps of an input of ``elements``: FP8 when it caches FP8 inputs."""
    return fp8_bytes(elements) if config.caches_fp8_linear_inputs(spec) else DTYPE_BYTES[spec.dtype] * elements


def _attention(spec: TransformerSpec, s: _Shape, config: Any) -> list[Kept]:
    h, e = spec.hidden, s.e
    out = [Kept("attn.norm_in", e * s.Ts * h), Kept("attn.norm_out", _linear_in(config, spec, s.Ts * h), ("layernorm",))]
    if spec.is_mla:
        out += [Kept("attn.q_norm_in", e * s.Ts * spec.q_lora_rank), Kept("attn.kv_norm_in", e * s.Ts * spec.kv_lora_rank),
                Kept("attn.q_up_in", _linear_in(config, spec, s.T * spec.q_lora_rank)),
                Kept("attn.kv_up_in", _linear_in(config, spec, s.T * spec.kv_lora_rank)),
                Kept("attn.k_rope", e * s.T * spec.qk_rope_head_dim),
                Kept("attn.qkv", e * s.T * s.heads * (2 * spec.qk_head_dim + spec.v_dim), ("mla_up_proj",))]
    else:
        out.append(Kept("attn.qkv", e * s.T * (s.heads + s.kv_heads) * spec.qk_head_dim + e * s.T * s.kv_heads * spec.v_dim))
        if spec.qk_norm:   # the QK-norms' inputs (their outputs, roped, are attn.qkv)
            out.append(Kept("attn.qk_norm_in", e * s.T * (s.heads + s.kv_heads) * spec.head_dim))
    if config.flash_attention:
        out.append(Kept("attn.lse", 4.0 * s.T * s.heads, ("core_attn",)))
    else:
        per_score = e + ((1 + e) if config.dropout else 0)  # softmax output (+ dropout mask and output)
        out.append(Kept("attn.scores", per_score * s.heads * spec.seq_len * s.T, ("core_attn",)))
    out.append(Kept("attn.out_in", _linear_in(config, spec, s.T * s.heads * spec.v_dim)))
    if config.dropout:
        out.append(Kept("attn.dropout_mask", 1.0 * s.Ts * h))
    return out


def _ffn(spec: TransformerSpec, tokens: float, width: float, config: Any, fp8_act_input: bool,
         prefix: str, freed_by: tuple[str, ...], act_freed_by: tuple[str, ...], fused: bool) -> list[Kept]:
    """The activation's input (gate and up for SwiGLU) and its output (the down-projection input);
    an unfused SwiGLU (``fused`` False: ``F.silu(gate) * up``) also keeps ``silu(gate)``,
    which autograd saves for the multiply's backward."""
    widths = 2 if spec.activation == "swiglu" else 1
    act_in = fp8_bytes(tokens * widths * width) if fp8_act_input else DTYPE_BYTES[spec.dtype] * tokens * widths * width
    kept = [Kept(f"{prefix}fc1_out", act_in, freed_by),
            Kept(f"{prefix}fc2_in", _linear_in(config, spec, tokens * width), freed_by + act_freed_by)]
    if spec.activation == "swiglu" and not fused:
        kept.append(Kept(f"{prefix}silu_out", DTYPE_BYTES[spec.dtype] * tokens * width, freed_by + act_freed_by))
    return kept


def _mlp_block(spec: TransformerSpec, s: _Shape, config: Any, moe_layer: bool) -> list[Kept]:
    h, e = spec.hidden, s.e
    out = [Kept("mlp.norm_in", e * s.Ts * h),
           Kept("mlp.norm_out", (e * s.Ts * h) if moe_layer else _linear_in(config, spec, s.Ts * h), ("layernorm",))]
    if config.dropout:
        out.append(Kept("mlp.dropout_mask", 1.0 * s.Ts * h))
    if not moe_layer:
        return out + _ffn(spec, s.T, spec.ffn_hidden / s.tp, config, False, "mlp.", ("mlp",), (), spec.activation_fusion)
    assert isinstance(spec, MoESpec)
    pairs = s.Ts * spec.top_k
    moe = ("moe",)
    out += [Kept("moe.router_probs", 4.0 * s.Ts * spec.num_experts, moe),
            Kept("moe.expert_in", _linear_in(config, spec, pairs * h), moe),
            *_ffn(spec, pairs, spec.expert_ffn_hidden, config, config.fp8_swiglu_inputs, "moe.", moe, ("moe_act",),
                  spec.activation_fusion if config.expert_activation_fusion is None else config.expert_activation_fusion),
            Kept("moe.pair_probs", 4.0 * pairs, moe)]
    if config.probs_on_expert_output:  # torchtitan: (out.float() * scores).to(dtype) keeps the fp32 copy
        out.append(Kept("moe.expert_out", 4.0 * pairs * h, moe))
    if spec.num_shared_experts:
        shared_tokens = s.T if s.tp > 1 else s.Ts
        out += _ffn(spec, shared_tokens, spec.shared_ffn_hidden / s.tp, config, config.fp8_swiglu_inputs,
                    "moe.shared_", ("shared_experts", "moe"), (), spec.activation_fusion)
    return out


def layer_tensors(spec: Any, layer_index: int, mbs: int, tp: int, sp: bool, config: Any) -> list[Kept]:
    """Every tensor layer ``layer_index`` keeps per microbatch on one GPU without recomputation."""
    moe_layer = spec.is_moe_layer(layer_index)
    if moe_layer:
        moe_ops.moe_input_tokens(spec, mbs, tp, sp)  # checks MoE + TP needs SP, and divisibility
    s = _Shape(spec, mbs, tp, sp)
    return (_attention(spec, s, config) if spec.attention else []) + _mlp_block(spec, s, config, moe_layer)


def kept_tensors(spec: Any, layer_index: int, mbs: int, tp: int, sp: bool, config: Any) -> list[Kept]:
    """The tensors that stay under ``config``'s recomputation (full: the layer input only)."""
    if config.recompute == "full":
        s = _Shape(spec, mbs, tp, sp)
        return [Kept("layer_input", s.e * s.Ts * spec.hidden)]
    active = set(config.active_recompute_modules)
    return [k for k in layer_tensors(spec, layer_index, mbs, tp, sp, config) if not active & set(k.freed_by)]


def activation_bytes(spec: Any, layer_index: int, mbs: int, tp: int, sp: bool, config: Any) -> float:
    """Bytes layer ``layer_index`` keeps per microbatch on one GPU under ``config``."""
    return sum(k.bytes for k in kept_tensors(spec, layer_index, mbs, tp, sp, config))


def router_bytes(spec: Any, layer_index: int, mbs: int, tp: int, sp: bool, config: Any) -> float:
    """The fp32 router probabilities among the kept tensors (0 when recomputed or dense)."""
    return sum(k.bytes for k in kept_tensors(spec, layer_index, mbs, tp, sp, config) if k.name == "moe.router_probs")
