"""Leave one shape out: how the grouped-GEMM pricing (moesim/costs/grouped.py) does on a (n, k)
shape the profile never measured. For each measured (dtype, scaling, layout, n, k), the law is
refitted without that shape's rows and its rows are predicted (a) by the law alone (what an
unmeasured shape gets today), (b) by the law times the other shapes' pooled ratio curve
(measured / law over law time, all other shapes together), (c) by the law times the ratio curve
of the nearest measured shape in (log n, log k). Kernels >= 50 us. Diagnostic only.

    python -m lab.grouped_shape_loso moesim/profiles/h100_sxm.json [grouped_gemm_te]

(the second argument picks the rows: ``grouped_gemm_v``, the default, or Transformer Engine's
``grouped_gemm_te``; bf16 either way).
"""
from __future__ import annotations

import math
import sys
from collections import defaultdict

import numpy as np

from moesim.costs.grouped import GroupedModel, RatioCurve, fit_law, tile_work
from moesim.costs.calibrated import CalibratedCostModel
from moesim.costs.profile import load_profile
from moesim.costs.roofline import make_cost_model

MIN_NS = 50_000


def main(path: str, op: str = "grouped_gemm_v") -> None:
    prof = load_profile(path)
    model = CalibratedCostModel(prof, fallback=make_cost_model(prof.device_kind))
    gm: GroupedModel = model._grouped_te if op == "grouped_gemm_te" else model._grouped_v
    rows = [dict(s) for s in prof.samples if s["op"] == op and s["dtype"] == "bf16"]
    by_layout: dict[str, list] = defaultdict(list)
    for r in rows:
        by_layout[r["layout"]].append(r)
    for layout, rs in sorted(by_layout.items()):
        shapes = sorted({(r["n"], r["k"]) for r in rs})
        errs: dict[str, list] = defaultdict(list)
        for shape in shapes:
            train = [r for r in rs if (r["n"], r["k"]) != shape]
            test = [r for r in rs if (r["n"], r["k"]) == shape and r["time_ns"] >= MIN_NS]
            if not test:
                continue
            law = fit_law(train, gm.dense_rate, gm.sms)

            def law_ns(r):
                w = tile_work(r["counts"], r["n"], r["k"], layout, "bf16", law.tile_rows)
                return law(w, gm.dense_rate(r["n"], r["k"], layout, "bf16", ""), gm.sms)
            pooled = RatioCurve.fit([law_ns(r) for r in train], [r["time_ns"] for r in train])
            others = sorted({(r["n"], r["k"]) for r in train},
                            key=lambda s: math.hypot(math.log(s[0] / shape[0]), math.log(s[1] / shape[1])))
            curves = {}
            for o in others[:3]:
                near = [r for r in train if (r["n"], r["k"]) == o]
                curves[o] = RatioCurve.fit([law_ns(r) for r in near], [r["time_ns"] for r in near])
            near_curve = curves[others[0]]
            dist = [math.hypot(math.log(o[0] / shape[0]), math.log(o[1] / shape[1])) for o in others[:3]]
            for r in test:
                ln = law_ns(r)
                errs["law"].append(ln / r["time_ns"] - 1)
                errs["pooled"].append(ln * pooled(ln) / r["time_ns"] - 1)
                errs["nearest"].append(ln * near_curve(ln) / r["time_ns"] - 1)
                wts = [1.0 / max(d, 0.05) for d in dist]
                lr = sum(w * math.log(curves[o](ln)) for w, o in zip(wts, others[:3])) / sum(wts)
                errs["idw3"].append(ln * math.exp(lr) / r["time_ns"] - 1)
                errs["nearest<=ln2"].append(ln * (near_curve(ln) if dist[0] <= math.log(2) else 1.0) / r["time_ns"] - 1)
            e = np.array([law_ns(r) / r["time_ns"] - 1 for r in test])
            print(f"  {layout:5s} n={shape[0]:6d} k={shape[1]:6d} rows={len(test):3d} law signed median {np.median(e):+.3f}")
        for k, v in errs.items():
            a = np.abs(v)
            print(f"{layout:5s} {k:8s} rows {len(v):4d} median|e| {np.median(a):.3f} signed {np.median(v):+.3f} "
                  f"p90 {np.percentile(a, 90):.3f} max {a.max():.3f} over10% {int((a > 0.10).sum())}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "moesim/profiles/h100_sxm.json",
         sys.argv[2] if len(sys.argv) > 2 else "grouped_gemm_v")
