"""The arithmetic of each budget part for one GPU: parameter counts, activations, buffers, KV.

Parameter counts come from the workload (``layers.weight_bytes``, ``attention_weight_bytes``
divided by the spec's element size, so they are exact element counts) and are split into
what shards over the data-parallel group (everything but routed experts) and what shards over
the expert-data-parallel group (routed experts). A MoE layer is counted piece by piece here,
rather than through ``moe_block_weight_bytes``, so that expert replicas, expert TP and an ``ep``
that does not divide the experts (reported by ``validate_budget``) can be costed; with none of
those it equals the workload's figure. Activations per microbatch are the kept tensors of
:mod:`moesim.memory.activations` (custom block models: ``layers.activation_bytes``); the fp32
router probabilities inside them are reported apart. The last stage also holds the MTP
modules (DeepSeek-V3): their weights, one layer's activations, the projection input and a
second head's.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from moesim.errors import ConfigError
from moesim.memory import activations as acts
from moesim.memory.config import MemoryConfig
from moesim.ops import DTYPE_BYTES
from moesim.workload import layers
from moesim.workload import moe as moe_ops
from moesim.workload import transformer as tf
from moesim.workload.common import ffn_params
from moesim.workload.moe import MoESpec
from moesim.workload.transformer import TransformerSpec

# Keys of one layer's parameter split. "experts" shard over expert-DP, the rest over DP.
PARAM_KINDS = ("dense", "shared_experts", "router", "experts")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def elem_bytes(spec: Any) -> float:
    """Bytes of one element in the model's compute dtype (activations, p2p tensors)."""
    return float(DTYPE_BYTES[spec.dtype])


def local_experts(spec: MoESpec, config: MemoryConfig) -> int:
    """Routed experts one GPU hosts per MoE layer: ceil(num_experts / ep) + its replicas."""
    return _ceil_div(spec.num_experts, config.ep) + config.num_redundant_experts


def layer_params(spec: Any, layer_index: int, tp: int, config: MemoryConfig) -> dict[str, float]:
    """Parameters of layer ``layer_index`` on one GPU, by :data:`PARAM_KINDS`."""
    out = dict.fromkeys(PARAM_KINDS, 0.0)
    e = elem_bytes(spec)
    if not spec.is_moe_layer(layer_index):
        out["dense"] = layers.weight_bytes(spec, layer_index, tp) / e
        return out
    assert isinstance(spec, MoESpec)
    out["dense"] = tf.attention_weight_bytes(spec, tp) / e + spec.norm_params
    if spec.num_shared_experts:
        out["shared_experts"] = float(ffn_params(spec.hidden, _ceil_div(spec.shared_ffn_hidden, tp), spec.activation))
    out["router"] = float(spec.router_params)
    out["experts"] = local_experts(spec, config) * spec.expert_params / config.expert_tp
    return out


