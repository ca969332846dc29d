"""Host time of a framework's own per-expert module call, measured where the framework is installed.

Section ``host_megatron`` (asked for by name; not in the default sections). A per-expert loop's
host time is mostly the framework's Python around its kernels: Megatron-Core's ``SequentialMLP``
calls one ``MLP`` module per local expert (``linear_fc1`` and ``linear_fc2`` through Megatron's
``LinearWithGradAccumulationAndAsyncCommunication`` autograd function, the weighted SwiGLU with
the routing probabilities, NVTX range calls), where torchtitan's body is three ``matmul`` on
weight views (class ``expert_loop_body`` of :mod:`moesim.calibrate.host_classes`). This section
times a chain of Megatron expert MLP calls exactly as :func:`moesim.calibrate.host_classes.measure_class`
times every class (GPU kept busy behind a queued sleep, chains of two lengths, three phases:
``plain`` no autograd, ``fwd`` recording, ``bwd`` the backward of one call), giving ``host_op``
rows of class ``megatron_expert_mlp``.

It also times the Python that Megatron-Core's ``MoELayer`` runs around its kernels (class
``megatron_moe_layer``): one MoE layer (``alltoall`` dispatcher over a group of one, unfused
permute, ``GroupedMLP`` with ``torch._grouped_mm`` standing in for the ``grouped_gemm`` package) and
the same kernels issued by plain torch calls (:func:`moesim.calibrate.layer_programs.megatron_forward`),
alternated round by round on a shape whose kernels are far shorter than their issue, so each
iteration's wall time is its host time (its reads of the counts included, in both). The row is the
difference per layer call: ``plain`` (no autograd), ``fwd`` (recording), ``bwd`` (the backward's
difference), at each of :data:`LAYER_EXPERTS` local experts (the dispatcher regroups tokens and
probabilities per local expert in Python; the cost model reads the class at a GPU's own count).
Both programs read the counts back; the difference holds Megatron's module calls, config checks,
router and dispatcher bookkeeping, autograd functions written in Python.

The module is built as Megatron-LM trains by default: ``get_moe_module_spec(use_te=False)``'s
expert MLP (local linears: no Transformer Engine on the machines this was written for), SwiGLU
with ``bias_activation_fusion`` (Megatron-LM's ``--bias-swiglu-fusion`` default: the weighted
SwiGLU fused by ``torch.compile``), no bias, bf16. It needs ``megatron-core`` importable and a
one-rank ``torch.distributed`` group (initialised here where none is); without megatron-core the
section records why and measures nothing. The megatron-core version is part of every row.
"""
from __future__ import annotations

import os
import sys
import time
import types

import numpy as np
import torch

from moesim.calibrate.host_classes import CPU_SIZES, GPU_SIZES, Chain, Sizes, _x, measure_class
from moesim.calibrate.section import Section
from moesim.calibrate.timing import Budget, stats_from_ns
from moesim.workload.moe_exec import FRAMEWORK_LAYER_CLASS, MEGATRON_BODY_CLASS

LAYER_PROBE = {"hidden": 512, "num_experts": 8, "top_k": 2, "expert_ffn": 256, "tokens": 256}
# The probe's layer at several local expert counts: the alltoall dispatcher's Python runs per
# local expert chunk (H100, megatron-core 0.16.1: fwd 773 / 890 / 1,246 us at 8 / 32 / 128)
LAYER_EXPERTS = (8, 32, 128)
# The expert MLP chain runs after one expert call on rows / 2 and one on rows / 4 (fwd and bwd)
WARM_ROW_FRACTIONS = (2, 4)
LAYER_ROUNDS, LAYER_ITERS = 9, 20


def megatron_version() -> "str | None":
    """The installed megatron-core version, None where it does not import."""
    try:
        import megatron.core as mc
    except ImportError:
        return None
    return str(getattr(mc, "__version__", "unknown"))


def init_megatron_single_rank(device: str) -> None:
    """A world of one (``torch.distributed``) and Megatron's parallel state over it (TP = PP = EP = 1)."""
    import torch.distributed as dist
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=0, world_size=1)
    from megatron.core import parallel_state as ps
    from megatron.core.transformer.moe import moe_utils
    if not hasattr(moe_utils, "te_general_gemm"):   # 0.16.1 reads this name, defined only with TE
        moe_utils.te_general_gemm = None
    if not ps.model_parallel_is_initialized():
        ps.initialize_model_parallel(1, 1, expert_model_parallel_size=1)
    if device == "cuda":
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
        model_parallel_cuda_manual_seed(1234)


