"""The knobs of a per-GPU memory budget: :class:`MemoryConfig`, validated at construction.

Everything the parallel plan (``ParallelPlan``: tp, dp, pp, vpp, micro-batch size) and the
model spec do not already say lives here: recomputation, ZeRO stage, optimizer and dtypes,
expert parallelism (ep, expert tensor parallelism, redundant expert replicas), framework
reserve, communication-buffer sizing, and the inference shape (batch, context, KV-cache dtype).
Defaults describe Megatron-style bf16 mixed-precision training with Adam; each default that is
an assumption says so next to it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES

GIB = 2**30
RECOMPUTE_MODES = ("none", "selective", "full")
RECOMPUTE_METHODS = ("uniform", "block", "every")   # which layers "full" recomputes (MemoryConfig.recompute_at)
OPTIMIZERS = ("adam", "sgd")
ZERO_STAGES = (0, 1, 2, 3)
# Assumption, after the lab's SAFETY_BUFFER_GB = 4.0 (reference moe_and_hardware.md §7.2):
# CUDA context (~0.5 GiB), NCCL communicator buffers and caching-allocator fragmentation.
# Measure it on the target with torch.cuda.mem_get_info() before and after the first step.
DEFAULT_FRAMEWORK_RESERVE_BYTES = 4 * GIB
# Zero-bubble schedules split backward into B and W; between them a microbatch keeps the
# inputs of the weight GEMMs. ZB paper Table 1 (reference pipeline_schedules.md §1.3):
# M_W = 32sbh of M_B = 34sbh + 5as^2b; with FlashAttention (no s^2 term) that is 32/34.
DEFAULT_W_RETAINED_FRACTION = 32 / 34
# vLLM's chunked-prefill token budget per step (max_num_batched_tokens); an assumption.
DEFAULT_TOKENS_PER_STEP = 8192
# Pipeline p2p tensors alive per path: forward send + recv, backward send + recv.
DEFAULT_P2P_BUFFERS_PER_PATH = 4


def _check_dtype(field: str, dtype: str) -> None:
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:  # a list here is not hashable
        raise ConfigError(field, f"unknown dtype {dtype!r}", f"use one of: {', '.join(DTYPE_BYTES)}")


def _check_int(field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}")


def _check_choice(field: str, value: object, choices: tuple) -> None:
    if isinstance(value, bool) or value not in choices:  # True == 1 would pass as ZeRO stage 1
        raise ConfigError(field, f"unknown value {value!r}", f"use one of: {', '.join(map(str, choices))}")


@dataclass(frozen=True, kw_only=True)
class MemoryConfig:
    """How the memory of one GPU is spent, beyond what the plan and the model say.

    Training (Megatron-Core names; :mod:`moesim.memory.activations` lists the tensors each frees):
        recompute: ``--recompute-granularity``: "none", "selective" (recompute the modules of
            ``recompute_modules``) or "full" (keep only each layer's input).
        recompute_method, recompute_num_layers: which layers "full" recomputes, in each model
            chunk (pipeline stage): Megatron's ``--recompute-method uniform`` (every layer, one
            kept input per group of N layers; N = 1 keeps every layer's input) or ``block`` (the
            first N layers; the others keep everything), and torchtitan's selective AC with an
            integer N (``"every"``: every N-th layer, the others keep everything).
        recompute_modules: ``--recompute-modules`` under "selective": any of core_attn, moe_act,
            layernorm, mla_up_proj, mlp, moe, shared_experts; None = Megatron's default
            (core_attn: Korthikanti et al. 2022's selective recomputation).
        fp8_linear_inputs: linear layers keep the FP8 copy of their inputs (1 B + a fp32 scale
            per 128) instead of bf16, as FP8 training (TE, DeepSeek-V3 §3.3) does; None = when
            the model's GEMMs run in FP8 (``spec.gemm_dtype``).
        fp8_swiglu_inputs: MoE SwiGLU inputs cached in FP8 too (DeepSeek-V3 §3.3.3).
        probs_on_expert_output: the router scores multiply the expert outputs, so backward keeps
            them (torchtitan); False: applied inside the activation (Megatron's grouped MLP).
        expert_activation_fusion: the routed experts' SwiGLU is one fused kernel (nothing kept
            beyond its input); False: eager ``silu(gate) * up``, which also keeps ``silu(gate)``;
            None = the model's ``activation_fusion``. A scenario sets it as its experts run
            (:func:`moesim.workload.moe_exec.experts_fuse_activation`: Megatron-Core's grouped MLP
            fuses it whatever the flag says).
        moe_permute_fusion: ``--moe-permute-fusion``: the received tokens are permuted in place
            of a second copy; without it the dispatch holds both (``a2a_buffers``).
        precision_aware_optimizer: ``--use-precision-aware-optimizer`` (needs the distributed
            optimizer): Adam moments in ``exp_avg_dtype`` / ``exp_avg_sq_dtype``
            (``--exp-avg-dtype``, ``--exp-avg-sq-dtype``), master weights in ``main_params_dtype``.
        account_for_embedding_in_pipeline_split / account_for_loss_in_pipeline_split: Megatron's
            options: the embedding counts as one layer of the first stage, the output head
            and loss (and each MTP module, a decoder layer of the last stage, as Megatron's
            ``mL`` layout) as layers of the last, when splitting layers over stages.
        zero_stage: 0-3. 1 shards optimizer states over data parallelism, 2 also gradients,
            3 also parameters (plus a gather buffer). ``distributed_optimizer`` (Megatron) is
            ZeRO-1: it raises a stage-0 config to 1.
        optimizer: "adam" (two states) or "sgd" (one momentum state).
        master_weights: keep an fp32 copy of bf16/fp16 parameters in the optimizer.
        param_dtype / optimizer_state_dtype: storage dtypes. ``grad_dtype`` None means the
            plan's ``grad_dtype_bytes`` (Megatron accumulates fp32 ``main_grad``).
        flash_attention, dropout: passed to the workload's activation accounting.
        w_retained_fraction: share of a microbatch's activations kept from B until W in
            schedules that split the backward.
    Mixture of experts:
        ep: expert-parallel degree (routed experts per GPU = num_experts / ep).
        expert_tp: tensor parallelism inside each expert (1 = whole experts).
        num_redundant_experts: extra expert replicas hosted on every GPU (EPLB / DeepSeek).
        a2a_buffer_bytes: dispatch/combine staging buffers per GPU; None derives them.
    Buffers:
        framework_reserve_bytes: CUDA context + NCCL + allocator fragmentation (assumption).
        p2p_buffers: pipeline send/recv tensors alive per GPU; None = 4 per path.
    Inference (``inference=True``; no gradients, optimizer or stored activations):
        batch: sequences held per model replica; context_len: tokens per sequence (0 means
        the model's seq_len); kv_cache_dtype; tokens_per_step: tokens one forward step runs.
    """

    recompute: str = "none"
    recompute_method: str = "uniform"
    recompute_num_layers: int = 1
    recompute_modules: tuple[str, ...] | None = None
    fp8_linear_inputs: bool | None = None
    fp8_swiglu_inputs: bool = False
    probs_on_expert_output: bool = False
    expert_activation_fusion: bool | None = None
    moe_permute_fusion: bool = True
    precision_aware_optimizer: bool = False
    exp_avg_dtype: str = "fp32"
    exp_avg_sq_dtype: str = "fp32"
    main_params_dtype: str = "fp32"
    account_for_embedding_in_pipeline_split: bool = False
    account_for_loss_in_pipeline_split: bool = False
    zero_stage: int = 0
    distributed_optimizer: bool = False
    optimizer: str = "adam"
    master_weights: bool = True
    param_dtype: str = "bf16"
    grad_dtype: str | None = None
    optimizer_state_dtype: str = "fp32"
    flash_attention: bool = True
    dropout: bool = False
    w_retained_fraction: float = DEFAULT_W_RETAINED_FRACTION
    ep: int = 1
    expert_tp: int = 1
    num_redundant_experts: int = 0
    a2a_buffer_bytes: float | None = None
    framework_reserve_bytes: float = DEFAULT_FRAMEWORK_RESERVE_BYTES
    p2p_buffers: int | None = None
    inference: bool = False
    batch: int = 1
    context_len: int = 0
    kv_cache_dtype: str = "bf16"
    tokens_per_step: int = DEFAULT_TOKENS_PER_STEP

    def __post_init__(self) -> None:
        _check_choice("recompute", self.recompute, RECOMPUTE_MODES)
        _check_int("zero_stage", self.zero_stage, 0)
        _check_choice("zero_stage", self.zero_stage, ZERO_STAGES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for field in ("param_dtype", "optimizer_state_dtype", "kv_cache_dtype", "exp_avg_dtype", "exp_avg_sq_dtype",
                      "main_params_dtype"):
            _check_dtype(field, getattr(self, field))
        if self.grad_dtype is not None:
            _check_dtype("grad_dtype", self.grad_dtype)
        for field, minimum in (("ep", 1), ("expert_tp", 1), ("num_redundant_experts", 0), ("batch", 1),
                               ("context_len", 0), ("tokens_per_step", 1)):
            _check_int(field, getattr(self, field), minimum)
        if self.p2p_buffers is not None:
            _check_int("p2p_buffers", self.p2p_buffers, 0)
        for field in ("distributed_optimizer", "master_weights", "flash_attention", "dropout", "inference",
                      "fp8_swiglu_inputs", "probs_on_expert_output", "moe_permute_fusion", "precision_aware_optimizer",
                      "account_for_embedding_in_pipeline_split", "account_for_loss_in_pipeline_split"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(field, f"must be true or false, got {getattr(self, field)!r}")
        for field in ("fp8_linear_inputs", "expert_activation_fusion"):
            if getattr(self, field) is not None and not isinstance(getattr(self, field), bool):
                raise ConfigError(field, f"must be true, false or None, got {getattr(self, field)!r}")
        self._check_recompute_modules()
        self._check_recompute_layers()
        self._check_optimizer_precision()
        self._check_bytes()
        frac = self.w_retained_fraction
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac <= 1.0:
            raise ConfigError("w_retained_fraction", f"must be a number in [0, 1], got {frac!r}")

    def _check_recompute_layers(self) -> None:
        """``recompute_method`` / ``recompute_num_layers`` choose the layers of full recomputation
        (Megatron refuses --recompute-method without --recompute-granularity full)."""
        _check_choice("recompute_method", self.recompute_method, RECOMPUTE_METHODS)
        _check_int("recompute_num_layers", self.recompute_num_layers, 1)
        if self.recompute != "full" and (self.recompute_method, self.recompute_num_layers) != ("uniform", 1):
            raise ConfigError("recompute_method", f"recompute_method={self.recompute_method!r}, recompute_num_layers="
                              f"{self.recompute_num_layers} choose the layers of full recomputation, but recompute "
                              f"is {self.recompute!r}", "set recompute='full', or leave both at their defaults")

    def recompute_at(self, position: int) -> str:
        """What full recomputation does to the layer at ``position`` (0-based) of its model chunk:
        ``"input"`` (recomputed, its input kept), ``"recomputed"`` (recomputed, the input kept by
        its group's first layer: uniform with N > 1), ``"kept"`` (not recomputed: every tensor
        kept), or ``"none"`` when the config does not recompute whole layers."""
        if self.recompute != "full":
            return "none"
        n = self.recompute_num_layers
        if self.recompute_method == "block":
            return "input" if position < n else "kept"
        if self.recompute_method == "every":
            return "input" if (position + 1) % n == 0 else "kept"
        return "input" if position % n == 0 else "recomputed"

    def _check_recompute_modules(self) -> None:
        """Megatron accepts --recompute-modules only with --recompute-granularity selective, and
        only the module names it knows."""
        from moesim.memory.activations import RECOMPUTE_MODULES

        mods = self.recompute_modules
        if mods is None:
            return
        if isinstance(mods, list):  # YAML / TOML / JSON scenarios give lists
            mods = tuple(mods)
            object.__setattr__(self, "recompute_modules", mods)
        if not isinstance(mods, tuple) or not all(isinstance(m, str) for m in mods):
            raise ConfigError("recompute_modules", f"must be a tuple of module names, got {mods!r}",
                              f"use some of: {', '.join(RECOMPUTE_MODULES)}")
        unknown = [m for m in mods if m not in RECOMPUTE_MODULES]
        if unknown:
            raise ConfigError("recompute_modules", f"unknown module {', '.join(map(repr, unknown))}",
                              f"use some of: {', '.join(RECOMPUTE_MODULES)}")
        if self.recompute != "selective":
            raise ConfigError("recompute_modules", f"recompute_modules {mods} needs recompute='selective' "
                              f"(Megatron --recompute-granularity selective), but recompute is {self.recompute!r}",
                              "set recompute='selective', or drop recompute_modules")

    def _check_optimizer_precision(self) -> None:
        """Megatron: --use-precision-aware-optimizer needs --use-distributed-optimizer, and the
        moment / master dtypes are its options only."""
        changed = [f for f in ("exp_avg_dtype", "exp_avg_sq_dtype", "main_params_dtype") if getattr(self, f) != "fp32"]
        if changed and not self.precision_aware_optimizer:
            raise ConfigError(changed[0], f"{changed[0]}={getattr(self, changed[0])!r} needs "
                              "precision_aware_optimizer (Megatron --use-precision-aware-optimizer)",
                              "set precision_aware_optimizer=True, or use optimizer_state_dtype")
        if self.precision_aware_optimizer and self.effective_zero_stage < 1:
            raise ConfigError("precision_aware_optimizer", "the precision-aware optimizer needs the distributed "
                              "optimizer (Megatron --use-distributed-optimizer), but zero_stage is 0",
                              "set distributed_optimizer=True (or zero_stage >= 1)")
        if self.precision_aware_optimizer and self.optimizer_state_dtype != "fp32":
            raise ConfigError("optimizer_state_dtype", "set both optimizer_state_dtype and precision_aware_optimizer: "
                              "the moments' dtypes are exp_avg_dtype / exp_avg_sq_dtype there",
                              "keep optimizer_state_dtype='fp32' with precision_aware_optimizer")

    @property
    def active_recompute_modules(self) -> tuple[str, ...]:
        """The recompute modules in force: none unless recompute is 'selective'."""
        from moesim.memory.activations import DEFAULT_RECOMPUTE_MODULES

        if self.recompute != "selective":
            return ()
        return self.recompute_modules if self.recompute_modules is not None else DEFAULT_RECOMPUTE_MODULES

    def caches_fp8_linear_inputs(self, spec: object) -> bool:
        """Whether linear layers keep FP8 copies of their inputs for ``spec``."""
        if self.fp8_linear_inputs is not None:
            return self.fp8_linear_inputs
        return getattr(spec, "linear_dtype", "bf16") == "fp8"

    def options(self) -> str:
        """The training memory options in force, in Megatron's terms, on one line."""
        parts = [f"recompute {self.recompute}" + (f" ({self.recompute_method}, {self.recompute_num_layers} layer(s))"
                                                   if (self.recompute_method, self.recompute_num_layers)
                                                   != ("uniform", 1) else "")]
        if self.active_recompute_modules:
            parts[0] += f" ({' '.join(self.active_recompute_modules)})"
        parts.append(f"ZeRO stage {self.effective_zero_stage}" + (" (distributed optimizer)" if self.distributed_optimizer
                                                                 else ""))
        if self.precision_aware_optimizer:
            parts.append(f"precision-aware optimizer (exp_avg {self.exp_avg_dtype}, exp_avg_sq {self.exp_avg_sq_dtype}, "
                         f"main params {self.main_params_dtype})")
        else:
            parts.append(f"optimizer states {self.optimizer_state_dtype}")
        fp8 = {True: "FP8 linear inputs", False: "bf16 linear inputs", None: "linear inputs in the GEMM dtype"}
        parts.append(fp8[self.fp8_linear_inputs] + (" + FP8 SwiGLU inputs" if self.fp8_swiglu_inputs else ""))
        parts.append("fused permutation" if self.moe_permute_fusion else "unfused permutation (second token copy)")
        parts.append(f"params {self.param_dtype}")
        edges = [name for name, on in (("embedding", self.account_for_embedding_in_pipeline_split),
                                       ("loss", self.account_for_loss_in_pipeline_split)) if on]
        if edges:
            parts.append(f"pipeline split counts the {' and '.join(edges)}")
        return "; ".join(parts)

    def split_slots(self, spec: object) -> tuple[int, int]:
        """(leading, trailing) non-layer slots of the pipeline split for ``spec``."""
        leading = 1 if self.account_for_embedding_in_pipeline_split else 0
        trailing = (1 + getattr(spec, "num_nextn_predict_layers", 0)) if self.account_for_loss_in_pipeline_split else 0
        return leading, trailing

    def _check_bytes(self) -> None:
        for field, optional in (("framework_reserve_bytes", False), ("a2a_buffer_bytes", True)):
            value = getattr(self, field)
            if value is None and optional:
                continue
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not is_number or not (math.isfinite(value) and value >= 0):
                raise ConfigError(field, f"must be a finite number of bytes >= 0, got {value!r}")

    @property
    def effective_zero_stage(self) -> int:
        """The ZeRO stage in force: the distributed optimizer counts as stage 1."""
        return max(self.zero_stage, 1 if self.distributed_optimizer else 0)

    @property
    def param_bytes(self) -> float:
        return DTYPE_BYTES[self.param_dtype]

    def grad_bytes(self, plan_grad_dtype_bytes: int) -> float:
        """Bytes per gradient element: ``grad_dtype`` if set, else the plan's."""
        return DTYPE_BYTES[self.grad_dtype] if self.grad_dtype else float(plan_grad_dtype_bytes)

    @property
    def optimizer_bytes_per_param(self) -> float:
        """Optimizer bytes per parameter before sharding: fp32 master copy (unless the params
        are already fp32 or ``master_weights`` is off) plus 2 Adam states or 1 SGD momentum.
        bf16 params + Adam in fp32 = 4 + 4 + 4 = 12 B (ZeRO paper's K = 12)."""
        master = 4.0 if self.master_weights and DTYPE_BYTES[self.param_dtype] < 4 else 0.0
        if self.precision_aware_optimizer:
            master = DTYPE_BYTES[self.main_params_dtype] if master else 0.0
            moments = DTYPE_BYTES[self.exp_avg_dtype] + (DTYPE_BYTES[self.exp_avg_sq_dtype]
                                                         if self.optimizer == "adam" else 0.0)
            return master + moments
        states = 2 if self.optimizer == "adam" else 1
        return master + states * DTYPE_BYTES[self.optimizer_state_dtype]
