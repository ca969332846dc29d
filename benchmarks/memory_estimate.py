"""Peak RSS of ``moesim run`` on benchmarks/scaling.py's rows against the size estimate's memory.

    python benchmarks/memory_estimate.py [--quick] [--modes sim both] [--rows 0 3 ...]
        [--out benchmarks/memory_estimate.json] [--fit]

Each (row, mode) runs in a fresh interpreter (``--one ROW MODE``) that imports what ``moesim
run`` loads (moesim.cli, moesim.experiment.cli, the runner), records ``ru_maxrss`` there (the
process baseline), then runs the row through ``run_experiment`` into a temporary directory with
the mode's exports: ``sim`` (``--no-trace --no-plots``), ``trace`` (``--no-plots``), ``plots``
(``--no-trace``) or ``both``, and records the peak RSS at the end. Rows print the estimate
(:func:`moesim.experiment.estimate.estimate_run` with the same exports), the measured peak and
their ratio; ``--out`` writes the rows as JSON (the fit data of ``estimate.CONSTANTS``), and
``--fit`` refits the memory constants on them (relative-error non-negative least squares,
:func:`moesim.experiment.estimate_fit.fit_memory`) and prints the refitted ratios.
``--from FILE`` refits / reprints from a JSON written earlier, without running anything.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = {"sim": (False, False), "trace": (True, False), "plots": (False, True), "both": (True, True)}
MIB = 2**20


def _peak_rss_bytes() -> int:
    """This process's peak resident set so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cases() -> list:
    """benchmarks/scaling.py's estimate rows, then extra rows that pin how the trace grows with EP
    size where the scaling row itself is too large to export here (EP64 with one and two
    microbatches: the EP64 row has four)."""
    import scaling

    return scaling.estimate_cases(False) + [("MoE EP64 1 mb", 64, scaling.moe(64, 1)),
                                            ("MoE EP64 2 mb", 64, scaling.moe(64, 2))]


