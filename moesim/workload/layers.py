"""One entry point per question about layer ``i`` of any model, dense or MoE.

The lowering layer asks "what does rank r run for layer i, microbatch j, phase F/B/W" without
caring whether layer i is dense or MoE; these functions answer by delegating to
``transformer.py`` (attention and dense FFN) and ``moe.py`` (MoE block, balanced routing).
Callers that model routing skew build the MoE block themselves from the ``moe.py`` pieces.
"""
from __future__ import annotations

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES, ComputeOp
from moesim.workload import custom
from moesim.workload import moe as moe_ops
from moesim.workload import transformer as tf
from moesim.workload.common import ProgramItem
from moesim.workload.custom import CustomModelSpec
from moesim.workload.moe import MoESpec
from moesim.workload.transformer import TransformerSpec

AnySpec = TransformerSpec | CustomModelSpec


def _check_layer(spec: AnySpec, layer_index: int) -> bool:
    """Validate ``layer_index`` and say whether it is an MoE layer."""
    if not 0 <= layer_index < spec.num_layers:
        raise ConfigError("layer_index", f"{layer_index} is outside 0..{spec.num_layers - 1}")
    return spec.is_moe_layer(layer_index)


def _custom(spec: AnySpec, tp: int, sp: bool) -> bool:
    """Whether ``spec`` is a custom block model (which has no sequence parallelism)."""
    if not isinstance(spec, CustomModelSpec):
        return False
    if sp and tp > 1:
        raise ConfigError("sequence_parallel", "custom block models do not describe sequence parallelism",
                          "set sequence_parallel=False for custom models")
    return True


def forward_program(spec: AnySpec, layer_index: int, mbs: int, tp: int = 1, sp: bool = False,
                    ep: int = 1, token_movement: str = "torchtitan") -> list[ProgramItem]:
    """Forward of layer ``layer_index`` on one rank: compute ops and collectives in order; an MoE
    layer's router and permute / unpermute as ``token_movement``'s framework runs them."""
    if _custom(spec, tp, sp):
        return custom.custom_forward_program(spec, layer_index, mbs, tp)  # type: ignore[arg-type]
    if _check_layer(spec, layer_index):
        assert isinstance(spec, MoESpec)
        return (tf.attention_forward_program(spec, mbs, tp, sp)
                + moe_ops.moe_block_forward_program(spec, mbs, tp, sp, ep, token_movement=token_movement))
    return tf.layer_forward_program(spec, mbs, tp, sp)


def backward_input_program(spec: AnySpec, layer_index: int, mbs: int, tp: int = 1, sp: bool = False,
                           ep: int = 1, token_movement: str = "torchtitan") -> list[ProgramItem]:
    """Activation-gradient backward (B) of layer ``layer_index`` on one rank (``token_movement``
    as in :func:`forward_program`)."""
    if _custom(spec, tp, sp):
        return custom.custom_backward_input_program(spec, layer_index, mbs, tp)  # type: ignore[arg-type]
    if _check_layer(spec, layer_index):
        assert isinstance(spec, MoESpec)
        return (moe_ops.moe_block_backward_input_program(spec, mbs, tp, sp, ep, token_movement=token_movement)
                + tf.attention_backward_input_program(spec, mbs, tp, sp))
    return tf.layer_backward_input_program(spec, mbs, tp, sp)


def backward_weight_ops(spec: AnySpec, layer_index: int, mbs: int, tp: int = 1, sp: bool = False,
                        ep: int = 1) -> list[ComputeOp]:
    """Weight-gradient GEMMs (W) of layer ``layer_index`` on one rank."""
    if _custom(spec, tp, sp):
        return custom.custom_backward_weight_ops(spec, layer_index, mbs, tp)  # type: ignore[arg-type]
    if _check_layer(spec, layer_index):
        assert isinstance(spec, MoESpec)
        return (moe_ops.moe_block_backward_weight_ops(spec, mbs, tp, sp, ep)
                + tf.attention_backward_weight_ops(spec, mbs, tp, sp))
    return tf.layer_backward_weight_ops(spec, mbs, tp, sp)


def activation_bytes(spec: AnySpec, layer_index: int, mbs: int, tp: int = 1, sp: bool = False,
                     ep: int = 1, recompute: str = "none", *, flash_attention: bool = True,
                     dropout: bool = False) -> float:
    """Activation bytes layer ``layer_index`` keeps per microbatch on one rank (see
    :func:`moesim.workload.transformer.activation_bytes_per_layer` for the accounting).
    Custom models ignore ``recompute`` except "full", which keeps only the layer input."""
    if _custom(spec, tp, sp):
        if recompute == "full":
            return float(spec.hidden * mbs * spec.seq_len * DTYPE_BYTES[spec.dtype])
        return custom.custom_activation_bytes(spec, layer_index, mbs, tp)  # type: ignore[arg-type]
    if not _check_layer(spec, layer_index):
        return tf.activation_bytes_per_layer(spec, mbs, tp, sp, recompute, flash_attention=flash_attention,
                                             dropout=dropout)
    assert isinstance(spec, MoESpec)
    if recompute == "full":
        return tf.activation_bytes_per_layer(spec, mbs, tp, sp, "full")
    attn = tf.attention_activation_bytes(spec, mbs, tp, sp, recompute, flash_attention=flash_attention, dropout=dropout)
    return attn + moe_ops.moe_block_activation_bytes(spec, mbs, tp, sp, ep)


def weight_bytes(spec: AnySpec, layer_index: int, tp: int = 1, ep: int = 1) -> float:
    """Bytes of layer ``layer_index``'s weights held by one rank."""
    if _custom(spec, tp, False):
        return custom.custom_weight_bytes(spec, layer_index, tp)  # type: ignore[arg-type]
    if not _check_layer(spec, layer_index):
        return tf.weight_bytes_per_layer(spec, tp)
    assert isinstance(spec, MoESpec)
    return tf.attention_weight_bytes(spec, tp) + moe_ops.moe_block_weight_bytes(spec, tp, ep)
