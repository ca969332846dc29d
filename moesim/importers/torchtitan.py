"""A torchtitan training TOML -> a moesim Scenario, with every key accounted for.

The sections and keys are torchtitan's own: ``torchtitan_keys.json`` lists the fields of every
``JobConfig`` section at pytorch/torchtitan 238fa99 (the last commit with TOML configs, before
the move to Python config registries), and the model flavors of llama3, qwen3, gpt_oss and
deepseek_v3. An unknown section or key is an error naming it; a known one that moesim does not
model is listed. Read with ``tomllib``. Defaults and behaviour below were read in torchtitan
0.2.0's ``config/job_config.py``, ``distributed/`` and ``components/quantization/`` (the
release closest to 238fa99; assumed unchanged there).

* ``[model]``: ``name`` + ``flavor`` -> the model, read from the shipped Hugging Face config of
  that model (``moesim/configs``; not the presets, whose DeepSeek-V3 trains in FP8 as the report
  did) or ``model=`` (a preset or a config.json) for any other. torchtitan's models have no MTP
  module: ``num_nextn_predict_layers`` is set to 0. ``converters``: ``quantize.linear.float8``
  (every ``nn.Linear``) and ``quantize.grouped_mm.float8`` (the MoE grouped GEMMs of the modules
  ``[quantize.grouped_mm.float8] fqns`` names) -> ``model.gemm_dtype="fp8"`` where they make
  every linear GEMM FP8; moesim has one GEMM dtype for dense and expert GEMMs, so a MoE model
  with only one of the two is refused. torchao keeps the high-precision inputs for backward
  (``memory.fp8_linear_inputs=False``).
* ``[training]``: ``seq_len``; ``local_batch_size`` (per data-parallel rank and step) and
  ``global_batch_size`` (gradient accumulation = global / (local x dp)); ``dtype`` (default
  float32: the stored parameters, gradients and Adam states) and ``mixed_precision_param``
  (default bfloat16: the GEMM dtype under FSDP or, for DDP / one GPU, autocast; with TP or PP
  and no FSDP torchtitan turns mixed precision off and computes in ``dtype``) -> ``model.dtype``
  and ``memory.param_dtype`` / ``grad_dtype`` / ``optimizer_state_dtype`` / ``master_weights``;
  fp32 GEMMs are refused (no fp32 tensor-core peak). ``mixed_precision_reduce`` -> the
  gradient reduction dtype (``plan.grad_dtype_bytes``; FSDP only).
* ``[parallelism]``: ``data_parallel_replicate_degree`` x ``data_parallel_shard_degree`` (-1: the
  rest of the world) -> ``plan.dp``: sharding > 1 is FSDP (ZeRO-3 over all of dp), replicate > 1
  with shard 1 is DDP; both > 1 (HSDP: a shard group smaller than dp) is refused, moesim shards
  over the whole data-parallel group. ``tensor_parallel_degree`` (with sequence parallelism, as
  torchtitan's TP plan), ``pipeline_parallel_degree``, ``pipeline_parallel_schedule`` (1F1B,
  GPipe, Interleaved1F1B -> interleaved with ``plan.vpp`` = stages per rank; ZBVZeroBubble ->
  zb-v and DualPipeV -> dualpipev, two stages per rank in a V, which moesim's generators place
  themselves, ``plan.vpp=1``; InterleavedZeroBubble and the others are refused: no moesim
  equivalent), ``pipeline_parallel_layers_per_stage`` / ``_microbatch_size``,
  ``expert_parallel_degree``, ``expert_tensor_parallel_degree`` (1 or tp, as torchtitan asserts;
  the experts are split over TP where torchtitan splits them: ``memory.expert_tp``),
  ``expert_parallel_comm_backend`` (deepep), ``enable_async_tensor_parallel`` (TP communication
  overlapped with the GEMMs); ``context_parallel_degree`` > 1 is refused.
* ``[activation_checkpoint]``: ``mode`` none / full; selective with ``selective_ac_option``
  (default "2") a layer interval N (torchtitan wraps every N-th layer in full checkpointing;
  N = 1 or 0 is full recompute, N >= 2 is approximated by no recompute, said in the notes) or
  "op" (torchtitan's per-op policy, approximated by ``recompute_modules``, said in the notes);
  ``memory_budget`` (compiler-chosen) is refused.

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
from moesim.importers.common import ImportReport, divide, preset_architecture, world_size

KEYS_FILE = Path(__file__).with_name("torchtitan_keys.json")
FLAVORS = {("llama3", "8B"): "llama3-8b", ("llama3", "70B"): "llama3-70b", ("qwen3", "30B-A3B"): "qwen3-30b-a3b",
           ("qwen3", "235B-A22B"): "qwen3-235b-a22b", ("deepseek_v3", "671B"): "deepseek-v3",
           ("gpt_oss", "120b"): "gpt-oss-120b"}
# torch.distributed.pipelining's get_schedule_class names (it matches them case-insensitively) ->
# the moesim schedule. zb-v and dualpipev run exactly two stages per rank in a V (torchtitan
# asserts "v schedules assume 2 stages per rank"); moesim's generators place both chunks
# themselves, so plan.vpp stays 1 (plan.vpp counts the looped chunks of 'interleaved' only).
SCHEDULES = {"1f1b": ("1F1B", "1f1b"), "gpipe": ("GPipe", "gpipe"),
             "interleaved1f1b": ("Interleaved1F1B", "interleaved"), "zbvzerobubble": ("ZBVZeroBubble", "zb-v"),
             "dualpipev": ("DualPipeV", "dualpipev")}
SINGLE_STAGE = ("1f1b", "gpipe")
V_SCHEDULES = ("zb-v", "dualpipev")
NO_EQUIVALENT = {
    "interleavedzerobubble": "InterleavedZeroBubble (PyTorch's ZB1P: zero-bubble B/W split looped over several "
                             "stages per rank) has no moesim schedule: zb-h1 runs one stage per rank, interleaved "
                             "does not split the backward",
    "loopedbfs": "LoopedBFS has no moesim schedule",
    "pipelineschedulesingle": "PipelineScheduleSingle is a base class (a CSV schedule): not modelled",
    "pipelineschedulemulti": "PipelineScheduleMulti is a base class (a CSV schedule): not modelled"}
NO_COST_SECTIONS = ("job", "profiling", "metrics", "optimizer", "lr_scheduler", "checkpoint", "validation", "comm",
                    "debug", "memory_estimation")
USED = {
    ("model", "name"): "model", ("model", "flavor"): "model",
    ("model", "converters"): "model.gemm_dtype, memory.fp8_linear_inputs",
    ("training", "seq_len"): "model.seq_len", ("training", "local_batch_size"): "plan.micro_batch_size, num_microbatches",
    ("training", "global_batch_size"): "plan.num_microbatches",
    ("training", "dtype"): "memory.param_dtype, grad_dtype, optimizer_state_dtype, master_weights (model.dtype without "
                           "mixed precision)",
    ("training", "mixed_precision_param"): "model.dtype (the GEMM and activation dtype)",
    ("training", "mixed_precision_reduce"): "plan.grad_dtype_bytes",
    ("parallelism", "data_parallel_replicate_degree"): "plan.dp (DDP; with sharding: refused)",
    ("parallelism", "data_parallel_shard_degree"): "plan.dp, memory.zero_stage",
    ("parallelism", "tensor_parallel_degree"): "plan.tp", ("parallelism", "pipeline_parallel_degree"): "plan.pp",
    ("parallelism", "pipeline_parallel_schedule"): "schedule, plan.vpp",
    ("parallelism", "pipeline_parallel_layers_per_stage"): "plan.vpp",
    ("parallelism", "pipeline_parallel_first_stage_less_layers"): "plan.vpp (the stage count; moesim splits the "
                                                                  "layers evenly)",
    ("parallelism", "pipeline_parallel_last_stage_less_layers"): "plan.vpp (the stage count; moesim splits the "
                                                                 "layers evenly)",
    ("parallelism", "pipeline_parallel_microbatch_size"): "plan.micro_batch_size",
    ("parallelism", "expert_parallel_degree"): "plan.ep", ("parallelism", "context_parallel_degree"): "(1 only)",
    ("parallelism", "expert_parallel_comm_backend"): "moe.dispatcher",
    ("parallelism", "enable_async_tensor_parallel"): "overlap.tp_comm_overlap",
    ("parallelism", "expert_tensor_parallel_degree"): "plan.ep_layout (1 with tp > 1: folded), memory.expert_tp",
    ("activation_checkpoint", "mode"): "memory.recompute",
    ("activation_checkpoint", "selective_ac_option"): "memory.recompute, recompute_modules",
}
NO_COST = {("model", "hf_assets_path"), ("model", "tokenizer_path"), ("model", "print_after_conversion"),
           ("training", "dataset"), ("training", "dataset_path"), ("training", "max_norm"), ("training", "steps"),
           ("training", "gc_freq"), ("training", "gc_debug"), ("training", "dataloader"),
           ("activation_checkpoint", "preserve_rng_state"), ("activation_checkpoint", "determinism_check"),
           ("activation_checkpoint", "debug"), ("activation_checkpoint", "visualize_memory_budget_pareto"),
           ("parallelism", "pipeline_parallel_schedule_csv"), ("parallelism", "module_fqns_per_model_part")}
DTYPES = {"bfloat16": "bf16", "float32": "fp32"}   # job_config: Literal["bfloat16", "float32"]
REDUCE_DTYPES = {"float32": 4, "bfloat16": 2}       # 0.2.0 accepts float32 only; bfloat16 kept as before
CONVERTERS = ("quantize.linear.float8", "quantize.grouped_mm.float8", "quantize.linear.mx", "quantize.grouped_mm.mx")
_WHY = {"compile": "torch.compile (fused kernels, less host time) is not modelled: eager kernels are priced",
        "quantize": "float8 / MX settings: [model] converters switches FP8 GEMMs on; the rest is not modelled",
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
    spec, kinds = _model(sec("model"), sec("training"), model, notes)
    par = sec("parallelism")
    plan, world_fields, schedule, fsdp = _plan(par, sec("training"), spec, topology, nodes, gpus, notes)
    overrides: dict[tuple[str, str], tuple[str, str]] = {}
    memory = _precision(sec("training"), spec, plan, fsdp, notes)
    memory.update(_converters(sec("model"), sec("quantize"), spec, kinds, plan["pp"], notes, overrides))
    scenario: dict[str, Any] = {"name": name or p.stem, "topology": topology, **world_fields, "model": spec,
                                "plan": plan, "schedule": schedule, "host": "eager", "grad_accumulation": "add",
                                "memory": {**_recompute(sec("activation_checkpoint"), kinds, notes),
                                           "zero_stage": 3 if fsdp else 0, **memory, "probs_on_expert_output": True,
                                           **_expert_tp(par, kinds, plan["tp"], plan["ep"], notes)},
                                "overlap": {"tp_comm_overlap": bool(par.get("enable_async_tensor_parallel", False))},
                                "description": f"imported from torchtitan {p.name}"}
    if spec.get("spec") == "MoESpec":
        backend = par.get("expert_parallel_comm_backend", "standard")
        scenario["moe"] = {"dispatcher": "deepep" if backend == "deepep" else "alltoall", "experts": "grouped",
                           "token_movement": "torchtitan"}
    used, not_modelled, no_cost = _account(keys, overrides)
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
            if key not in sections[section]:
                raise ConfigError(f"[{section}] {key}", f"is not a field of torchtitan's [{section}]",
                                  f"use one of: {', '.join(sections[section])}", source=str(p))
            out.append((section, key))
    return out


def _int(sec: dict[str, Any], section: str, key: str, default: int, minimum: int) -> int:
    """An integer setting, or a ConfigError naming the key."""
    value = sec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"[{section}] {key}", f"must be an integer >= {minimum}, got {value!r}")
    return value


def _model(model_sec: dict[str, Any], training: dict[str, Any], model: str | None,
           notes: list[str]) -> tuple[dict[str, Any], tuple[bool, ...]]:
    """The model's fields and, per layer, whether it is a MoE layer."""
    from moesim.workload.hf_config import shipped_config
    from moesim.workload.presets import model_by_name_or_path

    seq = _int(training, "training", "seq_len", 2048, 1)
    key = (model_sec.get("name"), str(model_sec.get("flavor")))
    if model is not None:
        spec = model_by_name_or_path(model, seq_len=seq, field="--model")
        notes.append(f"model from --model {model} ([model] {key[0]} {key[1]} not checked)")
    elif key in FLAVORS:
        spec = shipped_config(FLAVORS[key], seq_len=seq).spec
        notes.append(f"[model] {key[0]} {key[1]}: the shipped Hugging Face config {FLAVORS[key]}")
    else:
        flavors = known_keys()["flavors"].get(str(key[0]))
        raise ConfigError("[model] flavor", f"{key[0]} {key[1]} has no moesim model"
                          + (f" (torchtitan's flavors: {', '.join(flavors)})" if flavors else ""),
                          f"give the model with --model (a preset or a config.json); known: "
                          f"{', '.join(f'{n} {f}' for n, f in FLAVORS)}")
    kinds = tuple(bool(spec.is_moe_layer(i)) for i in range(spec.num_layers)) if hasattr(spec, "is_moe_layer") \
        else (False,)
    # the architecture only: precision and routing come from the TOML (its float8 converters)
    fields = preset_architecture(spec, model or FLAVORS[key], "the TOML", notes)
    fields["seq_len"] = seq
    fields["activation_fusion"] = False   # torchtitan's FeedForward: w2(F.silu(w1(x)) * w3(x)), two kernels
    fields["rope_impl"] = "complex"       # apply_rotary_emb: view_as_complex(xq.float()) * freqs_cis
    if "expert_bias" in fields:   # torchtitan's MoE default load_balance_coeff = 1e-3: the expert bias is on
        fields["expert_bias"] = True
        notes.append("MoE: torchtitan's load_balance_coeff default (1e-3) keeps an expert bias (model.expert_bias)")
    if fields.get("num_nextn_predict_layers"):   # torchtitan 0.2.0's models (deepseek_v3 included) have no MTP
        notes.append(f"no MTP: torchtitan's {key[0]} has no multi-token-prediction module (the config's "
                     f"num_nextn_predict_layers {fields['num_nextn_predict_layers']} -> 0)")
        fields["num_nextn_predict_layers"] = 0
    return fields, kinds


