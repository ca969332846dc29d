"""Measure whole workloads, with full descriptions, for validating the simulator later.

``python3 -m moesim.calibrate.validate_workloads --device cuda --out h200_measurements.json``
measures (a) single bf16 GEMMs, SwiGLU experts, attention and memory ops at shapes that are
NOT on the calibration grid; and, on several GPUs, (b) all-reduce and all-to-all at off-grid
sizes, (c) a two-stage pipeline of MLP blocks under GPipe, 1F1B and interleaved 1F1B, and
(d) an expert-parallel MoE layer under uniform and Zipf routing and two expert placements.
Each entry carries a machine-readable description complete enough for the simulator to
predict it without a GPU. ``--heat-ms`` and ``--warm-s`` put the GPU under GEMM load before
the single-GPU entries, and each entry records that thermal state (``as_found``, ``hot``,
``steady``): sustained load lowers the clocks by up to a quarter (docs/calibration.md).
``--clock-probe`` also records, per single-GPU entry, the SM clock its repeats ran at, read on
the GPU next to the timed kernel (``moesim.calibrate.clock_timer``), and NVML's power and clock
over the timed window (``measured.clock``).
On GPUs every rank of the distributed part also runs the host probe sequence
(:func:`moesim.calibrate.host_rounds.in_process_probe`) right before and right after its timed
workloads, in the same process; each distributed entry stores the per-rank records as
``measured.host_probe`` (the predictor scales host costs by them, see ``moesim.validate.host``).
Protocol v2 (docs/accuracy.md) adds ``--lead-us 500`` (a GPU-side wait after each single-GPU
repeat's L2 flush: no launch gaps inside a region of short kernels), ``--collective-rounds 3``
(every collective size timed in interleaved rounds) and ``--host-cal-sizes 65536,262144`` (eager
loops of each op at those sizes in every round: the op's host interval in these processes, stored
as ``measured.eager_host_interval``, not as entries); ``--moe-repeats`` sets the timed forwards per
MoE layer and ``--moe-telemetry`` records per MoE repeat and rank the SM clock as the layer ends and
the host time of issuing the forward (``measured.clock``, ``measured.host_issue_ns``). With ``--clock-probe`` every single-GPU entry also stores its per-repeat times and
clock probes (``measured.per_repeat``).
``--device cpu --cpu-ranks 2`` runs tiny versions with gloo.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from moesim.calibrate import kernels, memops, provenance
from moesim.calibrate.clock_timer import ClockedTimer
from moesim.calibrate.collectives import collective_samples
from moesim.calibrate.comm_worker import collectives_worker
from moesim.calibrate.dist import run_workers
from moesim.calibrate.jsonio import dump_profile, eager_host_intervals, host_probe_record
from moesim.calibrate.moe_bench import MoEConfig, moe_check_worker, moe_entry, time_moe
from moesim.calibrate.pipeline_bench import PipelineConfig, pipeline_check_worker, pipeline_entry, time_pipeline
from moesim.calibrate.section import Section, error_line
from moesim.calibrate.timing import Budget, Timer

SCHEMA_VERSION = 1

# (m, n, k): none on the calibration grid; the last two fall outside it (M above, all below)
GEMMS = {"cuda": [(3000, 5120, 3072), (768, 11008, 4096), (12288, 6144, 1536), (100, 7168, 2560),
                  (20000, 4608, 9216), (1536, 1536, 1536), (6000, 16384, 5120), (40000, 2880, 2880), (48, 896, 896)],
         "cpu": [(24, 48, 40), (8, 40, 24)]}
# (tokens, hidden, ffn)
SWIGLU = {"cuda": [(777, 5120, 1536), (3333, 2880, 2880), (12000, 4096, 1408), (50, 7168, 2048), (24576, 7168, 2048)],
          "cpu": [(5, 32, 24)]}
# (batch, heads, seq, head_dim)
ATTENTION = {"cuda": [(1, 24, 3000, 128), (2, 40, 6144, 64), (4, 32, 1536, 128)], "cpu": [(1, 2, 24, 8)]}
MEMORY = {"cuda": [("copy", 100_000_000), ("rmsnorm", 30_000_000), ("gather", 300_000_000), ("silu", 5_000_000)],
          "cpu": [("copy", 40_000)]}
# ``--shape-set holdout``: shapes of public models' layers (Qwen2.5-7B, Llama-3-70B, Qwen3-30B-A3B,
# GPT-OSS, DeepSeek-V3, Mixtral) at token counts and head counts off the calibration grids (heads
# 12-96, sequences 1,000-12,288, dimensions 768-28,672), none of them a grid point, chosen before
# any was measured; some sit past the GEMM grid's edges (N or K of 768 below it, 28,672 above)
HOLDOUT = {
    "gemm": [(6144, 3584, 3584), (8192, 18944, 3584), (8192, 3584, 18944), (2048, 28672, 8192),
             (2048, 8192, 28672), (3000, 2880, 2880), (12000, 768, 2048), (5000, 7168, 2048),
             (5000, 4096, 7168), (24576, 6144, 4096), (1000, 10240, 5120), (384, 5120, 13824),
             (9000, 2560, 10240), (6000, 2048, 768)],
    "swiglu": [(4096, 2880, 2880), (6144, 3584, 18944), (1500, 5120, 1536), (8192, 4096, 14336),
               (3000, 7168, 2048), (10000, 2048, 768)],
    "attention": [(1, 40, 4096, 128), (1, 48, 2500, 128), (2, 28, 3584, 128), (1, 56, 6144, 128),
                  (1, 96, 1000, 128), (3, 20, 5000, 64), (1, 64, 12288, 64), (2, 24, 2048, 128),
                  (1, 36, 8192, 128), (4, 12, 3000, 64)],
    "memory": [("copy", 37_000_000), ("rmsnorm", 80_000_000), ("gather", 120_000_000), ("silu", 250_000_000),
               ("add", 60_000_000), ("mul", 9_000_000), ("copy", 700_000_000)],
}
SHAPE_SETS = ("standard", "holdout")
PIN_CORES = (2, 4, 6, 8, 10, 12, 14, 16)  # --pin-cores: rank r on PIN_CORES[r] (core 0 left to the system)
COLLECTIVE_SIZES = {"cuda": [700_000, 3_000_000, 48_000_000, 300_000_000], "cpu": [40_000]}
PIPELINES = {
    "cuda": [PipelineConfig("compute_heavy", 4096, 16384, 8, 8192, 8),
             PipelineConfig("comm_heavy", 8192, 1024, 4, 8192, 8),
             PipelineConfig("small_batch", 8192, 32768, 4, 1024, 8)],
    "cpu": [PipelineConfig("tiny", 32, 64, 4, 16, 4)],
}


# small configurations whose results are checked against a one-rank reference before timing
CHECK_PIPELINE = {"cuda": PipelineConfig("check", 1024, 4096, 4, 512, 4), "cpu": PipelineConfig("check", 32, 64, 4, 16, 4)}
CHECK_MOE = {"cuda": [MoEConfig(2048, 1024, 512, 8, 2, "zipf", 1.2, "contiguous"),
                      MoEConfig(2048, 1024, 512, 8, 2, "uniform", 1.2, "hot_split")],
             "cpu": [MoEConfig(32, 16, 8, 4, 2, "zipf", 1.2, "hot_split")]}


def _moe_configs(device: str) -> list[MoEConfig]:
    if device == "cpu":
        return [MoEConfig(32, 16, 8, 4, 2, r, 1.2, p) for r in ("uniform", "zipf") for p in ("contiguous", "hot_split")]
    return [MoEConfig(t, 4096, 2048, 8, 2, r, 1.2, p)
            for t in (8192, 2048) for r in ("uniform", "zipf") for p in ("contiguous", "hot_split")]


def _entry(kind: str, ident: str, description: dict, stats_fields: dict) -> dict:
    return {"id": ident, "kind": kind, "description": description, "measured": stats_fields}


def _fields(timer: Timer, st) -> dict:
    """An entry's measured statistics, with the clock record when ``timer`` reads clocks."""
    fields = st.fields()
    if isinstance(timer, ClockedTimer) and timer.last_clock:
        fields["clock"] = dict(timer.last_clock)
        # per repeat: its time and the probes before and after it (len(times) + 1 probes)
        fields["per_repeat"] = {"time_ns": [round(x, 1) for x in timer.last_samples_ns],
                                "probe_mhz": [round(x, 1) for x in timer.last_probe_mhz]}
    return fields


