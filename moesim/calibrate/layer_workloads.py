"""Validation workloads written the way users write them, timed on one GPU, stored with provenance.

Four programs, each forward-only and forward+backward, bf16, eager (no ``torch.compile``, no CUDA
graphs), all on the default stream:

* ``torchtitan`` MoE block (``experts="grouped"``): router ``F.linear`` (bf16, no bias), fp32
  softmax, a fixed fp32 ``[T, E]`` routing bias added before ``torch.topk`` (in place of
  torchtitan's ``[E]`` ``expert_bias``: it makes top-k pick the drawn assignment), top scores
  gathered from the unbiased scores, ``torch.histc`` twice (router's ``tokens_per_expert`` with its
  ``add_``, then the reorderer's), ``torch.argsort(stable=True)``, row ``torch.gather``, scores
  applied *before* the experts (``score_before_experts=True``, the default of torchtitan's
  ``MoE.Config``), experts through ``torch._grouped_mm`` with int32 cumsum offsets
  (gate/up/down, ``silu(gate) * up``), optional shared expert (one SwiGLU FFN of width
  ``shared_experts * expert_ffn``), combine by ``scatter_add`` (bf16 atomics; the mid-2025
  torchtitan combine) or ``index_put`` + ``sum`` over top-k (torchtitan main, ``combine="index_put_sum"``).
  torchtitan's ``indices_padding_wrapper`` (an identity permutation when there is no EP) is left out.
* the same block with ``experts="loop"``: torchtitan ``_run_experts_for_loop`` (``.tolist()`` of the
  counts, a device-to-host sync; ``torch.split``; per expert three ``torch.matmul`` on
  ``w[e].transpose`` views plus ``silu`` and ``mul``; ``torch.cat``; its ``vstack`` with zero rows).
* ``megatron`` token movement (``megatron/core/transformer/moe/moe_utils.py``, unfused): top-k on
  the bf16 logits (plus a fixed bf16 routing bias), softmax of the top-k in fp32 cast back to bf16,
  routing map and probs by ``scatter``, counts ``routing_map.sum(0)`` copied to the host (the
  all-gather dispatcher's ``.cpu()``), ``permute`` = transposed map, ``masked_select`` of token
  indices, ``index_select``; grouped experts as above; ``unpermute`` = ``masked_select`` of the
  probs, bf16 multiply, ``scatter_add_`` into zeros (bf16 atomics); shared expert added.
* a Llama-style dense decoder layer (``lab/eager_probe.py``'s layer, parametrised):
  RMSNorm, fused QKV with GQA, RoPE, causal SDPA (its default backend), output projection,
  residual, RMSNorm, SwiGLU MLP, residual.

Forward-only runs under ``torch.no_grad()``. Forward+backward runs ``out.backward(dy)`` with a
fixed bf16 upstream gradient ``dy`` (no loss kernels); weight gradients accumulate into ``.grad``
(they exist before timing starts, so every timed iteration adds into them, as gradient
accumulation does); the input's ``.grad`` is reset to None before each iteration (stored, not
added: it stands for the gradient handed to the previous layer).

Routing is drawn by :mod:`moesim.moe.routing` (numpy only) exactly as ``generate_counts`` draws it
for ``ep=1``, one layer, one microbatch, step 0; each entry stores the generator parameters and the
per-expert counts. Timing: warm-up iterations, then ``rounds`` rounds of ``iterations`` back-to-back
iterations between two CUDA events; ``time_ns`` is the median per-iteration time over rounds. No
clock or host speed is read during a case. ``--device cpu`` is a seconds-long smoke run on tiny
shapes (``torch._grouped_mm`` backward and integer ``histc`` are missing on CPU: stand-ins are
used and flagged in ``smoke_substitutions``).

Which cases run (programs, model sets, token counts, skews, tiers) is :mod:`moesim.calibrate.layer_cases`.

``python3 -m moesim.calibrate.layer_workloads --device cuda --out layers_h100.json --budget-s 200``
"""
from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from moesim.calibrate import provenance
from moesim.calibrate.layer_programs import (DenseLayer, MoEShape, MoEWeights, _randn, check_routing,
                                             megatron_forward, titan_forward)
