"""Predictions of the held-out single-kernel shapes (``validate_workloads --shape-set holdout``),
written before the shapes are measured: ``python -m lab.holdout_predictions --gpu H100 --out F``.

Each case is described as ``moesim validate`` describes a stored one (moesim.validate.kernels.OPS)
and priced by the cost model ``moesim run`` builds for the GPU, at the clock of each protocol
(as found: boost; steady: sustained). The file records the commit it was computed at.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from moesim.calibrate.validate_workloads import HOLDOUT
from moesim.experiment.build import resolve_cost_model
from moesim.validate.kernels import OPS, ops_ns


def descriptions() -> list[tuple[str, str, dict]]:
    out = []
    for m, n, k in HOLDOUT["gemm"]:
        out.append((f"gemm_{m}x{n}x{k}", "gemm", {"m": m, "n": n, "k": k}))
    for t, h, f in HOLDOUT["swiglu"]:
        out.append((f"swiglu_t{t}_h{h}_f{f}", "swiglu_ffn", {"tokens": t, "hidden": h, "ffn": f}))
    for b, hd, s, d in HOLDOUT["attention"]:
        for direction in ("fwd", "bwd"):
            out.append((f"attention_{direction}_b{b}_h{hd}_s{s}_d{d}", "attention",
                        {"batch": b, "heads": hd, "kv_heads": hd, "seq_q": s, "seq_kv": s, "head_dim": d,
                         "causal": True, "backward": direction == "bwd"}))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpu", default="H100")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    models = {clock: resolve_cost_model("auto", a.gpu, gpu_clock=clock) for clock in ("boost", "sustained")}
    rows = {}
    for ident, kind, d in descriptions():
        ops = OPS[kind](d)
        rows[ident] = {clock: ops_ns(model, ops) for clock, model in models.items()}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    a.out.write_text(json.dumps({"gpu": a.gpu, "commit": commit, "predicted_ns": rows}, indent=1) + "\n")
    print(f"wrote {a.out}: {len(rows)} cases")


if __name__ == "__main__":
    main()
