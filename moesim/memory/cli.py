"""``moesim memory show``: the per-GPU memory budget of a model, plan and schedule.

A Typer sub-app; the top-level CLI mounts it as ``memory``. It builds a ``ParallelPlan`` and a
:class:`MemoryConfig` from the options, prints the parts table, the per-rank table, the notes
and the verdict (fits with a margin, or over by how much). ``--json`` prints ``to_dict()``
instead. Failed invariants (``validate_budget``) are printed as warnings; with ``--validate``
they are fatal: listed, exit code 1. Bad input prints the error naming the field and exits with 2, no traceback.
Megatron's memory options go by their names (``--recompute-modules``, ``--distributed-optimizer``,
``--precision-aware-optimizer``); ``--published NAME`` shows a published layout with its own options.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from moesim.costs.devices import DEVICES, GIB, get_device
from moesim.errors import ConfigError, MoesimError
from moesim.memory.budget import Budget, MemoryConfig, memory_budget
from moesim.memory.config import DEFAULT_FRAMEWORK_RESERVE_BYTES, DEFAULT_TOKENS_PER_STEP
from moesim.memory.render import parts_table, ranks_table
from moesim.memory.validate import validate_budget
from moesim.schedules import SCHEDULES
from moesim.workload.parallel import ParallelPlan
from moesim.workload.presets import MODELS, model_by_name_or_path

app = typer.Typer(help="Per-GPU memory budget: weights, gradients, optimizer, activations, buffers, KV cache.",
                  no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Per-GPU memory budget: weights, gradients, optimizer, activations, buffers, KV cache."""


def _fail(err: Exception) -> None:
    Console(stderr=True).print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


@app.command()
def show(
    model: str = typer.Option("", "--model", help=f"model preset ({', '.join(MODELS)}) or a Hugging Face "
                              "config.json (or its directory)"),
    gpu: str = typer.Option("H100", "--gpu", help=f"GPU kind: {', '.join(DEVICES)}"),
    tp: int = typer.Option(1, "--tp", help="tensor-parallel degree"),
    dp: int = typer.Option(1, "--dp", help="data-parallel degree"),
    pp: int = typer.Option(1, "--pp", help="pipeline-parallel degree (ranks)"),
    vpp: int = typer.Option(1, "--vpp", help="model chunks per rank ('interleaved' only)"),
    ep: int = typer.Option(1, "--ep", help="expert-parallel degree"),
    expert_tp: int = typer.Option(1, "--expert-tp", help="tensor parallelism inside each expert"),
    replicas: int = typer.Option(0, "--redundant-experts", help="redundant expert replicas per GPU"),
    mbs: int = typer.Option(1, "--mbs", help="micro-batch size (sequences)"),
    microbatches: int = typer.Option(8, "--microbatches", "-m", help="microbatches per iteration"),
    schedule: str = typer.Option("1f1b", "--schedule", help=f"pipeline schedule: {', '.join(SCHEDULES)}"),
    recompute: str = typer.Option("none", "--recompute", help="none, selective or full (--recompute-granularity)"),
    recompute_method: str = typer.Option("uniform", "--recompute-method", help="with full: uniform, block (the "
                                         "first N layers of each stage) or every (every N-th layer, torchtitan)"),
    recompute_num_layers: int = typer.Option(1, "--recompute-num-layers", help="with full: the N of --recompute-method"),
    recompute_modules: Optional[str] = typer.Option(
        None, "--recompute-modules", help="with selective: comma list of core_attn, moe_act, layernorm, mla_up_proj, "
        "mlp, moe, shared_experts (default core_attn)"),
    distributed_optimizer: bool = typer.Option(False, "--distributed-optimizer", help="Megatron's (ZeRO-1)"),
    precision_aware: bool = typer.Option(False, "--precision-aware-optimizer",
                                         help="bf16 Adam moments (--exp-avg-dtype/--exp-avg-sq-dtype bf16)"),
    fp8_cache: str = typer.Option("auto", "--fp8-cache", help="linear inputs kept in FP8: auto (when the model's "
                                  "GEMMs are FP8), on or off"),
    fp8_swiglu: bool = typer.Option(False, "--fp8-swiglu", help="MoE SwiGLU inputs kept in FP8 (DeepSeek-V3)"),
    split_edges: bool = typer.Option(False, "--account-for-edges", help="count the embedding and the loss (and "
                                     "MTP) as layers in the pipeline split (Megatron --account-for-*-in-pipeline-split)"),
    published: Optional[str] = typer.Option(None, "--published", help="a published layout with its own options "
                                            "(moesim.memory.published): deepseek-v3-2048-h800, deepseek-v3-1024-h100, "
                                            "qwen3-235b-256-h100; the other options are ignored"),
    zero: int = typer.Option(0, "--zero", help="ZeRO stage 0-3 (1 = distributed optimizer)"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="override the model's sequence length"),
    no_sp: bool = typer.Option(False, "--no-sp", help="turn sequence parallelism off"),
    reserve_gib: float = typer.Option(DEFAULT_FRAMEWORK_RESERVE_BYTES / GIB, "--reserve-gib",
                                      help="framework reserve (CUDA context, NCCL, fragmentation), GiB"),
    inference: bool = typer.Option(False, "--inference", help="inference budget: weights + KV cache"),
    batch: int = typer.Option(1, "--batch", help="inference: sequences per model replica"),
    context: int = typer.Option(0, "--context", help="inference: tokens per sequence (0 = seq len)"),
    kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="inference: KV-cache dtype"),
    param_dtype: str = typer.Option("bf16", "--param-dtype", help="weight storage dtype"),
    tokens_per_step: int = typer.Option(DEFAULT_TOKENS_PER_STEP, "--tokens-per-step",
                                        help="inference: tokens one forward step runs"),
    validate: bool = typer.Option(False, "--validate", help="check the invariants; exit 1 if one fails"),
    as_json: bool = typer.Option(False, "--json", help="print the budget as JSON"),
) -> None:
    """Print the per-GPU memory budget and whether it fits in the GPU's HBM."""
    try:
        if published:
            from moesim.memory.published import published_budget

            budget = published_budget(published)
            _print(budget, as_json)
            _check(budget, fatal=validate, quiet=as_json)
            return
        if not model:
            raise ConfigError("--model", "is required (or give --published)")
        spec = model_by_name_or_path(model, field="--model")
        if seq_len is not None:
            spec = _with_seq_len(spec, seq_len)
        plan = ParallelPlan(tp=tp, dp=dp, pp=pp, vpp=vpp, sequence_parallel=not no_sp, micro_batch_size=mbs,
                            num_microbatches=microbatches)
        config = MemoryConfig(recompute=recompute, recompute_method=recompute_method,
                              recompute_num_layers=recompute_num_layers, zero_stage=zero, ep=ep, expert_tp=expert_tp,
                              recompute_modules=_modules(recompute_modules), distributed_optimizer=distributed_optimizer,
                              precision_aware_optimizer=precision_aware,
                              exp_avg_dtype="bf16" if precision_aware else "fp32",
                              exp_avg_sq_dtype="bf16" if precision_aware else "fp32",
                              fp8_linear_inputs=_fp8_cache(fp8_cache), fp8_swiglu_inputs=fp8_swiglu,
                              account_for_embedding_in_pipeline_split=split_edges,
                              account_for_loss_in_pipeline_split=split_edges,
                              num_redundant_experts=replicas, framework_reserve_bytes=_reserve(reserve_gib),
                              inference=inference, batch=batch, context_len=context, kv_cache_dtype=kv_dtype,
                              param_dtype=param_dtype, tokens_per_step=tokens_per_step)
        budget = memory_budget(spec, plan, schedule, config, get_device(gpu))
    except MoesimError as err:
        _fail(err)
        return
    _print(budget, as_json)
    _check(budget, fatal=validate, quiet=as_json)


