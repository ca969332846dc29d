"""One entry point per question about layer ``i`` of any model, dense or MoE.

The lowering layer asks "what does rank r run for layer i, microbatch j, phase F/B/W" without
caring whether layer i is dense or MoE; these functions answer by delegating to
``transformer.py`` (attention and dense FFN) and ``moe.py`` (MoE block, balanced routing).
Callers that model routing skew build the MoE block themselves from the ``moe.py`` pieces.
"""
from __future__ import annotations

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES, ComputeOp, Gemm, MemoryOp
from moesim.workload import custom
from moesim.workload import moe as moe_ops
from moesim.workload import transformer as tf
from moesim.workload.common import ProgramItem, compute_only, dgrad, wgrad
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
        return (tf.attention_forward_program(spec, mbs, tp, sp, layer_index)
                + moe_ops.moe_block_forward_program(spec, mbs, tp, sp, ep, token_movement=token_movement))
    return tf.layer_forward_program(spec, mbs, tp, sp, layer_index)


def backward_input_program(spec: AnySpec, layer_index: int, mbs: int, tp: int = 1, sp: bool = False,
                           ep: int = 1, token_movement: str = "torchtitan") -> list[ProgramItem]:
    """Activation-gradient backward (B) of layer ``layer_index`` on one rank (``token_movement``
    as in :func:`forward_program`)."""
    if _custom(spec, tp, sp):
        return custom.custom_backward_input_program(spec, layer_index, mbs, tp)  # type: ignore[arg-type]
    if _check_layer(spec, layer_index):
        assert isinstance(spec, MoESpec)
        return (moe_ops.moe_block_backward_input_program(spec, mbs, tp, sp, ep, token_movement=token_movement)
                + tf.attention_backward_input_program(spec, mbs, tp, sp, layer_index))
    return tf.layer_backward_input_program(spec, mbs, tp, sp, layer_index)


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


def weight_bytes(spec: AnySpec, layer_index: int, tp: int = 1, ep: int = 1, expert_tp: int = 1) -> float:
    """Bytes of layer ``layer_index``'s weights held by one rank (its routed experts' ``1 / expert_tp``)."""
    if _custom(spec, tp, False):
        return custom.custom_weight_bytes(spec, layer_index, tp)  # type: ignore[arg-type]
    if not _check_layer(spec, layer_index):
        return tf.weight_bytes_per_layer(spec, tp)
    assert isinstance(spec, MoESpec)
    return tf.attention_weight_bytes(spec, tp) + moe_ops.moe_block_weight_bytes(spec, tp, ep, expert_tp)


# -- DeepSeek-V3 multi-token prediction (MTP) ----------------------------------------------
def _mtp_projection(spec: TransformerSpec, mbs: int) -> Gemm:
    """The ``[norm(h); norm(emb)] (2h) -> h`` projection of one MTP module (replicated over TP
    in Megatron's MTP, run on the whole microbatch)."""
    return Gemm(m=spec.tokens(mbs), n=spec.hidden, k=2 * spec.hidden, dtype=spec.dtype, name="mtp.proj")


def mtp_pre_forward(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ProgramItem]:
    """What one MTP module runs before its decoder layer: the embedding of the shifted tokens
    (the shared table), the two RMSNorms and the ``2h -> h`` projection."""
    e = DTYPE_BYTES[spec.dtype] * spec.tokens(mbs) * spec.hidden
    return [*tf.embedding_forward_program(spec, mbs, tp, sp), MemoryOp("norm", 4.0 * e, "mtp.norms"),
            _mtp_projection(spec, mbs)]


def mtp_pre_backward_input(spec: TransformerSpec, mbs: int) -> list[ProgramItem]:
    """Activation-gradient backward of :func:`mtp_pre_forward` (after the decoder layer's)."""
    e = DTYPE_BYTES[spec.dtype] * spec.tokens(mbs) * spec.hidden
    return [dgrad(_mtp_projection(spec, mbs)), MemoryOp("norm", 6.0 * e, "mtp.norms.bwd")]


def mtp_pre_weight_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ProgramItem]:
    """Weight-gradient work of :func:`mtp_pre_forward`: the projection's, the embedding's scatter."""
    return [wgrad(_mtp_projection(spec, mbs)), *tf.embedding_backward_program(spec, mbs, tp, sp)]


