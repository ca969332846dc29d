"""A torchtitan training TOML -> a moesim Scenario, with every key accounted for.

The sections and keys are torchtitan's own: ``torchtitan_keys.json`` lists the fields of every
``JobConfig`` section at pytorch/torchtitan 238fa99 (the last commit with TOML configs, before
the move to Python config registries), and the model flavors of llama3, qwen3, gpt_oss and
deepseek_v3. An unknown section or key is an error naming it; a known one that moesim does not
model is listed. Read with ``tomllib``.

* ``[model]``: ``name`` + ``flavor`` -> the model, read from the shipped Hugging Face config of
  that model (``moesim/configs``; torchtitan trains the HF architecture in bf16: the configs,
  not the presets, whose DeepSeek-V3 trains in FP8 as the report did) or ``model=`` (a preset or a
  config.json) for any other; ``converters`` with ``float8`` -> FP8 linear GEMMs.
* ``[training]``: ``seq_len``; ``local_batch_size`` (per data-parallel rank and step) and
  ``global_batch_size`` (gradient accumulation = global / (local x dp)); ``dtype`` /
  ``mixed_precision_param`` -> the model dtype, ``mixed_precision_reduce`` -> the gradient dtype.
* ``[parallelism]``: ``data_parallel_replicate_degree`` x ``data_parallel_shard_degree`` (-1: the
  rest of the world) -> ``plan.dp`` (sharding > 1 -> FSDP: ZeRO-3 memory), ``tensor_parallel_degree``
  (with sequence parallelism, as torchtitan's TP plan), ``pipeline_parallel_degree``,
  ``pipeline_parallel_schedule`` (1F1B, GPipe, Interleaved1F1B, InterleavedZeroBubble,
  ZBVZeroBubble, DualPipeV), ``pipeline_parallel_layers_per_stage`` / ``_microbatch_size``,
  ``expert_parallel_degree``, ``expert_parallel_comm_backend`` (deepep), ``enable_async_tensor_parallel``
  (TP communication overlapped with the GEMMs); ``context_parallel_degree`` > 1 is refused.
* ``[activation_checkpoint]``: ``mode`` none / selective / full; ``selective_ac_option`` "op"
  (selective) or a layer interval (not modelled: every layer is recomputed).

MoE layers run torchtitan's token movement with grouped experts (``torch._grouped_mm``) and the
expert bias its ``load_balance_coeff`` default keeps, as torchtitan does; the host is eager (no
CUDA graphs).
"""
from __future__ import annotations

import functools
import json
import tomllib
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError
from moesim.importers.common import ImportReport, divide, world_size

KEYS_FILE = Path(__file__).with_name("torchtitan_keys.json")
FLAVORS = {("llama3", "8B"): "llama3-8b", ("llama3", "70B"): "llama3-70b", ("qwen3", "30B-A3B"): "qwen3-30b-a3b",
           ("qwen3", "235B-A22B"): "qwen3-235b-a22b", ("deepseek_v3", "671B"): "deepseek-v3",
           ("gpt_oss", "120b"): "gpt-oss-120b"}
SCHEDULES = {"1F1B": "1f1b", "GPipe": "gpipe", "Interleaved1F1B": "interleaved", "InterleavedZeroBubble": "zb-h1",
             "ZBVZeroBubble": "zb-v", "DualPipeV": "dualpipev"}
MULTI_STAGE = ("interleaved", "zb-h1", "zb-v", "dualpipev")
NO_COST_SECTIONS = ("job", "profiling", "metrics", "optimizer", "lr_scheduler", "checkpoint", "validation", "comm",
                    "debug", "memory_estimation")
