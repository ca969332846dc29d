"""Megatron-LM arguments -> a moesim Scenario, with every flag accounted for.

The arguments are read with Megatron's own option table: ``megatron_flags.json`` holds every
option string of ``megatron.training.arguments.add_megatron_arguments`` at NVIDIA/Megatron-LM
d98e8a6 (2026-08-22) with its destination, kind (value / store_true / store_false), type,
``nargs``, choices and default. So a flag Megatron does not have is an error naming it (with the
closest real one), a value of the wrong type or outside its choices is an error, and a flag
that Megatron has but moesim does not model is listed, never silently ignored. Text may be a
file or a string, with ``\\`` line continuations and ``#`` comments; a launcher before the
script (``torchrun ... pretrain_gpt.py``) is dropped and said.

What becomes what (Megatron's names on the left):

* parallelism: ``--tensor-model-parallel-size`` -> ``plan.tp``, ``--pipeline-model-parallel-size``
  -> ``plan.pp``, ``--expert-model-parallel-size`` -> ``plan.ep`` (carved out of data
  parallelism), ``--num-layers-per-virtual-pipeline-stage`` / ``--num-virtual-stages-per-
  pipeline-rank`` -> ``plan.vpp`` and the interleaved schedule, ``--sequence-parallel``; data
  parallelism is the world size over tp x pp (the world is not a Megatron argument: ``--gpus`` /
  ``--nodes``); ``--context-parallel-size`` > 1 is refused (not modelled);
* batch: ``--micro-batch-size``, ``--global-batch-size`` -> microbatches = global / (micro x dp),
  ``--seq-length``;
* model: ``--num-layers``, ``--hidden-size``, ``--ffn-hidden-size``, ``--num-attention-heads``,
  ``--group-query-attention`` / ``--num-query-groups``, ``--kv-channels``, ``--swiglu``,
  ``--normalization``, ``--untie-embeddings-and-output-weights``, ``--vocab-size``, MLA
  (``--multi-latent-attention``, ``--q-lora-rank``, ``--kv-lora-rank``, ``--qk-head-dim``,
  ``--qk-pos-emb-head-dim``, ``--v-head-dim``), ``--mtp-num-layers``; or ``model=`` (a preset or a
  config.json) whose shape the flags, where given, must agree with;
* MoE: ``--num-experts``, ``--moe-router-topk``, ``--moe-ffn-hidden-size``,
  ``--moe-shared-expert-intermediate-size``, ``--moe-layer-freq``, ``--moe-router-num-groups`` /
  ``--moe-router-group-topk``, ``--moe-router-score-function``, ``--moe-token-dispatcher-type``
  (alltoall; flex with DeepEP -> ``deepep``; allgather is priced as alltoall and listed),
  ``--moe-grouped-gemm`` (else the SequentialMLP loop), ``--moe-expert-capacity-factor`` with
  ``--moe-pad-expert-input-to-capacity`` (padded experts), ``--moe-permute-fusion`` (fused
  token movement, and its memory), ``--moe-deepep-num-sms``;
* recompute, precision, optimizer: ``--recompute-granularity`` / ``--recompute-modules``,
  ``--bf16`` / ``--fp16`` (else fp32, as Megatron), ``--fp8-format`` (FP8 GEMMs), ``--optimizer``,
  ``--use-distributed-optimizer``, ``--use-precision-aware-optimizer`` and its dtypes,
  ``--no-gradient-accumulation-fusion``, the pipeline-split accounting flags, dropout;
* overlap: ``--overlap-grad-reduce``, ``--overlap-param-gather``, ``--tp-comm-overlap``,
  ``--moe-shared-expert-overlap``, ``--delay-wgrad-compute``, ``--overlap-moe-expert-parallel-comm``;
* attention and sharding: ``--attention-backend`` unfused / local -> ``memory.flash_attention=False``
  (the score matrix kept); ``--use-megatron-fsdp`` with ``--data-parallel-sharding-strategy`` and
  ``--use-torch-fsdp2`` (``--torch-fsdp2-no-reshard-after-forward``) -> ``memory.zero_stage``;
  ``--recompute-activations`` -> selective recompute (validate_args);
* GPT-OSS: ``--window-size L,0`` -> ``model.sliding_window`` L + 1, ``--window-attn-skip-freq`` ->
  ``model.layer_types`` (Megatron's ``is_layer_window_attention``), ``--softmax-type`` learnable /
  off-by-one -> ``model.attention_sinks``, ``--quick-geglu`` -> a gated GLU (priced as SwiGLU). The
  ModelOpt arguments ``pretrain_gpt.py`` adds (``--export-*``, ``--enable-gpt-oss``...) are accepted
  and listed as not modelled: they act only with ModelOpt enabled.

With ``model=`` the preset gives the architecture only (:func:`moesim.importers.common.preset_architecture`:
not its training precision or routing limit), every architecture flag given must agree with it (an
error naming both), and what Megatron builds from its own defaults where the flags are absent (no
MTP, no group-limited routing, no QK norm...) is said in the notes where it differs from the preset.
Sizes of 0 are errors naming the flag; Megatron's own defaults (``ffn_hidden_size`` = int(8h/3/64) *
64 with ``--swiglu``, else 4h) are used where a flag is absent.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError
from moesim.importers.common import ImportReport, divide, preset_architecture, world_size
from moesim.importers.launch_text import argument_tokens
from moesim.importers.megatron_args import (Args, check_values, flag_of, given_flags, literal_flags, modelopt_options,
                                            option_table, parse_args)

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
def read_megatron_args(text_or_path: str | Path, *, topology: str = "dgx_h100", nodes: int | None = None,
                       gpus: int | None = None, model: str | None = None, name: str = "megatron") -> ImportReport:
    """The scenario Megatron's arguments describe, and the account of every flag."""
    notes: list[str] = []
    tokens = argument_tokens(text_or_path, notes, literal_flags())
    given = given_flags(tokens)
    ns = parse_args(tokens)
    args = Args(ns, notes)
    check_values(args)
    _check_conflicts(args, given)
    spec_fields, model_used = _model(args, given, model, notes)
    if spec_fields.get("spec") != "MoESpec" and args.get("expert_model_parallel_size") > 1:
        raise ConfigError("--expert-model-parallel-size", f"{args.get('expert_model_parallel_size')} on a dense model "
                          "(Megatron asserts num_experts is set for expert parallelism)",
                          "give --num-experts (or an MoE --model), or --expert-model-parallel-size 1")
    plan, world_fields, schedule = _plan(args, topology, nodes, gpus, spec_fields, notes)
    scenario: dict[str, Any] = {"name": name, "topology": topology, **world_fields, "model": spec_fields,
                                "plan": plan, "schedule": schedule,
                                "memory": _memory(args, plan, notes), "overlap": _overlap(args),
                                "grad_accumulation": "fused" if args.get("gradient_accumulation_fusion") else "add",
                                "host": "eager",
                                "description": "imported from Megatron-LM arguments"}
    if spec_fields.get("spec") == "MoESpec":
        scenario["moe"] = _moe(args, notes)
    used, not_modelled, no_cost = _account(given, args, model_used, model is not None,
                                           spec_fields.get("spec") == "MoESpec", notes)
    if not args.has("attention_dropout") and not args.has("hidden_dropout"):
        notes.append("no dropout flags: Megatron's default dropout 0.1 keeps dropout masks (memory.dropout)")
    return ImportReport("Megatron-LM", scenario, used, not_modelled, no_cost, tuple(notes))


