"""GPU diagnostics behind the investigations in docs/accuracy.md (needs torch and 2 GPUs).

Not part of ``moesim validate`` (which needs no GPU): this script re-runs, on a 2-GPU machine,
a few of the stored validation workloads with the PyTorch profiler and an NVML clock sampler,
to see *why* a prediction misses. It reuses the measuring code (``moesim.calibrate``) so the
workloads are exactly the stored ones:

* ``moe``: the MoE layer (t2048 and t8192, uniform, contiguous): per-kernel device times, host
  time per PyTorch op, CUDA-event phase times, SM clock;
* ``pipeline``: the comm_heavy pipeline under 1F1B and interleaved 1F1B: GEMM and NCCL kernel
  times inside a step and in the isolated stage runs, with the SM clock during each;
* ``attention``: the validation attention shape next to the calibration-grid shapes around it,
  with the flash kernel's name and the SM clock;
* ``host``: host time per eager op issued back to back (the profile's launch figure is for a
  one-element ``add``).

``python3 -m lab.legacy_validate.gpu_diagnostics --out diag.json`` (all parts, about a minute).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict

import torch
import torch.distributed as dist

from moesim.calibrate.dist import run_workers
from moesim.calibrate.kernels import randn
from moesim.calibrate.moe_bench import PHASES, MoEConfig, MoELayer
from moesim.calibrate.pipeline_bench import PipelineConfig, PipelineRank
from moesim.calibrate.pipeline_orders import orders_for
from moesim.calibrate.timing import Timer


class ClockSampler:
    """SM clock (MHz) and power (W) sampled by NVML every few ms in a background thread."""

    def __init__(self, index: int, period_s: float = 0.002) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nvml, self.handle, self.period_s = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index), period_s
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        n = self.nvml
        while not self._stop.is_set():
            clk = n.nvmlDeviceGetClockInfo(self.handle, n.NVML_CLOCK_SM)
            power = n.nvmlDeviceGetPowerUsage(self.handle) / 1000.0
            self.samples.append((time.monotonic(), float(clk), power))
            time.sleep(self.period_s)

    def window(self, t0: float, t1: float) -> dict:
        """Mean SM clock and power over [t0, t1]."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if not inside:
            return {"sm_mhz": None, "power_w": None, "samples": 0}
        return {"sm_mhz": round(statistics.mean(s[1] for s in inside)), "power_w": round(statistics.mean(s[2] for s in inside)),
                "samples": len(inside)}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


