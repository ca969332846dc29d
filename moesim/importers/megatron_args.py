"""Megatron-LM's argument table and parser, for :mod:`moesim.importers.megatron`: the option
strings of ``megatron/training/arguments.py`` (``megatron_flags.json``, dumped from Megatron-LM with
the ModelOpt arguments ``pretrain_gpt.py`` adds), an argparse parser built from them that raises
ConfigError, and the given values over Megatron's defaults (:class:`Args`)."""
from __future__ import annotations

import argparse
import difflib
import functools
import json
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError

FLAGS_FILE = Path(__file__).with_name("megatron_flags.json")


@functools.cache
def option_table() -> dict[str, dict[str, Any]]:
    """Megatron's option strings -> their description (see the module docstring), with the ModelOpt
    arguments ``pretrain_gpt.py`` adds (:func:`modelopt_options`)."""
    doc = json.loads(FLAGS_FILE.read_text())
    return {**doc["options"], **doc["modelopt_options"]}


@functools.cache
def modelopt_options() -> frozenset[str]:
    """The option strings of ``megatron.post_training.arguments.add_modelopt_args``: ``pretrain_gpt.py``
    adds them (``extra_args_provider``) when nvidia-modelopt is installed, and Megatron's own examples
    pass them (examples/gptoss/02_train.sh: ``--export-force-local-attention --enable-gpt-oss``).
    They act only with ModelOpt enabled (a ModelOpt checkpoint in ``--load``, or
    ``--export-kd-teacher-load``), which moesim does not simulate: listed, never used."""
    return frozenset(json.loads(FLAGS_FILE.read_text())["modelopt_options"])


@functools.cache
def literal_flags() -> frozenset[str]:
    """Flags whose value Megatron converts (int, float, a choice): a shell expression there is an error."""
    return frozenset(f for f, o in option_table().items()
                     if o["kind"] == "value" and (o["type"] in ("int", "float") or o.get("choices")))


def flag_of(dest: str) -> str:
    """The option string of ``dest`` (the first in Megatron's table)."""
    return next((f for f, o in option_table().items() if o["dest"] == dest), "--" + dest.replace("_", "-"))


def given_flags(tokens: list[str]) -> list[str]:
    """The option strings the user wrote, in order, without duplicates."""
    seen: list[str] = []
    for t in tokens:
        if t.startswith("--"):
            flag = t.split("=", 1)[0]
            if flag not in seen:
                seen.append(flag)
    return seen


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError("--megatron-args", message, "check the flag against Megatron-LM's arguments")


@functools.cache
def _parser() -> argparse.ArgumentParser:
    p = _RaisingParser(prog="megatron", add_help=False, allow_abbrev=False)
    for flag, o in option_table().items():
        kw: dict[str, Any] = {"dest": o["dest"], "default": argparse.SUPPRESS}
        if o["kind"] == "true" or (o["kind"] == "boolopt" and not flag.startswith("--no-")):
            kw["action"] = "store_true"
        elif o["kind"] in ("false", "boolopt"):
            kw["action"] = "store_false"
        else:
            kw["type"] = {"int": int, "float": float}.get(o["type"], str)
            if o.get("nargs"):
                kw["nargs"] = o["nargs"]
            if o.get("choices") and o["type"] == "str" and o["dest"] != "attention_backend":
                kw["choices"] = o["choices"]
        p.add_argument(flag, **kw)
    return p


def parse_args(tokens: list[str]) -> argparse.Namespace:
    ns, rest = _parser().parse_known_args(tokens)
    unknown = [t.split("=", 1)[0] for t in rest if t.startswith("-")]
    if unknown:
        hints = [f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, option_table(), 1)) else u
                 for u in unknown]
        raise ConfigError("--megatron-args", f"not Megatron-LM argument(s): {', '.join(hints)}",
                          "use the names of megatron/training/arguments.py")
    stray = [t for t in rest if not t.startswith("-")]
    if stray:
        raise ConfigError("--megatron-args", f"value(s) without a flag: {' '.join(stray[:5])}",
                          "every value follows its --flag")
    return ns


class Args:
    """Given values, else Megatron's defaults."""

    def __init__(self, ns: argparse.Namespace, notes: list[str]) -> None:
        self.given = vars(ns)
        self.defaults = {o["dest"]: o.get("default") for o in option_table().values() if "default" in o}
        if self.given.get("recompute_activations"):   # validate_args: --recompute-activations is selective
            before = self.given.get("recompute_granularity")
            self.given["recompute_granularity"] = "selective"
            notes.append("--recompute-activations: --recompute-granularity selective, as Megatron's validate_args "
                         "sets it"
                         + (f" (overriding --recompute-granularity {before}, as Megatron does)"
                            if before not in (None, "selective") else ""))

    def get(self, dest: str) -> Any:
        return self.given[dest] if dest in self.given else self.defaults.get(dest)

    def has(self, dest: str) -> bool:
        return dest in self.given