def _plan(par: dict[str, Any], training: dict[str, Any], spec: dict[str, Any], topology: str, nodes: int | None,
          gpus: int | None, notes: list[str]) -> tuple[dict[str, Any], dict[str, Any], str, bool]:
    """(plan, world fields, schedule, FSDP on)."""
    S = "parallelism"
    tp, pp = _int(par, S, "tensor_parallel_degree", 1, 1), _int(par, S, "pipeline_parallel_degree", 1, 1)
    ep, rep = _int(par, S, "expert_parallel_degree", 1, 1), _int(par, S, "data_parallel_replicate_degree", 1, 1)
    shard = _int(par, S, "data_parallel_shard_degree", -1, -1)
    etp = _int(par, S, "expert_tensor_parallel_degree", 1, 1)
    if shard == 0:
        raise ConfigError("[parallelism] data_parallel_shard_degree", "0 is not a degree (torchtitan: -1 or >= 1)",
                          "use -1 (the rest of the world) or a degree >= 1")
    if _int(par, S, "context_parallel_degree", 1, 1) != 1:
        raise ConfigError("[parallelism] context_parallel_degree", "context parallelism is not modelled",
                          "simulate with context_parallel_degree = 1")
    fixed = tp * pp * rep * (shard if shard > 0 else 1)
    smallest_ep = pp * rep * max(ep, tp) if tp > 1 and etp == 1 and ep % tp == 0 else tp * pp * rep * ep
    world, fields = world_size(topology, nodes, gpus, fixed if shard > 0 else max(fixed, smallest_ep), notes,
                               "the TOML")
    dp = divide("world size", world, tp * pp, "tensor x pipeline degrees", "give a GPU count they divide")
    if shard > 0 and rep * shard != dp:
        raise ConfigError("[parallelism] data_parallel_shard_degree", f"replicate {rep} x shard {shard} = {rep * shard} "
                          f"but the world leaves {dp} data-parallel ranks", "use -1 (the rest) or match the GPU count")
    shard = divide("[parallelism] data_parallel_replicate_degree", dp, rep, "data_parallel_replicate_degree",
                   f"give a replicate degree dividing the {dp} data-parallel ranks")
    if rep > 1 and shard > 1:
        raise ConfigError("[parallelism] data_parallel_replicate_degree",
                          f"{rep} with data_parallel_shard_degree {shard} is HSDP: torchtitan shards parameters, "
                          f"gradients and optimizer states over groups of {shard} GPUs and replicates them {rep} "
                          f"times, but moesim's ZeRO-3 (memory.zero_stage) shards over the whole data-parallel group "
                          f"({dp} GPUs) and has no smaller shard group; simulating it as FSDP over {dp} would "
                          "understate memory and misplace the gradient traffic",
                          f"set data_parallel_replicate_degree = 1 to simulate FSDP over all {dp} GPUs (a lower "
                          "bound on HSDP's memory)")
    if rep > 1 and (tp > 1 or pp > 1 or ep > 1):
        raise ConfigError("[parallelism] data_parallel_replicate_degree",
                          f"{rep} without sharding is DDP, which torchtitan refuses with tensor, pipeline or expert "
                          "parallelism ('DDP has not supported > 1D parallelism')",
                          "use data_parallel_shard_degree (FSDP) instead")
    if rep > 1:
        notes.append(f"data_parallel_replicate_degree {rep}, shard 1: DDP (parameters and optimizer replicated, "
                     "memory.zero_stage 0; gradients all-reduced)")
    if ep > 1 and etp not in (1, tp):
        raise ConfigError("[parallelism] expert_tensor_parallel_degree", f"{etp} with tensor_parallel_degree {tp}: "
                          "torchtitan supports expert TP 1 or equal to TP ('Currently we only support ETP=TP or "
                          "ETP=1')", f"use 1{f' or {tp}' if tp > 1 else ''}")
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
    local = _int(training, "training", "local_batch_size", 8, 1)
    glob = training.get("global_batch_size", -1)
    if glob not in (-1, None):
        glob = _int(training, "training", "global_batch_size", -1, 1)
    accum = 1 if glob in (-1, None) else divide("[training] global_batch_size", glob, local * dp,
                                                 "local_batch_size x dp", "give a multiple of it")
    schedule, vpp = "1f1b", 1
    mbs, micro = local, accum
    if pp > 1:
        schedule = _schedule(par)
        mbs = _int(par, S, "pipeline_parallel_microbatch_size", 1, 1)
        micro = divide("[training] local_batch_size", local, mbs, "pipeline_parallel_microbatch_size",
                       "give a multiple of it") * accum
        per_rank = _stages_per_rank(par, spec, pp, schedule, notes)
        vpp = per_rank if schedule == "interleaved" else 1
        _check_schedule(schedule, pp, micro, vpp, local, mbs)
    plan = {"tp": tp, "pp": pp, "dp": dp, "ep": ep, "vpp": vpp, "sequence_parallel": tp > 1,
            "micro_batch_size": mbs, "num_microbatches": micro, **({"ep_layout": "folded"} if folded else {})}
    return plan, fields, schedule, shard > 1


