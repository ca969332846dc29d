"""Dense decoder-only transformer: the model spec and its per-layer, per-microbatch op lists.

:class:`TransformerSpec` describes the shapes (published configs live in ``presets.py``). The
functions here turn it into what one tensor-parallel rank runs for ONE layer and ONE microbatch
of ``mbs`` sequences, Megatron-style: column-parallel QKV / FFN-up, row-parallel out / FFN-down,
and either an all-reduce after each block (no sequence parallelism) or all-gather before and
reduce-scatter after each block with norms and residuals sharded over the sequence (SP,
Korthikanti et al. 2022, arXiv:2205.05198). Forward, backward-for-input (B) and
backward-for-weights (W) are separate so zero-bubble schedules can split them. A *program* is
the op list with its collectives in execution order; ``*_ops`` functions drop the collectives.
For an :class:`~moesim.workload.moe.MoESpec` the ``layer_*`` functions here describe a *dense*
layer; ask ``moesim.workload.layers`` for layer i of any model.

Attention is GQA/MHA, or DeepSeek's MLA when ``kv_lora_rank > 0``. The MLA projections are
exact (training form, no weight absorption); its attention core is approximated by one
:class:`~moesim.ops.Attention` whose ``head_dim`` is the mean of the QK dim (nope + rope) and
the V dim, which gives exactly QK^T (d_qk) plus PV (d_v) FLOPs.
"""
from __future__ import annotations

from dataclasses import dataclass

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES, Attention, ComputeOp, Gemm, MemoryOp
from moesim.workload.common import (
    ACTIVATIONS,
    CommOp,
    ProgramItem,
    attention_backward,
    check_divides,
    check_dtype,
    check_positive,
    comm_only,
    compute_only,
    dgrad,
    ffn_backward_input_ops,
    ffn_backward_weight_ops,
    ffn_forward_ops,
    ffn_internal_activation_bytes,
    ffn_params,
    weight_params,
    wgrad,
)

NORMS = ("rmsnorm", "layernorm")
RECOMPUTE = ("none", "selective", "full")
LAYER_TYPES = ("full_attention", "sliding_attention")  # HF config.json layer_types
ATTENTION_BACKENDS = ("default", "flash")  # SDPA left to choose, or held to FlashAttention-2
ROPE_IMPLS = ("fused", "rotate_half", "halves", "complex")  # one fused kernel, or an eager PyTorch form
VOCAB_DIVISOR = 128  # Megatron --make-vocab-size-divisible-by default; padded to 128 * tp.
# Physical ranges of a model's sizes, far above published models (DeepSeek-V3: 61 layers, hidden
# 7,168; Llama-3-405B: ffn 53,248; Gemma: vocab 262,144; Llama-4-Scout: 10M-token context).
MAX_MODEL_SIZES = {"num_layers": 1 << 12, "hidden": 1 << 20, "num_heads": 1 << 14, "num_kv_heads": 1 << 14,
                   "head_dim": 1 << 14, "ffn_hidden": 1 << 22, "vocab": 1 << 24, "seq_len": 1 << 24}


def check_whole(field: str, value: object, *, allow_zero: bool = False) -> None:
    """ConfigError unless ``value`` is an integer (not a bool) >= 1 (>= 0 with ``allow_zero``).
    The type is checked first: text, a list or 2.0 from a scenario file is named, not compared."""
    if isinstance(value, bool) or not isinstance(value, int):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ConfigError(field, f"must be an integer {bound}, got {value!r}"[:200],
                          f"give a whole number {bound}, e.g. {0 if allow_zero else 2}")
    check_positive(field, value, allow_zero=allow_zero)


def check_text(field: str, value: object) -> None:
    """ConfigError unless ``value`` is a string (a name such as a dtype or an activation)."""
    if not isinstance(value, str):
        raise ConfigError(field, f"must be a name (text), got {value!r}"[:200], "give it as a quoted string")


