"""Build a calibration profile: run every measurement section and write the profile JSON.

``python3 -m moesim.calibrate.measure --device cuda --out h200_sxm.json`` measures on GPU 0
(GEMMs, fp8 GEMMs, SwiGLU experts, flash attention, memory ops, launch overhead), then, when
more than one GPU is visible, starts one process per GPU for the NCCL collectives and the
compute/communication overlap. ``--device cpu`` is the smoke mode used by the tests: a tiny
grid, host timing, and (with ``--cpu-ranks 2``) gloo collectives. On a GPU every single-GPU
shape follows ``--heat-ms`` (default 60) of large GEMMs, so it is timed at the sustained,
power-limited clocks of a training run rather than at idle boost clocks. Each section has its own
share of ``--budget-s``; a section over budget skips its remaining shapes and says so. The file
is rewritten after every section, so a run cut short still leaves a valid partial profile.
The format is documented in docs/calibration.md and validated by ``moesim.costs.profile``.

The profile also says what the run did: ``sections`` (per section: samples, shapes measured and
skipped, seconds, its budget), ``completeness`` (whether the budget covered every shape, else how
many seconds a complete profile needs: each section's measured time per shape times the shapes
it skipped) and ``not_measured`` (op classes left to the roofline, e.g. collectives and overlap
on one GPU). :func:`run_calibration` takes a ``progress(section, shape)`` callback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from moesim.calibrate import grids, hostops, kernels, memops, provenance
from moesim.calibrate.grids import DEFAULT_HEAT_MS
from moesim.calibrate.collectives import COLLECTIVES, GRAPH_COLLECTIVES, GRAPH_TOP_NBYTES, collective_samples
from moesim.calibrate.comm_worker import collectives_worker
from moesim.calibrate.dist import run_workers
from moesim.calibrate.framework_host import measure_host_megatron
from moesim.calibrate.host_classes import measure_host_classes
from moesim.calibrate.host_sync import measure_host_after_sync
from moesim.calibrate.fp8 import measure_fp8_scaled
from moesim.calibrate.grouped import measure_grouped_gemm_te, measure_grouped_gemm_v, measure_grouped_gemm_v_more
from moesim.calibrate.jsonio import dump_profile
from moesim.calibrate.moe_kernels import measure_eager_kernels, measure_moe_kernels
from moesim.calibrate.overlap import overlap_samples
from moesim.calibrate.regions import measure_kernel_region
from moesim.calibrate.clock_section import measure_clock
from moesim.calibrate.duty_section import measure_duty
from moesim.calibrate.section import Section, notify, progress_hook
from moesim.calibrate.timing import Budget, Timer
from moesim.errors import ConfigError

SCHEMA_VERSION = 1
SINGLE_SECTIONS: dict[str, tuple[float, Callable[..., Section]]] = {
    # name -> (share of the total budget, function(timer, grid, device, budget))
    "host_ops": (0.03, hostops.measure_host_ops),
    "gemm": (0.2, kernels.measure_gemm),
    "gemm_bwd": (0.35, kernels.measure_gemm_bwd_layouts),
    "attention": (0.12, kernels.measure_attention),
    "attention_gqa": (0.06, kernels.measure_attention_gqa),  # SDPA enable_gqa=True (another kernel)
    "attention_flash": (0.04, kernels.measure_attention_flash),  # the same, SDPA held to FlashAttention-2
    "memory": (0.1, memops.measure_memory),
    "swiglu": (0.08, kernels.measure_swiglu),
    "fp8": (0.05, kernels.measure_gemm_fp8),
    "grouped_gemm": (0.06, kernels.measure_grouped_gemm),
    "grouped_gemm_v": (0.09, measure_grouped_gemm_v),  # count-vector grouped GEMMs (calibrate/grouped.py)
    "grouped_gemm_v_more": (0.09, measure_grouped_gemm_v_more),  # the same, more expert shapes (by name)
    "grouped_gemm_te": (0.09, measure_grouped_gemm_te),  # Transformer Engine's per-group streams (by name)
    "fp8_scaled": (0.05, measure_fp8_scaled),  # rowwise/blockwise fp8, fp8 grouped, quantize casts
    "moe_kernels": (0.1, measure_moe_kernels),  # router / permute / unpermute kernels, counts sync
    "eager_kernels": (0.03, measure_eager_kernels),  # moe_kernels' strided / broadcast variants and eager RoPE
    "host_classes": (0.03, measure_host_classes),  # host time per op class: plain, fwd, bwd
    "host_after_sync": (0.02, measure_host_after_sync),  # host issue right after a GPU read, against steady
    "clock": (0.02, measure_clock),  # the SM clock this protocol holds GEMMs and attention at
    "duty": (0.03, measure_duty),  # a GEMM's time against the share of GPU time in GEMMs (power limit)
    # Megatron-Core's per-expert MLP call (needs megatron-core; asked for by name only)
    "host_megatron": (0.03, measure_host_megatron),
}
# asked for by name only: a framework; a subset of moe_kernels; more grouped shapes; TE's grouped GEMM
OPTIONAL_SECTIONS = ("host_megatron", "eager_kernels", "grouped_gemm_v_more", "grouped_gemm_te")
DIST_SECTIONS = ("collectives", "collectives_graph", "overlap")
ALL_SECTIONS = ("launch", "kernel_region", *SINGLE_SECTIONS, *DIST_SECTIONS)
DEFAULT_SECTIONS = tuple(s for s in ALL_SECTIONS if s not in OPTIONAL_SECTIONS)
COLLECTIVE_SHARE = 0.35

NOTES = (
    "Medians of repeated runs timed with CUDA events; each repeat starts after a 256 MiB write that "
    "evicts L2 (cold-cache times); with heat_ms > 0 each shape follows that much 8192^3 GEMM load, so "
    "single-GPU times are at sustained, power-limited clocks; inputs are seeded random normals. GEMM "
    "layouts: fwd y = x w^T, bwd_data dx = dy w, bwd_weight dw = dy^T x. Memory-op nbytes counts bytes "
    "read plus bytes written. Collectives: per iteration the minimum over ranks, median over "
    "iterations; nbytes as in nccl-tests; graph mode = CUDA-graph replay. NVLink multicast (NVLS) off."
)


def _single_gpu(profile: dict, grid: grids.Grid, device: str, total: Budget, sections: tuple[str, ...],
                out: Path, heat_ms: float = 0.0, preheat_s: float = 0.0) -> None:
    timer = Timer(device, heat_ms=heat_ms)
    if "launch" in sections:
        launch_budget = total.sub(0.05)
        _record(profile, memops.measure_launch(device, launch_budget), out, launch_budget.seconds)
    if "kernel_region" in sections:  # the event-region cost every sample carries (moesim.costs.regions)
        if preheat_s > 0:  # in the state the other samples are measured in
            timer.preheat(preheat_s)
            preheat_s = 0.0
        notify("kernel_region", "event regions of 1 and 2 kernels")
        region = measure_kernel_region(timer, device)
        if region is not None and not _finite(region):
            profile["errors"].append(f"kernel_region: dropped, a NaN or infinite value in {region}")
            region = None
        if region is not None:
            profile["kernel_region"] = region
            print(f"kernel_region: region {region['region_ns'] / 1e3:.2f} us, floor {region['floor_ns'] / 1e3:.2f} us",
                  flush=True)
            _dump(profile, out)
    reserve_share = COLLECTIVE_SHARE if set(DIST_SECTIONS) & set(sections) else 0.0
    chosen = {name: sf for name, sf in SINGLE_SECTIONS.items() if name in sections}
    scale = (1.0 - reserve_share) / max(sum(share for share, _ in chosen.values()), 1e-9)
    for name, (share, fn) in chosen.items():
        if name != "host_ops" and preheat_s > 0:  # host costs first, on an idle GPU; then heat once
            timer.preheat(preheat_s)
            preheat_s = 0.0
        budget = Budget(max(1.0, min(share * scale * total.seconds, total.left_s() - reserve_share * total.seconds)))
        notify(name, "starting")
        _record(profile, fn(timer, grid, device, budget), out, budget.seconds, key=name)


def _finite(value: Any) -> bool:
    """Whether every number in ``value`` (nested lists and dicts included) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def _drop_non_finite(sec: Section) -> None:
    """Drop sample rows holding NaN or inf (a failed timing): each becomes an error line, so no
    NaN ever reaches the profile (which must stay strict JSON)."""
    bad = [s for s in sec.samples if not _finite(s)]
    if bad:
        sec.samples = [s for s in sec.samples if _finite(s)]
        sec.errors.append(f"{sec.name}: dropped {len(bad)} sample(s) with a NaN or infinite value "
                          f"(first: {json.dumps(bad[0], default=str)[:200]})")