# Integer flags that must be >= 1 when given (0 is no size: Megatron fails on it, or asserts);
# ``--num-experts 0`` is Megatron's "no experts" (validate_args turns it into None): >= 0.
_POSITIVE = ("micro_batch_size", "global_batch_size", "seq_length", "num_layers", "hidden_size", "ffn_hidden_size",
             "num_attention_heads", "num_query_groups", "kv_channels", "vocab_size", "tensor_model_parallel_size",
             "pipeline_model_parallel_size", "expert_model_parallel_size", "expert_tensor_parallel_size",
             "context_parallel_size", "num_layers_per_virtual_pipeline_stage", "num_virtual_stages_per_pipeline_rank",
             "moe_router_topk", "moe_ffn_hidden_size", "moe_shared_expert_intermediate_size", "moe_router_num_groups",
             "moe_router_group_topk", "padded_vocab_size", "q_lora_rank", "kv_lora_rank", "qk_head_dim", "v_head_dim",
             "moe_deepep_num_sms")
_NON_NEGATIVE = ("num_experts", "mtp_num_layers", "qk_pos_emb_head_dim")


def check_values(a: Args) -> None:
    """Sizes of 0 (or below) are errors naming the flag, never replaced by a default."""
    for dest in _POSITIVE + _NON_NEGATIVE:
        value = a.given.get(dest)
        if value is not None and value < (1 if dest in _POSITIVE else 0):
            raise ConfigError(flag_of(dest), f"must be >= {1 if dest in _POSITIVE else 0}, got {value}",
                              f"give a positive {flag_of(dest)}, or leave the flag out for Megatron's default")