@dataclass(frozen=True, kw_only=True)
class TransformerSpec:
    """Shapes of a decoder-only transformer. All fields are keyword-only.

    ``head_dim`` is the per-head Q/K width (for MLA: the non-rotary part, ``qk_nope_head_dim``).
    ``ffn_hidden`` is the FFN intermediate width (per branch for SwiGLU). MLA fields stay 0 for
    standard attention; ``v_head_dim`` 0 means ``head_dim``. ``attention=False`` leaves the
    attention block (its norm included) out of every layer, and ``edges=False`` the embedding and
    the output head: a bare stack of layers or FFN/MoE blocks, as ``moesim layer`` simulates
    (:mod:`moesim.experiment.block`).

    Field names follow Hugging Face ``config.json`` where one exists. ``sliding_window`` (tokens,
    0 = none) applies to the layers whose ``layer_types`` entry is ``"sliding_attention"`` (HF
    gpt-oss; every layer when ``layer_types`` is empty, as Mistral); ``attention_sinks``: one
    learned softmax-sink logit per head (gpt-oss). ``num_nextn_predict_layers``: DeepSeek-V3's
    multi-token-prediction (MTP) depth; each MTP module is two RMSNorms, a ``2h -> h``
    projection and one decoder layer of the model's last-layer kind, sharing the embedding and
    output head (arXiv:2412.19437 §2.2). It is not part of ``total_params`` (the report's 671B
    excludes it): see ``mtp_params``. For MLA, ``head_dim`` is HF's ``qk_nope_head_dim``.
    ``attention_enable_gqa``: the program calls SDPA with the grouped K/V heads
    (``enable_gqa=True``, plain PyTorch's usual form), priced as that kernel; False: K/V repeated
    to the query heads (or MHA), the equal-heads kernel. ``attention_backend``: ``"default"``
    (SDPA picks its kernel) or ``"flash"`` (the program holds SDPA to FlashAttention-2 with
    ``sdpa_kernel(SDPBackend.FLASH_ATTENTION)``, another kernel with other times), priced from
    the profile's rows of that call. ``activation_fusion``: SwiGLU's silu and multiply as one fused
    kernel (Megatron's ``bias_swiglu_fusion``, the default) or, False, as eager PyTorch writes it
    (``F.silu(gate(x)) * up(x)``: Hugging Face, torchtitan), two kernels forward and two backward
    plus the add of the two input gradients; in the dense FFN and the shared experts. Routed
    experts: torchtitan's are always eager (w1, w3 as two GEMMs); Megatron's fused fc1 runs its
    ``glu`` eager (chunk, silu, mul) when this is False, except in Megatron-Core's ``GroupedMLP``,
    which jit-fuses it (``moe.framework_modules``). ``qk_norm``: an RMSNorm over every query and
    key head before RoPE (Qwen3's ``q_norm`` / ``k_norm``; Megatron's ``--qk-layernorm``), a norm
    kernel each way per tensor, and its inputs kept for the backward. ``rope_impl``: how RoPE is
    written, per query and key tensor: ``"fused"`` (one kernel: Megatron's ``--apply-rope-fusion``,
    Transformer Engine, a fused Triton kernel), or eager PyTorch, several kernels on strided views
    with broadcast cos / sin, priced by the profile's measured program of that form (the ``rope_*``
    variants of :mod:`moesim.costs.moe_kernels`): ``"rotate_half"`` (Hugging Face's
    ``q * cos + rotate_half(q) * sin``), ``"halves"`` (``cat(a * cos - b * sin, a * sin + b * cos)``
    of the two halves), ``"complex"`` (torchtitan / Meta's ``view_as_complex`` product in fp32).
    """

    name: str
    num_layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_hidden: int
    vocab: int
    seq_len: int
    activation: str = "swiglu"
    dtype: str = "bf16"
    tied_embeddings: bool = False
    norm: str = "rmsnorm"
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    source: str = ""
    gemm_dtype: str | None = None
    attention: bool = True
    edges: bool = True
    sliding_window: int = 0
    layer_types: tuple[str, ...] = ()
    attention_sinks: bool = False
    num_nextn_predict_layers: int = 0
    attention_enable_gqa: bool = False
    attention_backend: str = "default"
    activation_fusion: bool = True
    qk_norm: bool = False
    rope_impl: str = "fused"

    def __post_init__(self) -> None:
        for f in ("num_layers", "hidden", "num_heads", "num_kv_heads", "head_dim", "ffn_hidden", "vocab", "seq_len"):
            check_whole(f, getattr(self, f))
            if getattr(self, f) > MAX_MODEL_SIZES[f]:  # 10^6 layers or 10^12-token sequences hung the build or engine
                raise ConfigError(f, f"{getattr(self, f):,} is more than {MAX_MODEL_SIZES[f]:,}",
                                  "give the model's real size (the largest published models are well inside)")
        for f in ("q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "v_head_dim"):
            check_whole(f, getattr(self, f), allow_zero=True)
        for f in ("name", "activation", "dtype", "norm", "source", "attention_backend", "rope_impl"):
            check_text(f, getattr(self, f))
        if self.gemm_dtype is not None:
            check_text("gemm_dtype", self.gemm_dtype)
        if self.activation not in ACTIVATIONS:
            raise ConfigError("activation", f"unknown activation {self.activation!r}",
                              f"use one of: {', '.join(ACTIVATIONS)}")
        if self.norm not in NORMS:
            raise ConfigError("norm", f"unknown norm {self.norm!r}", f"use one of: {', '.join(NORMS)}")
        check_dtype("dtype", self.dtype)
        for flag in ("attention", "edges", "activation_fusion", "qk_norm"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(flag, f"must be true or false, got {getattr(self, flag)!r}")
        if self.gemm_dtype is not None:
            check_dtype("gemm_dtype", self.gemm_dtype)
        if self.num_heads % self.num_kv_heads:
            raise ConfigError("num_kv_heads", f"{self.num_kv_heads} does not divide num_heads = {self.num_heads}",
                              "use a divisor of num_heads (GQA groups must be equal)")
        if self.is_mla and self.num_kv_heads != self.num_heads:
            raise ConfigError("num_kv_heads", "MLA (kv_lora_rank > 0) has one K/V per head",
                              f"set num_kv_heads = num_heads = {self.num_heads}")
        self._check_window()
        if not self.is_mla and (self.q_lora_rank or self.qk_rope_head_dim):
            raise ConfigError("kv_lora_rank", "q_lora_rank / qk_rope_head_dim are MLA fields but kv_lora_rank is 0",
                              "set kv_lora_rank > 0 for MLA, or zero the other MLA fields")

    def _check_window(self) -> None:
        for f in ("sliding_window", "num_nextn_predict_layers"):
            check_whole(f, getattr(self, f), allow_zero=True)
        if not isinstance(self.attention_enable_gqa, bool):
            raise ConfigError("attention_enable_gqa", f"must be true or false, got {self.attention_enable_gqa!r}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ConfigError("attention_backend", f"unknown SDPA backend {self.attention_backend!r}",
                              f"use one of: {', '.join(ATTENTION_BACKENDS)}")
        if self.rope_impl not in ROPE_IMPLS:
            raise ConfigError("rope_impl", f"unknown RoPE form {self.rope_impl!r}", f"use one of: {', '.join(ROPE_IMPLS)}")
        if not isinstance(self.attention_sinks, bool):
            raise ConfigError("attention_sinks", f"must be true or false, got {self.attention_sinks!r}")
        if not isinstance(self.layer_types, tuple) or any(t not in LAYER_TYPES for t in self.layer_types):
            raise ConfigError("layer_types", f"must be a tuple of {', '.join(LAYER_TYPES)}, got {self.layer_types!r}",
                              "give one entry per layer, as HF config.json layer_types")
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ConfigError("layer_types", f"has {len(self.layer_types)} entries for {self.num_layers} layers",
                              "give one entry per layer")
        if "sliding_attention" in self.layer_types and not self.sliding_window:
            raise ConfigError("layer_types", "names sliding_attention layers but sliding_window is 0",
                              "set sliding_window (tokens) or use full_attention")

    def attention_window(self, layer_index: int | None) -> int:
        """Keys one query sees at most in layer ``layer_index`` (0 = the whole causal prefix).
        ``None`` asks for a full-attention layer."""
        if not self.sliding_window or layer_index is None:
            return 0
        if self.layer_types and self.layer_types[self.kind_of_layer(layer_index)] != "sliding_attention":
            return 0
        return self.sliding_window

    @property
    def qk_nope_head_dim(self) -> int:
        """HF name of the non-rotary Q/K width (MLA); ``head_dim`` holds it."""
        return self.head_dim

    @property
    def linear_dtype(self) -> str:
        """Precision of the linear layers' GEMMs (projections, FFNs, experts): ``gemm_dtype``
        (DeepSeek-V3 trains them in FP8) or the model dtype. Attention core, router and output
        head stay in ``dtype``."""
        return self.gemm_dtype or self.dtype

    # -- attention shapes -----------------------------------------------------------------
    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def qk_head_dim(self) -> int:
        """Per-head width of Q and K (MLA: nope + rope)."""
        return self.head_dim + self.qk_rope_head_dim

    @property
    def v_dim(self) -> int:
        """Per-head width of V."""
        return self.v_head_dim or self.head_dim

    def tokens(self, micro_batch_size: int) -> int:
        """Tokens in a microbatch of ``micro_batch_size`` sequences."""
        return micro_batch_size * self.seq_len

    # -- parameters -----------------------------------------------------------------------
    @property
    def attention_params(self) -> int:
        """Attention weights of one layer (no biases; MLA latent norms included; 0 without attention)."""
        if not self.attention:
            return 0
        h, a = self.hidden, self.num_heads
        if not self.is_mla:
            return (h * a * self.head_dim + 2 * h * self.num_kv_heads * self.head_dim + a * self.head_dim * h
                    + self.sink_params)
        q = h * a * self.qk_head_dim
        if self.q_lora_rank:
            q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * a * self.qk_head_dim
        kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
        kv += self.kv_lora_rank * a * (self.head_dim + self.v_dim)
        return q + kv + a * self.v_dim * h + self.sink_params

    @property
    def sink_params(self) -> int:
        """Attention-sink logits of one layer: one per head (gpt-oss), else 0."""
        return self.num_heads if self.attention_sinks else 0

    @property
    def norm_params(self) -> int:
        """Weights of one norm (RMSNorm: scale; LayerNorm: scale and bias)."""
        return self.hidden * (1 if self.norm == "rmsnorm" else 2)

    @property
    def dense_layer_params(self) -> int:
        """Weights of one dense layer: attention, FFN, two norms."""
        norms = 2 if self.attention else 1
        return self.attention_params + ffn_params(self.hidden, self.ffn_hidden, self.activation) + norms * self.norm_params

    def is_moe_layer(self, layer_index: int) -> bool:
        """Whether layer ``layer_index`` has a routed-expert FFN (never, for a dense model)."""
        return False

    def layer_params(self, layer_index: int) -> int:
        """Weights of layer ``layer_index``."""
        return self.dense_layer_params

    def layer_activated_params(self, layer_index: int) -> int:
        """Weights of layer ``layer_index`` that one token uses."""
        return self.layer_params(layer_index)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden if self.edges else 0

    @property
    def head_params(self) -> int:
        """Output projection plus final norm (projection shared with the embedding if tied)."""
        if not self.edges:
            return 0
        return (0 if self.tied_embeddings else self.vocab * self.hidden) + self.norm_params

    @property
    def mtp_layer_index(self) -> int:
        """The model layer whose kind (dense or MoE, attention) each MTP module's block copies: the last."""
        return self.num_layers - 1

    def kind_of_layer(self, layer_index: int) -> int:
        """The model layer whose kind layer ``layer_index`` has: itself, or for the decoder layer
        of MTP depth d (index ``num_layers + d``, as a training step runs it after the model's
        layers) :attr:`mtp_layer_index`."""
        if layer_index < self.num_layers:
            return layer_index
        if layer_index < self.num_layers + self.num_nextn_predict_layers:
            return self.mtp_layer_index
        raise ConfigError("layer", f"layer {layer_index} is beyond the {self.num_layers} layers and "
                          f"{self.num_nextn_predict_layers} MTP module(s)", "give a layer index below the model's")

    @property
    def mtp_extra_params(self) -> int:
        """MTP weights besides its decoder layers: per depth two RMSNorms in, the ``2h -> h``
        projection and the shared head's norm."""
        return self.num_nextn_predict_layers * (3 * self.norm_params + 2 * self.hidden * self.hidden)

    @property
    def mtp_params(self) -> int:
        """Weights of the MTP modules (0 without them): per depth two RMSNorms (hidden state,
        embedding), the ``2h -> h`` projection, one decoder layer and the shared head's norm.
        DeepSeek-V3: 11.7B besides the embedding and head it shares (HF lists 14B with them)."""
        if not self.num_nextn_predict_layers:
            return 0
        return self.mtp_extra_params + self.num_nextn_predict_layers * self.layer_params(self.mtp_layer_index)

    @property
    def total_params(self) -> int:
        layers = sum(self.layer_params(i) for i in range(self.num_layers))
        return layers + self.embedding_params + self.head_params

    @property
    def activated_params(self) -> int:
        """Parameters used per token (equal to total for a dense model)."""
        layers = sum(self.layer_activated_params(i) for i in range(self.num_layers))
        return layers + self.embedding_params + self.head_params

    # -- FLOPs ----------------------------------------------------------------------------
    def layer_flops_per_sequence(self, layer_index: int) -> tuple[float, float]:
        """(forward, backward) FLOPs of layer ``layer_index`` on one sequence, tp = 1."""
        fwd = layer_forward_ops(self, 1, layer_index=layer_index)
        bwd = layer_backward_input_ops(self, 1, layer_index=layer_index) + layer_backward_weight_ops(self, 1)
        return sum(op.flops for op in fwd), sum(op.flops for op in bwd)

    def _flops_per_token(self) -> tuple[float, float]:
        per_layer = [self.layer_flops_per_sequence(i) for i in range(self.num_layers)]
        head_fwd = sum(op.flops for op in head_forward_ops(self, 1))
        head_bwd = sum(op.flops for op in head_backward_input_ops(self, 1) + head_backward_weight_ops(self, 1))
        fwd = sum(f for f, _ in per_layer) + head_fwd
        bwd = sum(b for _, b in per_layer) + head_bwd
        return fwd / self.seq_len, bwd / self.seq_len

    @property
    def forward_flops_per_token(self) -> float:
        """Forward FLOPs per token: GEMMs (2 per weight per token) plus causal attention."""
        return self._flops_per_token()[0]

    @property
    def training_flops_per_token(self) -> float:
        """Forward + backward FLOPs per token (about 6 x activated params + attention)."""
        fwd, bwd = self._flops_per_token()
        return fwd + bwd


# -- per-rank shapes ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Local:
    """Per-rank sizes of one microbatch under tensor parallelism."""

    tokens: int        # T: tokens of the microbatch (GEMM rows after any all-gather)
    tokens_local: int  # T/tp with sequence parallelism, else T (norm/residual rows)
    heads: int
    kv_heads: int
    hidden: int
    elem_bytes: float
    tp: int
    sp: bool           # sequence parallelism in effect (requested and tp > 1)


def _loc(spec: TransformerSpec, mbs: int, tp: int, sp: bool) -> _Local:
    check_positive("micro_batch_size", mbs)
    check_divides("tp", tp, spec.num_heads, "num_heads")
    g = spec.num_kv_heads
    if g % tp and tp % g:
        raise ConfigError("tp", f"tp = {tp} neither divides nor is a multiple of num_kv_heads = {g}",
                          "use a tp that divides num_kv_heads or is a multiple of it")
    tokens = spec.tokens(mbs)
    shard = sp and tp > 1
    if shard and tokens % tp:
        raise ConfigError("tp", f"sequence parallelism needs tp = {tp} to divide the microbatch tokens = {tokens}",
                          "pick tp dividing micro_batch_size * seq_len")
    # KV heads are replicated when tp exceeds them (one KV head per rank, as vLLM does).
    return _Local(tokens, tokens // tp if shard else tokens, spec.num_heads // tp, max(1, g // tp),
                  spec.hidden, DTYPE_BYTES[spec.dtype], tp, shard)


def _hidden_bytes(loc: _Local) -> float:
    """Size of the full (unsharded) hidden-state tensor of the microbatch."""
    return float(loc.elem_bytes * loc.tokens * loc.hidden)


def _enter_block(loc: _Local, block: str) -> list[CommOp]:
    """Collective before a column-parallel GEMM: gather the sequence shards (SP only)."""
    return [CommOp("all_gather", _hidden_bytes(loc), f"{block}.sp_all_gather")] if loc.sp else []


def _leave_block(loc: _Local, block: str) -> list[CommOp]:
    """Collective after a row-parallel GEMM: reduce-scatter (SP) or all-reduce (TP only)."""
    if loc.sp:
        return [CommOp("reduce_scatter", _hidden_bytes(loc), f"{block}.sp_reduce_scatter")]
    return [CommOp("all_reduce", _hidden_bytes(loc), f"{block}.tp_all_reduce")] if loc.tp > 1 else []


def _backward_entry(loc: _Local, block: str) -> list[CommOp]:
    """Backward of leaving a block: all-gather of the output grad (SP); identity otherwise."""
    return [CommOp("all_gather", _hidden_bytes(loc), f"{block}.sp_all_gather.bwd")] if loc.sp else []


def _regather(loc: _Local, block: str) -> list[CommOp]:
    """SP only: Megatron re-gathers the block input in backward for the weight gradients
    (``LinearWithGradAccumulationAndAsyncCommunication.backward``), overlapped with dgrad."""
    return [CommOp("all_gather", _hidden_bytes(loc), f"{block}.sp_regather_input")] if loc.sp else []


def _input_grad_reduce(loc: _Local, block: str) -> list[CommOp]:
    """Backward of entering a block: reduce-scatter (SP) or all-reduce (TP) of the input grad."""
    if loc.sp:
        return [CommOp("reduce_scatter", _hidden_bytes(loc), f"{block}.sp_reduce_scatter.bwd")]
    return [CommOp("all_reduce", _hidden_bytes(loc), f"{block}.tp_all_reduce.bwd")] if loc.tp > 1 else []


# -- attention block ----------------------------------------------------------------------
def _norm(loc: _Local, width: int, name: str, backward: bool = False) -> MemoryOp:
    # Forward reads x and writes y; backward reads x and dy and writes dx.
    passes = 3 if backward else 2
    return MemoryOp("norm", float(passes * loc.elem_bytes * loc.tokens_local * width), name)


def _residual(loc: _Local, name: str) -> MemoryOp:
    # Reads two operands, writes one, over the (possibly sequence-sharded) hidden state.
    return MemoryOp("elementwise", float(3 * loc.elem_bytes * loc.tokens_local * loc.hidden), name)


def _rope(loc: _Local, q_heads: int, k_heads: int, dim: int, impl: str = "fused") -> list[MemoryOp]:
    """RoPE as frameworks call it: once on the queries and once on the keys (two calls of the
    rotary expression, fused or not: Megatron's ``apply_rotary_pos_emb``, torchtitan's
    ``apply_rotary_emb`` and Hugging Face's each rotate q and k apart), each reading and writing
    its tensor; an eager form (``TransformerSpec.rope_impl``) is its measured program."""
    variant = "" if impl == "fused" else f"rope_{impl}"
    return [MemoryOp("elementwise", 2.0 * loc.elem_bytes * loc.tokens * heads * dim, f"attn.rope.{which}", variant)
            for which, heads in (("q", q_heads), ("k", k_heads))]


def _attention_projections(spec: TransformerSpec, loc: _Local) -> tuple[list[ComputeOp], list[MemoryOp]]:
    """Forward input projections (with MLA latent norms) and the RoPE ops (q, k)."""
    T, d, dt = loc.tokens, spec.head_dim, spec.linear_dtype
    if not spec.is_mla:
        qkv = Gemm(m=T, n=(loc.heads + 2 * loc.kv_heads) * d, k=spec.hidden, dtype=dt, name="attn.qkv")
        # QK-norm (Qwen3; Megatron's --qk-layernorm): an RMSNorm over each query and key head
        # before RoPE, read and written once each
        norms = [MemoryOp("norm", 2.0 * loc.elem_bytes * T * heads * d, f"attn.{which}_layernorm")
                 for which, heads in (("q", loc.heads), ("k", loc.kv_heads))] if spec.qk_norm else []
        return [qkv, *norms], _rope(loc, loc.heads, loc.kv_heads, d, spec.rope_impl)
    ops: list[ComputeOp] = []
    q_out = loc.heads * spec.qk_head_dim
    if spec.q_lora_rank:
        # Down projections are replicated over TP (Megatron MLA: parallel_mode="duplicated").
        ops += [Gemm(m=T, n=spec.q_lora_rank, k=spec.hidden, dtype=dt, name="attn.q_down"),
                MemoryOp("norm", 2.0 * loc.elem_bytes * T * spec.q_lora_rank, "attn.q_norm"),
                Gemm(m=T, n=q_out, k=spec.q_lora_rank, dtype=dt, name="attn.q_up")]
    else:
        ops.append(Gemm(m=T, n=q_out, k=spec.hidden, dtype=dt, name="attn.q"))
    ops += [Gemm(m=T, n=spec.kv_lora_rank + spec.qk_rope_head_dim, k=spec.hidden, dtype=dt, name="attn.kv_down"),
            MemoryOp("norm", 2.0 * loc.elem_bytes * T * spec.kv_lora_rank, "attn.kv_norm"),
            Gemm(m=T, n=loc.heads * (spec.head_dim + spec.v_dim), k=spec.kv_lora_rank, dtype=dt, name="attn.kv_up")]
    return ops, _rope(loc, loc.heads, 1, spec.qk_rope_head_dim, spec.rope_impl)


def _attention_core(spec: TransformerSpec, mbs: int, loc: _Local, layer_index: int | None = None) -> Attention:
    """The core attention kernel. A sliding-window layer (window W < seq_len) is priced as
    every query against W keys, non-causal: W*S score pairs where the exact count is
    W*S - W(W-1)/2 (+1.5% at W = 128, S = 4096)."""
    head_dim = float(spec.head_dim) if not spec.is_mla else (spec.qk_head_dim + spec.v_dim) / 2
    window = spec.attention_window(layer_index)
    windowed = 0 < window < spec.seq_len
    grouped_call = spec.attention_enable_gqa and loc.kv_heads < loc.heads
    return Attention(batch=mbs, heads=loc.heads, kv_heads=loc.kv_heads, seq_q=spec.seq_len,
                     seq_kv=window if windowed else spec.seq_len,
                     head_dim=int(head_dim) if head_dim.is_integer() else head_dim,  # type: ignore[arg-type]
                     causal=not windowed, dtype=spec.dtype, name="attn.core",
                     call=("enable_gqa" if grouped_call else "")
                     + ("_flash" if grouped_call and spec.attention_backend == "flash" else
                        "flash" if spec.attention_backend == "flash" else ""))


def _attention_out(spec: TransformerSpec, loc: _Local) -> Gemm:
    return Gemm(m=loc.tokens, n=spec.hidden, k=loc.heads * spec.v_dim, dtype=spec.linear_dtype, name="attn.out")


def attention_forward_program(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False,
                              layer_index: int | None = None) -> list[ProgramItem]:
    """Forward of the attention block (norm, projections, core, out, residual) on one rank.
    ``layer_index`` selects the layer's attention kind (sliding window or full; None = full)."""
    if not spec.attention:
        return []
    loc = _loc(spec, mbs, tp, sp)
    proj, rope = _attention_projections(spec, loc)
    return [_norm(loc, spec.hidden, "attn.norm"), *_enter_block(loc, "attn"), *proj, *rope,
            _attention_core(spec, mbs, loc, layer_index), _attention_out(spec, loc), *_leave_block(loc, "attn"),
            _residual(loc, "attn.residual")]


def attention_backward_input_program(spec: TransformerSpec, mbs: int, tp: int = 1,
                                     sp: bool = False, layer_index: int | None = None) -> list[ProgramItem]:
    """Activation-gradient part of the attention block's backward, in execution order.

    With SP the backward of the reduce-scatter is an all-gather of the gradient, the backward of
    the all-gather a reduce-scatter, and Megatron re-gathers the block input for the weight
    gradients (``LinearWithGradAccumulationAndAsyncCommunication``), overlapped with dgrad.
    """
    if not spec.attention:
        return []
    loc = _loc(spec, mbs, tp, sp)
    proj, rope = _attention_projections(spec, loc)
    back_proj = [dgrad(op) if isinstance(op, Gemm) else _norm_bwd(op) for op in reversed(proj)]
    reduce = _input_grad_reduce(loc, "attn")
    return [*_backward_entry(loc, "attn"), dgrad(_attention_out(spec, loc)),
            attention_backward(_attention_core(spec, mbs, loc, layer_index)),
            *[MemoryOp("elementwise", op.bytes, f"{op.name}.bwd", f"{op.variant}_bwd" if op.variant else "")
              for op in rope],
            *_regather(loc, "attn"), *back_proj, *reduce,
            _norm(loc, spec.hidden, "attn.norm.bwd", backward=True), _residual(loc, "attn.residual.bwd")]


def _norm_bwd(op: ComputeOp) -> MemoryOp:
    assert isinstance(op, MemoryOp)
    return MemoryOp(op.kind, op.bytes * 1.5, f"{op.name}.bwd")


def attention_backward_weight_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ComputeOp]:
    """Weight-gradient GEMMs of the attention block."""
    if not spec.attention:
        return []
    loc = _loc(spec, mbs, tp, sp)
    proj, _ = _attention_projections(spec, loc)
    return [wgrad(_attention_out(spec, loc)), *[wgrad(op) for op in reversed(proj) if isinstance(op, Gemm)]]


# -- dense FFN block ----------------------------------------------------------------------
def _ffn_local(spec: TransformerSpec, tp: int) -> int:
    check_divides("tp", tp, spec.ffn_hidden, "ffn_hidden")
    return spec.ffn_hidden // tp


def mlp_forward_program(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ProgramItem]:
    """Forward of the dense FFN block (norm, FFN, residual) on one rank."""
    loc = _loc(spec, mbs, tp, sp)
    ffn = ffn_forward_ops(loc.tokens, spec.hidden, _ffn_local(spec, tp), spec.activation, spec.dtype, "mlp",
                          gemm_dtype=spec.linear_dtype, fused_activation=spec.activation_fusion)
    return [_norm(loc, spec.hidden, "mlp.norm"), *_enter_block(loc, "mlp"), *ffn, *_leave_block(loc, "mlp"),
            _residual(loc, "mlp.residual")]


def mlp_backward_input_program(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ProgramItem]:
    """Activation-gradient part of the dense FFN block's backward, in execution order."""
    loc = _loc(spec, mbs, tp, sp)
    ffn = ffn_backward_input_ops(loc.tokens, spec.hidden, _ffn_local(spec, tp), spec.activation, spec.dtype, "mlp",
                                 gemm_dtype=spec.linear_dtype, fused_activation=spec.activation_fusion)
    # ffn = [dgrad(down), activation backward kernel(s), dgrad(up-side GEMMs)...]
    split = next(i for i in range(1, len(ffn)) if isinstance(ffn[i], Gemm))
    return [*_backward_entry(loc, "mlp"), *ffn[:split], *_regather(loc, "mlp"), *ffn[split:],
            *_input_grad_reduce(loc, "mlp"),
            _norm(loc, spec.hidden, "mlp.norm.bwd", backward=True), _residual(loc, "mlp.residual.bwd")]


def mlp_backward_weight_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ComputeOp]:
    """Weight-gradient GEMMs of the dense FFN block."""
    loc = _loc(spec, mbs, tp, sp)
    return ffn_backward_weight_ops(loc.tokens, spec.hidden, _ffn_local(spec, tp), spec.activation, spec.dtype,
                                   "mlp", gemm_dtype=spec.linear_dtype, fused_activation=spec.activation_fusion)