def embedding_params(spec: Any, tp: int) -> float:
    """Vocab-parallel embedding rows on one TP rank (padded vocabulary, as Megatron)."""
    if not isinstance(spec, TransformerSpec):
        return 0.0
    return float(tf.padded_vocab(spec, tp) // tp * spec.hidden)


def head_params(spec: Any, tp: int, holds_embedding: bool) -> float:
    """Output projection and final norm on one TP rank. A tied projection is the embedding
    itself when the same rank holds both; otherwise that rank keeps a copy (Megatron)."""
    if not isinstance(spec, TransformerSpec):
        return 0.0
    shares = spec.tied_embeddings and holds_embedding
    return (0.0 if shares else embedding_params(spec, tp)) + spec.norm_params


def router_state_bytes(spec: Any, layer_index: int, mbs: int, tp: int, sp: bool, config: MemoryConfig) -> float:
    """fp32 router probabilities one MoE layer keeps per microbatch (4 B x routed tokens x
    experts); 0 when recomputed (full, or the ``moe`` module) and for custom models."""
    if not isinstance(spec, TransformerSpec) or not spec.is_moe_layer(layer_index):
        return 0.0
    return acts.router_bytes(spec, layer_index, mbs, tp, sp, config)


def layer_activation_bytes(spec: Any, layer_index: int, mbs: int, tp: int, sp: bool,
                           config: MemoryConfig) -> float:
    """Everything layer ``layer_index`` keeps per microbatch on one GPU (router state included):
    the kept tensors of :mod:`moesim.memory.activations` under the config's recomputation and
    FP8 caching; custom block models through ``layers.activation_bytes``."""
    if not isinstance(spec, TransformerSpec):
        return layers.activation_bytes(spec, layer_index, mbs, tp, sp, 1, config.recompute,
                                       flash_attention=config.flash_attention, dropout=config.dropout)
    return acts.activation_bytes(spec, layer_index, mbs, tp, sp, config)


def mtp_params(spec: Any, tp: int, config: MemoryConfig) -> dict[str, float]:
    """Parameters of the MTP modules on one GPU of the last stage, by :data:`PARAM_KINDS`: the
    block of the last layer's kind (its experts sharded as every MoE layer's), the ``2h -> h``
    projection and three norms (replicated over TP, as Megatron's MTP)."""
    out = dict.fromkeys(PARAM_KINDS, 0.0)
    depth = getattr(spec, "num_nextn_predict_layers", 0) if isinstance(spec, TransformerSpec) else 0
    if not depth:
        return out
    block = layer_params(spec, spec.mtp_layer_index, tp, config)
    for kind, count in block.items():
        out[kind] = depth * count
    out["dense"] += depth * (2 * spec.hidden * spec.hidden + 3 * spec.norm_params)
    return out


def mtp_activation_bytes(spec: Any, mbs: int, tp: int, sp: bool, config: MemoryConfig) -> float:
    """What the MTP modules keep per microbatch on the last stage: per depth one layer's kept
    tensors, the projection input (two normed hidden states, 2 x T x h) and a second head's."""
    depth = getattr(spec, "num_nextn_predict_layers", 0) if isinstance(spec, TransformerSpec) else 0
    if not depth:
        return 0.0
    tokens = spec.tokens(mbs)
    projection_in = 2 * elem_bytes(spec) * tokens * spec.hidden
    layer = layer_activation_bytes(spec, spec.mtp_layer_index, mbs, tp, sp, config)
    return depth * (layer + projection_in + head_activation_bytes(spec, mbs, tp, sp))


def head_activation_bytes(spec: Any, mbs: int, tp: int, sp: bool) -> float:
    """What the output head keeps per microbatch on the last stage, under any recompute mode
    (Megatron recomputes transformer layers only): the final-norm input (sequence-sharded with
    SP), the gathered logits-GEMM input, and the fp32 logits of the vocab-parallel cross
    entropy, 4·T·V/tp (Korthikanti et al. 2022 §4.3)."""
    if not isinstance(spec, TransformerSpec):
        return 0.0
    tokens, e = spec.tokens(mbs), elem_bytes(spec)
    shard = tp if sp and tp > 1 else 1
    return e * tokens * spec.hidden / shard + e * tokens * spec.hidden + 4.0 * tokens * tf.padded_vocab(spec, tp) / tp


def chunk_activation(spec: Any, stage_layers: range, last: bool, mbs: int, tp: int, sp: bool,
                     config: MemoryConfig) -> tuple[float, float]:
    """(activations without router state, router state) one microbatch keeps in one stage; with
    full recomputation of some layers only (:meth:`MemoryConfig.recompute_at`), the others keep
    every tensor and the second layer on of a uniform group keeps nothing."""
    total = router = 0.0
    for position, i in enumerate(stage_layers):
        mode = config.recompute_at(position)
        if mode == "recomputed":
            continue
        layer_config = config if mode != "kept" else \
            dataclasses.replace(config, recompute="none", recompute_method="uniform", recompute_num_layers=1)
        total += layer_activation_bytes(spec, i, mbs, tp, sp, layer_config)
        router += router_state_bytes(spec, i, mbs, tp, sp, layer_config)
    if last:
        total += head_activation_bytes(spec, mbs, tp, sp) + mtp_activation_bytes(spec, mbs, tp, sp, config)
    return total - router, router


def a2a_buffer_bytes(spec: Any, routed_tokens: float, config: MemoryConfig, concurrent: int) -> float:
    """Dispatch/combine staging buffers of one GPU. Derived (unless configured) as one send
    and one receive buffer sized for the larger direction, ``2 x pairs x max(dispatch,
    combine bytes per token)``, reused across layers, per concurrently communicating
    microbatch. 0 for dense models and for ep = 1 (no all-to-all)."""
    if not isinstance(spec, MoESpec) or config.ep == 1:
        return 0.0
    if config.a2a_buffer_bytes is not None:
        return float(config.a2a_buffer_bytes)
    per_token = max(moe_ops.dispatch_bytes_per_token(spec), moe_ops.combine_bytes_per_token(spec))
    # Without --moe-permute-fusion the received tokens are copied once more into expert order.
    copies = 2.0 if config.moe_permute_fusion else 3.0
    return concurrent * copies * routed_tokens * spec.top_k * per_token


def p2p_tensor_bytes(spec: Any, tokens: int, tp: int, sp: bool) -> float:
    """One pipeline send/recv tensor: the hidden state of ``tokens`` tokens (/tp with SP)."""
    return elem_bytes(spec) * tokens * spec.hidden / (tp if sp and tp > 1 else 1)


def kv_bytes_per_token_layer(spec: Any, tp: int, kv_cache_dtype: str) -> float:
    """KV-cache bytes one GPU stores per token per attention layer.

    GQA/MHA: K and V of the local KV heads, ``kv_heads/tp`` (one replicated head each when tp
    exceeds them, as vLLM) x (head_dim + v_dim). MLA: the compressed latent plus the rotary
    key, ``kv_lora_rank + qk_rope_head_dim``, which every TP rank keeps whole.
    """
    if not isinstance(spec, TransformerSpec):
        raise _no_attention(spec)
    b = DTYPE_BYTES[kv_cache_dtype]
    if spec.is_mla:
        return (spec.kv_lora_rank + spec.qk_rope_head_dim) * b
    return max(1, spec.num_kv_heads // tp) * (spec.head_dim + spec.v_dim) * b


def kv_cache_bytes_per_token(spec: Any, tp: int = 1, kv_cache_dtype: str = "bf16") -> float:
    """KV-cache bytes per token for the whole model on one TP rank (no pipeline split).
    DeepSeek-V3 in bf16: (512 + 64) x 2 B x 61 layers = 70,272 B (the ~70 KB the ISCA'25
    paper quotes, reference §1.1)."""
    return kv_bytes_per_token_layer(spec, tp, kv_cache_dtype) * spec.num_layers


def inference_activation_bytes(spec: Any, layer_indices: list[int], tokens: int, tp: int, sp: bool,
                               config: MemoryConfig) -> float:
    """Transient working set of one inference step: the largest layer's full forward
    intermediates for ``tokens`` tokens (nothing is kept across layers; an upper bound)."""
    if not layer_indices:
        return 0.0
    shaped = dataclasses.replace(spec, seq_len=tokens)
    # Every dense (and every MoE) layer of a transformer is alike: one of each kind suffices.
    sample = list({spec.is_moe_layer(i): i for i in layer_indices}.values()) if isinstance(spec, TransformerSpec) \
        else layer_indices
    return max(layers.activation_bytes(shaped, i, 1, tp, sp, 1, "none", flash_attention=config.flash_attention)
               for i in sample)


def _no_attention(spec: Any) -> ConfigError:
    return ConfigError("model", f"{getattr(spec, 'name', spec)!r} is a custom block model with no attention "
                       "shape, so it has no KV cache", "use a transformer or MoE spec for inference budgets")