def _dump(profile: dict, out: Path) -> None:
    """:func:`dump_profile`, after checking that the document is strict JSON (no NaN or inf)."""
    try:
        json.dumps(profile, allow_nan=False)
    except ValueError as exc:
        raise ConfigError("profile", f"refusing to write {out}: a non-finite number (NaN/inf) in the profile "
                          f"({exc})", "report this as a bug; the measured rows are checked before this") from None
    dump_profile(profile, out)


def _record(profile: dict, sec: Section, out: Path, budget_s: float | None = None, key: str = "") -> None:
    _drop_non_finite(sec)
    name = sec.name
    if key and any(r["section"] == name for r in profile.get("sections", [])):
        name = key  # two --sections share a measurement function (gemm, gemm_bwd): one row each, by its flag name
    profile.setdefault("sections", []).append({
        "section": name, "samples": len(sec.samples), "errors": len(sec.errors), "measured": sec.attempted,
        "skipped": sec.skipped, "elapsed_s": round(sec.elapsed_s, 3),
        "budget_s": round(budget_s, 3) if budget_s is not None else None, "skipped_first": sec.skipped_labels[:3]})
    profile["samples"].extend(sec.samples)
    profile["errors"].extend(sec.errors)
    if sec.skipped:
        profile["errors"].append(f"{sec.name}: {sec.skipped} measurements skipped (over budget)")
    profile.setdefault("thermal_log", []).append({"after": sec.name, "time": time.strftime("%H:%M:%S"),
                                                  "gpus": provenance.gpu_state()})
    print(f"{sec.summary()} [{time.strftime('%H:%M:%S')}] {profile['thermal_log'][-1]['gpus']}", flush=True)
    _dump(profile, out)