def _check_conflicts(a: Args, given: list[str]) -> None:
    if a.get("swiglu") and (a.get("quick_geglu") or a.get("squared_relu")):
        other = "--quick-geglu" if a.get("quick_geglu") else "--squared-relu"
        raise ConfigError(f"--swiglu/{other}", "both given (Megatron asserts not args.swiglu)", "give one activation")
    if a.get("use_torch_fsdp2") and a.get("use_megatron_fsdp"):
        raise ConfigError("--use-torch-fsdp2/--use-megatron-fsdp", "both given", "give one FSDP")
    if a.get("use_torch_fsdp2"):   # validate_args' asserts for Torch-FSDP2
        for bad, flag, fix in (
                (a.get("pipeline_model_parallel_size") != 1, "--pipeline-model-parallel-size", "use 1"),
                (a.get("expert_model_parallel_size") != 1, "--expert-model-parallel-size", "use 1"),
                (a.get("use_distributed_optimizer"), "--use-distributed-optimizer", "drop it"),
                (a.get("gradient_accumulation_fusion"), "--no-gradient-accumulation-fusion",
                 "add --no-gradient-accumulation-fusion (Megatron's default fuses it)"),
                (not a.get("untie_embeddings_and_output_weights"), "--untie-embeddings-and-output-weights", "add it"),
                (a.get("fp16"), "--fp16", "use --bf16")):
            if bad:
                raise ConfigError("--use-torch-fsdp2", f"Megatron does not support it with {flag} as given "
                                  "(validate_args asserts)", fix)
    if a.get("use_megatron_fsdp"):   # validate_args' asserts for Megatron-FSDP
        if a.get("megatron_fsdp_version") == 2 and a.get("use_distributed_optimizer"):
            raise ConfigError("--use-distributed-optimizer", "with --megatron-fsdp-version 2 (Megatron asserts "
                              "they are incompatible)", "drop --use-distributed-optimizer (Megatron-FSDP shards the optimizer)")
        if a.get("ckpt_format") != "fsdp_dtensor":
            raise ConfigError("--use-megatron-fsdp", f"needs --ckpt-format fsdp_dtensor (Megatron asserts it; got "
                              f"{a.get('ckpt_format')})", "add --ckpt-format fsdp_dtensor")
    if a.get("attention_backend") == "local" and (a.get("spec") or [None])[0] != "local":
        raise ConfigError("--attention-backend", "local needs --spec local (Megatron asserts it)", "add --spec local")
    if a.get("bf16") and a.get("fp16"):
        raise ConfigError("--bf16/--fp16", "both given", "give one precision")
    if a.get("moe_pad_expert_input_to_capacity") and a.get("moe_expert_capacity_factor") is None:
        raise ConfigError("--moe-pad-expert-input-to-capacity", "needs --moe-expert-capacity-factor (as Megatron asserts)",
                          "give --moe-expert-capacity-factor, e.g. 1.25")
    if a.get("moe_enable_deepep") and a.get("moe_token_dispatcher_type") != "flex":
        raise ConfigError("--moe-enable-deepep", "needs --moe-token-dispatcher-type flex (as Megatron asserts)",
                          "add --moe-token-dispatcher-type flex")
    if a.has("recompute_method") and a.get("recompute_granularity") != "full":
        raise ConfigError("--recompute-method", "applies to --recompute-granularity full only"
                          + (" (--recompute-activations makes it selective)" if a.get("recompute_activations") else ""),
                          "add --recompute-granularity full (without --recompute-activations) or drop "
                          "--recompute-method")
    if a.has("recompute_modules") and a.get("recompute_granularity") != "selective":
        raise ConfigError("--recompute-modules", "applies to --recompute-granularity selective only",
                          "add --recompute-granularity selective")
    both = [d for d in ("num_layers_per_virtual_pipeline_stage", "num_virtual_stages_per_pipeline_rank") if a.has(d)]
    if len(both) == 2:
        raise ConfigError("--num-layers-per-virtual-pipeline-stage", "and --num-virtual-stages-per-pipeline-rank "
                          "both given", "give one")
    if a.get("context_parallel_size") not in (None, 1):
        raise ConfigError("--context-parallel-size", f"{a.get('context_parallel_size')}: context parallelism is not "
                          "modelled by moesim", "simulate with --context-parallel-size 1")