def shape_lists(device: str, shape_set: str = "standard") -> tuple[list, list, list, list]:
    """(GEMMs, SwiGLU FFNs, attention, memory ops) of one shape set (``holdout``: CUDA only)."""
    if shape_set not in SHAPE_SETS:
        raise ValueError(f"unknown shape set {shape_set!r}: use one of {', '.join(SHAPE_SETS)}")
    if shape_set == "holdout" and device == "cuda":
        return HOLDOUT["gemm"], HOLDOUT["swiglu"], HOLDOUT["attention"], HOLDOUT["memory"]
    return GEMMS[device], SWIGLU[device], ATTENTION[device], MEMORY[device]


def single_gpu_entries(device: str, budget: Budget, heat_ms: float = 0.0, warm_s: float = 0.0,
                       nvml: object = None, clock_probe: bool = False, lead_us: float = 0.0,
                       shape_set: str = "standard") -> Section:
    """(a) GEMMs, SwiGLU experts, attention and memory ops at off-grid shapes (``shape_set``:
    :func:`shape_lists`).

    ``warm_s`` seconds of GEMM load first, then ``heat_ms`` before every entry, keep the GPU at
    the steady, power-limited state the calibration grid was measured in (see ``_tag_thermal``).
    ``clock_probe``: time with :class:`ClockedTimer` (clock per entry; ``nvml`` adds NVML windows).
    ``lead_us``: a GPU-side wait after each repeat's L2 flush (the host is then at least that far
    ahead of the timed op: no launch gaps inside a region of several short kernels).
    """
    sec = Section("single_gpu")
    timer = (ClockedTimer(device, nvml, heat_ms=heat_ms, lead_us=lead_us) if clock_probe and device == "cuda"
             else Timer(device, heat_ms=heat_ms, lead_us=lead_us))
    timer.preheat(warm_s)
    gemms, swiglus, attentions, memories = shape_lists(device, shape_set)
    for m, n, k in gemms:
        def gemm(m: int = m, n: int = n, k: int = k) -> dict:
            a, w = kernels.randn(m * k, device, 1).view(m, k), kernels.randn(n * k, device, 2).view(n, k)
            st = timer.time(lambda: torch.mm(a, w.t()))
            return _entry("gemm", f"gemm_{m}x{n}x{k}", {"m": m, "n": n, "k": k, "dtype": "bf16",
                                                         "layout": "y[m,n] = x[m,k] @ w[n,k]^T"}, _fields(timer, st))
        sec.attempt(f"gemm {m}x{n}x{k}", budget, gemm)
    for t, h, f in swiglus:
        def ffn(t: int = t, h: int = h, f: int = f) -> dict:
            x = kernels.randn(t * h, device, 3).view(t, h)
            wg, wu = (kernels.randn(f * h, device, 4 + i).view(f, h) for i in range(2))
            wd = kernels.randn(f * h, device, 6).view(h, f)
            st = timer.time(lambda: kernels.swiglu_ffn(x, wg, wu, wd))
            return _entry("swiglu_ffn", f"swiglu_t{t}_h{h}_f{f}", {"tokens": t, "hidden": h, "ffn": f, "dtype": "bf16",
                          "ops": "3 GEMMs (gate, up: [t,h]x[h,f]; down: [t,f]x[f,h]) + silu + mul"}, _fields(timer, st))
        sec.attempt(f"swiglu {t} {h} {f}", budget, ffn)
    for b, hd, s, d in attentions:
        for direction in ("fwd", "bwd"):
            sec.attempt(f"attention {b} {hd} {s} {d} {direction}", budget,
                        lambda b=b, hd=hd, s=s, d=d, direction=direction: _attention(timer, device, b, hd, s, d, direction))
    for variant, nbytes in memories:
        def mem(variant: str = variant, nbytes: int = nbytes) -> dict:
            numel = memops._numel_for(variant, nbytes)
            bufs = [kernels.randn(numel, device, 20 + i) for i in range(3)]
            st = timer.time(memops._kernel(variant, bufs, numel, device))
            kind, per_elem = memops.VARIANTS[variant]
            return _entry("memory", f"memory_{variant}_{nbytes}", {"kind": kind, "variant": variant,
                          "nbytes": int(numel * per_elem), "dtype": "bf16"}, _fields(timer, st))
        sec.attempt(f"memory {variant}", budget, mem)
    return sec