# -- whole dense layer --------------------------------------------------------------------
def layer_forward_program(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False,
                          layer_index: int | None = None) -> list[ProgramItem]:
    """Forward of one dense layer on one TP rank: compute ops and TP collectives in order
    (``layer_index``: which attention kind, see :func:`attention_forward_program`)."""
    return attention_forward_program(spec, mbs, tp, sp, layer_index) + mlp_forward_program(spec, mbs, tp, sp)


def layer_backward_input_program(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False,
                                 layer_index: int | None = None) -> list[ProgramItem]:
    """Activation-gradient backward (B) of one dense layer, in execution order."""
    return (mlp_backward_input_program(spec, mbs, tp, sp)
            + attention_backward_input_program(spec, mbs, tp, sp, layer_index))


def layer_forward_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False,
                      layer_index: int | None = None) -> list[ComputeOp]:
    """Compute ops of one dense layer's forward on one TP rank."""
    return compute_only(layer_forward_program(spec, mbs, tp, sp, layer_index))


def layer_backward_input_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False,
                             layer_index: int | None = None) -> list[ComputeOp]:
    """Compute ops of one dense layer's activation-gradient backward (dgrad GEMMs, attention
    backward, elementwise backward)."""
    return compute_only(layer_backward_input_program(spec, mbs, tp, sp, layer_index))