from moesim.calibrate.layer_cases import ALL_DENSE, ALL_MOE, MODEL_SETS, Case, plan_cases
from moesim.calibrate.timing import BUSY_CYCLES_PER_NS, sync
from moesim.moe.popularity import stream
from moesim.moe.routing import _TAG_TOKENS, RoutingConfig, layer_popularity
from moesim.moe.sampling import sample_topk

FORMAT = "moesim.layer_workloads/1"
ROUTE_BIAS_FP32 = 2.0  # softmax scores are <= 1: a +2 on the drawn experts makes them the top-k
ROUTE_BIAS_BF16 = 64.0  # bf16 logits of N(0,1) inputs x 0.02-std weights stay far below 64
SEED = 13
SMALL_NS = 1_000_000  # entries faster than 1 ms are flagged ``small``


@dataclass(frozen=True)
class TimingPlan:
    """How one case is timed: warm-up iterations, rounds, and iterations per round sized to
    ``round_target_ms`` (at most ``max_iters``)."""

    warmup: int
    rounds: int
    round_target_ms: float
    max_iters: int


GPU_TIMING = TimingPlan(warmup=3, rounds=5, round_target_ms=25.0, max_iters=20)
SMOKE_TIMING = TimingPlan(warmup=1, rounds=3, round_target_ms=1.0, max_iters=2)


# ---------------------------------------------------------------- routing draw


def draw_routing(shape: MoEShape, tokens: int, kind: str, zipf_s: float, seed: int = SEED) -> tuple[np.ndarray, dict]:
    """Per-token experts ``[tokens, top_k]`` and the routing description. The draw is
    ``moesim.moe.routing.generate_counts``'s exact sampler for ep=1, layer 0, microbatch 0, step 0,
    so ``generate_counts(RoutingConfig(**config), spec, 1, 1, 1, 0)[0, 0, 0]`` equals ``counts``."""
    cfg = RoutingConfig(kind=kind, tokens_per_rank=tokens, seed=seed, zipf_s=zipf_s if kind == "zipf" else 1.0,
                        sampler="exact")
    p = layer_popularity(cfg, shape.num_experts, layer=0, step=0)
    chosen = sample_topk(stream(seed, _TAG_TOKENS, 0, 0, 0), p, tokens, shape.top_k)
    counts = np.bincount(chosen.ravel(), minlength=shape.num_experts)
    desc = {"kind": kind, "params": {"zipf_s": zipf_s} if kind == "zipf" else {}, "seed": seed,
            "config": {"kind": cfg.kind, "tokens_per_rank": tokens, "seed": seed, "zipf_s": cfg.zipf_s, "sampler": "exact"},
            "generator": "moesim.moe.routing.generate_counts(RoutingConfig(**config), spec, ep=1, num_layers=1, "
                         "num_microbatches=1, step=0)[0, 0, 0]",
            "counts": counts.tolist(), "max_count": int(counts.max()), "zero_experts": int((counts == 0).sum())}
    return chosen, desc


