"""Mixture-of-Experts models: the spec and the ops of router, experts and token permutation.

:class:`MoESpec` extends :class:`TransformerSpec` with routed experts (top-k of
``num_experts``), optional shared experts, leading dense layers (``first_k_dense``), the
MoE-layer pattern, DeepSeek-style group-limited routing and the dispatch precision. Dense layers
use the base ``ffn_hidden``; MoE layers replace the FFN by router -> permute -> dispatch
all-to-all -> experts -> combine all-to-all -> unpermute (Megatron's all-to-all dispatcher,
reference moe_and_hardware.md §4.2), plus shared experts. The router and the permute / unpermute
kernels of the block programs are those of a framework (``token_movement``: torchtitan,
Megatron or fused), from :mod:`moesim.workload.moe_exec`, which also builds the expert kernels
of each execution mode (grouped, loop, padded) for the lowering.

The per-expert functions (``expert_*_ops``) take the token count an expert actually receives,
so the lowering can cost a hot expert exactly. ``moe_block_*`` build the whole block under
perfectly balanced routing, for analytical estimates, FLOP counts and tests. All-to-all sizes
count one copy per token-expert pair (an upper bound: DeepEP sends one copy per destination
rank, §1.1).
"""
from __future__ import annotations

from dataclasses import dataclass

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES, ComputeOp, Gemm, MemoryOp
from moesim.workload import token_movement as movement
from moesim.workload.common import (
    CommOp,
    ProgramItem,
    check_divides,
    check_positive,
    compute_only,
    dgrad,
    ffn_backward_input_ops,
    ffn_backward_weight_ops,
    ffn_forward_ops,
    ffn_internal_activation_bytes,
    ffn_params,
    wgrad,
)
from moesim.workload.transformer import (
    TransformerSpec,
    check_text,
    check_whole,
    attention_backward_input_program,
    attention_backward_weight_ops,
    attention_forward_program,
)

SCORE_FUNCS = ("softmax", "sigmoid")
DISPATCH_DTYPES = ("bf16", "fp8")
FP8_BLOCK = 128  # DeepSeek FP8 activations: one fp32 scale per 1x128 tile