def _collectives(profile: dict, grid: grids.Grid, device: str, world: int, total: Budget, out: Path,
                 sections: tuple[str, ...]) -> None:
    budget_s = max(20.0, total.left_s())
    cfg = {"ops": COLLECTIVES if "collectives" in sections else (), "sizes": grid.collective_nbytes,
           "budget_s": 0.5 * budget_s, "graph_budget_s": 0.3 * budget_s,
           "graph": device == "cuda" and "collectives_graph" in sections, "host_ops": "host_ops" in sections,
           "graph_ops": GRAPH_COLLECTIVES, "graph_sizes": tuple(b for b in grid.collective_nbytes if b <= GRAPH_TOP_NBYTES),
           "overlap": device == "cuda" and "overlap" in sections, "overlap_gemm": grid.overlap_gemm,
           "overlap_nbytes": grid.overlap_nbytes, "timeout_s": budget_s}
    backend = "nccl" if device == "cuda" else "gloo"
    notify("collectives", f"{world} ranks ({backend} worker processes)")
    t0 = time.perf_counter()
    results, errors = run_workers(collectives_worker, world, backend, cfg, timeout_s=budget_s + 60)
    sec = Section("collectives", errors=list(errors))
    if len(results) == world:
        sec.samples = collective_samples(results, world) + collective_samples(results, world, "graph_times", "graph")
        sec.samples += hostops.host_collective_samples(results, world, device)
        if cfg["overlap"]:
            sec.samples += overlap_samples(results, world, cfg)
        sec.errors += sorted({e for r in results for e in r["errors"]})
    sec.skipped_labels = [e.split(": skipped")[0] for e in sec.errors if "skipped (budget)" in e]
    sec.skipped, sec.attempted, sec.elapsed_s = len(sec.skipped_labels), len(sec.samples), time.perf_counter() - t0
    _record(profile, sec, out, budget_s)


def run_calibration(device: str, out: Path, mode: str = "full", budget_s: float = 480.0,
                    sections: tuple[str, ...] = DEFAULT_SECTIONS, cpu_ranks: int = 0,
                    rank_counts: tuple[int, ...] = (), heat_ms: float = 0.0, preheat_s: float = 0.0,
                    progress: Callable[[str, str], None] | None = None) -> dict:
    """Measure, write ``out`` after every section, and return the profile dict.

    The distributed sections run once per entry of ``rank_counts`` (default: every visible
    GPU, or ``cpu_ranks`` gloo processes on the CPU). ``heat_ms`` of large GEMMs precede every
    single-GPU shape so that it is timed at sustained (power-limited) clocks. ``progress(section,
    shape)`` is called as each shape starts.
    """
    with progress_hook(progress):
        return _calibrate(device, out, mode, budget_s, sections, cpu_ranks, rank_counts, heat_ms, preheat_s)