def _trace(prof: "torch.profiler.profile") -> list[dict]:
    """The profiler's Chrome-trace events (kernels, cpu ops)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    prof.export_chrome_trace(path)
    with open(path) as fh:
        events = json.load(fh)["traceEvents"]
    os.unlink(path)
    return [e for e in events if e.get("ph") == "X"]


def _kernel_summary(events: list[dict], top: int = 14) -> list[dict]:
    by = defaultdict(list)
    for e in events:
        if e.get("cat") == "kernel":
            by[e["name"][:90]].append(float(e["dur"]))
    rows = sorted(by.items(), key=lambda kv: -sum(kv[1]))[:top]
    return [{"kernel": k, "count": len(v), "median_us": round(statistics.median(v), 1), "total_us": round(sum(v), 1)}
            for k, v in rows]


def _op_host_summary(events: list[dict], names: tuple[str, ...]) -> dict:
    by = defaultdict(list)
    for e in events:
        if e.get("cat") == "cpu_op" and e["name"] in names:
            by[e["name"]].append(float(e["dur"]))
    return {k: {"count": len(v), "median_us": round(statistics.median(v), 1)} for k, v in by.items()}


def _category_us(events: list[dict]) -> dict:
    cats: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "kernel":
            continue
        name = e["name"].lower()
        key = ("nccl" if "nccl" in name else "gemm" if any(s in name for s in ("gemm", "nvjet", "sm90", "cutlass", "xmma"))
               else "index" if "index" in name else "other")
        cats[key] += float(e["dur"])
    return {k: round(v, 1) for k, v in cats.items()}


HOST_OPS = ("aten::mm", "aten::silu", "aten::mul", "aten::index_select", "aten::cat", "aten::index_add_", "aten::zeros",
            "aten::empty", "c10d::alltoall_base_", "aten::slice", "aten::t")


def moe_part(rank: int, world: int, device: str, clock: ClockSampler) -> dict:
    out = {}
    for tokens in (2048, 8192):
        mc = MoEConfig(tokens, 4096, 2048, 8, 2, "uniform", 1.2, "contiguous")
        layer = MoELayer(mc, rank, world, device)
        for _ in range(3):
            layer.forward()
        torch.cuda.synchronize()
        total, phases, host = [], defaultdict(list), []
        t0 = time.monotonic()
        for _ in range(10):
            dist.barrier()
            torch.cuda.synchronize()
            start, marks = torch.cuda.Event(enable_timing=True), [torch.cuda.Event(enable_timing=True) for _ in PHASES]
            h0 = time.perf_counter_ns()
            start.record()
            layer.forward(marks)
            host.append((time.perf_counter_ns() - h0) / 1e3)
            torch.cuda.synchronize()
            bounds = [start] + marks
            for p, a, b in zip(PHASES, bounds, bounds[1:]):
                phases[p].append(a.elapsed_time(b) * 1e3)
            total.append(start.elapsed_time(marks[-1]) * 1e3)
        window = clock.window(t0, time.monotonic())
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(3):
                dist.barrier()
                torch.cuda.synchronize()
                layer.forward()
                torch.cuda.synchronize()
        ev = _trace(prof)
        out[f"t{tokens}"] = {
            "layer_us_median": round(statistics.median(total), 1),
            "phase_us_median": {p: round(statistics.median(v), 1) for p, v in phases.items()},
            "host_issue_us_median": round(statistics.median(host), 1), "clock": window,
            "kernels_3_forwards": _kernel_summary(ev), "kernel_us_by_category_3_forwards": _category_us(ev),
            "host_us_per_op": _op_host_summary(ev, HOST_OPS),
        }
        out[f"t{tokens}"]["index_add_vs_copy_us"] = _index_add_vs_copy(layer)
        del layer
        torch.cuda.empty_cache()
    return out


def _index_add_vs_copy(layer: MoELayer) -> dict:
    """``index_add_`` (the layer's unpermute) against ``index_copy_`` (the profile's scatter) on the same rows."""
    rows, h = layer.tok.numel(), layer.cfg.hidden
    src = randn(rows * h, "cuda", 77).view(rows, h)
    dst = torch.zeros(layer.cfg.tokens_per_rank, h, device="cuda", dtype=torch.bfloat16)
    perm = torch.randperm(layer.cfg.tokens_per_rank, device="cuda")
    timer = Timer("cuda")
    add = timer.time(lambda: dst.index_add_(0, layer.tok, src)).median_ns / 1e3
    copy = timer.time(lambda: dst.index_copy_(0, perm, src[: layer.cfg.tokens_per_rank])).median_ns / 1e3
    return {"index_add_us": round(add, 1), "index_copy_same_dst_us": round(copy, 1), "rows_added": rows}


def pipeline_part(rank: int, world: int, device: str, clock: ClockSampler) -> dict:
    out = {}
    cfg = PipelineConfig("comm_heavy", 8192, 1024, 4, 8192, 8)
    for schedule in ("1f1b", "interleaved", "gpipe"):
        chunks = 2 if schedule == "interleaved" else 1
        runner = PipelineRank(cfg, rank, world, chunks, device)
        order = orders_for(schedule, world, cfg.num_microbatches, chunks)[rank]
        runner.run_step(order)
        steps = []
        t0 = time.monotonic()
        for _ in range(4):
            dist.barrier()
            torch.cuda.synchronize()
            s = time.perf_counter_ns()
            runner.run_step(order)
            torch.cuda.synchronize()
            steps.append((time.perf_counter_ns() - s) / 1e6)
        step_clock = clock.window(t0, time.monotonic())
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        dist.barrier()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=acts) as prof:
            runner.run_step(order)
            torch.cuda.synchronize()
        step_ev = _trace(prof)
        t1 = time.monotonic()
        iso = runner.isolated_chunk_times()
        iso_clock = clock.window(t1, time.monotonic())
        with torch.profiler.profile(activities=acts) as prof:
            runner.isolated_chunk_times(repeats=2)
        iso_ev = _trace(prof)
        out[schedule] = {
            "step_ms": [round(x, 3) for x in steps], "step_clock": step_clock, "isolated_clock": iso_clock,
            "isolated_ms": {k: round(statistics.median(v) / 1e6, 3) for k, v in iso.items()},
            "step_kernel_us_by_category": _category_us(step_ev), "step_kernels": _kernel_summary(step_ev, 8),
            "isolated_kernels_3_runs": _kernel_summary(iso_ev, 8),
        }
        del runner
        torch.cuda.empty_cache()
        dist.barrier()
    return out


def attention_part(clock: ClockSampler) -> dict:
    sdpa = torch.nn.functional.scaled_dot_product_attention
    timer = Timer("cuda", heat_ms=60.0)
    timer.preheat(5.0)
    out = {}
    for b, h, s, d in ((2, 40, 6144, 64), (1, 80, 6144, 64), (1, 64, 4096, 64), (1, 64, 8192, 64), (1, 128, 4096, 64),
                       (1, 24, 3000, 128), (1, 32, 2048, 128), (1, 32, 4096, 128)):
        q, k, v = (randn(b * h * s * d, "cuda", 10 + i).view(b, h, s, d).requires_grad_() for i in range(3))
        t0 = time.monotonic()
        st = timer.time(lambda q=q, k=k, v=v: sdpa(q, k, v, is_causal=True))
        window = clock.window(t0, time.monotonic())
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            sdpa(q, k, v, is_causal=True)
            torch.cuda.synchronize()
        names = sorted({e["name"][:80] for e in _trace(prof) if e.get("cat") == "kernel"})
        flops = 4.0 * b * h * s * s * d / 2
        out[f"fwd_b{b}_h{h}_s{s}_d{d}"] = {"us": round(st.median_ns / 1e3, 1), "tflops": round(flops / st.median_ns / 1e3, 1),
                                           "clock": window, "kernels": names}
        del q, k, v
    a, w = randn(8192 * 8192, "cuda", 1).view(8192, 8192), randn(8192 * 8192, "cuda", 2).view(8192, 8192)
    t0 = time.monotonic()
    st = timer.time(lambda: torch.mm(a, w.t()))
    out["gemm_8192^3"] = {"us": round(st.median_ns / 1e3, 1), "tflops": round(2 * 8192**3 / st.median_ns / 1e3, 1),
                          "clock": clock.window(t0, time.monotonic())}
    return out


def host_part() -> dict:
    """Host time per eager op issued back to back (no synchronisation inside the loop)."""
    x, w = randn(64 * 4096, "cuda", 3).view(64, 4096), randn(2048 * 4096, "cuda", 4).view(2048, 4096)
    idx = torch.arange(64, device="cuda")
    one = torch.ones(1, device="cuda")
    ops = {"add_1_element": lambda: one.add(one), "mm_64x2048x4096": lambda: torch.mm(x, w.t()),
           "silu": lambda: torch.nn.functional.silu(x), "index_select": lambda: x.index_select(0, idx)}
    out = {}
    for name, fn in ops.items():
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        n = 2000
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        out[name] = round((time.perf_counter_ns() - t0) / n / 1e3, 2)
        torch.cuda.synchronize()
    return out


def worker(rank: int, world: int, device: str, cfg: dict) -> dict:
    clock = ClockSampler(rank)
    result: dict = {}
    try:
        if "moe" in cfg["parts"]:
            result["moe"] = moe_part(rank, world, device, clock)
        if "pipeline" in cfg["parts"]:
            result["pipeline"] = pipeline_part(rank, world, device, clock)
        dist.barrier()
        if rank == 0 and "host" in cfg["parts"]:
            result["host_us_per_call"] = host_part()
        if rank == 0 and "attention" in cfg["parts"]:
            result["attention"] = attention_part(clock)
    finally:
        clock.stop()
    return result


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="diag.json")
    p.add_argument("--parts", default="moe,pipeline,host,attention")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = {"parts": tuple(args.parts.split(",")), "timeout_s": 400}
    results, errors = run_workers(worker, 2, "nccl", cfg, timeout_s=400)
    doc = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "errors": errors,
           "ranks": results}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(json.dumps(doc, indent=1)[-11000:], flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