def mtp_forward_program(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False, ep: int = 1,
                        token_movement: str = "torchtitan") -> list[ProgramItem]:
    """Forward of the MTP modules on the last stage (arXiv:2412.19437 §2.2): per depth,
    :func:`mtp_pre_forward`, one decoder layer of the last layer's kind and the shared output
    head with its cross entropy. Empty without MTP. (A training step lowers depth d's decoder
    layer as layer ``num_layers + d`` of the last stage: ``TransformerSpec.kind_of_layer``.)"""
    out: list[ProgramItem] = []
    for _ in range(spec.num_nextn_predict_layers):
        out += [*mtp_pre_forward(spec, mbs, tp, sp),
                *forward_program(spec, spec.mtp_layer_index, mbs, tp, sp, ep, token_movement),
                *tf.head_forward_program(spec, mbs, tp, sp)]
    return out


def mtp_backward_input_program(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False, ep: int = 1,
                               token_movement: str = "torchtitan") -> list[ProgramItem]:
    """Activation-gradient backward of :func:`mtp_forward_program`, in execution order."""
    out: list[ProgramItem] = []
    for _ in range(spec.num_nextn_predict_layers):
        out += [*tf.head_backward_input_program(spec, mbs, tp, sp),
                *backward_input_program(spec, spec.mtp_layer_index, mbs, tp, sp, ep, token_movement),
                *mtp_pre_backward_input(spec, mbs)]
    return out


def mtp_backward_weight_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False,
                            ep: int = 1) -> list[ComputeOp]:
    """Weight-gradient work of the MTP modules (layer, projection, head, embedding scatter)."""
    out: list[ComputeOp] = []
    for _ in range(spec.num_nextn_predict_layers):
        out += [*tf.head_backward_weight_ops(spec, mbs, tp, sp),
                *backward_weight_ops(spec, spec.mtp_layer_index, mbs, tp, sp, ep),
                *compute_only(mtp_pre_weight_ops(spec, mbs, tp, sp))]
    return out


def mtp_training_flops_per_token(spec: AnySpec) -> float:
    """Forward + backward FLOPs per token of the MTP modules (0 without them or for custom models)."""
    if not isinstance(spec, TransformerSpec) or not spec.num_nextn_predict_layers:
        return 0.0
    ops = (compute_only(mtp_forward_program(spec, 1)) + compute_only(mtp_backward_input_program(spec, 1))
           + mtp_backward_weight_ops(spec, 1))
    return sum(op.flops for op in ops) / spec.seq_len


def model_flops_per_token(spec: AnySpec) -> float:
    """Training FLOPs per token the model needs (forward + backward, no recomputation), the
    MTP modules included: the numerator of "model FLOPs" MFU. Executed FLOPs add whatever a
    recompute option re-runs (the simulator's compute spans count those)."""
    return float(spec.training_flops_per_token) + mtp_training_flops_per_token(spec)


def gemm_precision(spec: AnySpec) -> str:
    """The dtype of the model's linear-layer GEMMs, whose datasheet peak an MFU should name."""
    return getattr(spec, "linear_dtype", getattr(spec, "dtype", "bf16"))


# -- recomputation as Megatron's --recompute-modules runs it ------------------------------
def _recomputed_by(module: str, name: str) -> bool:
    """Whether the forward item called ``name`` is re-run before backward by ``module``."""
    mlp_body = name.startswith("mlp.") and name not in ("mlp.norm", "mlp.residual")
    moe_body = (name.startswith(("moe.", "router.", "expert.", "shared."))
                and name not in ("moe.norm", "moe.residual"))
    return {"core_attn": name == "attn.core",
            "layernorm": name in ("attn.norm", "mlp.norm", "moe.norm"),
            "mla_up_proj": name in ("attn.q_up", "attn.kv_up", "attn.rope.q", "attn.rope.k"),
            "mlp": mlp_body,
            "moe": moe_body,
            "moe_act": name == "expert.swiglu",
            "shared_experts": name.startswith("shared.")}.get(module, False)


def recompute_program(spec: AnySpec, layer_index: int, mbs: int, tp: int = 1, sp: bool = False, ep: int = 1,
                      recompute: str = "none", modules: tuple[str, ...] = ("core_attn",),
                      token_movement: str = "torchtitan") -> list[ProgramItem]:
    """What the backward of layer ``layer_index`` re-runs first, in forward order: nothing,
    the whole forward with its collectives ("full"), or under "selective" the items of the
    Megatron ``modules`` (:mod:`moesim.memory.activations` lists what each frees): core_attn
    the attention core; layernorm the pre-attention and pre-MLP norms; mla_up_proj the Q / KV
    up-projections and RoPE; mlp the dense FFN with its TP collectives; moe the MoE block
    (router, permutation, both all-to-alls, experts, shared experts); moe_act the experts'
    activation; shared_experts the shared experts with their collectives."""
    if recompute == "none":
        return []
    program = forward_program(spec, layer_index, mbs, tp, sp, ep, token_movement)
    if recompute == "full":
        return program
    return [item for item in program if any(_recomputed_by(m, item.name) for m in modules)]