def _calibrate(device: str, out: Path, mode: str, budget_s: float, sections: tuple[str, ...], cpu_ranks: int,
               rank_counts: tuple[int, ...], heat_ms: float, preheat_s: float) -> dict:
    """:func:`run_calibration`'s body."""
    t0 = time.perf_counter()
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible (use --device cpu for the smoke mode)")
    grid = grids.GRIDS[mode]
    world = torch.cuda.device_count() if device == "cuda" else cpu_ranks
    prov = provenance.collect(device, max(1, world))
    profile = {"schema_version": SCHEMA_VERSION, **prov, "mode": mode, "heat_ms": heat_ms, "preheat_s": preheat_s,
               "notes": NOTES,
               "errors": [], "samples": []}
    total = Budget(budget_s)
    torch.manual_seed(0)
    if device == "cpu":
        torch.set_num_threads(1)  # thread-pool wake-ups dominate tiny CPU kernels
    _single_gpu(profile, grid, device, total, sections, out, heat_ms, preheat_s)
    for count in rank_counts or (world,):
        if not set(DIST_SECTIONS) & set(sections):
            break
        if not 2 <= count <= world:
            profile["errors"].append(f"collectives: skipped {count} ranks ({world} rank(s) available)")
            continue
        if device == "cuda":
            torch.cuda.empty_cache()
        left = len(rank_counts) - rank_counts.index(count) if rank_counts else 1
        _collectives(profile, grid, device, count, Budget(total.left_s() / left), out, sections)
    profile["not_measured"] = not_measured(profile, device, world, sections)
    profile["completeness"] = completeness(profile.get("sections", []), budget_s, time.perf_counter() - t0)
    _dump(profile, out)
    return profile


def not_measured(profile: dict, device: str, world: int, sections: tuple[str, ...]) -> dict[str, str]:
    """Op classes the run has no rows of, each with why; moesim prices them with the roofline."""
    ops = {s["op"] for s in profile["samples"]}
    wanted = {"collectives": ("collective", "collectives"), "overlap": ("overlap", "overlap")}
    out = {}
    for label, (op, section) in wanted.items():
        if op in ops:
            continue
        if world < 2:
            unit = "GPU" if device == "cuda" else "process (--cpu-ranks)"
            why = f"one {unit}: a single-rank run cannot measure {label}"
        elif section not in sections:
            why = f"'{section}' not in --sections"
        elif label == "overlap" and device != "cuda":
            why = "overlap is measured on GPUs only"
        else:
            why = f"no {label} row was measured (see errors)"
        out[label] = why + "; moesim prices them with the roofline (datasheet bandwidth, default efficiency)"
    return out


def completeness(sections: list[dict[str, Any]], budget_s: float, wall_s: float) -> dict[str, Any]:
    """Whether every shape was measured; else how long a complete profile needs: each section's
    measured seconds per shape times the shapes it skipped (the run's mean per shape for a section
    that measured none), and the ``--budget-s`` that gives every section the time it needs at the
    same shares (its need over its budget, times this run's budget)."""
    skipped = sum(s["skipped"] for s in sections)
    result: dict[str, Any] = {"complete": skipped == 0, "skipped_shapes": skipped, "wall_s": round(wall_s, 1),
                              "budget_s": budget_s}
    if not skipped:
        return result
    measured = sum(s["measured"] for s in sections)
    mean = sum(s["elapsed_s"] for s in sections) / measured if measured else 1.0
    extra, scale = 0.0, 1.0
    for s in sections:
        if not s["skipped"]:
            continue
        per_shape = s["elapsed_s"] / s["measured"] if s["measured"] else mean
        extra += s["skipped"] * per_shape
        if s.get("budget_s"):
            scale = max(scale, (s["elapsed_s"] + s["skipped"] * per_shape) / s["budget_s"])
    needed = wall_s + extra
    result.update(extra_s=round(extra, 1), needed_s=round(needed, 1),
                  budget_s_for_complete=float(10 * math.ceil(max(needed, scale * budget_s) / 10)))
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--out", type=Path, default=Path("profile.json"))
    p.add_argument("--mode", choices=tuple(grids.GRIDS), default=None, help="grid (default: full on cuda, smoke on cpu)")
    p.add_argument("--quick", action="store_true", help="same as --mode quick")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget for the whole run")
    p.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                   help=f"comma list of {', '.join(ALL_SECTIONS)} (default: all but {', '.join(OPTIONAL_SECTIONS)})")
    p.add_argument("--cpu-ranks", type=int, default=0, help="gloo processes for collectives in cpu mode")
    p.add_argument("--heat-ms", type=float, default=None,
                   help="ms of GEMM load before each single-GPU shape, for sustained clocks (default: 60 on cuda)")
    p.add_argument("--preheat-s", type=float, default=0.0,
                   help="seconds of GEMM load once before the first kernel section (thermal steady state)")
    p.add_argument("--ranks", default="", help="comma list of rank counts for the distributed sections (default: all)")
    return p.parse_args(argv)