def route_bias(chosen: np.ndarray, num_experts: int, value: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    """``[T, E]`` tensor: ``value`` at the drawn experts of each token, 0 elsewhere."""
    idx = torch.from_numpy(chosen).to(device)
    bias = torch.zeros(chosen.shape[0], num_experts, dtype=torch.float32, device=device)
    return bias.scatter_(1, idx, value).to(dtype)


# ---------------------------------------------------------------- descriptions


def _program(case: Case) -> list[str]:
    """The forward's torch calls in order (the backward is autograd's of these)."""
    if case.kind == "dense_layer":
        return ["rms_norm", "linear qkv (fused, GQA)", "split/view/transpose (views)", "rope q: chunk, 4 mul, sub, add, cat",
                "rope k: same", "sdpa causal flash enable_gqa", "transpose+reshape (copy)", "linear o", "add residual",
                "rms_norm", "linear gate", "silu", "linear up", "mul", "linear down", "add residual"]
    if case.movement == "megatron":
        return ["linear router bf16", "add routing bias bf16 [T,E]", "topk k (sorted)", "softmax fp32 of [T,k] -> bf16",
                "zeros_like+scatter probs [T,E]", "zeros_like+int cast+scatter+bool routing map [T,E]",
                "sum(0) counts", "counts .cpu() (sync)", "map.T.contiguous", "arange+expand+masked_select sorted token ids",
                "index_select rows [T*k,H]", "cumsum int32", "grouped_mm fc1 (gate+up, 2F wide)",
                "chunk (views), silu of the gate half, mul by the up half", "grouped_mm fc2", "probs.T.contiguous+masked_select", "mul probs bf16 [T*k,H]", "zeros [T,H]",
                "scatter_add_ bf16 [T*k,H] -> [T,H] (atomics)", "shared FFN: linear gate, silu, linear up, mul, linear down",
                "add shared"]
    ops = ["linear router bf16", "float cast", "softmax fp32 [T,E]", "add routing bias fp32 [T,E]", "topk k (sorted=False)",
           "gather top scores [T,k]", "histc [T*k] + add_ tokens_per_expert", "histc [T*k]", "argsort stable [T*k]",
           "index top scores [T*k]", "floor_divide // k", "gather rows [T*k,H]", "score before experts: float, mul, bf16 cast"]
    if case.experts == "loop":
        ops += ["counts .tolist() (sync)", "split (views)", "per expert: matmul gate, silu, matmul up, mul, matmul down",
                "cat [T*k,H]", "vstack with 0 zero rows (copy)"]
    else:
        ops += ["cumsum int32", "grouped_mm gate", "silu", "grouped_mm up", "mul", "grouped_mm down"]
    ops += ["shared FFN: linear gate, silu, linear up, mul, linear down (if shared) else zeros_like"]
    if case.combine == "index_put_sum":
        return ops + ["zeros [T*k,H]", "index_put rows", "sum over top-k [T,k,H] -> [T,H]", "add shared (if shared)"]
    return ops + ["scatter_add bf16 out-of-place (copy + atomics) [T*k,H] -> [T,H]"]


def _grad_desc(case: Case, params: list[torch.Tensor]) -> dict:
    if case.pass_ == "fwd":
        return {"mode": "none", "autograd": "torch.no_grad()"}
    return {"mode": "accumulate", "upstream": "out.backward(dy), dy fixed bf16 [T,H] (no loss kernels)",
            "weights": "'.grad' exists before timing; each iteration adds into it (one add per parameter tensor)",
            "input": "x.grad set to None before each iteration (stored, not added)",
            "param_shapes": [list(p.shape) for p in params]}


def describe(case: Case, routing: dict | None, params: list[torch.Tensor], smoke_subs: list[str]) -> dict:
    """The machine-readable workload description (everything the simulator needs, nothing measured)."""
    d: dict = {"kind": case.kind, "tokens": case.tokens, "batch": 1, "seq": case.tokens, "pass": case.pass_,
               "dtype": "bf16", "eager": True, "torch_compile": False, "cuda_graphs": False, "stream": "default",
               "program": _program(case), "grad": _grad_desc(case, params), "tier": case.tier}
    if case.kind == "dense_layer":
        d["model"] = asdict(ALL_DENSE[case.model])
        d["attention"] = {"sdpa": "causal", "backend": "default (SDPA's own choice)", "enable_gqa": True,
                          "rope": "rotate-half (chunk/cat), cos/sin bf16 [T, head_dim/2]"}
    else:
        shape = ALL_MOE[case.model]
        d["model"] = {**asdict(shape), "shared_ffn": shape.expert_ffn * shape.shared_experts}
        d.update({"experts": case.experts, "token_movement": case.movement, "combine": case.combine,
                  "routing": routing, "syncs_per_forward": int(case.experts == "loop" or case.movement == "megatron")})
        d["router"] = ({"score_func": "softmax", "score_dtype": "fp32", "gate_dtype": "bf16", "score_before_experts": True,
                        "routing_bias": f"fp32 [T,E], {ROUTE_BIAS_FP32} at the drawn experts (replaces expert_bias [E])"}
                       if case.movement == "torchtitan" else
                       {"score_func": "softmax", "pre_softmax": False, "score_dtype": "fp32 then bf16", "gate_dtype": "bf16",
                        "routing_bias": f"bf16 [T,E], {ROUTE_BIAS_BF16} at the drawn experts, added to the logits"})
    if smoke_subs:
        d["smoke_substitutions"] = smoke_subs
    return d


# ---------------------------------------------------------------- timing


@dataclass(frozen=True)
class Measured:
    """Per-iteration time: median and quartiles over rounds of back-to-back iterations."""

    time_ns: float
    p25_ns: float
    p75_ns: float
    iterations: int
    rounds: int
    warmup: int
    round_ns: tuple[float, ...] = ()   # each round's per-iteration time, in order



def _timed(step: Callable[[], None], n: int, device: str) -> float:
    """Wall time of ``n`` back-to-back iterations in ns (CUDA events on cuda)."""
    if device != "cuda":
        t0 = time.perf_counter_ns()
        for _ in range(n):
            step()
        return float(time.perf_counter_ns() - t0)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(n):
        step()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) * 1e6