def _schedule(par: dict[str, Any]) -> str:
    """The moesim schedule of ``pipeline_parallel_schedule`` (matched case-insensitively, as
    torch's ``get_schedule_class``)."""
    name = par.get("pipeline_parallel_schedule", "1F1B")
    low = name.lower() if isinstance(name, str) else name
    if low in NO_EQUIVALENT:
        raise ConfigError("[parallelism] pipeline_parallel_schedule", NO_EQUIVALENT[low],
                          "use Interleaved1F1B (the same looped stages, B and W not split) or ZBVZeroBubble "
                          "(zero-bubble, two stages per rank in a V)")
    if low not in SCHEDULES:
        raise ConfigError("[parallelism] pipeline_parallel_schedule", f"{name!r} is not a schedule moesim models",
                          f"use one of: {', '.join(v[0] for v in SCHEDULES.values())}")
    return SCHEDULES[low][1]


def _stages_per_rank(par: dict[str, Any], spec: dict[str, Any], pp: int, schedule: str, notes: list[str]) -> int:
    """Virtual stages per rank as torchtitan's ``pipeline_parallel.py`` counts them: with
    ``pipeline_parallel_layers_per_stage``, ceil((layers + first/last stage's layer allowances) / it)
    stages over the ranks; else 1 for single-stage schedules and 2 for multi-stage ones (the V
    schedules assert exactly 2)."""
    per_stage = par.get("pipeline_parallel_layers_per_stage")
    multi = schedule not in SINGLE_STAGE
    if not per_stage:
        if multi:
            notes.append(f"{schedule}: 2 stages per pipeline rank (torchtitan's default for multi-stage schedules)"
                         + ("; moesim's generator places the V itself (plan.vpp=1)" if schedule in V_SCHEDULES else ""))
        return 2 if multi else 1
    per_stage = _int(par, "parallelism", "pipeline_parallel_layers_per_stage", 1, 1)
    weights = _int(par, "parallelism", "pipeline_parallel_first_stage_less_layers", 1, 0) + \
        _int(par, "parallelism", "pipeline_parallel_last_stage_less_layers", 1, 0)
    stages = -(-(spec["num_layers"] + weights) // per_stage)
    per_rank = divide("[parallelism] pipeline_parallel_layers_per_stage", stages, pp, "pipeline_parallel_degree",
                      "give pipeline_parallel_layers_per_stage giving a stage count the ranks divide (as torchtitan asks)")
    if per_rank != 1 and not multi or per_rank < 2 and multi:
        raise ConfigError("[parallelism] pipeline_parallel_layers_per_stage", f"gives {per_rank} stage(s) per rank; "
                          f"{schedule} needs {'at least 2' if multi else 'exactly 1'} (as torchtitan asserts)",
                          "change pipeline_parallel_layers_per_stage")
    if schedule in V_SCHEDULES and per_rank != 2:
        raise ConfigError("[parallelism] pipeline_parallel_layers_per_stage", f"gives {per_rank} stages per rank; "
                          f"{schedule} runs exactly 2 per rank in a V (torchtitan asserts 'v schedules assume 2 "
                          "stages per rank')", f"give a value making {2 * pp} stages, or use Interleaved1F1B")
    return per_rank


def _check_schedule(schedule: str, pp: int, micro: int, vpp: int, local: int, mbs: int) -> None:
    """The schedule's own constraints (DualPipeV: microbatches >= 2 x ranks), refused naming the TOML keys."""
    from moesim.schedules import generate

    try:
        generate(schedule, pp, micro, vpp if schedule == "interleaved" else None)
    except ConfigError as err:
        raise ConfigError("[training] local_batch_size", f"{local} / pipeline_parallel_microbatch_size {mbs} gives "
                          f"{micro} microbatch(es) per step: {err.problem}",
                          "raise local_batch_size (or global_batch_size), or lower pipeline_parallel_microbatch_size"
                          ) from None


def _precision(training: dict[str, Any], spec: dict[str, Any], plan: dict[str, Any], fsdp: bool,
               notes: list[str]) -> dict[str, Any]:
    """torchtitan's dtypes -> ``model.dtype`` (set in ``spec``), ``plan.grad_dtype_bytes`` and the
    memory fields. ``dtype`` is what parameters, gradients and Adam states are stored in (torch's
    AdamW keeps states like its parameters); ``mixed_precision_param`` is the compute dtype
    where mixed precision applies (``maybe_enable_amp`` and ``fully_shard``'s policy)."""
    def choice(key: str, default: str, allowed: dict) -> str:
        value = training.get(key, default)
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(f"[training] {key}", f"unknown dtype {value!r}", f"use one of: {', '.join(allowed)}")
        return value

    stored, mp = choice("dtype", "float32", DTYPES), choice("mixed_precision_param", "bfloat16", DTYPES)
    reduce = choice("mixed_precision_reduce", "float32", REDUCE_DTYPES)
    tp, pp = plan["tp"], plan["pp"]
    if fsdp:
        compute, key, how = mp, "mixed_precision_param", "FSDP's mixed-precision policy"
    elif tp > 1 or pp > 1:
        compute, key, how = stored, "dtype", "no mixed precision (torchtitan disables it with TP or PP without FSDP)"
    else:
        compute, key, how = mp, "mixed_precision_param", "torch.autocast (DDP or one GPU)"
    if compute == "float32":
        raise ConfigError(f"[training] {key}", f"float32 GEMMs ({how}): moesim prices tensor-core GEMMs in bf16, "
                          "fp16 or fp8 only", "use bfloat16" + (" (or shard with data_parallel_shard_degree > 1, "
                                                                  "where mixed_precision_param applies)"
                                                                  if key == "dtype" else ""))
    spec["dtype"] = DTYPES[compute]
    # FSDP reduce-scatters in mixed_precision_reduce; DDP all-reduces the gradients as stored.
    plan["grad_dtype_bytes"] = REDUCE_DTYPES[reduce] if fsdp else REDUCE_DTYPES[stored]
    if stored == "float32":
        notes.append(f"[training] dtype float32: parameters, gradients and Adam states stored in fp32 (16 B per "
                     f"parameter before sharding, no separate master copy); GEMMs in {DTYPES[compute]} via {how}"
                     + ("; moesim prices the ZeRO-3 gather buffer in the stored fp32 where FSDP gathers "
                        f"{DTYPES[compute]} (over by half of it)" if fsdp else "")
                     + ("; autocast keeps some activations in fp32, counted in bf16" if not fsdp and tp == pp == 1
                        else ""))
        return {"param_dtype": "fp32", "grad_dtype": "fp32", "optimizer_state_dtype": "fp32"}
    notes.append("[training] dtype bfloat16: parameters, gradients and Adam states in bf16, no fp32 master copy "
                 "(8 B per parameter before sharding)")
    return {"param_dtype": "bf16", "grad_dtype": "bf16", "optimizer_state_dtype": "bf16", "master_weights": False}


def _converters(model_sec: dict[str, Any], quantize: dict[str, Any], spec: dict[str, Any], kinds: tuple[bool, ...],
                pp: int, notes: list[str], overrides: dict[tuple[str, str], tuple[str, str]]) -> dict[str, Any]:
    """``[model] converters`` -> ``model.gemm_dtype`` (set in ``spec``) and the memory fields.
    ``quantize.linear.float8`` swaps every ``nn.Linear`` (attention, dense FFN, shared experts,
    router, head unless ``filter_fqns``) to torchao's Float8Linear; the routed experts are not
    linears (``GroupedExperts`` parameters used by ``torch._grouped_mm``): only
    ``quantize.grouped_mm.float8`` makes them FP8, and only in the modules its ``fqns`` name
    (an empty list converts nothing). moesim's ``gemm_dtype`` sets dense and expert GEMMs together."""
    conv = model_sec.get("converters") or []
    if isinstance(conv, str):
        conv = [c.strip() for c in conv.split(",") if c.strip()]
    if not isinstance(conv, list) or not all(isinstance(c, str) for c in conv):
        raise ConfigError("[model] converters", f"must be a list of converter names, got {conv!r}",
                          f"use some of: {', '.join(CONVERTERS)}")
    unknown = [c for c in conv if c not in CONVERTERS]
    if unknown:
        raise ConfigError("[model] converters", f"{', '.join(map(repr, unknown))} is not a torchtitan converter",
                          f"use some of: {', '.join(CONVERTERS)}" + (" ('float8' is now 'quantize.linear.float8')"
                                                                    if "float8" in unknown else ""))
    if any(c.endswith(".mx") for c in conv):
        raise ConfigError("[model] converters", f"{conv}: MX formats are not modelled", "drop the mx converter")
    quantize = quantize if isinstance(quantize, dict) else {}
    linear, grouped = "quantize.linear.float8" in conv, "quantize.grouped_mm.float8" in conv
    has_moe = any(kinds)
    for sub, on in (("linear", linear), ("grouped_mm", grouped)):
        if sub in quantize and not on:
            overrides[("quantize", sub)] = ("no_cost", "")   # its converter is not in [model] converters
    experts_fp8 = False
    if grouped:
        if pp > 1:
            raise ConfigError("[model] converters", "quantize.grouped_mm.float8 with pipeline_parallel_degree "
                              f"{pp}: torchtitan asserts 'Float8 MoE training prototype does not yet support "
                              "pipeline parallelism'", "drop the converter or use pipeline_parallel_degree = 1")
        fqns = _sub(quantize, "grouped_mm", "float8").get("fqns", [])
        if isinstance(fqns, str):
            fqns = [f.strip() for f in fqns.split(",") if f.strip()]
        if not isinstance(fqns, list) or not all(isinstance(f, str) for f in fqns):
            raise ConfigError("[quantize.grouped_mm.float8] fqns", f"must be a list of module names, got {fqns!r}",
                              'e.g. fqns = ["experts"]')
        moe_layers = [i for i, moe in enumerate(kinds) if moe]
        hit = [i for i in moe_layers if any(f and f in f"layers.{i}.moe.experts" for f in fqns)]
        if hit and len(hit) < len(moe_layers):
            raise ConfigError("[quantize.grouped_mm.float8] fqns", f"{fqns} converts the experts of {len(hit)} of "
                              f"{len(moe_layers)} MoE layers; moesim runs all or none of them in FP8",
                              'name every MoE layer, e.g. fqns = ["experts"]')
        experts_fp8 = bool(hit)
        if "grouped_mm" in quantize:
            overrides[("quantize", "grouped_mm")] = ("used", "model.gemm_dtype (float8.fqns: the MoE modules in FP8)") \
                if experts_fp8 else ("no_cost", "")
        if not experts_fp8:
            notes.append("quantize.grouped_mm.float8 converts nothing here ("
                         + ("a dense model" if not has_moe else f"[quantize.grouped_mm.float8] fqns {fqns} names no "
                            "MoE experts module") + "): no effect, as in torchtitan")
    if has_moe and linear != experts_fp8:
        fp8, bf16 = ("the dense linears", "the routed experts' grouped GEMMs") if linear else \
            ("the routed experts' grouped GEMMs", "the dense linears (attention, shared experts)")
        raise ConfigError("[model] converters", f"{conv} makes {fp8} FP8 and leaves {bf16} in bf16; moesim's "
                          "model.gemm_dtype sets every linear GEMM, experts included, so it cannot express the mix",
                          "use both quantize.linear.float8 and quantize.grouped_mm.float8 (with "
                          '[quantize.grouped_mm.float8] fqns = ["experts"]) for all-FP8, or neither for bf16')
    if not linear and not experts_fp8:
        return {}
    if linear and "linear" in quantize:
        overrides[("quantize", "linear")] = ("not_modelled", "moesim runs the attention, FFN and expert projections "
                                             "in FP8 and the output head and router in bf16 whatever filter_fqns "
                                             "says; the recipe and FP8 all-gather are not modelled")
    spec["gemm_dtype"] = "fp8"
    notes.append("FP8 GEMMs (model.gemm_dtype='fp8'): torchao keeps the bf16 inputs for backward and casts them "
                 "again (memory.fp8_linear_inputs=False); the dispatch stays bf16")
    return {"fp8_linear_inputs": False}


def _sub(quantize: dict[str, Any], *path: str) -> dict[str, Any]:
    node: Any = quantize
    for part in path:
        node = node.get(part, {}) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise ConfigError(f"[quantize.{'.'.join(path)}]", "must be a table")
    return node


def _recompute(ac: dict[str, Any], kinds: tuple[bool, ...], notes: list[str]) -> dict[str, Any]:
    """torchtitan's activation checkpointing (``distributed/activation_checkpoint.py``) ->
    ``memory.recompute`` / ``recompute_modules``.

    * full: every transformer block checkpointed whole = moesim's full recompute.
    * selective, ``selective_ac_option`` N (default "2"): ``_apply_layer_sac`` checkpoints block
      k (counted from 1) when k % N == 0, or every block for N = 0: N in (0, 1) is full
      recompute, N >= 2 moesim's full recompute of every N-th layer (``recompute_method="every"``;
      counted within each pipeline stage's layers, where torchtitan counts over the model part).
    * selective "op": per-op SAC on each block: the outputs of every other ``aten.mm``, of SDPA
      (output and logsumexp), reduce-scatters, ``max`` (and deepseek_v3's all-to-alls) are
      saved, the rest recomputed: norms, RoPE, SiLU and products, the other matmuls, and the
      routed experts (``_grouped_mm`` is not saved). Nearest moesim set: ``mlp`` for dense
      layers (llama3-8B: torchtitan keeps ~38% of a layer's activations, ``mlp`` 32%; the
      forward re-run is the whole FFN where torchtitan re-runs w3, wk and wo), and ``moe`` +
      ``layernorm`` for MoE layers (the routed block freed whole, the norms' outputs too; moesim
      does not simulate the re-run of ``moe``)."""
    mode = ac.get("mode", "selective")
    if mode == "memory_budget":
        raise ConfigError("[activation_checkpoint] mode", "'memory_budget' (the compiler chooses what to recompute "
                          "under torch.compile, to [activation_checkpoint] memory_budget) is not modelled",
                          "use none, selective or full")
    if mode not in ("none", "selective", "full"):
        raise ConfigError("[activation_checkpoint] mode", f"unknown {mode!r}", "use none, selective or full")
    if mode != "selective":
        return {"recompute": mode}
    option = ac.get("selective_ac_option", "2")   # torchtitan 0.2.0's default
    text = str(option).strip() if isinstance(option, (str, int)) and not isinstance(option, bool) else ""
    if text == "op":
        has_dense, has_moe = not all(kinds), any(kinds)
        modules = (("layernorm",) if has_moe else ()) + (("mlp",) if has_dense else ()) + (("moe",) if has_moe else ())
        notes.append(f"selective_ac_option 'op' (torchtitan saves the outputs of every other matmul, attention and "
                     f"reduce-scatters and recomputes the rest): approximated by recompute_modules {list(modules)}"
                     + ("; dense layers: the whole FFN's tensors freed and its forward re-run (torchtitan keeps "
                        "w1's and w2's outputs and re-runs w3, wk and wo)" if has_dense else "")
                     + ("; MoE layers: the routed block freed whole (torchtitan saves no grouped-GEMM output) but its "
                        "re-run not simulated" if has_moe else ""))
        return {"recompute": "selective", "recompute_modules": list(modules)}
    if not text.isdigit():
        raise ConfigError("[activation_checkpoint] selective_ac_option", f"{option!r} is neither 'op' nor a "
                          "non-negative layer interval (torchtitan's 'Invalid selective AC option')",
                          "use 'op' or an integer such as '2'")
    n = int(text)
    if n <= 1:
        notes.append(f"selective_ac_option {text!r}: torchtitan checkpoints every layer: full recompute")
        return {"recompute": "full"}
    notes.append(f"selective_ac_option {text!r}: torchtitan fully recomputes every {n}-th layer (memory.recompute "
                 f"'full', recompute_method 'every', recompute_num_layers {n}; counted within each pipeline stage)")
    return {"recompute": "full", "recompute_method": "every", "recompute_num_layers": n}


def _expert_tp(par: dict[str, Any], kinds: tuple[bool, ...], tp: int, ep: int, notes: list[str]) -> dict[str, Any]:
    """``memory.expert_tp``: where torchtitan splits the routed experts over TP. Its
    ``apply_moe_ep_tp`` gives the experts TensorParallel over the TP mesh with ep = 1 and
    ExpertTensorParallel with etp = tp > 1; expert_tensor_parallel_degree has no effect with
    ep = 1 or on a dense model ("No effect for non-MoE models, or when ep = 1")."""
    etp = _int(par, "parallelism", "expert_tensor_parallel_degree", 1, 1)
    if not any(kinds):
        if etp != 1:
            notes.append(f"expert_tensor_parallel_degree {etp}: no effect on a dense model (as torchtitan)")
        return {}
    if ep == 1:
        if etp != 1:
            notes.append(f"expert_tensor_parallel_degree {etp}: no effect with expert_parallel_degree 1 (as "
                         "torchtitan)" + (f"; the experts are split over TP {tp} anyway" if tp > 1 else
                                          ": whole experts on every GPU"))
        if tp == 1:
            return {}
        notes.append(f"expert_parallel_degree 1 with tp {tp}: torchtitan splits every expert over TP; the memory "
                     "budget does (memory.expert_tp), moesim's kernels run whole experts on each GPU's tokens "
                     "(the same FLOPs)")
        return {"expert_tp": tp}
    if etp == 1:
        return {}
    notes.append(f"expert_tensor_parallel_degree {etp} = tp: EP inside each TP index's data parallelism; the memory "
                 "budget splits each expert over TP (memory.expert_tp), moesim's kernels run whole experts on each "
                 "GPU's tokens (the same FLOPs)")
    return {"expert_tp": etp}


def _account(keys: list[tuple[str, str]],
             overrides: dict[tuple[str, str], tuple[str, str]]) -> tuple[tuple, tuple, tuple[str, ...]]:
    used, not_modelled, no_cost = [], [], []
    for section, key in keys:
        label = f"[{section}] {key}"
        kind, why = overrides.get((section, key), ("", ""))
        if kind == "used" or not kind and (section, key) in USED:
            used.append((label, why or USED[(section, key)]))
        elif kind == "no_cost" or not kind and (section in NO_COST_SECTIONS or (section, key) in NO_COST):
            no_cost.append(label)
        else:
            not_modelled.append((label, why or _WHY.get(section, "not modelled: the simulation runs as if it were "
                                                                 "at torchtitan's default")))
    return tuple(used), tuple(not_modelled), tuple(no_cost)
