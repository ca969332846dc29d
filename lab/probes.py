"""Probes behind the accuracy investigations: host time inside a real program, attention under
growing thermal load, row-wave steps of a row-wise kernel (needs torch and, for ``host``, 2 GPUs).

Not part of a calibration profile run; each part answers one question lab/legacy_validate/ACCURACY_NOTEBOOK.md asks:

* ``host``: is an op's host time inside a real eager program (the validated MoE layer) what the
  profile's back-to-back loop measured? The layer's forward is timed on the host with the GPU
  kept busy (it never waits for the host) and as measured (after a barrier and a sync), and an
  instrumented copy of it times every call; a *mixed* loop times the same calls in rotation
  instead of one op repeated.
* ``attention``: flash-attention forward at the validation shapes and their grid neighbours,
  in passes after growing GEMM load (0, 5, 20, 40 s), with the SM clock, power and temperature
  read by NVML during each shape.
* ``rows``: rmsnorm (4096 wide) at row counts around the validation entry, cold L2.
* ``warm``: the warm-cache memory variants (``memops.WARM_VARIANTS``) with the GPU kept busy
  by a wait instead of an L2 flush, as profile samples (``cache: "warm"``).

``python3 -m lab.probes --out DIR`` writes ``probes.json`` (everything) and
``probes_profile.json`` (profile-format samples: warm memory, rmsnorm rows, in-program host).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from moesim.calibrate import grids, memops, provenance
from moesim.calibrate.dist import run_workers
from moesim.calibrate.hostops import GPU_CYCLES_PER_NS
from moesim.calibrate.jsonio import dump_profile
from moesim.calibrate.kernels import randn, swiglu_ffn
from moesim.calibrate.moe_bench import PHASES, MoEConfig, MoELayer
from moesim.calibrate.clock_timer import Nvml
from moesim.calibrate.timing import Budget, Timer

ATTENTION_SHAPES = ((2, 40, 6144, 64), (2, 32, 4096, 64), (2, 64, 4096, 64), (2, 32, 8192, 64), (2, 64, 8192, 64),
                    (1, 80, 6144, 64), (1, 64, 4096, 64), (1, 64, 8192, 64),
                    (1, 24, 3000, 128), (1, 16, 2048, 128), (1, 32, 2048, 128), (1, 16, 4096, 128), (1, 32, 4096, 128),
                    (4, 32, 1536, 128), (4, 32, 1024, 128), (4, 32, 2048, 128))
LOAD_STEPS_S = (0.0, 5.0, 15.0, 20.0)  # GEMM load added before each pass (cumulative 0, 5, 20, 40 s)
NORM_ROWS = tuple(range(1600, 2305, 64)) + (1831,)
HOST_REPEATS = 20


# -- host time inside the real program (2 ranks) ---------------------------------------------------
def instrumented_forward(layer: MoELayer, marks: list) -> list[tuple[str, int]]:
    """``MoELayer.forward`` call by call, with the host clock read after each call."""
    t = [("start", time.perf_counter_ns())]
    h = layer.cfg.hidden

    def lap(name: str) -> None:
        t.append((name, time.perf_counter_ns()))
    xs = layer.x.index_select(0, layer.tok)
    lap("index_select")
    marks[0].record()
    lap("event_record")
    recv = torch.empty(sum(layer.recv), h, device=layer.device, dtype=torch.bfloat16)
    lap("empty")
    dist.all_to_all_single(recv, xs, output_split_sizes=layer.recv, input_split_sizes=layer.send)
    lap("all_to_all_single_splits")
    marks[1].record()
    lap("event_record")
    grouped = recv.index_select(0, layer.regroup)
    lap("index_select")
    outs, start = [], 0
    for rows, (wg, wu, wd) in zip(layer.expert_rows, layer.weights):
        if rows:
            part = grouped[start:start + rows]
            lap("slice")
            outs.append(swiglu_ffn(part, wg, wu, wd))
            lap("swiglu_ffn")
        start += rows
    cat = torch.cat(outs)
    lap("cat")
    y = cat.index_select(0, layer.ungroup)
    lap("index_select")
    marks[2].record()
    lap("event_record")
    back = torch.empty(sum(layer.send), h, device=layer.device, dtype=torch.bfloat16)
    lap("empty")
    dist.all_to_all_single(back, y, output_split_sizes=layer.send, input_split_sizes=layer.recv)
    lap("all_to_all_single_splits")
    marks[3].record()
    lap("event_record")
    out = torch.zeros(layer.cfg.tokens_per_rank, h, device=layer.device, dtype=torch.bfloat16)
    lap("zeros")
    weighted = back * layer.gate
    lap("mul_broadcast")
    out.index_add_(0, layer.tok, weighted)
    lap("index_add_")
    marks[4].record()
    lap("event_record")
    return [(name, t1 - t0) for (_, t0), (name, t1) in zip(t, t[1:])]


def _host_forward(layer: MoELayer, busy: bool, instrumented: bool) -> "tuple[float, list]":
    dist.barrier()
    torch.cuda.synchronize()
    if busy:
        torch.cuda._sleep(int(20e6 * GPU_CYCLES_PER_NS))  # 20 ms: the host never waits for the GPU
    marks = [torch.cuda.Event(enable_timing=True) for _ in PHASES]
    t0 = time.perf_counter_ns()
    calls: list = []
    if instrumented:
        calls = instrumented_forward(layer, marks)
    else:
        layer.forward(marks)
    host = time.perf_counter_ns() - t0
    torch.cuda.synchronize()
    return float(host), calls


def host_worker(rank: int, world: int, device: str, cfg: dict) -> dict:
    """Per layer size: forward host time (busy GPU, as measured) and per-call host times inside it."""
    out: dict = {}
    for tokens in cfg.get("tokens", (2048, 8192)):
        layer = MoELayer(MoEConfig(tokens, 4096, 2048, 8, 2, "uniform", 1.2, "contiguous"), rank, world, device)
        for _ in range(3):
            layer.forward()
        res: dict = {}
        for label, busy, instr in (("forward_busy", True, False), ("forward_as_measured", False, False),
                                   ("instrumented_busy", True, True)):
            hosts, per_call = [], {}
            for _ in range(HOST_REPEATS):
                host, calls = _host_forward(layer, busy, instr)
                hosts.append(host)
                for i, (name, ns) in enumerate(calls):
                    per_call.setdefault(f"{i:02d}:{name}", []).append(ns)
            res[label] = {"host_ns_median": statistics.median(hosts), "host_ns_min": min(hosts)}
            if per_call:
                res[label]["calls_ns_median"] = {k: statistics.median(v) for k, v in per_call.items()}
        out[f"t{tokens}"] = res
        del layer
        torch.cuda.empty_cache()
    return out


# -- mixed loop (one GPU) ---------------------------------------------------------------------------
def mixed_host_calls(device: str, rounds: int = 60) -> dict[str, dict[str, float]]:
    """Host ns per call, the calls made in rotation (as a program mixes them) with the GPU busy,
    against the same calls repeated back to back."""
    h, f = 4096, 2048
    x = randn(4096 * h, device, 90).view(4096, h)
    w, wd = randn(f * h, device, 91).view(f, h), randn(f * h, device, 92).view(h, f)
    gate = randn(4096, device, 93).view(4096, 1)
    perm = torch.randperm(4096, device=device)
    pairs = torch.randperm(4096, device=device) % 2048
    out = torch.zeros(2048, h, device=device, dtype=torch.bfloat16)
    calls: dict[str, Callable[[], object]] = {
        "mm_m1024": lambda: torch.mm(x[:1024], w.t()), "mm_m4096": lambda: torch.mm(x, w.t()),
        "linear_m4096": lambda: torch.nn.functional.linear(x, w), "swiglu_ffn_m1024": lambda: swiglu_ffn(x[:1024], w, w, wd),
        "index_select": lambda: x.index_select(0, perm), "zeros": lambda: torch.zeros(4096, h, device=device, dtype=torch.bfloat16),
        "mul_broadcast": lambda: x * gate, "index_add_": lambda: out.index_add_(0, pairs, x),
        "cat": lambda: torch.cat([x[:1024], x[1024:2048]]), "silu": lambda: torch.nn.functional.silu(x),
        "empty": lambda: torch.empty(4096, h, device=device, dtype=torch.bfloat16),
    }
    for fn in calls.values():
        for _ in range(5):
            fn()
    torch.cuda.synchronize()
    mixed: dict[str, list[float]] = {k: [] for k in calls}
    repeated: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(rounds):
        torch.cuda._sleep(int(3e6 * GPU_CYCLES_PER_NS))
        for name, fn in calls.items():
            t0 = time.perf_counter_ns()
            fn()
            mixed[name].append(time.perf_counter_ns() - t0)
        torch.cuda.synchronize()
    for name, fn in calls.items():
        torch.cuda._sleep(int(5e6 * GPU_CYCLES_PER_NS))
        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            fn()
            repeated[name].append(time.perf_counter_ns() - t0)
        torch.cuda.synchronize()
    return {k: {"mixed_ns": statistics.median(mixed[k]), "repeated_ns": statistics.median(repeated[k])} for k in calls}


# -- attention under growing load, norm rows, warm memory ------------------------------------------------
def attention_passes(nvml: Nvml) -> list[dict]:
    sdpa = torch.nn.functional.scaled_dot_product_attention
    timer = Timer("cuda", heat_ms=60.0)
    out, loaded = [], 0.0
    numel = max(b * h * s * d for b, h, s, d in ATTENTION_SHAPES)
    bufs = [randn(numel, "cuda", 10 + i) for i in range(3)]
    for step in LOAD_STEPS_S:
        timer.preheat(step)
        loaded += step
        for b, h, s, d in ATTENTION_SHAPES:
            n = b * h * s * d
            q, k, v = (buf[:n].view(b, h, s, d).detach().requires_grad_() for buf in bufs)
            t0 = time.monotonic()
            st = timer.time(lambda: sdpa(q, k, v, is_causal=True))
            out.append({"load_s": loaded, "batch": b, "heads": h, "seq": s, "head_dim": d, "us": round(st.median_ns / 1e3, 1),
                        "p25_us": round(st.p25_ns / 1e3, 1), "p75_us": round(st.p75_ns / 1e3, 1),
                        "tflops": round(2.0 * b * h * s * s * d / st.median_ns / 1e3, 1), **nvml.window(t0, time.monotonic())})
    return out


def norm_rows(timer: Timer) -> list[dict]:
    x, w = randn(max(NORM_ROWS) * 4096, "cuda", 21), randn(4096, "cuda", 22)
    out = []
    for rows in NORM_ROWS:
        xr = x[: rows * 4096].view(rows, 4096)
        st = timer.time(lambda: torch.nn.functional.rms_norm(xr, (4096,), w))
        out.append({"op": "memory", "kind": "norm", "variant": "rmsnorm", "dtype": "bf16", "cache": "cold",
                    "nbytes": rows * 4096 * 4, "rows": rows, **st.fields()})
    return out


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--parts", default="host,attention,rows,warm")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    parts = set(args.parts.split(","))
    prov = provenance.collect("cuda", torch.cuda.device_count())
    doc: dict = {"provenance": prov}
    samples: list[dict] = []
    if "host" in parts and torch.cuda.device_count() >= 2:
        results, errors = run_workers(host_worker, 2, "nccl", {"timeout_s": 200}, timeout_s=200)
        doc["host_in_program"], doc["host_errors"] = results, errors
        print(json.dumps(results)[:3000], errors, flush=True)
    nvml = Nvml(0)
    try:
        if "host" in parts:
            doc["mixed_host_calls"] = mixed_host_calls("cuda")
            print(json.dumps(doc["mixed_host_calls"]), flush=True)
        timer = Timer("cuda", heat_ms=60.0)
        if "rows" in parts:
            samples += norm_rows(timer)
            print([(r["rows"], r["time_ns"]) for r in samples], flush=True)
        if "warm" in parts:
            sec = memops.measure_memory(timer, grids.GRIDS["full"], "cuda", Budget(60), caches=("warm",),
                                        variants=memops.WARM_VARIANTS)
            samples += sec.samples
            print(sec.summary(), flush=True)
        if "attention" in parts:
            doc["attention_passes"] = attention_passes(nvml)
            for r in doc["attention_passes"]:
                print(r, flush=True)
    finally:
        nvml.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probes.json").write_text(json.dumps(doc, indent=1) + "\n")
    profile = {"schema_version": 1, **prov, "mode": "probes", "heat_ms": 60.0,
               "notes": "lab.probes: warm-cache memory variants (GPU-side wait between repeats, no L2 "
                        "flush) and rmsnorm at row counts around 1831 (cold)", "errors": [], "samples": samples}
    dump_profile(profile, args.out / "probes_profile.json")
    print(f"wrote {args.out}/probes.json and probes_profile.json ({len(samples)} samples)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
