"""Probe: the size estimate's memory against the peak RSS of simulation + export.

    python lab/estimate_vs_rss.py [--quick]

For scenarios shaped like benchmarks/scaling.py's (dense Llama-3-8B TP1 PP4 on 4-16 GPUs, Qwen3
MoE EP8/EP16), each in a fresh subprocess: the estimate (moesim.experiment.estimate.estimate_run),
then the peak RSS after the simulation alone (run_scenario) and after the whole run with its
Perfetto trace and plots (run_experiment). Prints estimate / RSS ratios; the issue asks for
within 1.5x. Findings for the estimate's owner, not a test.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

CASES = {"dense8": ("dense", 8, 16, 32), "dense16": ("dense", 16, 16, 32), "dense16_m32": ("dense", 16, 32, 32),
         "moe_ep8": ("moe", 8), "moe_ep16": ("moe", 16), "dense64_m64": ("dense", 64, 64, 32),
         "moe_ep16_m16": ("moe", 16, 16), "moe_ep32": ("moe", 32)}


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def one(case: str, export: bool) -> dict:
    """Run one case in this process; return the estimate and peak RSS."""
    import scaling  # benchmarks/scaling.py builds the scenarios

    from moesim.experiment.estimate import estimate_run
    from moesim.experiment.experiment import Experiment
    from moesim.experiment.runner import run_experiment, run_scenario

    kind, *args = CASES[case]
    scn = getattr(scaling, kind)(*args)
    est = estimate_run(scn)
    base = _rss_bytes()
    if export:
        with tempfile.TemporaryDirectory() as out:
            run_experiment(Experiment(name="probe", scenarios=(scn,)), out)
    else:
        run_scenario(scn)
    return {"case": case, "export": export, "tasks": est.tasks, "flows": est.flows,
            "estimate_bytes": est.memory_bytes, "rss_bytes": _rss_bytes(), "rss_before_bytes": base}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=2, metavar=("CASE", "EXPORT"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", nargs="*", default=None)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1] == "1")))
        return
    cases = a.cases or (["dense8", "moe_ep8"] if a.quick else list(CASES))
    print(f"{'case':12s} {'export':6s} {'tasks':>8s} {'flows':>8s} {'est MiB':>8s} {'RSS MiB':>8s} {'est/RSS':>7s} "
          f"{'growth MiB':>10s} {'est/growth':>10s}")
    for case in cases:
        for export in (False, True):
            line = subprocess.run([sys.executable, __file__, "--one", case, "1" if export else "0"],
                                  capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = json.loads(line)
            mib = 2 ** 20
            print(f"{case:12s} {str(export):6s} {r['tasks']:8,d} {r['flows']:8,d} {r['estimate_bytes'] / mib:8.0f} "
                  f"{r['rss_bytes'] / mib:8.0f} {r['estimate_bytes'] / r['rss_bytes']:7.2f} "
                  f"{(r['rss_bytes'] - r['rss_before_bytes']) / mib:10.0f} "
                  f"{r['estimate_bytes'] / max(1, r['rss_bytes'] - r['rss_before_bytes']):10.2f}", flush=True)


if __name__ == "__main__":
    main()