def layer_backward_weight_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ComputeOp]:
    """Weight-gradient GEMMs (W) of one dense layer."""
    return mlp_backward_weight_ops(spec, mbs, tp, sp) + attention_backward_weight_ops(spec, mbs, tp, sp)


def layer_tp_collectives(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> dict[str, list[CommOp]]:
    """TP collectives of one dense layer: ``{"forward": [...], "backward": [...]}``.

    No SP: one all-reduce per block each way (2 forward, 2 backward). SP: all-gather +
    reduce-scatter per block each way, plus the backward input re-gather (4 forward, 6 backward).
    Empty for tp = 1. Sizes are full-buffer bytes (see :class:`CommOp`).
    """
    return {"forward": comm_only(layer_forward_program(spec, mbs, tp, sp)),
            "backward": comm_only(layer_backward_input_program(spec, mbs, tp, sp))}


def recompute_forward_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False,
                          recompute: str = "none") -> list[ProgramItem]:
    """What backward re-runs before it starts: nothing, the attention core (Korthikanti's
    selective recomputation) or the whole layer forward with its collectives (full)."""
    _check_recompute(recompute)
    if recompute == "none":
        return []
    if recompute == "selective":
        return [op for op in layer_forward_ops(spec, mbs, tp, sp) if isinstance(op, Attention)]
    return layer_forward_program(spec, mbs, tp, sp)


