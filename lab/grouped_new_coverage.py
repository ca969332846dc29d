"""Keep only the ``grouped_gemm_v`` rows of a new run that add coverage to a profile: shapes
(layout, n, k) the profile has no rows of, and, for shapes it has, count vectors of more total
rows than any it holds for that shape and expert count. Rows of shapes the profile already covers
stay as measured on the machine that measured its GEMM grid (the tile law's dense rates come from
that grid); another machine's offset of a few percent would otherwise enter their fit.

    python -m lab.grouped_new_coverage PROFILE.json NEW_RUN.json OUT.json
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def coverage_rows(profile: dict, new: dict) -> list[dict]:
    largest: dict[tuple, int] = defaultdict(int)
    for r in profile["samples"]:
        if r["op"] == "grouped_gemm_v" and r["dtype"] == "bf16":
            key = (r["layout"], r["n"], r["k"], len(r["counts"]))
            largest[key] = max(largest[key], sum(r["counts"]))
    shapes = {k[:3] for k in largest}
    return [r for r in new["samples"] if r["op"] == "grouped_gemm_v" and (
        (r["layout"], r["n"], r["k"]) not in shapes
        or sum(r["counts"]) > largest.get((r["layout"], r["n"], r["k"], len(r["counts"])), 0))]


def main(profile_path: str, new_path: str, out_path: str) -> None:
    profile, new = json.load(open(profile_path)), json.load(open(new_path))
    rows = coverage_rows(profile, new)
    doc = {**new, "samples": rows,
           "notes": new.get("notes", "") + f" Only the {len(rows)} of {len(new['samples'])} grouped_gemm_v rows that add "
                    f"shapes or larger totals to {profile_path} (lab/grouped_new_coverage.py)."}
    with open(out_path, "w") as f:
        json.dump(doc, f)
    print(f"{out_path}: {len(rows)} of {len(new['samples'])} rows")


if __name__ == "__main__":
    main(*sys.argv[1:4])