@dataclass(frozen=True, kw_only=True)
class MoESpec(TransformerSpec):
    """A transformer whose FFNs are (mostly) routed experts.

    Attributes beyond :class:`TransformerSpec`:
        num_experts: routed experts per MoE layer.
        top_k: routed experts per token.
        expert_ffn_hidden: intermediate width of one routed expert.
        num_shared_experts: always-on experts per MoE layer (fused into one FFN of width
            ``num_shared_experts * shared_expert_ffn_hidden``).
        shared_expert_ffn_hidden: width of one shared expert; 0 means ``expert_ffn_hidden``.
        first_k_dense: the first k layers keep a dense FFN (DeepSeek ``first_k_dense_replace``).
        moe_layer_freq: int N -> layer i >= first_k_dense is MoE when i % N == 0 (HF DeepSeek
            rule); or a 0/1 tuple with one entry per layer (Megatron's list form).
        n_groups, topk_groups: group-limited routing (DeepSeek-V3: 8 groups, top-4 groups).
        max_nodes_per_token: node-limited routing (DeepSeek-V3: 4); 0 means unlimited.
        score_func: router affinity, "softmax" or "sigmoid".
        expert_bias: auxiliary-loss-free load balancing (DeepSeek-V3's ``noaux_tc``; torchtitan's
            ``load_balance_coeff``, Megatron's ``--moe-router-enable-expert-bias``): a bias per
            expert added to the scores before top-k, the unbiased scores of the chosen experts
            gathered after it, and the tokens per expert accumulated for the bias update, each
            forward (kernels and host calls of their own; the bias update itself runs once a step).
        dispatch_dtype: precision of dispatched tokens, "bf16" or "fp8" (combine is bf16).
        expert_linear_bias: the routed experts' projections carry biases (GPT-OSS; Megatron's
            ``--add-bias-linear``). fc1's bias rides in its GEMM's epilogue; Megatron-Core's
            ``TEGroupedMLP`` adds fc2's bias outside the GEMM, weighted by each token's routing
            probability, one local expert at a time (:func:`moesim.workload.moe_exec.fc2_bias_ops`).
    """

    num_experts: int
    top_k: int
    expert_ffn_hidden: int
    num_shared_experts: int = 0
    shared_expert_ffn_hidden: int = 0
    first_k_dense: int = 0
    moe_layer_freq: int | tuple[int, ...] = 1
    n_groups: int = 1
    topk_groups: int = 1
    max_nodes_per_token: int = 0
    score_func: str = "softmax"
    expert_bias: bool = False
    dispatch_dtype: str = "bf16"
    expert_linear_bias: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for f in ("num_experts", "top_k", "expert_ffn_hidden", "n_groups", "topk_groups"):
            check_whole(f, getattr(self, f))
        for f in ("num_shared_experts", "shared_expert_ffn_hidden", "first_k_dense", "max_nodes_per_token"):
            check_whole(f, getattr(self, f), allow_zero=True)
        for f in ("score_func", "dispatch_dtype"):
            check_text(f, getattr(self, f))
        for f, most in (("num_experts", 1 << 16), ("expert_ffn_hidden", 1 << 22), ("shared_expert_ffn_hidden", 1 << 22),
                        ("num_shared_experts", 1 << 10)):  # physical ranges (DeepSeek-V3: 256 experts of 2,048)
            if getattr(self, f) > most:
                raise ConfigError(f, f"{getattr(self, f):,} is more than {most:,}", "give the model's real size")
        if self.top_k > self.num_experts:
            raise ConfigError("top_k", f"{self.top_k} exceeds num_experts = {self.num_experts}",
                              "use top_k <= num_experts")
        check_divides("n_groups", self.n_groups, self.num_experts, "num_experts")
        if self.topk_groups > self.n_groups:
            raise ConfigError("topk_groups", f"{self.topk_groups} exceeds n_groups = {self.n_groups}",
                              "use topk_groups <= n_groups")
        reachable = self.topk_groups * self.num_experts // self.n_groups
        if self.top_k > reachable:
            raise ConfigError("top_k", f"{self.top_k} exceeds the {reachable} experts of the top "
                              f"{self.topk_groups} groups", "raise topk_groups or lower top_k")
        if self.first_k_dense > self.num_layers:
            raise ConfigError("first_k_dense", f"{self.first_k_dense} exceeds num_layers = {self.num_layers}")
        self._check_pattern()
        if self.score_func not in SCORE_FUNCS:
            raise ConfigError("score_func", f"unknown {self.score_func!r}", f"use one of: {', '.join(SCORE_FUNCS)}")
        for flag in ("expert_bias", "expert_linear_bias"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(flag, f"must be true or false, got {getattr(self, flag)!r}")
        if self.dispatch_dtype not in DISPATCH_DTYPES:
            raise ConfigError("dispatch_dtype", f"unknown {self.dispatch_dtype!r}",
                              f"use one of: {', '.join(DISPATCH_DTYPES)}")

    def _check_pattern(self) -> None:
        freq = self.moe_layer_freq
        if isinstance(freq, tuple):
            if len(freq) != self.num_layers or any(v not in (0, 1) for v in freq):
                raise ConfigError("moe_layer_freq", f"a pattern needs {self.num_layers} entries of 0 or 1",
                                  "give one 0/1 per layer, or an int frequency")
        elif isinstance(freq, bool) or not isinstance(freq, int):
            raise ConfigError("moe_layer_freq", f"must be an integer >= 1 or a 0/1 list per layer, got {freq!r}"[:200],
                              "give e.g. 1 (every layer after first_k_dense is MoE)")
        elif freq < 1:
            raise ConfigError("moe_layer_freq", f"must be >= 1, got {freq}")
        if self.num_moe_layers == 0:
            raise ConfigError("moe_layer_freq", "no layer is an MoE layer",
                              "lower first_k_dense or fix the pattern, or use a TransformerSpec")

    # -- layout ---------------------------------------------------------------------------
    def is_moe_layer(self, layer_index: int) -> bool:
        """Whether layer ``layer_index`` (an MTP module's decoder layer: its kind's) routes to experts."""
        layer_index = self.kind_of_layer(layer_index)
        if layer_index < self.first_k_dense:
            return False
        if isinstance(self.moe_layer_freq, tuple):
            return self.moe_layer_freq[layer_index] == 1
        return layer_index % self.moe_layer_freq == 0

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    @property
    def shared_ffn_hidden(self) -> int:
        """Width of the fused shared-expert FFN (0 when there are none)."""
        return self.num_shared_experts * (self.shared_expert_ffn_hidden or self.expert_ffn_hidden)

    # -- parameters -----------------------------------------------------------------------
    @property
    def expert_params(self) -> int:
        """Weights of one routed expert."""
        return ffn_params(self.hidden, self.expert_ffn_hidden, self.activation)

    @property
    def router_params(self) -> int:
        return self.hidden * self.num_experts

    def _moe_layer_params(self, routed_experts: int) -> int:
        shared = ffn_params(self.hidden, self.shared_ffn_hidden, self.activation)
        return (self.attention_params + 2 * self.norm_params + self.router_params + shared
                + routed_experts * self.expert_params)

    def layer_params(self, layer_index: int) -> int:
        if not self.is_moe_layer(layer_index):
            return self.dense_layer_params
        return self._moe_layer_params(self.num_experts)

    def layer_activated_params(self, layer_index: int) -> int:
        if not self.is_moe_layer(layer_index):
            return self.dense_layer_params
        return self._moe_layer_params(self.top_k)

    # -- FLOPs ----------------------------------------------------------------------------
    def layer_flops_per_sequence(self, layer_index: int) -> tuple[float, float]:
        if not self.is_moe_layer(layer_index):
            return super().layer_flops_per_sequence(layer_index)
        T = self.seq_len
        fwd = (compute_only(attention_forward_program(self, 1, layer_index=layer_index))
               + _moe_compute_forward(self, T, T * self.top_k))
        bwd = (compute_only(attention_backward_input_program(self, 1, layer_index=layer_index))
               + attention_backward_weight_ops(self, 1)
               + _moe_compute_backward(self, T, T * self.top_k))
        return sum(op.flops for op in fwd), sum(op.flops for op in bwd)


def _moe_compute_forward(spec: MoESpec, num_tokens: int, routed_pairs: int) -> list[ComputeOp]:
    """Router, permutation, all routed pairs through one virtual expert, shared experts."""
    return (router_forward_ops(spec, num_tokens) + permute_ops(spec, num_tokens)
            + expert_forward_ops(spec, routed_pairs) + unpermute_ops(spec, num_tokens)
            + shared_expert_forward_ops(spec, num_tokens))


def _moe_compute_backward(spec: MoESpec, num_tokens: int, routed_pairs: int) -> list[ComputeOp]:
    return (shared_expert_backward_input_ops(spec, num_tokens) + shared_expert_backward_weight_ops(spec, num_tokens)
            + unpermute_ops(spec, num_tokens, backward=True) + expert_backward_input_ops(spec, routed_pairs)
            + expert_backward_weight_ops(spec, routed_pairs) + permute_ops(spec, num_tokens, backward=True)
            + router_backward_input_ops(spec, num_tokens) + router_backward_weight_ops(spec, num_tokens))


# -- tokens entering the MoE block --------------------------------------------------------
def moe_input_tokens(spec: MoESpec, mbs: int, tp: int = 1, sp: bool = False) -> int:
    """Tokens one rank routes per microbatch: ``mbs * seq_len``, divided by tp under SP.

    Megatron requires sequence parallelism when MoE runs with tp > 1 (the tokens of a TP group
    are split, not duplicated, before routing).
    """
    check_positive("micro_batch_size", mbs)
    if tp > 1 and not sp:
        raise ConfigError("sequence_parallel", f"MoE layers with tp = {tp} need sequence parallelism",
                          "set sequence_parallel=True (Megatron requires it for MoE + TP)")
    tokens = spec.tokens(mbs)
    check_divides("tp", tp, tokens, "micro_batch_size * seq_len")
    return tokens // tp


# -- router -------------------------------------------------------------------------------
def router_forward_ops(spec: MoESpec, num_tokens: int) -> list[ComputeOp]:
    """Gate GEMM (hidden x num_experts), score function and (group-limited) top-k, fp32 scores."""
    T, E = num_tokens, spec.num_experts
    gate = Gemm(m=T, n=E, k=spec.hidden, dtype=spec.dtype, name="router.gate")
    scores = MemoryOp("softmax", 2.0 * 4 * T * E, f"router.{spec.score_func}")
    topk = MemoryOp("topk", 4.0 * T * E + 8.0 * T * spec.top_k, "router.topk")  # read scores; write ids+weights
    return [gate, scores, topk]


def router_backward_input_ops(spec: MoESpec, num_tokens: int) -> list[ComputeOp]:
    """Score-function backward and the gate's input gradient."""
    scores = MemoryOp("softmax", 3.0 * 4 * num_tokens * spec.num_experts, f"router.{spec.score_func}.bwd")
    return [scores, dgrad(router_forward_ops(spec, num_tokens)[0])]  # type: ignore[arg-type]


def router_backward_weight_ops(spec: MoESpec, num_tokens: int) -> list[ComputeOp]:
    return [wgrad(router_forward_ops(spec, num_tokens)[0])]  # type: ignore[arg-type]


# -- permutation --------------------------------------------------------------------------
def permute_ops(spec: MoESpec, num_tokens: int, backward: bool = False) -> list[ComputeOp]:
    """Copy each token once per chosen expert into expert-contiguous order (read + write)."""
    size = 2.0 * DTYPE_BYTES[spec.dtype] * num_tokens * spec.top_k * spec.hidden
    return [MemoryOp("permute", size, "moe.permute.bwd" if backward else "moe.permute")]


def unpermute_ops(spec: MoESpec, num_tokens: int, backward: bool = False) -> list[ComputeOp]:
    """Restore token order and sum the k expert outputs weighted by the router probabilities."""
    size = 2.0 * DTYPE_BYTES[spec.dtype] * num_tokens * spec.top_k * spec.hidden
    return [MemoryOp("permute", size, "moe.unpermute.bwd" if backward else "moe.unpermute")]


# -- experts ------------------------------------------------------------------------------
def _expert_shape(spec: MoESpec, num_tokens: int) -> tuple[int, int, int, str, str, str]:
    check_positive("num_tokens", num_tokens, allow_zero=True)
    return num_tokens, spec.hidden, spec.expert_ffn_hidden, spec.activation, spec.dtype, "expert"


def expert_forward_ops(spec: MoESpec, num_tokens: int, groups: int = 1) -> list[ComputeOp]:
    """Forward of ``groups`` routed experts each receiving ``num_tokens`` tokens (grouped GEMM
    when groups > 1). SwiGLU: fc1 (gate and up, 2F wide), the fused activation, down; the
    lowering replaces these with :mod:`moesim.workload.moe_exec`'s framework-specific chains."""
    return ffn_forward_ops(*_expert_shape(spec, num_tokens), groups, spec.linear_dtype)


def expert_backward_input_ops(spec: MoESpec, num_tokens: int, groups: int = 1) -> list[ComputeOp]:
    """Input-gradient ops of :func:`expert_forward_ops`."""
    return ffn_backward_input_ops(*_expert_shape(spec, num_tokens), groups, spec.linear_dtype)


def expert_backward_weight_ops(spec: MoESpec, num_tokens: int, groups: int = 1) -> list[ComputeOp]:
    """Weight-gradient GEMMs of :func:`expert_forward_ops`."""
    return ffn_backward_weight_ops(*_expert_shape(spec, num_tokens), groups, spec.linear_dtype)


def _shared_local(spec: MoESpec, tp: int) -> int:
    check_divides("tp", tp, spec.shared_ffn_hidden, "the shared-expert width")
    return spec.shared_ffn_hidden // tp


def _shared_shape(spec: MoESpec, num_tokens: int, tp: int) -> tuple[int, int, int, str, str, str]:
    return num_tokens, spec.hidden, _shared_local(spec, tp), spec.activation, spec.dtype, "shared"


def shared_expert_forward_ops(spec: MoESpec, num_tokens: int, tp: int = 1) -> list[ComputeOp]:
    """Forward of the fused shared experts on ``num_tokens`` (all-gathered) tokens, its width
    sharded over ``tp``. Empty when the model has no shared expert."""
    return ffn_forward_ops(*_shared_shape(spec, num_tokens, tp), 1, spec.linear_dtype,
                           fused_activation=spec.activation_fusion) if spec.num_shared_experts \
        else []


def shared_expert_backward_input_ops(spec: MoESpec, num_tokens: int, tp: int = 1) -> list[ComputeOp]:
    return ffn_backward_input_ops(*_shared_shape(spec, num_tokens, tp), 1, spec.linear_dtype,
                                  fused_activation=spec.activation_fusion) if spec.num_shared_experts \
        else []


def shared_expert_backward_weight_ops(spec: MoESpec, num_tokens: int, tp: int = 1) -> list[ComputeOp]:
    return ffn_backward_weight_ops(*_shared_shape(spec, num_tokens, tp), 1, spec.linear_dtype,
                                   fused_activation=spec.activation_fusion) if spec.num_shared_experts else []


# -- all-to-all payloads ------------------------------------------------------------------
def dispatch_bytes_per_token(spec: MoESpec) -> float:
    """Bytes of one token sent to one destination in the dispatch all-to-all.

    FP8: hidden bytes + one fp32 scale per 128 elements + 16 bytes of metadata (DeepEP
    ``tests/test_low_latency.py``: 7168 + 7168/128*4 + 16 = 7408 B). BF16: 2 * hidden.
    """
    if spec.dispatch_dtype == "fp8":
        return spec.hidden + -(-spec.hidden // FP8_BLOCK) * 4 + 16.0
    return 2.0 * spec.hidden


def combine_bytes_per_token(spec: MoESpec) -> float:
    """Bytes of one token returned in the combine all-to-all (BF16: 2 * hidden, 14336 B at
    hidden 7168, as DeepSeek-V3 does)."""
    return 2.0 * spec.hidden


# -- the whole MoE block under balanced routing -------------------------------------------
def balanced_expert_loads(spec: MoESpec, routed_pairs: int, ep: int = 1) -> list[tuple[int, int]]:
    """Token counts of the ``num_experts / ep`` local experts when ``routed_pairs`` token-expert
    pairs arrive spread as evenly as integers allow: ``[(tokens, num_experts_with_it), ...]``."""
    check_divides("ep", ep, spec.num_experts, "num_experts")
    local = spec.num_experts // ep
    base, extra = divmod(routed_pairs, local)
    loads = [(base + 1, extra), (base, local - extra)]
    return [(tokens, count) for tokens, count in loads if count]


def _experts_balanced(spec: MoESpec, routed_pairs: int, ep: int, phase: str) -> list[ComputeOp]:
    build = {"forward": expert_forward_ops, "backward_input": expert_backward_input_ops,
             "backward_weight": expert_backward_weight_ops}[phase]
    return [op for tokens, count in balanced_expert_loads(spec, routed_pairs, ep) for op in build(spec, tokens, count)]


def _block_loc(spec: MoESpec, mbs: int, tp: int, sp: bool) -> tuple[int, int, float]:
    """(tokens routed on this rank, tokens of the microbatch, element bytes)."""
    return moe_input_tokens(spec, mbs, tp, sp), spec.tokens(mbs), float(DTYPE_BYTES[spec.dtype])


def _shared_comm(spec: MoESpec, tokens: int, tp: int, e: float,
                 names: tuple[str, str]) -> tuple[list[CommOp], list[CommOp]]:
    """SP all-gather before and reduce-scatter after the TP-sharded shared experts."""
    if not spec.num_shared_experts or tp == 1:
        return [], []
    size = e * tokens * spec.hidden
    return [CommOp("all_gather", size, names[0])], [CommOp("reduce_scatter", size, names[1])]


def _layer_edges(spec: MoESpec, act_bytes: float) -> tuple[list[ComputeOp], list[ComputeOp]]:
    """The pre-norm (read + write) and the residual add (2 reads + write) around the MoE module
    inside a decoder layer; none for a bare MoE block (``spec.attention`` False)."""
    if not spec.attention:
        return [], []
    return [MemoryOp("norm", 2 * act_bytes, "moe.norm")], [MemoryOp("elementwise", 3 * act_bytes, "moe.residual")]


def _bwd_edges(spec: MoESpec, act_bytes: float) -> list[ComputeOp]:
    """Backward of :func:`_layer_edges`: the norm's (3 x activations) and the residual's."""
    if not spec.attention:
        return []
    return [MemoryOp("norm", 3 * act_bytes, "moe.norm.bwd"), MemoryOp("elementwise", 3 * act_bytes, "moe.residual.bwd")]


def moe_block_forward_program(spec: MoESpec, mbs: int, tp: int = 1, sp: bool = False,
                              ep: int = 1, token_movement: str = "torchtitan") -> list[ProgramItem]:
    """Forward of the MoE FFN block (norm .. residual) on one rank, balanced routing; router and
    permute / unpermute as ``token_movement``'s framework runs them (:mod:`moesim.workload.moe_exec`).
    A bare MoE block (``spec.attention`` False: the frameworks' MoE module alone, as ``moesim
    layer --block moe`` simulates it) has no pre-norm or residual add: those belong to the layer."""
    T_in, T, e = _block_loc(spec, mbs, tp, sp)
    pairs = T_in * spec.top_k
    gather, scatter = _shared_comm(spec, T, tp, e, ("shared.sp_all_gather", "shared.sp_reduce_scatter"))
    shared_tokens = T if tp > 1 else T_in
    norm, residual = _layer_edges(spec, e * T_in * spec.hidden)
    return [*norm,
            *movement.dispatch_side_forward(spec, T_in, token_movement, ep),
            CommOp("all_to_all", pairs * dispatch_bytes_per_token(spec), "moe.dispatch", "ep"),
            *_experts_balanced(spec, pairs, ep, "forward"),
            CommOp("all_to_all", pairs * combine_bytes_per_token(spec), "moe.combine", "ep"),
            *movement.combine_side_forward(spec, T_in, token_movement),
            *gather, *shared_expert_forward_ops(spec, shared_tokens, tp), *scatter, *residual]


def moe_block_backward_input_program(spec: MoESpec, mbs: int, tp: int = 1, sp: bool = False,
                                     ep: int = 1, token_movement: str = "torchtitan") -> list[ProgramItem]:
    """Activation-gradient backward of the MoE block, balanced routing. The two all-to-alls
    carry gradients in the model dtype."""
    T_in, T, e = _block_loc(spec, mbs, tp, sp)
    pairs = T_in * spec.top_k
    gather, scatter = _shared_comm(spec, T, tp, e, ("shared.sp_all_gather.bwd", "shared.sp_reduce_scatter.bwd"))
    shared_tokens = T if tp > 1 else T_in
    grad_bytes = pairs * e * spec.hidden
    return [*gather, *shared_expert_backward_input_ops(spec, shared_tokens, tp), *scatter,
            *movement.combine_side_backward(spec, T_in, token_movement),
            CommOp("all_to_all", grad_bytes, "moe.combine.bwd", "ep"),
            *_experts_balanced(spec, pairs, ep, "backward_input"),
            CommOp("all_to_all", grad_bytes, "moe.dispatch.bwd", "ep"),
            *movement.dispatch_side_backward(spec, T_in, token_movement), *_bwd_edges(spec, e * T_in * spec.hidden)]


def moe_block_backward_weight_ops(spec: MoESpec, mbs: int, tp: int = 1, sp: bool = False,
                                  ep: int = 1) -> list[ComputeOp]:
    """Weight-gradient GEMMs of the MoE block (experts, shared experts, router), balanced."""
    T_in, T, _ = _block_loc(spec, mbs, tp, sp)
    shared_tokens = T if tp > 1 else T_in
    return (_experts_balanced(spec, T_in * spec.top_k, ep, "backward_weight")
            + shared_expert_backward_weight_ops(spec, shared_tokens, tp) + router_backward_weight_ops(spec, T_in))


def moe_block_activation_bytes(spec: MoESpec, mbs: int, tp: int = 1, sp: bool = False, ep: int = 1) -> float:
    """Bytes the MoE block keeps for backward on one rank under balanced routing: norm input,
    router input and fp32 probabilities, the received tokens, expert internals and outputs (for
    the probability gradient), and the shared expert's input and internals."""
    T_in, T, e = _block_loc(spec, mbs, tp, sp)
    check_divides("ep", ep, spec.num_experts, "num_experts")
    pairs = T_in * spec.top_k  # balanced: every rank receives as many pairs as it sends
    kept = 2 * e * T_in * spec.hidden + 4.0 * T_in * spec.num_experts
    kept += 2 * e * pairs * spec.hidden
    kept += ffn_internal_activation_bytes(pairs, spec.expert_ffn_hidden, spec.activation, spec.dtype,
                                           spec.activation_fusion)
    if spec.num_shared_experts:
        shared_tokens = T if tp > 1 else T_in
        kept += e * shared_tokens * spec.hidden * (1 if tp > 1 else 0)
        kept += ffn_internal_activation_bytes(shared_tokens, _shared_local(spec, tp), spec.activation, spec.dtype,
                                               spec.activation_fusion)
    return kept


def moe_block_weight_bytes(spec: MoESpec, tp: int = 1, ep: int = 1, expert_tp: int = 1) -> float:
    """Bytes of one MoE block's weights on one rank: ``num_experts / ep`` experts (``1 / expert_tp``
    of each: ``ParallelPlan.expert_tp``), the shared experts sharded over tp, the replicated router
    and norm."""
    check_divides("ep", ep, spec.num_experts, "num_experts")
    shared = ffn_params(spec.hidden, _shared_local(spec, tp), spec.activation) if spec.num_shared_experts else 0
    params = spec.num_experts // ep * spec.expert_params / expert_tp + shared + spec.router_params + spec.norm_params
    return params * DTYPE_BYTES[spec.dtype]