def install_gmm_stand_in() -> None:
    """A ``grouped_gemm`` module whose ``ops.gmm`` is ``torch._grouped_mm`` (the package has no
    wheel; Megatron's ``GroupedMLP`` imports it): the host's counts become int32 offsets on the GPU."""
    if "grouped_gemm" in sys.modules and not getattr(sys.modules["grouped_gemm"], "moesim_stand_in", False):
        return   # the real package
    def gmm(a: torch.Tensor, b: torch.Tensor, batch_sizes: torch.Tensor, trans_b: bool = False) -> torch.Tensor:
        offs = torch.cumsum(batch_sizes, 0).to(device=a.device, dtype=torch.int32)
        return torch._grouped_mm(a, b.transpose(-2, -1) if trans_b else b, offs=offs)
    mod = types.ModuleType("grouped_gemm")
    mod.ops = types.SimpleNamespace(gmm=gmm)
    mod.moesim_stand_in = True
    sys.modules["grouped_gemm"] = mod


def megatron_config(hidden: int, num_experts: int, top_k: int, expert_ffn: int, device: str, *,
                    grouped: bool = False, swiglu_fusion: bool = True, shared_ffn: int = 0,
                    dispatcher: str = "alltoall"):
    """Megatron-Core's ``TransformerConfig`` of one MoE layer as this module and the lab probe build it."""
    import torch.nn.functional as F
    from megatron.core.transformer.transformer_config import TransformerConfig
    return TransformerConfig(
        num_layers=1, hidden_size=hidden, num_attention_heads=8, ffn_hidden_size=4 * hidden,
        num_moe_experts=num_experts, moe_router_topk=top_k, moe_ffn_hidden_size=expert_ffn,
        moe_shared_expert_intermediate_size=shared_ffn or None, moe_token_dispatcher_type=dispatcher,
        moe_router_load_balancing_type="none", moe_aux_loss_coeff=0.0, moe_grouped_gemm=grouped,
        moe_permute_fusion=False, moe_router_fusion=False, add_bias_linear=False, gated_linear_unit=True,
        activation_func=F.silu, bias_activation_fusion=swiglu_fusion, bf16=True, params_dtype=torch.bfloat16,
        use_cpu_initialization=device != "cuda", gradient_accumulation_fusion=False, sequence_parallel=False)