USED = {
    ("model", "name"): "model", ("model", "flavor"): "model", ("model", "converters"): "model.gemm_dtype",
    ("training", "seq_len"): "model.seq_len", ("training", "local_batch_size"): "plan.micro_batch_size, num_microbatches",
    ("training", "global_batch_size"): "plan.num_microbatches", ("training", "dtype"): "model.dtype",
    ("training", "mixed_precision_param"): "model.dtype", ("training", "mixed_precision_reduce"): "plan.grad_dtype_bytes",
    ("parallelism", "data_parallel_replicate_degree"): "plan.dp",
    ("parallelism", "data_parallel_shard_degree"): "plan.dp, memory.zero_stage",
    ("parallelism", "tensor_parallel_degree"): "plan.tp", ("parallelism", "pipeline_parallel_degree"): "plan.pp",
    ("parallelism", "pipeline_parallel_schedule"): "schedule",
    ("parallelism", "pipeline_parallel_layers_per_stage"): "plan.vpp",
    ("parallelism", "pipeline_parallel_microbatch_size"): "plan.micro_batch_size",
    ("parallelism", "expert_parallel_degree"): "plan.ep", ("parallelism", "context_parallel_degree"): "(1 only)",
    ("parallelism", "expert_parallel_comm_backend"): "moe.dispatcher",
    ("parallelism", "enable_async_tensor_parallel"): "overlap.tp_comm_overlap",
    ("parallelism", "expert_tensor_parallel_degree"): "plan.ep_layout (1 with tp > 1: folded), memory.expert_tp",
    ("activation_checkpoint", "mode"): "memory.recompute",
    ("activation_checkpoint", "selective_ac_option"): "memory.recompute",
}
NO_COST = {("model", "hf_assets_path"), ("model", "tokenizer_path"), ("model", "print_after_conversion"),
           ("training", "dataset"), ("training", "dataset_path"), ("training", "max_norm"), ("training", "steps"),
           ("training", "gc_freq"), ("training", "gc_debug"), ("training", "dataloader"),
           ("activation_checkpoint", "preserve_rng_state"), ("activation_checkpoint", "determinism_check"),
           ("activation_checkpoint", "debug"), ("activation_checkpoint", "visualize_memory_budget_pareto"),
           ("parallelism", "pipeline_parallel_schedule_csv"), ("parallelism", "module_fqns_per_model_part")}
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
_WHY = {"compile": "torch.compile (fused kernels, less host time) is not modelled: eager kernels are priced",
        "quantize": "float8 / MX settings: only [model] converters switches FP8 GEMMs on; the rest is not modelled",
        "fault_tolerance": "fault tolerance is not modelled", "experimental": "experimental options are not modelled"}


@functools.cache
def known_keys() -> dict[str, Any]:
    return json.loads(KEYS_FILE.read_text())


def read_torchtitan(path: str | Path, *, topology: str = "dgx_h100", nodes: int | None = None,
                    gpus: int | None = None, model: str | None = None, name: str | None = None) -> ImportReport:
    """The scenario a torchtitan TOML describes, and the account of every key."""
    p = Path(path)
    doc = _read(p)
    notes: list[str] = []
    keys = _flatten(doc, p)
    sec = lambda s: doc.get(s, {})  # noqa: E731
    spec = _model(sec("model"), sec("training"), model, notes)
    plan, world_fields, schedule, zero = _plan(sec("parallelism"), sec("training"), spec, topology, nodes, gpus, notes)
    scenario: dict[str, Any] = {"name": name or p.stem, "topology": topology, **world_fields, "model": spec,
                                "plan": plan, "schedule": schedule, "host": "eager", "grad_accumulation": "add",
                                "memory": {**_recompute(sec("activation_checkpoint"), notes), "zero_stage": zero,
                                           "param_dtype": spec["dtype"], "probs_on_expert_output": True,
                                           **_expert_tp(sec("parallelism"))},
                                "overlap": {"tp_comm_overlap": bool(sec("parallelism").get(
                                    "enable_async_tensor_parallel", False))},
                                "description": f"imported from torchtitan {p.name}"}
    if spec.get("spec") == "MoESpec":
        backend = sec("parallelism").get("expert_parallel_comm_backend", "standard")
        scenario["moe"] = {"dispatcher": "deepep" if backend == "deepep" else "alltoall", "experts": "grouped",
                           "token_movement": "torchtitan"}
    used, not_modelled, no_cost = _account(keys)
    return ImportReport("torchtitan", scenario, used, not_modelled, no_cost, tuple(notes))