def _gap_then_timed(step: Callable[[], None], iters: int, device: str, gap_s: float) -> float:
    if gap_s > 0:
        time.sleep(gap_s)
        step()   # one untimed iteration: the queue and caches as in back-to-back running
    return _timed(step, iters, device)


def measure(step: Callable[[], None], device: str, left_s: float, gap_s: float = 0.0) -> Measured | str:
    """Warm up, size the rounds, time them; a reason string instead when the case cannot fit in
    ``left_s``. ``gap_s``: an idle pause before each round, so the rounds sample the host over
    seconds (the lent machines' host speed switches between states lasting seconds; a host-bound
    case timed in one burst reads whichever state it hit)."""
    plan = GPU_TIMING if device == "cuda" else SMOKE_TIMING
    for _ in range(plan.warmup):
        step()
    sync(device)
    est_ns = _timed(step, 1, device)
    iters = max(1, min(plan.max_iters, round(plan.round_target_ms * 1e6 / est_ns)))
    rounds = plan.rounds
    while rounds > min(3, plan.rounds) and rounds * (iters * est_ns / 1e9 + gap_s) > left_s:
        rounds -= 1
    if rounds * (iters * est_ns / 1e9 + gap_s) > left_s:
        return f"budget: needs ~{rounds * (iters * est_ns / 1e9 + gap_s):.1f} s, {left_s:.1f} s left"
    per = np.array([_gap_then_timed(step, iters, device, gap_s) / iters for _ in range(rounds)])
    p25, med, p75 = np.percentile(per, [25.0, 50.0, 75.0])
    return Measured(round(float(med), 1), round(float(p25), 1), round(float(p75), 1), iters, rounds, plan.warmup,
                    tuple(round(float(v), 1) for v in per))


# ---------------------------------------------------------------- building a case