def _check_recompute(recompute: str) -> None:
    if recompute not in RECOMPUTE:
        raise ConfigError("recompute", f"unknown mode {recompute!r}", f"use one of: {', '.join(RECOMPUTE)}")


# -- embedding and output head ------------------------------------------------------------
def padded_vocab(spec: TransformerSpec, tp: int = 1) -> int:
    """Vocabulary padded to a multiple of 128 * tp, as Megatron does for vocab-parallel layers."""
    unit = VOCAB_DIVISOR * tp
    return -(-spec.vocab // unit) * unit


def embedding_forward_program(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ProgramItem]:
    """Vocab-parallel embedding lookup, then all-reduce (or reduce-scatter with SP) over TP."""
    if not spec.edges:
        return []
    loc = _loc(spec, mbs, tp, sp)
    lookup = MemoryOp("copy", 2.0 * _hidden_bytes(loc), "embed.lookup")  # read rows, write output
    return [lookup, *_leave_block(loc, "embed")]


def embedding_backward_program(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ProgramItem]:
    """Embedding backward. It is all weight-gradient work (no input gradient exists): gather
    the output grad (SP), then scatter-add rows into the embedding gradient."""
    if not spec.edges:
        return []
    loc = _loc(spec, mbs, tp, sp)
    scatter = MemoryOp("elementwise", 3.0 * _hidden_bytes(loc), "embed.wgrad_scatter_add")
    return [*_backward_entry(loc, "embed"), scatter]


def embedding_forward_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ComputeOp]:
    return compute_only(embedding_forward_program(spec, mbs, tp, sp))


