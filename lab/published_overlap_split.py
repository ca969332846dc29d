"""Where a scenario's exposed expert-parallel all-to-all sits: inside the paired phase or outside.

Runs the named scenario of an experiment file (as ``python -m moesim run`` does) and, per GPU,
splits the exposed all-to-all time (``comm.ep`` / ``comm.ep.bwd`` busy while the compute stream
is idle) into the part between the GPU's first backward compute and its last forward compute
(the phase where combined-1F1B pairs run, with the unpaired steps interleaved 1F1B keeps there)
and the part outside it (warm-up forwards, cool-down backwards). Also prints, for that phase, its
length and the compute stream's busy time. Mean over the simulated GPUs, ms.

Run: python -m lab.published_overlap_split experiments/published_qwen3_235b_h100.py ep-a2a-overlap
     [--set plan.num_microbatches=32]
"""
from __future__ import annotations

import argparse
from collections import defaultdict

from moesim.analysis.timeline import merge_intervals
from moesim.experiment import load_experiment
from moesim.experiment.runner import run_scenario


def _minus(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Intervals of ``a`` not covered by ``b`` (both merged and sorted)."""
    out = []
    for start, end in a:
        cur = start
        for bs, be in b:
            if be <= cur or bs >= end:
                continue
            if bs > cur:
                out.append((cur, bs))
            cur = max(cur, be)
        if cur < end:
            out.append((cur, end))
    return out


def _within(intervals: list[tuple[int, int]], lo: int, hi: int) -> int:
    return sum(max(0, min(e, hi) - max(s, lo)) for s, e in intervals)


def split(spans) -> dict[str, float]:
    """Mean over GPUs (ms) of exposed EP all-to-all inside / outside the paired phase."""
    by_rank = defaultdict(list)
    for s in spans:
        by_rank[s.rank].append(s)
    sums: dict[str, float] = defaultdict(float)
    for ss in by_rank.values():
        compute = merge_intervals((s.start_ns, s.end_ns) for s in ss if s.stream == "compute")
        ep = merge_intervals((s.start_ns, s.end_ns) for s in ss if s.stream.startswith("comm.ep"))
        exposed = _minus(ep, compute)
        backward = [s.start_ns for s in ss if s.stream == "compute" and s.name.startswith(("B", "W"))]
        forward = [s.end_ns for s in ss if s.stream == "compute" and s.name.startswith("F")]
        if not backward or not forward:
            continue
        lo, hi = min(backward), max(forward)
        total = sum(e - s for s, e in exposed)
        inside = _within(exposed, lo, hi)
        sums["exposed_inside"] += inside
        sums["exposed_outside"] += total - inside
        sums["phase_length"] += max(0, hi - lo)
        sums["phase_compute"] += _within(compute, lo, hi)
        sums["gpus"] += 1
    n = max(1.0, sums.pop("gpus", 1.0))
    return {k: v / n / 1e6 for k, v in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("scenario")
    ap.add_argument("--set", action="append", default=[], help="key=value override")
    args = ap.parse_args()
    scn = next(s for s in load_experiment(args.file).scenarios if s.name == args.scenario)
    if args.set:
        scn = scn.with_overrides(dict(kv.split("=", 1) for kv in args.set))
    result, rec = run_scenario(scn, force=True)
    parts = split(rec.spans)
    print(f"{scn.name}: {result.tokens_per_s_per_gpu:.0f} tokens/s/GPU, step {result.step_time_ms:.0f} ms")
    print("  exposed EP all-to-all: {:.0f} ms inside the paired phase, {:.0f} ms outside; the phase lasts {:.0f} ms, "
          "compute busy {:.0f} ms of it".format(parts["exposed_inside"], parts["exposed_outside"],
                                                 parts["phase_length"], parts["phase_compute"]))


if __name__ == "__main__":
    main()
