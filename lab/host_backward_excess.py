"""How the simulated host thread misses the harness's forward+backward issue, file by file.

For every stored file (one machine) with steady host issue (``host_steady_ns``) and every case
timed both forward-only (no grad) and forward+backward: ``s`` = measured / simulated issue of the
no-grad forward (the machine's host speed against the profile's), and the backward part =
(measured forward+backward - s x simulated recording forward) / simulated backward, the recording
forward assumed to run at the machine's ``s`` too. Prints per file, then over all pairs: ``s``,
the backward ratio, their correlation, and the backward's excess in us per iteration per program
and token count.

``python -m lab.host_backward_excess`` (about 10 min on two cores).
"""
from __future__ import annotations

import collections
import dataclasses
import glob
from pathlib import Path

import numpy as np

from moesim.engine.sim import HOST_STREAM
from moesim.experiment.block import simulate_block
from moesim.validate.layers import entry_scenario, load_layer_file


def split(e, gpu: str, profile: "Path | None" = None) -> tuple[float, float]:
    """Simulated issue per iteration: forward spans, backward (``BW``) spans; ``profile``: price
    with that calibration profile instead of the shipped one."""
    scn = entry_scenario(e, gpu)
    if profile is not None:
        scn = dataclasses.replace(scn, profile=str(profile), cost_model="calibrated")
    r = simulate_block(scn, host_band=False)
    f = b = 0
    for sp in r.recorder.spans:
        if sp.stream == HOST_STREAM and sp.name.startswith("issue "):
            if "BW" in sp.name:
                b += sp.end_ns - sp.start_ns
            else:
                f += sp.end_ns - sp.start_ns
    n = max(1, e.iterations)
    return f / n, b / n


def main() -> None:
    rows = []
    for path in sorted(glob.glob("data/validation/layers/h100_*.json")):
        lf = load_layer_file(Path(path), None)
        ents = {e.case_id: e for e in lf.entries if e.host_issue_ns and e.host_protocol == "steady"}
        mine = []
        for cid, e in ents.items():
            fb = ents.get(cid[:-4] + ".fwd_bwd") if cid.endswith(".fwd") else None
            if fb is None:
                continue
            sim_fwd, _ = split(e, lf.gpu)
            fg, bb = split(fb, lf.gpu)
            s = e.host_issue_ns / sim_fwd
            bwd_ratio = (fb.host_issue_ns - s * fg) / bb
            mine.append((cid, s, bwd_ratio, bb))
        if mine:
            print(f"{Path(path).name:45s} pairs {len(mine):3d}  s {np.median([m[1] for m in mine]):.2f}  "
                  f"backward {np.median([m[2] for m in mine]):.2f}")
        rows += mine
    s = np.array([r[1] for r in rows])
    b = np.array([r[2] for r in rows])
    print(f"{len(rows)} pairs: forward s median {np.median(s):.2f} (p10-p90 {np.percentile(s, 10):.2f}-"
          f"{np.percentile(s, 90):.2f}); backward ratio {np.median(b):.2f} ({np.percentile(b, 10):.2f}-"
          f"{np.percentile(b, 90):.2f}); correlation of their logs {np.corrcoef(np.log(s), np.log(b))[0, 1]:.2f}")
    excess = collections.defaultdict(list)
    for cid, _s, ratio, bb in rows:
        parts = cid.split(".")
        size = next((p for p in parts if p[:1] in "ts" and p[1:].isdigit()), "?")
        excess[(parts[0], size)].append(bb * (ratio - 1) / 1e3)
    allx = [v for vs in excess.values() for v in vs]
    print(f"backward excess per iteration: median {np.median(allx):.0f} us (p10-p90 {np.percentile(allx, 10):.0f}-"
          f"{np.percentile(allx, 90):.0f})")
    for key in sorted(excess):
        print(f"  {key[0]:22s} {key[1]:7s} {np.median(excess[key]):6.0f} us  (n {len(excess[key])})")


if __name__ == "__main__":
    main()