def embedding_backward_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ComputeOp]:
    """Compute ops of the embedding backward; all belong to the W (weight-gradient) part."""
    return compute_only(embedding_backward_program(spec, mbs, tp, sp))


def _logits(spec: TransformerSpec, loc: _Local) -> Gemm:
    vocab_local = padded_vocab(spec, loc.tp) // loc.tp
    return Gemm(m=loc.tokens, n=vocab_local, k=spec.hidden, dtype=spec.dtype, name="head.logits")


def _loss_stats(loc: _Local) -> list[CommOp]:
    # Vocab-parallel cross-entropy all-reduces max, target logit and sum-exp (fp32 per token).
    if loc.tp == 1:
        return []
    return [CommOp("all_reduce", 4.0 * loc.tokens, f"head.ce_{what}") for what in ("max", "target", "sumexp")]


def head_forward_program(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ProgramItem]:
    """Final norm, vocab-parallel logits GEMM and softmax cross-entropy (last stage)."""
    if not spec.edges:
        return []
    loc = _loc(spec, mbs, tp, sp)
    logits = _logits(spec, loc)
    ce = MemoryOp("softmax", 2.0 * loc.elem_bytes * logits.m * logits.n, "head.cross_entropy")
    return [_norm(loc, spec.hidden, "head.norm"), *_enter_block(loc, "head"), logits, *_loss_stats(loc), ce]