def _read(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError("--torchtitan", f"{str(p)!r} does not exist", "give a torchtitan training .toml")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError("--torchtitan", f"not valid TOML ({err})", "fix that line", source=str(p)) from None


def _flatten(doc: dict[str, Any], p: Path) -> list[tuple[str, str]]:
    """(section, key) of every setting; unknown ones are refused naming them."""
    sections = known_keys()["sections"]
    out = []
    for section, body in doc.items():
        if section not in sections:
            raise ConfigError(f"[{section}]", "is not a torchtitan JobConfig section",
                              f"use one of: {', '.join(sorted(sections))}", source=str(p))
        if not isinstance(body, dict):
            raise ConfigError(f"[{section}]", "must be a table", source=str(p))
        for key in body:
            if section != "quantize" and key not in sections[section]:
                raise ConfigError(f"[{section}] {key}", f"is not a field of torchtitan's [{section}]",
                                  f"use one of: {', '.join(sections[section])}", source=str(p))
            out.append((section, key))
    return out


def _model(model_sec: dict[str, Any], training: dict[str, Any], model: str | None, notes: list[str]) -> dict[str, Any]:
    from moesim.workload.hf_config import shipped_config
    from moesim.workload.presets import model_by_name_or_path

    seq = training.get("seq_len", 2048)
    key = (model_sec.get("name"), str(model_sec.get("flavor")))
    if model is not None:
        spec = model_by_name_or_path(model, seq_len=seq, field="--model")
        notes.append(f"model from --model {model} ([model] {key[0]} {key[1]} not checked)")
    elif key in FLAVORS:
        spec = shipped_config(FLAVORS[key], seq_len=seq).spec
        notes.append(f"[model] {key[0]} {key[1]}: the shipped Hugging Face config {FLAVORS[key]} (bf16 training)")
    else:
        flavors = known_keys()["flavors"].get(str(key[0]))
        raise ConfigError("[model] flavor", f"{key[0]} {key[1]} has no moesim model"
                          + (f" (torchtitan's flavors: {', '.join(flavors)})" if flavors else ""),
                          f"give the model with --model (a preset or a config.json); known: "
                          f"{', '.join(f'{n} {f}' for n, f in FLAVORS)}")
    fields = {f: getattr(spec, f) for f in spec.__dataclass_fields__}
    fields.update(spec=type(spec).__name__, seq_len=seq)
    fields["activation_fusion"] = False   # torchtitan's FeedForward: w2(F.silu(w1(x)) * w3(x)), two kernels
    fields["rope_impl"] = "complex"       # apply_rotary_emb: view_as_complex(xq.float()) * freqs_cis
    if "expert_bias" in fields:   # torchtitan's MoE default load_balance_coeff = 1e-3: the expert bias is on
        fields["expert_bias"] = True
        notes.append("MoE: torchtitan's load_balance_coeff default (1e-3) keeps an expert bias (model.expert_bias)")
    dtype = training.get("mixed_precision_param", training.get("dtype", "bfloat16"))
    if dtype not in DTYPES:
        raise ConfigError("[training] mixed_precision_param", f"unknown dtype {dtype!r}", f"use {', '.join(DTYPES)}")
    fields["dtype"] = DTYPES[dtype]
    converters = model_sec.get("converters") or []
    if any("float8" in str(c) for c in converters):
        fields["gemm_dtype"] = "fp8"
    if any("mx" in str(c) for c in converters):
        raise ConfigError("[model] converters", f"{converters}: MX formats are not modelled", "drop the mx converter")
    return fields


def _plan(par: dict[str, Any], training: dict[str, Any], spec: dict[str, Any], topology: str, nodes: int | None,
          gpus: int | None, notes: list[str]) -> tuple[dict[str, Any], dict[str, Any], str, int]:
    tp, pp = par.get("tensor_parallel_degree", 1), par.get("pipeline_parallel_degree", 1)
    ep, rep, shard = par.get("expert_parallel_degree", 1), par.get("data_parallel_replicate_degree", 1), \
        par.get("data_parallel_shard_degree", -1)
    if par.get("context_parallel_degree", 1) != 1:
        raise ConfigError("[parallelism] context_parallel_degree", "context parallelism is not modelled",
                          "simulate with context_parallel_degree = 1")
    fixed = tp * pp * rep * (shard if shard > 0 else 1)
    etp = par.get("expert_tensor_parallel_degree", 1)
    smallest_ep = pp * rep * max(ep, tp) if tp > 1 and etp == 1 and ep % tp == 0 else tp * pp * rep * ep
    world, fields = world_size(topology, nodes, gpus, fixed if shard > 0 else max(fixed, smallest_ep), notes,
                               "the TOML")
    dp = divide("world size", world, tp * pp, "tensor x pipeline degrees", "give a GPU count they divide")
    if shard > 0 and rep * shard != dp:
        raise ConfigError("[parallelism] data_parallel_shard_degree", f"replicate {rep} x shard {shard} = {rep * shard} "
                          f"but the world leaves {dp} data-parallel ranks", "use -1 (the rest) or match the GPU count")
    shard = dp // rep
    if ep > 1 and tp > 1 and etp not in (1, tp):
        raise ConfigError("[parallelism] expert_tensor_parallel_degree", f"{etp} with tensor_parallel_degree {tp}: "
                          "torchtitan supports expert TP 1 or equal to TP", f"use 1 or {tp}")
    folded = ep > 1 and tp > 1 and etp == 1   # torchtitan's [partial dp + all tp -> ep]
    if folded:
        if ep % tp or (shard * tp) % ep:
            raise ConfigError("[parallelism] expert_parallel_degree", f"{ep} with expert_tensor_parallel_degree 1 must "
                              f"be a multiple of tensor_parallel_degree {tp} dividing data_parallel_shard_degree x "
                              f"tp = {shard * tp} (torchtitan's constraint)", f"use a multiple of {tp} dividing "
                              f"{shard * tp}, or expert_tensor_parallel_degree = {tp}")
        notes.append(f"expert_tensor_parallel_degree 1 with tp {tp}: EP {ep} spans the TP groups as torchtitan "
                     "builds it (plan.ep_layout='folded')")
    elif dp % ep:
        raise ConfigError("[parallelism] expert_parallel_degree", f"{ep} does not divide data parallelism {dp}",
                          "use an ep dividing dp")
    local = training.get("local_batch_size", 8)
    glob = training.get("global_batch_size", -1)
    accum = 1 if glob in (-1, None) else divide("[training] global_batch_size", glob, local * dp,
                                                 "local_batch_size x dp", "give a multiple of it")
    schedule_name = par.get("pipeline_parallel_schedule", "1F1B")
    if schedule_name not in SCHEDULES:
        raise ConfigError("[parallelism] pipeline_parallel_schedule", f"{schedule_name!r} is not modelled",
                          f"use one of: {', '.join(SCHEDULES)}")
    schedule, vpp = SCHEDULES[schedule_name], 1
    mbs, micro = local, accum
    if pp > 1:
        mbs = par.get("pipeline_parallel_microbatch_size", 1)
        micro = divide("[training] local_batch_size", local, mbs, "pipeline_parallel_microbatch_size",
                       "give a multiple of it") * accum
        vpp = _stages_per_rank(par, spec, pp, schedule, notes)
    else:
        schedule = "1f1b"
    plan = {"tp": tp, "pp": pp, "dp": dp, "ep": ep, "vpp": vpp, "sequence_parallel": tp > 1,
            "micro_batch_size": mbs, "num_microbatches": micro,
            "grad_dtype_bytes": 2 if training.get("mixed_precision_reduce", "float32") == "bfloat16" else 4,
            **({"ep_layout": "folded"} if folded else {})}
    return plan, fields, schedule, 3 if shard > 1 else 0


def _stages_per_rank(par: dict[str, Any], spec: dict[str, Any], pp: int, schedule: str, notes: list[str]) -> int:
    """Virtual stages per rank as torchtitan's ``pipeline_parallel.py`` counts them: with
    ``pipeline_parallel_layers_per_stage``, ceil((layers + first/last stage's layer allowances) / it)
    stages over the ranks; else 1 for single-stage schedules and 2 for looped ones."""
    per_stage = par.get("pipeline_parallel_layers_per_stage")
    multi = schedule in MULTI_STAGE
    if not per_stage:
        if multi:
            notes.append(f"{schedule}: 2 stages per pipeline rank (torchtitan's default for multi-stage schedules)")
        return 2 if multi else 1
    weights = par.get("pipeline_parallel_first_stage_less_layers", 1) + \
        par.get("pipeline_parallel_last_stage_less_layers", 1)
    stages = -(-(spec["num_layers"] + weights) // per_stage)
    per_rank = divide("pipeline stages", stages, pp, "pipeline_parallel_degree",
                      "give pipeline_parallel_layers_per_stage giving a stage count the ranks divide (as torchtitan asks)")
    if per_rank != 1 and not multi or per_rank < 2 and multi:
        raise ConfigError("[parallelism] pipeline_parallel_layers_per_stage", f"gives {per_rank} stage(s) per rank; "
                          f"{schedule} needs {'at least 2' if multi else 'exactly 1'} (as torchtitan asserts)",
                          "change pipeline_parallel_layers_per_stage")
    return per_rank


def _recompute(ac: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    mode = ac.get("mode", "selective")
    if mode not in ("none", "selective", "full"):
        raise ConfigError("[activation_checkpoint] mode", f"unknown {mode!r}", "use none, selective or full")
    option = str(ac.get("selective_ac_option", "op"))
    if mode == "selective" and option != "op":
        notes.append(f"selective_ac_option {option!r} (every {option} layers): not modelled, every layer recomputed")
        return {"recompute": "full"}
    return {"recompute": mode}


def _expert_tp(par: dict[str, Any]) -> dict[str, Any]:
    etp = par.get("expert_tensor_parallel_degree", 1)
    return {"expert_tp": etp} if etp not in (None, 1) else {}


def _account(keys: list[tuple[str, str]]) -> tuple[tuple, tuple, tuple[str, ...]]:
    used, not_modelled, no_cost = [], [], []
    for section, key in keys:
        label = f"[{section}] {key}"
        if (section, key) in USED:
            used.append((label, USED[(section, key)]))
        elif section in NO_COST_SECTIONS or (section, key) in NO_COST:
            no_cost.append(label)
        else:
            not_modelled.append((label, _WHY.get(section, "not modelled: the simulation runs as if it were at "
                                                           "torchtitan's default")))
    return tuple(used), tuple(not_modelled), tuple(no_cost)