class Runner:
    """Holds the weights of every shape (allocated once) and builds each case's step."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.smoke = device != "cuda"
        self._weights: dict[str, object] = {}
        self._routing: dict[tuple, tuple[np.ndarray, dict]] = {}

    def weights(self, case: Case):
        if case.model not in self._weights:
            if case.kind == "dense_layer":
                self._weights[case.model] = DenseLayer(ALL_DENSE[case.model], self.device)
            else:
                self._weights[case.model] = MoEWeights(ALL_MOE[case.model], self.device)
        return self._weights[case.model]

    def routing(self, shape: MoEShape, case: Case) -> tuple[np.ndarray, dict]:
        key = (shape.name, case.tokens, case.routing, case.zipf_s)
        if key not in self._routing:
            self._routing = {key: draw_routing(shape, case.tokens, case.routing, case.zipf_s)}  # keep one
        return self._routing[key]

    def build(self, case: Case) -> tuple[Callable[[], None], dict]:
        """``(step, description)``; the step runs one iteration of the case."""
        w = self.weights(case)
        if case.kind == "dense_layer":
            forward, routing, subs = self._dense(case, w), None, []
            x = _randn((1, case.tokens, w.s.hidden), self.device, 7, 1.0)
        else:
            forward, routing, subs, x = self._moe(case, w)
        params = w.params(case.movement == "megatron") if case.kind != "dense_layer" else w.params()
        return self._step(case, forward, x, params), describe(case, routing, params, subs)

    def _dense(self, case: Case, w: DenseLayer) -> Callable[[torch.Tensor], torch.Tensor]:
        d, t = w.s.head_dim, case.tokens
        ang = torch.arange(t, device=self.device, dtype=torch.float32)[:, None] * \
            torch.arange(d // 2, device=self.device)[None] * 1e-3
        cos, sin = ang.cos().to(torch.bfloat16), ang.sin().to(torch.bfloat16)
        return lambda x: w.forward(x, cos, sin)   # SDPA picks its backend, as a user's call does

    def _moe(self, case: Case, w: MoEWeights):
        shape = ALL_MOE[case.model]
        chosen, routing = self.routing(shape, case)
        x = _randn((case.tokens, shape.hidden), self.device, 7, 1.0)
        titan = case.movement == "torchtitan"
        bias = route_bias(chosen, shape.num_experts, ROUTE_BIAS_FP32 if titan else ROUTE_BIAS_BF16,
                          torch.float32 if titan else torch.bfloat16, self.device)
        check_routing(w, x, bias, case, shape.top_k, routing["counts"])
        subs = []
        if self.smoke:
            subs = ["histc on float indices (CPU histc has no integer kernel)"] if titan else []
            if case.pass_ == "fwd_bwd" and case.experts == "grouped":
                subs.append("grouped_mm emulated by a per-group loop (CPU has no grouped_mm backward)")
        prog = titan_forward if titan else megatron_forward
        return (lambda xx: prog(w, xx, bias, shape.top_k, case, self.smoke)), routing, subs, x

    @staticmethod
    def _step(case: Case, forward: Callable, x: torch.Tensor, params: list[torch.Tensor]) -> Callable[[], None]:
        if case.pass_ == "fwd":
            def step() -> None:
                with torch.no_grad():
                    forward(x)
            return step
        dy = _randn(tuple(x.shape), x.device.type, 8, 1.0).detach()

        def step_bwd() -> None:
            x.grad = None
            forward(x).backward(dy)
        return step_bwd


# ---------------------------------------------------------------- inventory and traces


def kernel_inventory(step: Callable[[], None], device: str) -> dict:
    """Kernels one iteration launches (CUDA kernel events on cuda, aten ops on cpu), by name.
    Diagnostic only: not an input to any prediction."""
    acts = [torch.profiler.ProfilerActivity.CUDA if device == "cuda" else torch.profiler.ProfilerActivity.CPU]
    sync(device)
    with torch.profiler.profile(activities=acts) as prof:
        step()
        sync(device)
    want = torch.autograd.DeviceType.CUDA if device == "cuda" else torch.autograd.DeviceType.CPU
    names: dict[str, int] = {}
    for ev in prof.events():
        if ev.device_type == want and (device == "cuda" or _top_aten(ev)):
            names[ev.name[:160]] = names.get(ev.name[:160], 0) + 1
    return {"count": sum(names.values()), "by_name": dict(sorted(names.items(), key=lambda kv: -kv[1])),
            "what": "cuda kernels" if device == "cuda" else "outermost aten ops (cpu smoke)"}


STEADY_ITERATIONS = 5  # kernel_times profiles this many back-to-back iterations and keeps the last


def kernel_times(step: Callable[[], None]) -> dict:
    """The CUDA kernels of the last of ``STEADY_ITERATIONS`` back-to-back profiled iterations, in
    launch order, ``[name, device us]`` each, and their sum (diagnostic: where the GPU time of a
    case goes, against moesim's op list; feeds no prediction). The last one runs at the clock of
    the timed rounds; a single iteration after a sync ran its GEMMs at the idle GPU's boost clock
    (files before 2026-12-06h)."""
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(STEADY_ITERATIONS):
            step()
        torch.cuda.synchronize()
    kernels = [[ev.name[:120], round(ev.device_time, 2)] for ev in prof.events()
               if ev.device_type == torch.autograd.DeviceType.CUDA]
    per = len(kernels) // STEADY_ITERATIONS
    last = kernels[-per:] if per * STEADY_ITERATIONS == len(kernels) else kernels
    return {"kernels": last, "sum_us": round(sum(k[1] for k in last), 1),
            "iteration": f"last of {STEADY_ITERATIONS} back-to-back" if last is not kernels else
                         f"all {STEADY_ITERATIONS} (kernel count not a multiple)"}


def _top_aten(ev) -> bool:
    """An aten op not called from inside another aten op (the calls the program or autograd makes)."""
    parent = ev.cpu_parent
    return ev.name.startswith("aten::") and (parent is None or not parent.name.startswith("aten::"))


def write_traces(runner: Runner, cases: list[Case], out_dir: Path) -> list[str]:
    """A Chrome (Kineto) trace of 2 iterations of each case, for trace import."""
    out_dir.mkdir(parents=True, exist_ok=True)
    acts = [torch.profiler.ProfilerActivity.CPU]
    if runner.device == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    written = []
    for case in cases:
        step, _ = runner.build(case)
        step()
        sync(runner.device)
        with torch.profiler.profile(activities=acts, record_shapes=True) as prof:   # shapes: calibrate from-trace
            for _ in range(2):
                step()
            sync(runner.device)
        path = out_dir / f"{case.id}.json"
        prof.export_chrome_trace(str(path))
        written.append(str(path))
    return written


def _trace_cases(cases: list[Case]) -> list[Case]:
    """One dense and one MoE forward+backward (whichever of them ``--only`` kept)."""
    dense = next((c for c in cases if c.kind == "dense_layer" and c.pass_ == "fwd_bwd"), None)
    moe = next((c for c in cases if c.kind == "moe_block" and c.pass_ == "fwd_bwd" and c.routing == "uniform"
                and c.experts == "grouped" and c.tokens in (64, 4096) and c.tier == 1), None)
    return [c for c in (dense, moe) if c is not None]


# ---------------------------------------------------------------- run


def _signature(case: Case) -> str:
    return ".".join((case.model, case.kind, case.movement, case.experts, case.combine, case.pass_))


def syncs_free(case: Case) -> bool:
    """No device-to-host read inside an iteration (no ``.cpu()``, ``.tolist()``, ``masked_select``)."""
    return case.kind == "dense_layer" or (case.experts == "grouped" and case.movement == "torchtitan")


HOST_ROUNDS = 3
HOST_CHAIN = 6   # iterations issued behind one GPU wait; the first (right after a sync) is left out


def host_issue_ns(step: Callable[[], None], device: str, gpu_ns: float) -> "float | None":
    """Host time of issuing one iteration in steady state: behind one long queued GPU wait (so the
    thread never waits for the GPU), :data:`HOST_CHAIN` iterations are issued back to back and each
    is timed alone; the median of iterations 2..N over :data:`HOST_ROUNDS` rounds. The first
    iteration after a synchronize is left out: it reads up to 2x the steady time (H200, 2026-12-06,
    lab/host_steady_probe.py), and a training step issues behind its previous iteration, not after
    a sync. None on CPU or when the GPU ran dry first in any round (the host then measured the
    GPU). Diagnostic: validates the host model (``moesim validate`` compares it with the simulated
    host lane), feeds no prediction."""
    if device != "cuda":
        return None
    samples = []
    for _ in range(HOST_ROUNDS):
        sync(device)
        torch.cuda._sleep(int(max(3 * HOST_CHAIN * gpu_ns, 5e6) * BUSY_CYCLES_PER_NS))
        busy_end = torch.cuda.Event()
        busy_end.record()
        for i in range(HOST_CHAIN):
            t0 = time.perf_counter_ns()
            step()
            dt = time.perf_counter_ns() - t0
            if i:
                samples.append(dt)
        if busy_end.query():
            return None
    sync(device)
    return float(np.median(samples))


def run_case(runner: Runner, case: Case, left_s: float, inventory: dict, device: str, gap_s: float = 0.0,
             times: "dict | None" = None) -> dict:
    """One entry (``measured``) or one skipped record (``reason``); with ``times`` (a dict, on
    cuda) the case's :func:`kernel_times` go into it under its id."""
    step, desc = runner.build(case)
    got = measure(step, device, left_s, gap_s)
    if isinstance(got, str):
        return {"id": case.id, "workload": desc, "reason": got}
    sig = _signature(case)
    if sig not in inventory:
        inventory[sig] = {"case": case.id, **kernel_inventory(step, device)}
    if times is not None and device == "cuda":
        times[case.id] = kernel_times(step)
    entry = {"id": case.id, "workload": desc, "measured": asdict(got)}
    if syncs_free(case):
        host_ns = host_issue_ns(step, device, got.time_ns)
        if host_ns is not None:
            entry["measured"]["host_steady_ns"] = round(host_ns, 1)
    if got.time_ns < SMALL_NS:
        entry["small"] = True
    return entry


def preheat(device: str, seconds: float) -> None:
    """Large GEMMs for ``seconds`` so the timed cases start at the sustained clock."""
    if device != "cuda" or seconds <= 0:
        return
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for _ in range(20):
            torch.mm(a, a)
        torch.cuda.synchronize()


def file_provenance(device: str, preheat_s: float) -> dict:
    prov = provenance.collect(device, 1)
    prov["host_id"] = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]  # tells machines apart, names none
    prov["preheat_s"] = preheat_s
    return prov


