"""Megatron-Core's own MoE layer timed on one GPU, stored as ``moesim.layer_workloads/1`` entries.

The stored MoE cases so far ran moesim's harness programs (``moesim.calibrate.layer_programs``),
written after Megatron's and torchtitan's code. This probe runs the framework itself:
``megatron.core.transformer.moe.moe_layer.MoELayer`` of megatron-core (the installed wheel,
version recorded), built from ``get_moe_module_spec(use_te=False)`` (the local spec: no Transformer
Engine on the lent machines), the ``alltoall`` token dispatcher (expert-parallel group of one),
the default ``TopKRouter`` (softmax after top-k, ``moe_router_load_balancing_type="none"``), the
weighted SwiGLU fused as Megatron-LM's default ``--bias-swiglu-fusion`` runs it (``torch.compile``;
``SWIGLU_FUSION``; the first run of 2026-12-06g had it off), no permute or router fusion (those need Transformer Engine), bf16 params, eager, one process with a
world of one. Expert modules:

* ``loop``: ``SequentialMLP`` (one local MLP per expert after ``tokens_per_expert.tolist()``);
* ``grouped``: ``GroupedMLP`` with ``torch._grouped_mm`` standing in for the ``grouped_gemm``
  package's ``ops.gmm`` (that package has no wheel; the stand-in copies the host's counts to the
  GPU as int32 offsets, one small host-to-device copy per GEMM).

Routing is forced to moesim's drawn assignment (``layer_workloads.draw_routing``) by adding the
same bf16 ``[T, E]`` bias the harness's megatron program adds, here to the router's ``gating``
output. Timing and the file format are ``layer_workloads``' (``measure``, provenance, kernel
inventory); entries carry ``workload.framework`` with what ran. ``moesim validate --layers FILE``
predicts them as ``token_movement="megatron"`` blocks.

On the device (megatron-core wheel carried in ``.whl``):
``python3 -m lab.mcore_moe_workloads --device cuda --out DIR/mcore.json --budget-s 240``
``--device cpu`` only builds the layers on a tiny shape (Megatron's router and alltoall dispatcher
call CUDA; the CPU build uses the allgather dispatcher): a check of the construction, nothing is timed.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from moesim.calibrate import framework_host as fh
from moesim.calibrate import layer_cases as lc
from moesim.calibrate import layer_workloads as lw
from moesim.calibrate.layer_programs import MoEShape

SHAPES = {name: lc.MOE_SHAPES[name] for name in ("qwen3_30b_a3b", "deepseek_v2_lite", "mixtral_8x7b")}
SMOKE_SHAPES = {"tiny_moe": MoEShape("tiny_moe", 64, 8, 2, 96, 1, None)}
TOKENS = (1024, 4096, 16384)
SKEWS = (("uniform", 0.0), ("zipf", 1.0))
SWIGLU_FUSION = True   # Megatron-LM's --bias-swiglu-fusion default (the weighted SwiGLU by torch.compile)


def build_layer(shape: MoEShape, experts: str, device: str):
    """``MoELayer`` of ``shape`` with ``experts`` = loop (SequentialMLP) or grouped (GroupedMLP)."""
    from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec
    from megatron.core.transformer.moe.moe_layer import MoELayer
    grouped = experts == "grouped"
    cfg = fh.megatron_config(shape.hidden, shape.num_experts, shape.top_k, shape.expert_ffn, device, grouped=grouped,
                             swiglu_fusion=SWIGLU_FUSION, shared_ffn=shape.expert_ffn * shape.shared_experts,
                             dispatcher="alltoall" if device == "cuda" else "allgather")
    spec = get_moe_module_spec(use_te=False, num_experts=shape.num_experts, moe_grouped_gemm=grouped)
    layer = MoELayer(cfg, spec.submodules, layer_number=1)
    return layer.to(device=device, dtype=torch.bfloat16).train(), cfg


def _program(experts: str, shared: bool) -> list[str]:
    ops = ["megatron-core MoELayer.forward", "TopKRouter: gating (F.linear bf16)", "add routing bias bf16 [T,E]",
           "topk_routing_with_score_function: topk, softmax fp32 of [T,k] -> bf16, scatter probs, scatter routing map",
           "MoEAlltoAllTokenDispatcher (ep 1): routing_map.sum(0) counts; tokens_per_expert to host on a side stream",
           "permute (moe_utils, unfused): map.T.contiguous, arange+expand+masked_select, probs.T masked_select, index_select",
           ]
    act = "weighted SwiGLU fused (torch.compile)" if SWIGLU_FUSION else "glu: chunk, silu, mul; * probs"
    if experts == "grouped":
        ops += ["GroupedMLP: gmm fc1 (gate+up) = torch._grouped_mm (H2D int32 offsets)",
                "activation_func_with_probs (torch.compile): silu(gate) * up * probs",
                "gmm fc2 = torch._grouped_mm (H2D int32 offsets)"]
    else:
        ops += ["SequentialMLP: tokens_per_expert.tolist(), split; per expert (all local experts, empty ones too): "
                f"MLP linear_fc1 (gate+up), {act}, linear_fc2; cat"]
    ops += ["unpermute (moe_utils, unfused): zeros [T,H], scatter_add"]
    if shared:
        ops += ["SharedExpertMLP: linear_fc1, glu, linear_fc2", "add shared"]
    return ops


def _framework(experts: str) -> dict:
    import megatron.core
    return {"name": "megatron-core", "version": getattr(megatron.core, "__version__", "?"),
            "module": "megatron.core.transformer.moe.moe_layer.MoELayer",
            "spec": "get_moe_module_spec(use_te=False): local linears, no Transformer Engine",
            "dispatcher": "alltoall (expert-parallel group of one: no all-to-all)",
            "experts": ("GroupedMLP, torch._grouped_mm standing in for grouped_gemm.ops.gmm" if experts == "grouped"
                        else "SequentialMLP"),
            "router": "TopKRouter, softmax after top-k, load balancing none, no fusion",
            "bias_activation_fusion": SWIGLU_FUSION,
            "permute_fusion": False}


def _cases(smoke: bool) -> list[tuple]:
    shapes = SMOKE_SHAPES if smoke else SHAPES
    tokens = (64,) if smoke else TOKENS
    skews = SKEWS[:1] if smoke else SKEWS
    passes = ("fwd",) if smoke else lc.PASSES
    return [(name, experts, t, kind, s, p) for name in shapes for experts in ("grouped", "loop")
            for t in tokens for kind, s in skews for p in passes]


def run(device: str, budget_s: float, out: Path, preheat_s: float) -> dict:
    smoke = device != "cuda"
    fh.install_gmm_stand_in()
    fh.init_megatron_single_rank(device)
    start = time.monotonic()
    shapes = SMOKE_SHAPES if smoke else SHAPES
    doc: dict = {"format": lw.FORMAT, "provenance": lw.file_provenance(device, preheat_s),
                 "protocol": {**lw.PROTOCOL, "program": "megatron-core's MoELayer (lab/mcore_moe_workloads.py)"},
                 "gpu_state_before": lw.provenance.gpu_state() if device == "cuda" else [],
                 "entries": [], "skipped": [], "kernel_inventory": {}}
    if smoke:
        for experts in ("grouped", "loop"):
            layer, _ = build_layer(SMOKE_SHAPES["tiny_moe"], experts, device)
            print(f"built {experts}: {type(layer.experts).__name__}, "
                  f"{sum(p.numel() for p in layer.parameters())} parameters", flush=True)
        doc["wall_s"] = round(time.monotonic() - start, 1)
        return doc
    lw.preheat(device, preheat_s)
    layers: dict = {}
    for name, experts, tokens, kind, s, pass_ in _cases(smoke):
        shape = shapes[name]
        skew = "uniform" if kind == "uniform" else f"zipf{s:g}"
        case_id = f"{name}.mcore_megatron.{experts}.scatter_add.t{tokens}.{skew}.{pass_}"
        left = budget_s - (time.monotonic() - start)
        if left < 3.0:
            doc["skipped"].append({"id": case_id, "reason": "budget: spent"})
            continue
        try:
            if (name, experts) not in layers:
                layers.clear()
                if device == "cuda":
                    torch.cuda.empty_cache()
                layers[(name, experts)] = build_layer(shape, experts, device)
            layer, _ = layers[(name, experts)]
            rec = _case(layer, shape, experts, tokens, kind, s, pass_, device, left - 1.0, case_id, doc)
        except (RuntimeError, AssertionError, torch.OutOfMemoryError) as exc:   # recorded, never silent
            rec = {"id": case_id, "reason": f"error: {type(exc).__name__}: {exc}"[:400]}
        doc["skipped" if "reason" in rec else "entries"].append(rec)
        print(rec["id"], rec.get("reason") or f"{rec['measured']['time_ns'] / 1e3:.1f} us", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1))   # what is measured survives a cut-off run
    doc["gpu_state_after"] = lw.provenance.gpu_state() if device == "cuda" else []
    doc["wall_s"] = round(time.monotonic() - start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    return doc


def _case(layer, shape: MoEShape, experts: str, tokens: int, kind: str, s: float, pass_: str, device: str,
          left_s: float, case_id: str, doc: dict) -> dict:
    chosen, routing = lw.draw_routing(shape, tokens, kind, s)
    bias = lw.route_bias(chosen, shape.num_experts, lw.ROUTE_BIAS_BF16, torch.bfloat16, device).view(tokens, 1, -1)
    router = layer.router
    gating = type(router).gating.__get__(router)
    router.gating = lambda inp: gating(inp) + bias
    x = lw._randn((tokens, 1, shape.hidden), device, 7, 1.0)
    with torch.no_grad():   # the forced routing is the drawn one
        probs, routing_map = router(x)
        got = routing_map.view(tokens, -1).sum(0).tolist()
    if got != routing["counts"]:
        return {"id": case_id, "reason": f"routing not forced: counts {got[:6]} vs drawn {routing['counts'][:6]}"}
    params = [p for p in layer.parameters() if p.requires_grad]
    if pass_ == "fwd":
        def step() -> None:
            with torch.no_grad():
                layer(x)
        grad = {"mode": "none", "autograd": "torch.no_grad()"}
    else:
        x.requires_grad_(True)
        dy = lw._randn((tokens, 1, shape.hidden), device, 8, 1.0).detach()
        for p in params:
            p.grad = torch.zeros_like(p)

        def step() -> None:
            x.grad = None
            out, _ = layer(x)
            out.backward(dy)
        grad = {"mode": "accumulate", "upstream": "out.backward(dy), dy fixed bf16 [T,1,H] (no loss kernels)",
                "weights": "'.grad' exists before timing; each iteration adds into it",
                "input": "x.grad set to None before each iteration",
                "param_shapes": [list(p.shape) for p in params]}
    got_m = lw.measure(step, device, left_s)
    if isinstance(got_m, str):
        return {"id": case_id, "reason": got_m}
    sig = f"{shape.name}.mcore.{experts}.{pass_}"
    if sig not in doc["kernel_inventory"]:
        doc["kernel_inventory"][sig] = {"case": case_id, **lw.kernel_inventory(step, device)}
    if kind == "uniform" and tokens >= 4096:
        doc.setdefault("kernel_times", {})[case_id] = lw.kernel_times(step)
    desc = {"kind": "moe_block", "tokens": tokens, "batch": 1, "seq": tokens, "pass": pass_, "dtype": "bf16",
            "eager": True, "torch_compile": False, "cuda_graphs": False, "stream": "default",
            "program": _program(experts, bool(shape.shared_experts)), "grad": grad, "tier": 1,
            "model": {**asdict(shape), "shared_ffn": shape.expert_ffn * shape.shared_experts},
            "experts": experts, "token_movement": "megatron", "combine": "scatter_add", "routing": routing,
            "syncs_per_forward": 1, "framework": _framework(experts),
            "router": {"score_func": "softmax", "pre_softmax": False, "score_dtype": "fp32 then bf16",
                       "gate_dtype": "bf16", "routing_bias": f"bf16 [T,E], {lw.ROUTE_BIAS_BF16} at the drawn experts, "
                                                             "added to the gating output"}}
    entry = {"id": case_id, "workload": desc, "measured": asdict(got_m)}
    if got_m.time_ns < lw.SMALL_NS:
        entry["small"] = True
    return entry


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-s", type=float, default=240.0)
    p.add_argument("--preheat-s", type=float, default=3.0)
    a = p.parse_args(argv)
    doc = run(a.device, a.budget_s, a.out, a.preheat_s if a.device == "cuda" else 0.0)
    print(f"wrote {a.out}: {len(doc['entries'])} entries, {len(doc['skipped'])} skipped, {doc['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
