"""Is the eager host interval's spread a property of the process's CPU placement? (GPUs, torch)

Host-bound eager NCCL loops (700 KB - 3 MB) measured 47-88 us per call on different machines
(runs 10-15) and, in run 14, flipped between ~37 and ~65 us within one loop. Hypothesis: the
Python thread migrates between cores or runs on a core whose clock changes. This probe starts
``--trials`` fresh two-process NCCL groups, alternately with each rank's process pinned to one
core of its own (``os.sched_setaffinity``; cores 2 and 4) and unpinned, and times in each the
eager loops of the validation's collectives at 64 KiB, 700 KB and 3 MB (the collectives
worker's loop: 30 timed calls, min over ranks per call), three interleaved rounds. Per trial
and mode it stores every per-call time; the spread of the loop medians across trials, and the
bimodality inside loops, pinned against unpinned, is the answer.

``python3 -m lab.pin_probe --out pin_probe.json --trials 6``
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from moesim.calibrate import provenance
from moesim.calibrate.comm_worker import collectives_worker
from moesim.calibrate.dist import run_workers

SIZES = (65536, 700_000, 3_000_000)
OPS = ("all_reduce", "all_to_all", "all_to_all_v")
PIN_CORES = (2, 4)


def _worker(rank: int, world: int, device: str, cfg: dict) -> dict:
    if cfg["pin"]:
        os.sched_setaffinity(0, {PIN_CORES[rank % len(PIN_CORES)]})
    res = collectives_worker(rank, world, device, {"ops": OPS, "sizes": SIZES, "budget_s": 60, "rounds": 3})
    return {"times": res["times"], "errors": res["errors"], "affinity": sorted(os.sched_getaffinity(0))}


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("pin_probe.json"))
    p.add_argument("--trials", type=int, default=6)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    rows = []
    t0 = time.monotonic()
    for trial in range(args.trials):
        for pin in (False, True) if trial % 2 == 0 else (True, False):
            results, errors = run_workers(_worker, 2, "nccl", {"pin": pin}, timeout_s=120)
            if len(results) != 2:
                print(f"trial {trial} pin={pin}: {errors}", flush=True)
                continue
            for key in sorted(results[0]["times"]):
                per_call = np.min(np.array([results[r]["times"][key] for r in range(2)]), axis=0)
                p25, med, p75 = np.percentile(per_call, [25, 50, 75])
                rows.append({"trial": trial, "pin": pin, "key": key, "median_ns": round(float(med), 1),
                             "p25_ns": round(float(p25), 1), "p75_ns": round(float(p75), 1),
                             "per_call_ns": [round(float(x), 1) for x in per_call],
                             "affinity": [results[r]["affinity"] for r in range(2)]})
                print(f"trial {trial} pin={pin!s:5} {key:<22} median {med / 1e3:6.1f} us (p25 {p25 / 1e3:.1f}, "
                      f"p75 {p75 / 1e3:.1f})", flush=True)
    summary = {}
    for pin in (False, True):
        meds = [r["median_ns"] for r in rows if r["pin"] == pin and not r["key"].endswith("|65536")]
        iqr = [(r["p75_ns"] - r["p25_ns"]) / r["median_ns"] for r in rows if r["pin"] == pin]
        if meds:
            summary["pinned" if pin else "unpinned"] = {
                "loop_median_us": [round(min(meds) / 1e3, 1), round(statistics.median(meds) / 1e3, 1),
                                   round(max(meds) / 1e3, 1)],
                "relative_iqr_median": round(statistics.median(iqr), 3), "relative_iqr_max": round(max(iqr), 3)}
    print(json.dumps(summary, indent=1), flush=True)
    doc = {**provenance.collect("cuda", 2), "command": " ".join(sys.argv), "elapsed_s": round(time.monotonic() - t0, 1),
           "summary": summary, "rows": rows}
    args.out.write_text(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