PROTOCOL = {
    "timing": f"{GPU_TIMING.warmup} warm-up iterations; {GPU_TIMING.rounds} rounds (3 or more when the budget is short) "
              f"of back-to-back iterations between two CUDA events (sized to ~{GPU_TIMING.round_target_ms:g} ms, at most "
              f"{GPU_TIMING.max_iters}); time_ns = median per-iteration time of the rounds; "
              "no L2 flush, no GPU sleep between iterations (steady state, as in training)",
    "preheat": "large bf16 GEMMs before the first case so the GPU is at its sustained clock",
    "not_recorded_per_case": "SM clock, host speed: nothing measured in the case feeds a prediction",
    "kernel_inventory": "one profiled iteration per (model, program, pass) signature; diagnostic only",
    "host_steady_ns": f"cases without a device-to-host read: host time of issuing one iteration in steady state "
                      f"({HOST_CHAIN} iterations behind one queued GPU wait, each timed alone, the first after the "
                      f"sync left out; median over {HOST_ROUNDS} rounds); diagnostic: compared with the simulated "
                      "host lane, feeds no prediction. Files before 2026-12-06c stored host_issue_ns instead: one "
                      "iteration right after a sync (median of 5), up to 2x the steady time",
}


def run(device: str, budget_s: float, out: Path, trace_dir: Path | None, only: str, inventory_on: bool,
        preheat_s: float, trace_all: bool = False, gap_s: float = 0.0, models: str = "standard",
        with_kernel_times: bool = False) -> dict:
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA GPU")
    start = time.monotonic()
    wanted = [part for part in only.split(",") if part] or [""]
    cases = [c for c in plan_cases(device != "cuda", models) if any(part in c.id for part in wanted)]
    runner = Runner(device)
    doc: dict = {"format": FORMAT, "provenance": file_provenance(device, preheat_s),
                 "protocol": {**PROTOCOL, "round_gap_s": gap_s},
                 "gpu_state_before": provenance.gpu_state() if device == "cuda" else [],
                 "entries": [], "skipped": [], "kernel_inventory": {}}
    preheat(device, preheat_s)
    inventory = doc["kernel_inventory"] if inventory_on else {}
    times = doc.setdefault("kernel_times", {}) if with_kernel_times else None
    if with_kernel_times:
        doc["protocol"]["kernel_times"] = (f"each case's CUDA kernels in launch order with device times, the last of "
                                           f"{STEADY_ITERATIONS} back-to-back profiled iterations; diagnostic only")
    for case in cases:
        left = budget_s - (time.monotonic() - start)
        record = _safe_case(runner, case, left, inventory, device, gap_s, times)
        doc["skipped" if "reason" in record else "entries"].append(record)
        _report(record)
    doc["gpu_state_after"] = provenance.gpu_state() if device == "cuda" else []
    doc["wall_s"] = round(time.monotonic() - start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))  # the measurements are safe before any trace is written
    if trace_dir is not None:
        traced = [c for c in cases if c.id in {e["id"] for e in doc["entries"]}] if trace_all else _trace_cases(cases)
        doc["traces"] = write_traces(runner, traced, trace_dir)
        out.write_text(json.dumps(doc, indent=1))
    return doc