def _modules(text: Optional[str]) -> Optional[tuple[str, ...]]:
    if text is None:
        return None
    return tuple(m.strip() for m in text.replace(" ", ",").split(",") if m.strip())


def _fp8_cache(text: str) -> Optional[bool]:
    choices = {"auto": None, "on": True, "off": False}
    if text not in choices:
        raise ConfigError("--fp8-cache", f"unknown value {text!r}", "use auto, on or off")
    return choices[text]


def _with_seq_len(spec, seq_len: int):
    if seq_len < 1:
        raise ConfigError("--seq-len", f"must be an integer >= 1, got {seq_len}")
    return dataclasses.replace(spec, seq_len=seq_len)


def _reserve(gib: float) -> float:
    if gib < 0:
        raise ConfigError("--reserve-gib", f"must be >= 0, got {gib}")
    return gib * GIB


def _print(budget: Budget, as_json: bool) -> None:
    console = Console(width=160)
    if as_json:
        console.print_json(json.dumps(budget.to_dict()))
        return
    console.print(parts_table(budget))
    console.print(ranks_table(budget))
    for note in budget.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    style = "bold green" if budget.fits else "bold red"
    console.print(f"[{style}]{escape(budget.verdict())}[/{style}]", highlight=False)


def _check(budget: Budget, fatal: bool, quiet: bool) -> None:
    """Print failed invariants (as warnings unless ``fatal``); exit 1 on failure if ``fatal``."""
    failures = validate_budget(budget)
    console = Console(width=160, stderr=quiet)
    if not failures:
        if fatal:
            console.print("validate: all invariants hold", highlight=False)
        return
    label = "validate" if fatal else "warning"
    console.print(f"[red]{label}: {len(failures)} invariant(s) failed[/red]", highlight=False)
    for line in failures:
        console.print(f"  - {escape(line)}", highlight=False, soft_wrap=True)
    if fatal:
        raise typer.Exit(1)