def _attention(timer: Timer, device: str, b: int, h: int, s: int, d: int, direction: str) -> dict:
    q, k, v = (kernels.randn(b * h * s * d, device, 10 + i).view(b, h, s, d).requires_grad_() for i in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if direction == "fwd":
        st = timer.time(lambda: sdpa(q, k, v, is_causal=True))
    else:
        out, dout = sdpa(q, k, v, is_causal=True), kernels.randn(b * h * s * d, device, 13).view(b, h, s, d)
        st = timer.time(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
    return _entry("attention", f"attention_{direction}_b{b}_h{h}_s{s}_d{d}",
                  {"batch": b, "heads": h, "kv_heads": h, "seq_q": s, "seq_kv": s, "head_dim": d, "causal": True,
                   "backward": direction == "bwd", "dtype": "bf16"}, _fields(timer, st))


def distributed_worker(rank: int, world: int, device: str, cfg: dict) -> dict:
    """(b) collectives, (c) pipelines, (d) MoE layers, on every rank in the same order, between
    two in-process host probes (GPUs only)."""
    out: dict = {"errors": []}
    if cfg.get("pin_cores"):  # one core of its own per rank: no migration of the issuing thread
        allowed = sorted(os.sched_getaffinity(0))
        core = PIN_CORES[rank % len(PIN_CORES)]
        os.sched_setaffinity(0, {core if core in allowed else allowed[rank % len(allowed)]})
        out["affinity"] = sorted(os.sched_getaffinity(0))
    if device == "cuda":
        out["host_probe_before"] = _guard(out, "host probe before", lambda: _host_probe(rank, world))
    out["checks"] = {
        "pipeline_grad_rel_error": _guard(out, "pipeline check", lambda: pipeline_check_worker(
            rank, world, device, {"pipeline": cfg["check_pipeline"]})),
        "moe_output_rel_error": _guard(out, "moe check", lambda: moe_check_worker(rank, world, device, {"moe": cfg["check_moe"]})),
    }
    rounds = int(cfg.get("collective_rounds", 1))
    coll_cfg = {"ops": ("all_reduce", "all_to_all", "all_to_all_v"), "sizes": cfg["collective_sizes"],
                "budget_s": 40 + 20 * rounds, "overlap": False, "rounds": rounds,
                "host_cal_sizes": tuple(cfg.get("host_cal_sizes", ()))}
    out["collectives"] = collectives_worker(rank, world, device, coll_cfg)
    out["pipelines"] = []
    for pc in cfg["pipelines"]:
        for schedule in ("gpipe", "1f1b", "interleaved"):
            out["pipelines"].append(_guard(out, f"pipeline {pc.name} {schedule}",
                                           lambda: time_pipeline(pc, schedule, rank, world, device)))
    out["moe"] = [_guard(out, f"moe {mc.name}", lambda: time_moe(mc, rank, world, device,
                                                             repeats=int(cfg.get("moe_repeats", 10)),
                                                             telemetry=bool(cfg.get("moe_telemetry"))))
                  for mc in cfg["moe"]]
    if device == "cuda":
        out["host_probe_after"] = _guard(out, "host probe after", lambda: _host_probe(rank, world))
    return out


def _host_probe(rank: int, world: int) -> dict:
    from moesim.calibrate.host_rounds import in_process_probe  # CUDA only
    return in_process_probe(rank, world)


def _guard(out: dict, label: str, fn) -> "dict | None":
    try:
        return fn()
    except Exception as exc:  # keep going: a later workload may still work
        out["errors"].append(f"{label}: {error_line(exc)}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None


def distributed_entries(device: str, world: int, budget: Budget, collective_rounds: int = 1,
                        host_cal_sizes: tuple[int, ...] = (), moe_repeats: int = 10,
                        moe_telemetry: bool = False, pin_cores: bool = False) -> Section:
    """Run :func:`distributed_worker` on ``world`` ranks and turn its raw times into entries.

    ``collective_rounds``: each collective size timed that many times, interleaved;
    ``host_cal_sizes``: sizes timed alongside in every round whose eager per-call time is stored,
    per op, as the session's eager host interval (``measured.eager_host_interval`` of each
    collective entry), not as entries.
    """
    sec = Section("distributed")
    cfg = {"collective_sizes": COLLECTIVE_SIZES[device], "pipelines": PIPELINES[device], "moe": _moe_configs(device),
           "check_pipeline": CHECK_PIPELINE[device], "check_moe": CHECK_MOE[device], "timeout_s": budget.left_s(),
           "collective_rounds": collective_rounds, "host_cal_sizes": tuple(host_cal_sizes), "moe_repeats": moe_repeats,
           "moe_telemetry": moe_telemetry and device == "cuda", "pin_cores": pin_cores}
    results, errors = run_workers(distributed_worker, world, "nccl" if device == "cuda" else "gloo", cfg,
                                  timeout_s=max(30.0, budget.left_s()))
    sec.errors += errors
    if len(results) != world:
        return sec
    sec.errors += sorted({e for r in results for e in r["errors"] + r["collectives"]["errors"]})
    sec.checks = {str(rank): r["checks"] for rank, r in enumerate(results)}
    probe = host_probe_record(results)
    if probe is not None:
        sec.checks["host_probe"] = probe
    if all("affinity" in r for r in results):
        sec.checks["affinity"] = [r["affinity"] for r in results]
    n_before = len(sec.samples)
    samples = collective_samples([r["collectives"] for r in results], world)
    calibration = eager_host_intervals([s for s in samples if s["nbytes"] in host_cal_sizes])
    if calibration:
        sec.checks["eager_host_interval"] = calibration
    for s in samples:
        if s["nbytes"] in host_cal_sizes:
            continue
        desc = {k: v for k, v in s.items() if k in ("collective", "mode", "num_ranks", "nbytes", "split_fractions")}
        desc["dtype"] = "bf16" if device == "cuda" else "fp32"
        fields = {k: v for k, v in s.items() if k.endswith("_ns") or k in ("repeats", "algbw_gbps", "busbw_gbps")}
        if collective_rounds > 1:
            fields["rounds"] = collective_rounds
        if s["collective"] in calibration:
            fields["eager_host_interval"] = calibration[s["collective"]]
        sec.samples.append(_entry("collective", f"{s['collective']}_{s['nbytes']}", desc, fields))
    i = 0
    for pc in cfg["pipelines"]:
        for schedule in ("gpipe", "1f1b", "interleaved"):
            per_rank = [r["pipelines"][i] for r in results]
            i += 1
            if all(p is not None for p in per_rank):
                sec.samples.append(pipeline_entry(pc, schedule, per_rank, world))
    for j, mc in enumerate(cfg["moe"]):
        per_rank = [r["moe"][j] for r in results]
        if all(p is not None for p in per_rank):
            sec.samples.append(moe_entry(mc, per_rank, world))
    if probe is not None:
        for entry in sec.samples[n_before:]:
            entry["measured"]["host_probe"] = probe
    return sec


def thermal_tag(heat_ms: float, warm_s: float) -> str:
    """``as_found`` (no deliberate load), ``hot`` (short load before each entry) or ``steady``
    (seconds of load first, then before each entry: the calibration grid's state)."""
    if heat_ms <= 0:
        return "as_found"
    return "steady" if warm_s > 0 else "hot"


def _tag_thermal(sec: Section, heat_ms: float, warm_s: float, lead_us: float = 0.0) -> None:
    tag = thermal_tag(heat_ms, warm_s)
    for entry in sec.samples:
        entry["description"].update(thermal=tag, heat_ms=heat_ms, warm_s=warm_s)
        if lead_us > 0:
            entry["description"]["lead_us"] = lead_us
        if tag != "as_found":
            entry["id"] += f"@{tag}"


def run_validation(device: str, out: Path, budget_s: float = 200.0, cpu_ranks: int = 0,
                   heat_ms: float = 0.0, parts: tuple[str, ...] = ("single", "distributed"),
                   warm_s: float = 0.0, clock_probe: bool = False, lead_us: float = 0.0,
                   collective_rounds: int = 1, host_cal_sizes: tuple[int, ...] = (), moe_repeats: int = 10,
                   moe_telemetry: bool = False, pin_cores: bool = False, shape_set: str = "standard") -> dict:
    """Measure the validation workloads in ``parts`` and write ``out``; returns the document."""
    if device == "cpu":
        torch.set_num_threads(1)
    world = torch.cuda.device_count() if device == "cuda" else cpu_ranks
    doc = {"schema_version": SCHEMA_VERSION, **provenance.collect(device, max(1, world)), "errors": [], "samples": []}
    budget = Budget(budget_s)
    nvml = _nvml() if clock_probe and device == "cuda" else None
    try:
        sec = (single_gpu_entries(device, budget.sub(0.3), heat_ms, warm_s, nvml, clock_probe, lead_us, shape_set)
               if "single" in parts else Section("single_gpu"))
    finally:
        if nvml is not None:
            nvml.stop()
    _tag_thermal(sec, heat_ms, warm_s, lead_us)
    doc["samples"] += sec.samples
    doc["errors"] += sec.errors
    print(sec.summary(), flush=True)
    dump_profile(doc, out)
    if "distributed" in parts and world >= 2:
        if device == "cuda":
            torch.cuda.empty_cache()
        sec = distributed_entries(device, world, budget, collective_rounds, host_cal_sizes, moe_repeats, moe_telemetry,
                                  pin_cores)
        doc["checks"] = {k: v for k, v in sec.checks.items() if k != "host_probe"}
        if "host_probe" in sec.checks:
            doc["host_probe"] = sec.checks["host_probe"]
        doc["samples"] += sec.samples
        doc["errors"] += sec.errors
        print(sec.summary(), flush=True)
    elif "distributed" in parts:
        doc["errors"].append(f"distributed workloads skipped ({world} rank(s) available)")
    dump_profile(doc, out)
    return doc


def _nvml() -> object:
    from moesim.calibrate.clock_timer import Nvml  # NVML sampler thread (inert without pynvml)
    return Nvml(torch.cuda.current_device())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--out", type=Path, default=Path("h200_measurements.json"))
    p.add_argument("--budget-s", type=float, default=200.0)
    p.add_argument("--cpu-ranks", type=int, default=0)
    p.add_argument("--heat-ms", type=float, default=0.0, help="GEMM load before each single-GPU entry")
    p.add_argument("--warm-s", type=float, default=0.0, help="seconds of GEMM load before the single-GPU entries")
    p.add_argument("--parts", default="single,distributed", help="comma list of single, distributed")
    p.add_argument("--clock-probe", action="store_true", help="record the SM clock of every single-GPU entry")
    p.add_argument("--lead-us", type=float, default=0.0,
                   help="GPU-side wait after each single-GPU repeat's L2 flush (keeps the host ahead)")
    p.add_argument("--collective-rounds", type=int, default=1,
                   help="time every collective size this many times, interleaved (drift averages out)")
    p.add_argument("--host-cal-sizes", default="",
                   help="comma list of byte sizes timed like the collectives in every round, in the same "
                        "processes: the eager host interval of each op (calibration, not validation entries)")
    p.add_argument("--moe-repeats", type=int, default=10, help="timed forwards per MoE layer (median of the max over ranks)")
    p.add_argument("--pin-cores", action="store_true",
                   help="pin each distributed rank's process to a core of its own (cores 2, 4, ...)")
    p.add_argument("--moe-telemetry", action="store_true",
                   help="record per MoE repeat and rank the SM clock as the layer ends and the host issue time")
    p.add_argument("--shape-set", choices=SHAPE_SETS, default="standard",
                   help="single-GPU shapes: the standard off-grid set, or held-out shapes of public models")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    parts = tuple(x.strip() for x in args.parts.split(",") if x.strip())
    if args.moe_repeats < 1:
        p.error("--moe-repeats must be >= 1")
    from moesim.calibrate.measure import max_cpu_ranks

    if args.cpu_ranks != 0 and not 2 <= args.cpu_ranks <= max_cpu_ranks():
        p.error(f"--cpu-ranks must be 0 (no gloo ranks) or 2..{max_cpu_ranks()} on this machine "
                f"(4 processes per core, at most 64), got {args.cpu_ranks}")
    if not (args.budget_s > 0 and args.budget_s < float("inf")):
        p.error(f"--budget-s must be a finite number of seconds > 0, got {args.budget_s}")
    if args.collective_rounds < 1:
        p.error("--collective-rounds must be >= 1")
    try:
        cal = tuple(int(x) for x in args.host_cal_sizes.split(",") if x.strip())
    except ValueError:
        p.error("--host-cal-sizes must be a comma list of integers (bytes)")
    if any(c <= 0 or c in COLLECTIVE_SIZES[args.device] for c in cal):
        p.error("--host-cal-sizes must be > 0 and not a validation size")
    doc = run_validation(args.device, args.out, args.budget_s, args.cpu_ranks, args.heat_ms, parts, args.warm_s,
                         args.clock_probe, args.lead_us, args.collective_rounds, cal, args.moe_repeats,
                         args.moe_telemetry, args.pin_cores, args.shape_set)
    print(f"wrote {args.out}: {len(doc['samples'])} workloads, {len(doc['errors'])} errors", flush=True)
    print("checks:", doc.get("checks"), "errors:", doc["errors"], flush=True)
    for rec in doc.get("host_probe") or []:
        print(f"  host probe rank {rec['rank']}: " + ", ".join(
            f"{when} busy {rec[when]['busy_round_ns'] / 1e3:.0f} us caught_up {rec[when]['caught_up_round_ns'] / 1e3:.0f} us"
            for when in ("before", "after") if rec[when]), flush=True)
    for s in doc["samples"]:
        clock = s["measured"].get("clock", {})
        print(f"  {s['id']:<48} {s['measured']['time_ns'] / 1e3:12.1f} us {clock.get('sm_mhz', '')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
