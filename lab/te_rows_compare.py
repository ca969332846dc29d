"""A ``grouped_gemm_te`` run against the shipped profile's one-kernel grouped price, per
(dtype, expert shape, mean rows per expert): median of measured TE time / moesim's
``GroupedGemm(impl="")`` price of the same count vector (bf16; fp8 against the rowwise
``torch._scaled_grouped_mm`` price).

    python -m lab.te_rows_compare data/validation/runs/session_2026_12_07f/h100_te.json [--profile h100_sxm]
"""
from __future__ import annotations

import argparse
import collections
import json

import numpy as np

from moesim.costs.calibrated import CalibratedCostModel
from moesim.ops import GroupedGemm


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--profile", default="h100_sxm")
    args = ap.parse_args(argv)
    rows = [s for s in json.load(open(args.file))["samples"] if s["op"] == "grouped_gemm_te"]
    model = CalibratedCostModel(args.profile)
    ratios: dict[tuple, list[float]] = collections.defaultdict(list)
    for r in rows:
        price = model.compute_ns(GroupedGemm(tuple(r["counts"]), r["n"], r["k"], r["dtype"], r["layout"]))
        avg = sum(r["counts"]) / len(r["counts"])
        band = min((64, 256, 1024, 4096), key=lambda b: abs(np.log(avg / b)))
        ratios[(r["dtype"], r["model"], band)].append(r["time_ns"] / price)
    print(f"{'dtype':5} {'shape':18} {'rows/expert':>11} {'rows':>5} {'TE / one-kernel price':>22}")
    for key in sorted(ratios):
        v = ratios[key]
        print(f"{key[0]:5} {key[1]:18} {key[2]:>11} {len(v):>5} {np.median(v):>10.2f} "
              f"(p10 {np.percentile(v, 10):.2f}, p90 {np.percentile(v, 90):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