def head_backward_input_program(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ProgramItem]:
    """Cross-entropy backward, logits dgrad, TP reduction of the input grad, final norm backward."""
    if not spec.edges:
        return []
    loc = _loc(spec, mbs, tp, sp)
    logits = _logits(spec, loc)
    ce = MemoryOp("softmax", 2.0 * loc.elem_bytes * logits.m * logits.n, "head.cross_entropy.bwd")
    return [ce, *_regather(loc, "head"), dgrad(logits), *_input_grad_reduce(loc, "head"),
            _norm(loc, spec.hidden, "head.norm.bwd", backward=True)]


def head_forward_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ComputeOp]:
    return compute_only(head_forward_program(spec, mbs, tp, sp))


def head_backward_input_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ComputeOp]:
    return compute_only(head_backward_input_program(spec, mbs, tp, sp))


def head_backward_weight_ops(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False) -> list[ComputeOp]:
    """Weight gradient of the logits GEMM."""
    return [wgrad(_logits(spec, _loc(spec, mbs, tp, sp)))] if spec.edges else []


# -- memory -------------------------------------------------------------------------------
def attention_weight_bytes(spec: TransformerSpec, tp: int = 1) -> float:
    """Bytes of one layer's attention weights (and its norm) held by one TP rank."""
    if not spec.attention:
        return 0.0
    proj = weight_params(compute_only(attention_forward_program(spec, 1, tp)))
    latent_norms = spec.q_lora_rank + spec.kv_lora_rank  # MLA, replicated
    return (proj + spec.norm_params + latent_norms) * DTYPE_BYTES[spec.dtype]