# -- the model -----------------------------------------------------------------------------------
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


def _model(a: Args, given: list[str], model: str | None, notes: list[str]) -> tuple[dict[str, Any], set[str]]:
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
    return fields, used | set(_OVERRIDES)


# set from the arguments on a --model as well (Megatron's defaults where not given), said when they differ
_RUN_OVERRIDES = ("num_nextn_predict_layers", "qk_norm", "expert_bias", "expert_linear_bias", "n_groups",
                  "topk_groups", "activation_fusion")
_OVERRIDES = ("seq_length", "bf16", "fp16", "fp8", "mtp_num_layers", "bias_swiglu_fusion", "bias_gelu_fusion",
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
def _plan(a: Args, topology: str, nodes: int | None, gpus: int | None, spec: dict[str, Any],
          notes: list[str]) -> tuple[dict[str, Any], dict[str, Any], str]:
    tp, pp, ep = a.get("tensor_model_parallel_size"), a.get("pipeline_model_parallel_size"), \
        a.get("expert_model_parallel_size")
    folded = tp > 1 and _expert_tp(a) == 1   # MoE parallel folding: EP groups over tp x dp, whole experts
    smallest = pp * max(tp, ep) if folded and ep % tp == 0 else tp * pp * ep
    world, fields = world_size(topology, nodes, gpus, smallest, notes, "Megatron's arguments")
    dp = divide("world size", world, tp * pp, "tp x pp", "give a GPU count that tp x pp divides")
    if folded:
        if ep % tp or (tp * dp) % ep:
            raise ConfigError("--expert-model-parallel-size", f"{ep} with --expert-tensor-parallel-size 1 must be a "
                              f"multiple of tp {tp} dividing tp x dp = {tp * dp} (moesim folds whole TP groups "
                              "into an EP group)", f"use an ep among the multiples of {tp} dividing {tp * dp}")
        notes.append(f"--expert-tensor-parallel-size 1 with tp {tp}: EP {ep} folded over tp x dp "
                     "(plan.ep_layout='folded', each EP group whole TP groups on consecutive GPUs)")
    elif dp % ep:
        raise ConfigError("--expert-model-parallel-size", f"{ep} does not divide data parallelism {dp} (with expert "
                          "TP equal to TP moesim carves expert parallelism out of data parallelism)",
                          "use an ep dividing dp, or --expert-tensor-parallel-size 1 (MoE parallel folding)")
    elif tp > 1:
        notes.append(f"expert TP {_expert_tp(a)} (Megatron's default: tp): EP groups strided by tp as Megatron places "
                     "them, but moesim runs whole experts on each GPU's own tokens (expert TP 1's kernels, the same FLOPs); "
                     "the memory budget splits each expert over the expert TP (memory.expert_tp)")
    mbs = a.get("micro_batch_size")
    if mbs is None:
        mbs = 1
        notes.append("no --micro-batch-size (Megatron requires one): 1")
    gbs = a.get("global_batch_size")
    if gbs is None:
        gbs = mbs * dp   # validate_args' default
        notes.append(f"no --global-batch-size: micro batch x dp = {gbs}, as Megatron's default (one microbatch)")
    micro = divide("--global-batch-size", gbs, mbs * dp, "micro batch x dp", "give a multiple of micro x dp")
    vpp = 1
    layers = spec.get("num_layers", 1)
    if a.get("num_layers_per_virtual_pipeline_stage"):
        vpp = divide("--num-layers-per-virtual-pipeline-stage", layers // pp, a.get(
            "num_layers_per_virtual_pipeline_stage"), "layers per stage", "give a divisor of the layers per stage")
    elif a.get("num_virtual_stages_per_pipeline_rank"):
        vpp = a.get("num_virtual_stages_per_pipeline_rank")
    sp = bool(a.get("sequence_parallel")) and tp > 1
    if a.get("sequence_parallel") and tp == 1:
        notes.append("--sequence-parallel with tp 1: Megatron turns it off, and so does the simulation")
    plan = {"tp": tp, "pp": pp, "dp": dp, "ep": ep, "vpp": vpp, "sequence_parallel": sp, "micro_batch_size": mbs,
            "num_microbatches": micro, "grad_dtype_bytes": 2 if a.get("grad_reduce_in_bf16") else 4,
            **({"ep_layout": "folded"} if folded else {})}
    return plan, fields, "interleaved" if vpp > 1 else "1f1b"


