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

from pathlib import Path
from typing import Any

from moesim.errors import ConfigError
from moesim.importers.common import ImportReport, divide, world_size
from moesim.importers.launch_text import argument_tokens
from moesim.importers.megatron_args import (MODELLED, NO_COST_PREFIXES, Args, check_values, given_flags, literal_flags,
                                            modelopt_options, option_table, parse_args)
from moesim.importers.megatron_model import OVERRIDES, model_fields


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
    spec_fields, model_used = model_fields(args, given, model, notes)
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
                and dest not in OVERRIDES else ""
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