# dest -> the scenario field it sets (for the report); the builder below reads them.
MODELLED = {
    "tensor_model_parallel_size": "plan.tp", "pipeline_model_parallel_size": "plan.pp",
    "expert_model_parallel_size": "plan.ep", "sequence_parallel": "plan.sequence_parallel",
    "num_layers_per_virtual_pipeline_stage": "plan.vpp, schedule", "num_virtual_stages_per_pipeline_rank":
    "plan.vpp, schedule", "context_parallel_size": "(1 only)",
    "expert_tensor_parallel_size": "plan.ep_layout (1 with tp > 1: folded), memory.expert_tp",
    "micro_batch_size": "plan.micro_batch_size", "global_batch_size": "plan.num_microbatches",
    "seq_length": "model.seq_len", "num_layers": "model.num_layers", "hidden_size": "model.hidden",
    "padded_vocab_size": "model.vocab (the embedding's rows)",
    "ffn_hidden_size": "model.ffn_hidden", "num_attention_heads": "model.num_heads",
    "group_query_attention": "model.num_kv_heads", "num_query_groups": "model.num_kv_heads",
    "kv_channels": "model.head_dim", "swiglu": "model.activation", "normalization": "model.norm",
    "untie_embeddings_and_output_weights": "model.tied_embeddings", "vocab_size": "model.vocab",
    "multi_latent_attention": "model (MLA)", "q_lora_rank": "model.q_lora_rank", "kv_lora_rank": "model.kv_lora_rank",
    "qk_head_dim": "model.head_dim", "qk_pos_emb_head_dim": "model.qk_rope_head_dim", "v_head_dim": "model.v_head_dim",
    "mtp_num_layers": "model.num_nextn_predict_layers", "num_experts": "model.num_experts",
    "moe_router_topk": "model.top_k", "moe_ffn_hidden_size": "model.expert_ffn_hidden",
    "moe_shared_expert_intermediate_size": "model.num_shared_experts, shared_expert_ffn_hidden",
    "moe_layer_freq": "model.moe_layer_freq", "moe_router_num_groups": "model.n_groups",
    "moe_router_group_topk": "model.topk_groups", "moe_router_score_function": "model.score_func",
    "moe_router_enable_expert_bias": "model.expert_bias", "bias_swiglu_fusion": "model.activation_fusion",
    "bf16": "model.dtype, memory.param_dtype", "fp16": "model.dtype, memory.param_dtype", "fp8": "model.gemm_dtype",
    "add_bias_linear": "model.expert_linear_bias (MoE; other biases ride in GEMM epilogues)",
    "qk_layernorm": "model.qk_norm", "apply_rope_fusion": "model.rope_impl",
    "moe_token_dispatcher_type": "moe.dispatcher", "moe_enable_deepep": "moe.dispatcher",
    "moe_flex_dispatcher_backend": "moe.dispatcher", "moe_grouped_gemm": "moe.experts, moe.grouped_gemm",
    "transformer_impl": "moe.grouped_gemm (transformer_engine: te)",
    "moe_expert_capacity_factor": "moe.capacity_factor", "moe_pad_expert_input_to_capacity": "moe.experts",
    "moe_permute_fusion": "moe.token_movement, memory.moe_permute_fusion", "moe_router_fusion": "moe.token_movement",
    "moe_deepep_num_sms": "overlap.deepep_num_sms",
    "recompute_granularity": "memory.recompute", "recompute_modules": "memory.recompute_modules",
    "recompute_method": "memory.recompute_method", "recompute_num_layers": "memory.recompute_num_layers",
    "use_distributed_optimizer": "memory.distributed_optimizer",
    "optimizer": "memory.optimizer", "use_precision_aware_optimizer": "memory.precision_aware_optimizer",
    "exp_avg_dtype": "memory.exp_avg_dtype", "exp_avg_sq_dtype": "memory.exp_avg_sq_dtype",
    "main_params_dtype": "memory.main_params_dtype", "gradient_accumulation_fusion": "grad_accumulation",
    "account_for_embedding_in_pipeline_split": "memory.account_for_embedding_in_pipeline_split",
    "account_for_loss_in_pipeline_split": "memory.account_for_loss_in_pipeline_split",
    "attention_dropout": "memory.dropout", "hidden_dropout": "memory.dropout",
    "grad_reduce_in_bf16": "plan.grad_dtype_bytes",
    "overlap_grad_reduce": "overlap.overlap_grad_reduce", "overlap_param_gather": "overlap.overlap_param_gather",
    "tp_comm_overlap": "overlap.tp_comm_overlap", "moe_shared_expert_overlap": "overlap.moe_shared_expert_overlap",
    "delay_wgrad_compute": "overlap.delay_wgrad_compute",
    "overlap_moe_expert_parallel_comm": "overlap.overlap_moe_expert_parallel_comm",
    "recompute_activations": "memory.recompute (selective, as Megatron's validate_args sets it)",
    "attention_backend": "memory.flash_attention (unfused / local keep the score matrix)",
    "use_megatron_fsdp": "memory.zero_stage (per --data-parallel-sharding-strategy)",
    "data_parallel_sharding_strategy": "memory.zero_stage (no_shard 0, optim 1, optim_grads 2, optim_grads_params 3)",
    "megatron_fsdp_version": "memory.distributed_optimizer (v1 uses it)",
    "use_torch_fsdp2": "memory.zero_stage (3)",
    "torch_fsdp2_reshard_after_forward": "memory.zero_stage (2: kept gathered)",
    "window_size": "model.sliding_window (left + 1 tokens)", "window_attn_skip_freq": "model.layer_types",
    "softmax_type": "model.attention_sinks (learnable, off-by-one)", "quick_geglu": "model.activation (a gated GLU)",
    "bias_gelu_fusion": "model.activation_fusion (with --quick-geglu)",
}
# Flags (by destination prefix) that change neither time nor memory of a step.
NO_COST_PREFIXES = (
    "log", "save", "load", "data", "train_data", "valid_data", "test_data", "split", "tokenizer", "vocab_file",
    "merge_file", "lr", "min_lr", "warmup", "weight_decay", "start_weight_decay", "end_weight_decay", "adam_", "sgd_",
    "clip_grad", "eval", "seed", "init_method", "use_checkpoint", "no_load", "finetune", "exit", "tensorboard",
    "wandb", "timing", "profile", "use_pytorch_profiler", "distributed_backend", "distributed_timeout",
    "num_workers", "mock_data", "train_iters", "train_samples", "ckpt", "async_save", "rotary", "rope",
    "position_embedding_type", "max_position_embeddings", "norm_epsilon", "moe_aux_loss_coeff", "moe_z_loss_coeff",
    "moe_router_load_balancing_type", "moe_router_bias_update_rate",
    "moe_router_topk_scaling_factor", "moe_router_dtype", "moe_token_drop_policy", "moe_input_jitter_eps",
    "use_flash_attn", "make_vocab_size_divisible_by", "dataloader",
    "use_mcore_models", "no_create_attention_mask", "manual_gc", "check_for_nan",
    "bias_gelu_fusion", "no_bias_dropout_fusion", "apply_layernorm_1p", "init_model_with_meta_device", "dist_ckpt",
    "auto_detect_ckpt_format", "use_dist_ckpt", "result_rejected", "no_persist_layer_norm", "empty_unused_memory",
    "use_mcore_models", "add_position_embedding", "tiktoken", "num_dataset_builder_threads", "object_storage",
    "deprecated", "decoupled", "calculate_per_token_loss", "layernorm_zero_centered_gamma",
    "create_attention_mask_in_dataloader", "mmap_bin_files",
)