def _moe(a: Args, notes: list[str]) -> dict[str, Any]:
    kind = a.get("moe_token_dispatcher_type")
    dispatcher = "alltoall"
    if kind == "flex" and (a.get("moe_enable_deepep") or a.get("moe_flex_dispatcher_backend") == "deepep"):
        dispatcher = "deepep"
    elif kind in ("allgather", "flex"):
        default = "" if a.has("moe_token_dispatcher_type") else " (Megatron's default)"
        notes.append(f"--moe-token-dispatcher-type {kind}{default}"
                     f"{' (' + str(a.get('moe_flex_dispatcher_backend')) + ')' if kind == 'flex' else ''}: "
                     "not modelled, priced as the all-to-all dispatcher")
    experts = "grouped" if a.get("moe_grouped_gemm") else "loop"
    out: dict[str, Any] = {"dispatcher": dispatcher, "experts": experts,
                           "token_movement": "fused" if a.get("moe_permute_fusion") else "megatron"}
    if a.get("moe_pad_expert_input_to_capacity"):
        out.update(experts="padded", capacity_factor=float(a.get("moe_expert_capacity_factor")))
    elif a.get("moe_expert_capacity_factor") is not None:
        notes.append("--moe-expert-capacity-factor without padding (token dropping): not modelled, no token is dropped")
    if out["experts"] != "loop" and (a.get("transformer_impl") or "transformer_engine") == "transformer_engine":
        out["grouped_gemm"] = "te"   # TEGroupedMLP: TE's grouped GEMM (per-expert cuBLAS over 4 streams on Hopper)
        notes.append("--moe-grouped-gemm with Transformer Engine: moe.grouped_gemm='te' (priced from the profile's "
                     "grouped_gemm_te rows; without them as torch._grouped_mm, said in the result)")
    return out