MAX_RANKS = 64  # the most ranks one host runs the distributed sections with (8-GPU hosts; gloo smoke tests)


def max_cpu_ranks() -> int:
    """The most gloo processes ``--cpu-ranks`` may start: 4 per CPU core, at most 64 (and at least 2).
    Each is a full Python + torch process (about 50 MB and a second or two to start); beyond a few
    per core they only time each other's scheduling, and an unchecked count exhausts memory."""
    return max(2, min(MAX_RANKS, 4 * (os.cpu_count() or 1)))


def parse_rank_counts(text: str, cpu_ranks: "int | None" = None) -> tuple[int, ...]:
    """``--ranks``: a comma list of distinct integers in 2..64 (in cpu mode, at most ``cpu_ranks``)."""
    counts = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise SystemExit(f"--ranks: {part!r} is not an integer (fix: a comma list of rank counts, e.g. --ranks 2,4,8)")
        if n < 2:
            raise SystemExit(f"--ranks: {n} is out of range (fix: each count at least 2; a collective needs 2 ranks)")
        if cpu_ranks is not None and cpu_ranks < 2:
            raise SystemExit(f"--ranks: {n} ranks in cpu mode need gloo processes (fix: add --cpu-ranks {max(n, 2)} "
                             f"or more, or drop --ranks)")
        top = MAX_RANKS if cpu_ranks is None else cpu_ranks
        if not 2 <= n <= top:
            where = f"--cpu-ranks {cpu_ranks}" if cpu_ranks is not None else f"{MAX_RANKS}, the most one host runs"
            raise SystemExit(f"--ranks: {n} is out of range (fix: each count from 2 to {where})")
        if n not in counts:
            counts.append(n)
    return tuple(counts)


def options(argv: list[str]) -> dict[str, Any]:
    """:func:`run_calibration`'s keyword arguments from a command line (SystemExit on bad input)."""
    args = parse_args(argv)
    mode = "quick" if args.quick else (args.mode or ("full" if args.device == "cuda" else "smoke"))
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    bad = [s for s in sections if s not in ALL_SECTIONS]
    if bad:
        raise SystemExit(f"--sections: unknown {bad}; use {', '.join(ALL_SECTIONS)}")
    if not (math.isfinite(args.budget_s) and args.budget_s > 0):
        raise SystemExit(f"--budget-s: must be a finite number of seconds > 0, got {args.budget_s} "
                         f"(fix: e.g. --budget-s 480)")
    for flag, value in (("--heat-ms", args.heat_ms), ("--preheat-s", args.preheat_s)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise SystemExit(f"{flag}: must be a finite number >= 0, got {value} (fix: e.g. {flag} 0)")
    distributed = bool(set(DIST_SECTIONS) & set(sections))
    limit = max_cpu_ranks()
    if args.cpu_ranks < 0 or args.cpu_ranks > limit or (args.cpu_ranks == 1 and args.device == "cpu" and distributed):
        raise SystemExit(f"--cpu-ranks: got {args.cpu_ranks} (fix: 0 for no gloo collectives, or 2 to {limit} gloo "
                         f"processes: each is a Python+torch process, at most 4 per CPU core and 64 in all)")
    rank_counts = parse_rank_counts(args.ranks, args.cpu_ranks if args.device == "cpu" else None)
    heat_ms = args.heat_ms if args.heat_ms is not None else (DEFAULT_HEAT_MS if args.device == "cuda" else 0.0)
    return dict(device=args.device, out=args.out, mode=mode, budget_s=args.budget_s, sections=sections,
                cpu_ranks=args.cpu_ranks, rank_counts=rank_counts, heat_ms=heat_ms, preheat_s=args.preheat_s)


def main(argv: list[str] | None = None) -> int:
    kwargs = options(sys.argv[1:] if argv is None else argv)
    prof = run_calibration(**kwargs)
    print(f"wrote {kwargs['out']}: {len(prof['samples'])} samples, {len(prof['errors'])} errors", flush=True)
    done = prof["completeness"]
    if not done["complete"]:
        print(f"incomplete: {done['skipped_shapes']} shapes skipped over budget; a complete profile needs about "
              f"{done['needed_s']:.0f} s (rerun with --budget-s {done['budget_s_for_complete']:.0f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
