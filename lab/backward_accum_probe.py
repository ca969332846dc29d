"""Why a real backward's host issue reads ~2x the host classes' ``bwd`` rows: the measurement or
the gradient accumulation?

On one H100 (2026-12-07g, ``lab/host_phase_probe.py``) a chain of 1,024 x 1,024 bf16 linears issued
its backward at 86 us per layer in steady state (weights' ``.grad`` kept, iterations back to back),
where the same machine's ``host_classes`` row for ``linear`` ``bwd`` read 40.7 us. The two differ in
(a) ``.grad``: the class chain sets every ``.grad`` to None before each backward, so AccumulateGrad
stores the new gradient instead of adding into the kept one; (b) the protocol: the class times one
backward right after its recorded forward, the probe whole forward+backward iterations back to back.
Here every combination, for chains of 1, 4 and 8 linears, each the per-layer slope (least squares
over the three lengths) and intercept:

- ``class_none`` / ``class_kept``: the class protocol (:func:`moesim.calibrate.host_classes._timed`
  behind a queued GPU wait), ``.grad`` None / kept;
- ``steady_none`` / ``steady_kept``: forward+backward iterations back to back behind one wait
  (:func:`moesim.calibrate.layer_workloads.host_issue_ns`) minus the recording forward alone.

Nothing here feeds a prediction. ``python3 -m lab.backward_accum_probe --device cuda --out F``.
"""
from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import torch

from moesim.calibrate import layer_workloads as lw
from moesim.calibrate.host_classes import _timed

LENGTHS = (1, 4, 8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=1024)
    a = ap.parse_args()
    dev, n_max, s = a.device, max(LENGTHS), a.size
    ws = [(torch.randn(s, s, device=dev, dtype=torch.bfloat16) * 0.02).requires_grad_() for _ in range(n_max)]
    x = torch.randn(s, s, device=dev, dtype=torch.bfloat16).requires_grad_()
    dy = torch.randn(s, s, device=dev, dtype=torch.bfloat16)

    def forward(n: int):
        y = x
        for w in ws[:n]:
            y = torch.nn.functional.linear(y, w)
        return y

    def clear(keep: bool) -> None:
        x.grad = None
        if not keep:
            for w in ws:
                w.grad = None

    def class_bwd(n: int, keep: bool) -> float:
        clear(keep)
        y = forward(n)
        return float(_timed(lambda: torch.autograd.backward(y, dy), dev, 2e6))

    def steady(n: int, keep: bool, backward: bool) -> "float | None":
        def step() -> None:
            clear(keep)
            y = forward(n)
            if backward:
                y.backward(dy)
        return lw.host_issue_ns(step, dev, 2e5) if dev == "cuda" else None

    for n in LENGTHS:   # warm-up; every weight gets a .grad
        forward(n).backward(dy)
    times: dict[str, list] = {}
    for _ in range(a.repeats):
        for n in LENGTHS:
            for keep in (False, True):
                tag = "kept" if keep else "none"
                times.setdefault(f"class_{tag}|{n}", []).append(class_bwd(n, keep))
                fb, fg = steady(n, keep, True), steady(n, keep, False)
                times.setdefault(f"steady_{tag}|{n}", []).append(fb - fg if fb and fg else None)
    out: dict = {"provenance": lw.file_provenance(dev, 0.0),
                 "size": s, "lengths": LENGTHS, "times_ns": times, "fits": {}}
    for key in ("class_none", "class_kept", "steady_none", "steady_kept"):
        pts = [(n, statistics.median(v for v in times[f"{key}|{n}"] if v)) for n in LENGTHS
               if any(times[f"{key}|{n}"])]
        if len(pts) >= 2:
            slope, icpt = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
            out["fits"][key] = {"per_layer_us": round(slope / 1e3, 2), "intercept_us": round(icpt / 1e3, 2),
                                "medians_us": {n: round(t / 1e3, 1) for n, t in pts}}
            print(key, out["fits"][key])
    with open(a.out, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