def megatron_expert_chain(s: Sizes, n: int, device: str) -> Chain:
    """A chain of ``n`` Megatron expert MLP calls (``SequentialMLP.local_experts``), each on
    ``tokens / groups`` rows with its routing probabilities, output feeding the next call."""
    from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec
    from megatron.core.transformer.moe.experts import SequentialMLP
    from megatron.core.transformer.moe.moe_layer import get_default_pg_collection
    cfg = megatron_config(s.hidden, n, 2, s.hidden // 2, device)   # top-k unused by the MLP (1 needs pre-softmax)
    spec = get_moe_module_spec(use_te=False, num_experts=n, moe_grouped_gemm=False)
    mlp = SequentialMLP(n, cfg, spec.submodules.experts.submodules, pg_collection=get_default_pg_collection())
    mlp = mlp.to(device=device, dtype=torch.bfloat16)
    rows = s.tokens // s.groups
    probs = torch.full((rows,), 0.5, device=device, dtype=torch.bfloat16)
    experts = list(mlp.local_experts)
    x0 = _x((rows, s.hidden), device, torch.bfloat16)
    for r in (rows // f for f in WARM_ROW_FRACTIONS):   # as in training, where routing gives each call its own
        y = experts[0](x0[:r], probs[:r])[0]   # row count: the compiled weighted SwiGLU (fwd and bwd)
        y.float().sum().backward()            # has seen more than one shape before the chain is timed
    mlp.zero_grad(set_to_none=True)
    x0.grad = None

    def step(y: torch.Tensor, i: int) -> torch.Tensor:
        return experts[i](y, probs)[0]
    return Chain(x0, step, tuple(mlp.parameters()), multi=True)


def _per_iter_ns(step, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter_ns()
    for _ in range(LAYER_ITERS):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter_ns() - t0) / LAYER_ITERS


def megatron_layer_overhead(device: str, version: str, num_experts: "int | None" = None) -> list[dict]:
    """``host_op`` rows of class ``megatron_moe_layer`` (see the module docstring), the probe's
    layer with ``num_experts`` experts (default the probe's)."""
    from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec
    from megatron.core.transformer.moe.moe_layer import MoELayer

    from moesim.calibrate.layer_programs import MoEShape, MoEWeights, megatron_forward
    p = LAYER_PROBE if num_experts is None else {**LAYER_PROBE, "num_experts": int(num_experts)}
    install_gmm_stand_in()
    init_megatron_single_rank(device)
    cfg = megatron_config(p["hidden"], p["num_experts"], p["top_k"], p["expert_ffn"], device, grouped=True)
    spec = get_moe_module_spec(use_te=False, num_experts=p["num_experts"], moe_grouped_gemm=True)
    layer = MoELayer(cfg, spec.submodules, layer_number=1).to(device=device, dtype=torch.bfloat16).train()
    weights = MoEWeights(MoEShape("megatron_probe", p["hidden"], p["num_experts"], p["top_k"], p["expert_ffn"]), device)
    t, h = p["tokens"], p["hidden"]
    bias = torch.zeros(t, p["num_experts"], device=device, dtype=torch.bfloat16)
    gen = torch.Generator(device=device).manual_seed(3)
    x = torch.randn(t, h, generator=gen, device=device, dtype=torch.bfloat16).requires_grad_()
    dy = torch.randn(t, h, generator=gen, device=device, dtype=torch.bfloat16)
    programs = {"megatron": lambda: layer(x.view(t, 1, h))[0].view(t, h),
                "plain": lambda: megatron_forward(weights, x, bias, p["top_k"], None, device != "cuda")}
    times: dict[tuple[str, str], list[float]] = {}

    def steps(fwd):
        def plain() -> None:
            with torch.no_grad():
                fwd()

        def fwd_bwd() -> None:
            x.grad = None
            fwd().backward(dy)
        return {"plain": plain, "fwd": lambda: fwd(), "fwd_bwd": fwd_bwd}
    built = {name: steps(fwd) for name, fwd in programs.items()}
    for name in built:   # warm-up: first calls (torch.compile of the weighted SwiGLU, allocator)
        for step in built[name].values():
            step()
            step()
    for _ in range(LAYER_ROUNDS):   # alternated, so both programs see the same host states
        for name, phases in built.items():
            for phase, step in phases.items():
                times.setdefault((name, phase), []).append(_per_iter_ns(step, device))
    med = {key: float(np.median(v)) for key, v in times.items()}

    def overhead(v: dict) -> dict:   # Megatron's layer minus the plain calls, per phase
        return {"plain": v["megatron", "plain"] - v["plain", "plain"], "fwd": v["megatron", "fwd"] - v["plain", "fwd"],
                "bwd": (v["megatron", "fwd_bwd"] - v["megatron", "fwd"]) - (v["plain", "fwd_bwd"] - v["plain", "fwd"])}
    over = overhead(med)   # of the medians; the spread from each round's own difference
    rounds = overhead({key: np.array(v) for key, v in times.items()})
    rows = []
    for phase, ns in over.items():
        if ns <= 0:
            raise RuntimeError(f"{FRAMEWORK_LAYER_CLASS} {phase}: Megatron's layer no slower than its plain "
                               f"kernels ({ns:.0f} ns)")
        spread = stats_from_ns([max(0.0, float(v)) for v in rounds[phase]]).fields()   # per-round differences
        rows.append({"op": "host_op", "call": FRAMEWORK_LAYER_CLASS, "phase": phase, "gpu_busy": False, **spread,
                     "time_ns": round(ns, 1),
                     "framework": f"megatron-core {version}", "probe": dict(p), "rounds": LAYER_ROUNDS,
                     "iterations": LAYER_ITERS,
                     "megatron_ns": {k: round(med["megatron", k], 1) for k in ("plain", "fwd", "fwd_bwd")},
                     "plain_ns": {k: round(med["plain", k], 1) for k in ("plain", "fwd", "fwd_bwd")},
                     "module": "MoELayer (local spec, alltoall dispatcher, GroupedMLP with torch._grouped_mm) minus "
                               "the same kernels by plain torch calls (layer_programs.megatron_forward)"})
    return rows


def measure_host_megatron(timer: object, grid: object, device: str, budget: Budget) -> Section:
    """``host_op`` rows of classes ``megatron_expert_mlp`` and (on CUDA) ``megatron_moe_layer``
    (plain, fwd, bwd), tagged with the megatron-core version; nothing (and the reason) where
    megatron-core is not installed."""
    sec = Section("host_megatron")
    version = megatron_version()
    if version is None:
        sec.errors.append(f"host_megatron {MEGATRON_BODY_CLASS}: megatron-core is not installed (pip install megatron-core)")
        return sec
    s = GPU_SIZES if device == "cuda" else CPU_SIZES
    install_gmm_stand_in()   # before megatron's grouped_gemm_util reads whether the package exists

    def rows() -> list[dict]:
        init_megatron_single_rank(device)
        chain = megatron_expert_chain(s, max(s.long, s.long_multi), device)
        return [{**r, "framework": f"megatron-core {version}", "module": "SequentialMLP expert MLP (local spec, "
                 "fused weighted SwiGLU)", "warm_row_fractions": list(WARM_ROW_FRACTIONS)}
                for r in measure_class(MEGATRON_BODY_CLASS, chain, s, device)]
    sec.attempt(MEGATRON_BODY_CLASS, budget, rows)
    if device == "cuda":   # Megatron's router and alltoall dispatcher call CUDA
        for e in LAYER_EXPERTS:
            sec.attempt(f"{FRAMEWORK_LAYER_CLASS} ({e} experts)", budget,
                        lambda e=e: megatron_layer_overhead(device, version, e))
    return sec