def _safe_case(runner: Runner, case: Case, left_s: float, inventory: dict, device: str, gap_s: float = 0.0,
               times: "dict | None" = None) -> dict:
    if left_s < 2.0:
        return {"id": case.id, "workload": {"kind": case.kind, "tier": case.tier}, "reason": "budget: spent"}
    try:
        return run_case(runner, case, left_s - 1.0, inventory, device, gap_s, times)
    except (RuntimeError, torch.OutOfMemoryError) as exc:  # recorded, never silent
        if device == "cuda":
            torch.cuda.empty_cache()
        return {"id": case.id, "workload": {"kind": case.kind, "tier": case.tier}, "reason": f"error: {exc}"[:400]}


def _report(rec: dict) -> None:
    if "reason" in rec:
        print(f"skip {rec['id']}: {rec['reason']}", flush=True)
    else:
        m = rec["measured"]
        print(f"{rec['id']:70s} {m['time_ns'] / 1e3:10.1f} us  x{m['iterations']}x{m['rounds']}", flush=True)


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a seconds-long smoke run, tiny shapes")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-s", type=float, default=200.0, help="wall-clock budget; later cases are skipped, recorded")
    p.add_argument("--profile-trace", type=Path, default=None, help="write Chrome traces of one dense and one MoE case here")
    p.add_argument("--trace-all", action="store_true",
                   help="with --profile-trace: trace every case measured (use with --only), not one dense and one MoE")
    p.add_argument("--only", default="", help="run only cases whose id contains this text (a comma list: any of them)")
    p.add_argument("--no-inventory", action="store_true", help="skip the per-signature kernel inventory")
    p.add_argument("--preheat-s", type=float, default=3.0)
    p.add_argument("--round-gap-s", type=float, default=0.0,
                   help="idle pause before each timed round, so host-bound cases sample the host over seconds")
    p.add_argument("--models", choices=MODEL_SETS, default="standard",
                   help="the standard shapes, or held-out shapes of public models no stored case has")
    p.add_argument("--kernel-times", action="store_true",
                   help="also store each case's CUDA kernels and their device times (kernel_times; diagnostic)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if a.round_gap_s < 0:
        p.error("--round-gap-s must be >= 0")
    doc = run(a.device, a.budget_s, a.out, a.profile_trace, a.only, not a.no_inventory, a.preheat_s, a.trace_all,
              a.round_gap_s, a.models, a.kernel_times)
    print(f"{len(doc['entries'])} entries, {len(doc['skipped'])} skipped, {doc['wall_s']} s -> {a.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