def mlp_weight_bytes(spec: TransformerSpec, tp: int = 1) -> float:
    """Bytes of one dense FFN block's weights (and its norm) held by one TP rank."""
    return (ffn_params(spec.hidden, _ffn_local(spec, tp), spec.activation) + spec.norm_params) * DTYPE_BYTES[spec.dtype]


def weight_bytes_per_layer(spec: TransformerSpec, tp: int = 1) -> float:
    """Bytes of one dense layer's weights held by one TP rank (norm weights replicated)."""
    return attention_weight_bytes(spec, tp) + mlp_weight_bytes(spec, tp)


def attention_activation_bytes(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False,
                               recompute: str = "none", *, flash_attention: bool = True,
                               dropout: bool = False) -> float:
    """Bytes the attention block keeps for backward on one rank (Korthikanti et al. 2022 §4.1).

    Kept: norm input, QKV-GEMM input (plus MLA latents), Q, K, V, the attention output, a
    dropout mask after the block if ``dropout``; without ``flash_attention`` also the softmax
    output (and dropout mask + output) of size a*s^2*b, which selective recomputation drops;
    with it FlashAttention's fp32 log-sum-exp. Norm-region tensors shard over TP only with SP.
    """
    _check_recompute(recompute)
    if not spec.attention:
        return 0.0
    loc = _loc(spec, mbs, tp, sp)
    e, T = loc.elem_bytes, loc.tokens
    replicated = 2 * e * T * spec.hidden + (T * spec.hidden if dropout else 0)
    replicated += 2 * e * T * (spec.q_lora_rank + spec.kv_lora_rank)  # MLA latent norm in/out
    q_k = (loc.heads + loc.kv_heads) * spec.qk_head_dim
    v_out = (loc.kv_heads + loc.heads) * spec.v_dim  # V, and the attention output fed to attn.out
    sharded = e * T * (q_k + v_out)
    if spec.qk_norm and not spec.is_mla:   # Q and K before their norms
        sharded += e * T * (loc.heads + loc.kv_heads) * spec.head_dim
    if flash_attention:
        sharded += 4 * T * loc.heads
    elif recompute == "none":
        per_score = e + ((1 + e) if dropout else 0)  # softmax out (+ dropout mask and output)
        sharded += per_score * loc.heads * spec.seq_len * spec.seq_len * mbs
    return replicated / (tp if loc.sp else 1) + sharded


def mlp_activation_bytes(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False, *,
                         dropout: bool = False) -> float:
    """Bytes the dense FFN block keeps for backward on one rank (norm input, FFN input, the
    activation's inputs and output, dropout mask if ``dropout``)."""
    loc = _loc(spec, mbs, tp, sp)
    e, T = loc.elem_bytes, loc.tokens
    replicated = 2 * e * T * spec.hidden + (T * spec.hidden if dropout else 0)
    sharded = ffn_internal_activation_bytes(T, _ffn_local(spec, tp), spec.activation, spec.dtype,
                                            spec.activation_fusion)
    return replicated / (tp if loc.sp else 1) + sharded


def activation_bytes_per_layer(spec: TransformerSpec, mbs: int, tp: int = 1, sp: bool = False,
                               recompute: str = "none", *, flash_attention: bool = True,
                               dropout: bool = False) -> float:
    """Activation bytes one dense layer keeps per microbatch on one TP rank.

    Korthikanti et al. 2022 (arXiv:2205.05198) accounting, generalised to GQA/MLA, SwiGLU and
    any FFN width. With ``flash_attention=False, dropout=True`` and a GPT-shaped bf16 spec it is
    exactly their ``sbh(34 + 5as/h)`` (tp = 1), ``sbh(10 + 24/t + 5as/(ht))`` (TP),
    ``sbh(34 + 5as/h)/t`` (TP + SP). The defaults describe current practice (FlashAttention, no
    dropout). ``recompute``: "selective" drops the attention-score tensors, "full" keeps only
    the layer input (``2sbh``, ``/t`` with SP).
    """
    _check_recompute(recompute)
    if recompute == "full":
        loc = _loc(spec, mbs, tp, sp)
        return _hidden_bytes(loc) / (tp if loc.sp else 1)
    return (attention_activation_bytes(spec, mbs, tp, sp, recompute, flash_attention=flash_attention, dropout=dropout)
            + mlp_activation_bytes(spec, mbs, tp, sp, dropout=dropout))