_SHARDING = {"no_shard": 0, "optim": 1, "optim_grads": 2, "optim_grads_params": 3}


def _memory(a: Args, plan: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    gran = a.get("recompute_granularity") or "none"
    out: dict[str, Any] = {"recompute": gran, "distributed_optimizer": bool(a.get("use_distributed_optimizer")),
                           "optimizer": "sgd" if a.get("optimizer") == "sgd" else "adam",
                           "moe_permute_fusion": bool(a.get("moe_permute_fusion")),
                           "dropout": (a.get("attention_dropout") or 0) > 0 or (a.get("hidden_dropout") or 0) > 0,
                           "account_for_embedding_in_pipeline_split": bool(a.get("account_for_embedding_in_pipeline_split")),
                           "account_for_loss_in_pipeline_split": bool(a.get("account_for_loss_in_pipeline_split")),
                           "param_dtype": "bf16" if a.get("bf16") else ("fp16" if a.get("fp16") else "fp32")}
    if gran == "full":   # Megatron's TransformerBlock: uniform groups of N layers, or the first N of each chunk
        out["recompute_method"] = a.get("recompute_method") or "uniform"
        out["recompute_num_layers"] = a.get("recompute_num_layers") or 1
    if gran == "selective" and a.has("recompute_modules"):
        out["recompute_modules"] = list(a.get("recompute_modules"))
    if a.get("use_precision_aware_optimizer"):
        out.update(precision_aware_optimizer=True, exp_avg_dtype=a.get("exp_avg_dtype"),
                   exp_avg_sq_dtype=a.get("exp_avg_sq_dtype"), main_params_dtype=a.get("main_params_dtype"))
    if _expert_tp(a) != 1:
        out["expert_tp"] = _expert_tp(a)
    backend = a.get("attention_backend") or "auto"
    if backend in ("unfused", "local"):   # TE's UnfusedDotProductAttention / Megatron-Core's DotProductAttention
        out["flash_attention"] = False
        notes.append(f"--attention-backend {backend}: the attention keeps its softmax score matrix for the backward "
                     "(memory.flash_attention=False); its time is still priced as the fused attention kernel")
    out.update(_sharding(a, plan, notes))
    return out


def _sharding(a: Args, plan: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """FSDP: ``--use-megatron-fsdp`` shards as ``--data-parallel-sharding-strategy`` says (optim: ZeRO-1,
    optim_grads: 2, optim_grads_params: 3, Megatron's default), ``--use-torch-fsdp2`` fully
    (ZeRO-3; with ``--torch-fsdp2-no-reshard-after-forward`` the gathered parameters stay from the
    forward to the backward: ZeRO-2's memory)."""
    time = ("; the time prices the data-parallel sync as the distributed optimizer's per-chunk reduce-scatter and "
            "parameter all-gather, not FSDP's per-layer parameter all-gathers in forward and backward")
    if a.get("use_megatron_fsdp"):
        strategy = a.get("data_parallel_sharding_strategy")
        out: dict[str, Any] = {"zero_stage": _SHARDING[strategy]}
        if a.get("megatron_fsdp_version") == 1:
            out["distributed_optimizer"] = True   # validate_args: Megatron-FSDP v1 uses the DistributedOptimizer
        notes.append(f"--use-megatron-fsdp, --data-parallel-sharding-strategy {strategy}"
                     f"{'' if a.has('data_parallel_sharding_strategy') else ' (Megatron default)'}: memory.zero_stage "
                     f"{_SHARDING[strategy]}" + (" (v1: with the distributed optimizer, as validate_args sets it)"
                                                 if out.get("distributed_optimizer") else "") + time)
        return out
    if a.get("use_torch_fsdp2"):
        stage = 3 if a.get("torch_fsdp2_reshard_after_forward") else 2
        notes.append(f"--use-torch-fsdp2: parameters, gradients and optimizer states sharded over dp {plan['dp']} "
                     f"(memory.zero_stage {stage}"
                     + (", parameters kept gathered from forward to backward" if stage == 2 else "") + ")" + time)
        return {"zero_stage": stage}
    if a.has("data_parallel_sharding_strategy"):
        notes.append("--data-parallel-sharding-strategy without --use-megatron-fsdp: Megatron reads it only for "
                     "Megatron-FSDP (no effect; --use-distributed-optimizer is its ZeRO-1)")
    return {}


def _expert_tp(a: Args) -> int:
    """``--expert-tensor-parallel-size``, or TP where it is unset (Megatron's ``validate_args``)."""
    etp = a.get("expert_tensor_parallel_size")
    return etp if etp is not None else (a.get("tensor_model_parallel_size") or 1)


def _overlap(a: Args) -> dict[str, Any]:
    out: dict[str, Any] = {k: bool(a.get(k)) for k in ("overlap_moe_expert_parallel_comm", "delay_wgrad_compute",
                                                        "tp_comm_overlap", "overlap_param_gather")}
    out["overlap_grad_reduce"] = bool(a.get("overlap_grad_reduce"))
    if a.has("moe_shared_expert_overlap"):
        out["moe_shared_expert_overlap"] = bool(a.get("moe_shared_expert_overlap"))
    if a.has("moe_deepep_num_sms"):
        out["deepep_num_sms"] = a.get("moe_deepep_num_sms")
    return out


def _account(given: list[str], a: Args, model_used: set[str], model_checked: bool, moe: bool,
             notes: list[str]) -> tuple[tuple, tuple, tuple[str, ...]]:
    table = option_table()
    used, not_modelled, no_cost = [], [], []
    inert_moe, modelopt = [], []
    for flag in given:
        dest = table[flag]["dest"]
        if flag in modelopt_options():
            modelopt.append(flag)
            not_modelled.append((flag, _MODELOPT_WHY.get(dest, _MODELOPT_WHY[""])))
        elif not moe and (dest.startswith("moe_") or dest in ("num_experts", "expert_tensor_parallel_size")):
            inert_moe.append(flag)
            no_cost.append(flag)
        elif dest == "bias_gelu_fusion" and not a.get("quick_geglu"):
            no_cost.append(flag)   # the bias-GELU fusion of a non-gated GELU: not priced apart
        elif dest in _WITH and not a.get(_WITH[dest][0]):
            no_cost.append(flag)   # Megatron reads it only with the other flag
            notes.append(f"{flag} without {_WITH[dest][1]}: no effect, as in Megatron")
        elif dest in MODELLED and (dest in model_used or not MODELLED[dest].startswith("model")):
            checked = " (checked against --model)" if model_checked and MODELLED[dest].startswith("model") \
                and dest not in _OVERRIDES else ""
            used.append((flag, MODELLED[dest] + checked))
        elif dest in MODELLED:
            not_modelled.append((flag, f"{MODELLED[dest]}: no effect on this --model (Megatron reads it only with "
                                       "another flag); the --model's own value is used"))
        elif dest.startswith(NO_COST_PREFIXES):
            no_cost.append(flag)
        else:
            not_modelled.append((flag, _why(dest)))
    if inert_moe:
        notes.append(f"a dense model (no --num-experts{', --model without experts' if model_checked else ''}): "
                     f"Megatron reads none of {', '.join(inert_moe)} (no effect)")
    if modelopt:
        notes.append(f"ModelOpt argument(s) {', '.join(modelopt)}: pretrain_gpt.py adds them when nvidia-modelopt is "
                     "installed (megatron/post_training/arguments.py); they act only with ModelOpt enabled (a ModelOpt "
                     "checkpoint in --load, or --export-kd-teacher-load): listed as not modelled")
    return tuple(used), tuple(not_modelled), tuple(no_cost)


# flags Megatron reads only with another: dest -> (that dest, its flag)
_WITH = {"data_parallel_sharding_strategy": ("use_megatron_fsdp", "--use-megatron-fsdp"),
         "megatron_fsdp_version": ("use_megatron_fsdp", "--use-megatron-fsdp"),
         "torch_fsdp2_reshard_after_forward": ("use_torch_fsdp2", "--use-torch-fsdp2"),
         "window_attn_skip_freq": ("window_size", "--window-size")}
_MODELOPT_WHY = {
    "": "ModelOpt argument: acts only with ModelOpt enabled (a ModelOpt checkpoint in --load, or "
        "--export-kd-teacher-load), which moesim does not simulate; simulated as if absent",
    "export_force_local_attention": "ModelOpt argument: with ModelOpt enabled Megatron builds the ModelOpt layer spec "
        "with Megatron-Core's local DotProductAttention, which keeps the softmax score matrix (--set "
        "memory.flash_attention=false prices that memory); without ModelOpt (training from scratch) no effect: "
        "simulated as if absent",
    "enable_gpt_oss": "ModelOpt argument: with ModelOpt enabled it sets GPT-OSS's YaRN RoPE parameters (RoPE "
        "variants cost the same in moesim); without ModelOpt no effect: simulated as if absent",
}


def _why(dest: str) -> str:
    if dest.startswith(("cuda_graph", "enable_cuda_graph", "external_cuda_graph")):
        return "CUDA graphs: simulated with an eager host (set host=graphs with --set to compare)"
    if dest == "fp8_param_gather":
        return "FP8 parameters (their all-gather and the weights in memory) are not modelled: bf16 parameters"
    if dest in ("fp8_amax_compute_algo", "fp8_amax_history_len", "fp8_interval", "fp8_margin", "fp8_recipe"):
        return "an FP8 scaling-recipe detail: the GEMMs are priced by the profile's FP8 rows whatever it says"
    if dest in ("glu_linear_offset", "activation_func_clamp_value"):
        return "an offset / clamp inside the GLU's elementwise kernel: not priced separately (the activation is)"
    if "fusion" in dest or dest.startswith(("use_", "no_")):
        return "a kernel or implementation switch moesim does not price separately"
    return "not modelled: the simulation runs as if the flag were absent"
