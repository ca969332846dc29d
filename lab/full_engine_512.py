"""The full engine on a DeepSeek-V3-shaped step at 512 GPUs (issue 16's target: 2 minutes, 4 GB).

    python -m lab.full_engine_512 [--microbatches 16] [--gpus 512]

benchmarks/scaling.py's reduced DeepSeek-V3 scenario (the deepseek-v3-h800 preset resized: EP64,
DualPipe PP8 x DP64 at 512 GPUs, selective recomputation, its Zipf routing) run through the full
engine (every GPU lowered, per-pair flows) without a trace (link integrals only). Prints the
size estimate, then CPU and wall seconds, peak RSS and the step time, and the reduced engine's
step time for the same scenario.
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from scaling import reduced_scenario  # noqa: E402

from moesim.experiment.estimate import estimate_run  # noqa: E402
from moesim.experiment.runner import run_scenario  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=512)
    ap.add_argument("--microbatches", type=int, default=16)
    a = ap.parse_args()
    scn = dataclasses.replace(reduced_scenario(a.gpus, a.microbatches), engine="full")
    est = estimate_run(scn, link_series=False)
    print(f"estimate: {est.tasks:,} tasks, {est.flows:,} flows, {est.wall_s:.0f} s, {est.memory_bytes / 2**30:.2f} GiB",
          flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    res, _rec = run_scenario(scn, force=True, link_series=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"full engine: {res.num_tasks:,} tasks, {res.num_flows:,} flows, CPU {cpu:.0f} s, wall {wall:.0f} s, "
          f"peak RSS {rss:.2f} GiB, step {res.step_time_ms:.1f} ms", flush=True)
    red, _ = run_scenario(dataclasses.replace(scn, engine="reduced"))
    print(f"reduced engine: step {red.step_time_ms:.1f} ms ({red.step_time_ms / res.step_time_ms - 1:+.2%})", flush=True)


if __name__ == "__main__":
    main()