def one(row: int, mode: str) -> dict:
    """Run row ``row`` of ``scaling.estimate_cases`` with ``mode``'s exports in this process,
    its address space capped at ``MEMORY_ESTIMATE_MAX_GIB`` (8 by default): a row past it ends in
    MemoryError instead of pressing a shared machine (EP64 with a trace is estimated at tens of GiB)."""
    import os

    cap = int(float(os.environ.get("MEMORY_ESTIMATE_MAX_GIB", "8")) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import moesim.cli  # noqa: F401  what `moesim run` loads before it reads the experiment
    import moesim.experiment.cli  # noqa: F401
    from moesim.experiment.estimate import estimate_run, exchange_flows, group_width, parts_of
    from moesim.experiment.experiment import Experiment
    from moesim.experiment.runner import run_experiment

    sweep, value, scn = cases()[row]
    trace, plots = MODES[mode]
    parts = parts_of(scn)
    est = estimate_run(parts, trace=trace, plots=plots, link_series=trace)
    base = _peak_rss_bytes()
    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as out:
        results, _ = run_experiment(Experiment(name="rss", scenarios=(scn,)), out, trace=trace, plots=plots,
                                    force=True)  # the address-space cap guards this process, not the estimate
    return {"row": row, "sweep": sweep, "value": value, "mode": mode, "tasks": results[0].num_tasks,
            "flows": results[0].num_flows, "exchange_flows": exchange_flows(parts),
            "width": group_width(parts), "in_flight": est.flows_in_flight, "estimate_bytes": est.memory_bytes,
            "baseline_bytes": base,
            "peak_rss_bytes": _peak_rss_bytes(), "cpu_s": round(time.process_time() - t0, 2)}


def run_child(row: int, mode: str, timeout_s: float) -> dict | None:
    try:
        out = subprocess.run([sys.executable, __file__, "--one", str(row), mode], capture_output=True, text=True,
                             timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        print(f"row {row} {mode}: past {timeout_s:.0f} s, skipped", flush=True)
        return None
    if out.returncode:
        print(f"row {row} {mode}: failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_row(r: dict, estimate_bytes: float | None = None) -> None:
    est = r["estimate_bytes"] if estimate_bytes is None else estimate_bytes
    print(f"{r['row']:3d} {r['sweep']:14} {r['value']:5d} {r['mode']:5} {r['tasks']:8d} {r['flows']:8d} "
          f"{r['in_flight']:5d} {r['baseline_bytes'] / MIB:6.0f} {r['peak_rss_bytes'] / MIB:8.0f} "
          f"{est / MIB:8.0f} {est / r['peak_rss_bytes']:6.2f}", flush=True)


HEADER = (f"{'row':>3} {'sweep':14} {'value':>5} {'mode':5} {'tasks':>8} {'flows':>8} {'infl':>5} {'base':>6} "
          f"{'RSS MiB':>8} {'est MiB':>8} {'ratio':>6}")


def refit(rows: list[dict]) -> None:
    import statistics

    from moesim.experiment.estimate import memory_bytes
    from moesim.experiment.estimate_fit import fit_memory

    baseline = statistics.median(r["baseline_bytes"] for r in rows)  # measured: RSS after moesim run's imports
    mem = fit_memory([(r["tasks"], r["flows"], r["exchange_flows"], r["width"], r["in_flight"], *MODES[r["mode"]],
                       r["peak_rss_bytes"]) for r in rows], baseline_bytes=baseline)
    print("fitted: MemoryConstants(" + ", ".join(f"{k}={v:.4g}" for k, v in dataclasses.asdict(mem).items()) + ")")
    print(HEADER)
    ratios = []
    for r in rows:
        est = memory_bytes(mem, r["tasks"], r["flows"], r["exchange_flows"], r["width"], r["in_flight"],
                           *MODES[r["mode"]])
        ratios.append(est / r["peak_rss_bytes"])
        print_row(r, est)
    print(f"refitted ratio estimate / peak RSS: min {min(ratios):.2f}, max {max(ratios):.2f} over {len(rows)} rows")


def merge(paths: list[Path]) -> list[dict]:
    """Rows of several ``--out`` files, ordered by row and mode (a later file's row replaces an earlier one)."""
    from moesim.experiment.estimate import group_width, parts_of

    by_key = {}
    for path in paths:
        for r in json.loads(path.read_text())["rows"]:
            if "width" not in r:  # written before the link-sample term: the width of the row's scenario
                r = {**r, "width": group_width(parts_of(cases()[r["row"]][2]))}
            by_key[r["row"], r["mode"]] = r
    return [by_key[k] for k in sorted(by_key, key=lambda k: (k[0], list(MODES).index(k[1])))]


def commands(paths: list[Path]) -> list[str]:
    return [json.loads(p.read_text()).get("command", "") for p in paths]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", nargs=2, metavar=("ROW", "MODE"), help="internal: one row in this process, as JSON")
    ap.add_argument("--rows", nargs="*", type=int, help="row indices of scaling.estimate_cases (default: all)")
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    ap.add_argument("--quick", action="store_true", help="rows 0 (dense 8 GPUs) and 13 (MoE EP8), sim and both")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per (row, mode)")
    ap.add_argument("--out", type=Path, help="write the measured rows here as JSON")
    ap.add_argument("--from", dest="sources", type=Path, nargs="+",
                    help="read rows from JSON files written by --out instead (merged; --out writes the merge)")
    ap.add_argument("--fit", action="store_true", help="refit the memory constants on the rows")
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(int(a.one[0]), a.one[1])))
        return
    if a.sources:
        from moesim.experiment.estimate import CONSTANTS, memory_bytes

        rows = merge(a.sources)
        for r in rows:  # what the estimate now says (the files hold the estimate of the day they were measured)
            r["estimate_bytes"] = memory_bytes(CONSTANTS.memory, r["tasks"], r["flows"], r["exchange_flows"],
                                               r["width"], r["in_flight"], *MODES[r["mode"]])
        print(HEADER)
        for r in rows:
            print_row(r)
        if a.out:
            a.out.write_text(json.dumps({"command": " ".join(["python"] + sys.argv), "runs": commands(a.sources),
                                        "rows": rows}, indent=1) + "\n")
    else:
        indices = a.rows if a.rows is not None else range(len(cases()))
        modes = ["sim", "both"] if a.quick else a.modes
        indices = [0, 13] if a.quick else indices
        print(HEADER, flush=True)
        rows = []
        for i in indices:
            for mode in modes:
                r = run_child(i, mode, a.timeout)
                if r:
                    rows.append(r)
                    print_row(r)
                    if a.out:
                        a.out.write_text(json.dumps({"command": " ".join(["python"] + sys.argv), "rows": rows},
                                                    indent=1) + "\n")
    if rows:
        ratios = [r["estimate_bytes"] / r["peak_rss_bytes"] for r in rows]
        print(f"ratio estimate / peak RSS: min {min(ratios):.2f}, max {max(ratios):.2f} over {len(rows)} rows")
    if a.fit:
        refit(rows)


if __name__ == "__main__":
    main()
