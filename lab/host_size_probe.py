"""Does an eager call's host time grow with its tensors' size? The ``host_classes`` section
measures every class at 1,024 tokens x 1,024 hidden; the validation programs run 1,024-16,384
tokens at hidden 2,048-7,168, and their host-bound cases read 15-60% fast (265 of the 269 H100
cases over 15% are low). Times the same chains (the section's own ``measure_class``) at the
section's sizes and at 8,192 x 4,096, alternated twice (small, large, small, large) so that a
change of the host's state between them shows, for the classes of the mixed chain and the mixed
chain itself.

    python3 -m lab.host_size_probe --out FILE
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from moesim.calibrate.host_classes import GPU_SIZES, MIX_CLASSES, classes, measure_class, measure_mix

LARGE = dataclasses.replace(GPU_SIZES, tokens=8192, hidden=4096)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    rows = []
    for rep in range(args.reps):
        for label, sizes in (("small", GPU_SIZES), ("large", LARGE)):
            chains = classes(sizes, "cuda")
            for name in MIX_CLASSES:
                for r in measure_class(name, chains[name], sizes, "cuda"):
                    rows.append({**r, "size": label, "tokens": sizes.tokens, "hidden": sizes.hidden, "rep": rep})
            for r in measure_mix(chains, sizes, "cuda"):
                rows.append({**r, "size": label, "tokens": sizes.tokens, "hidden": sizes.hidden, "rep": rep})
            del chains
            torch.cuda.empty_cache()
            print(f"rep {rep} {label} done {time.strftime('%H:%M:%S')}", flush=True)
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "command": "python3 -m lab.host_size_probe", "rows": rows}, indent=1))
    for phase in ("plain", "fwd", "bwd"):
        for name in (*MIX_CLASSES, "mixed"):
            v = {(r["size"], r["rep"]): r["time_ns"] for r in rows if r["call"] == name and r["phase"] == phase}
            print(phase, name, " ".join(f"{k[0][0]}{k[1]}={x / 1e3:.1f}" for k, x in sorted(v.items(), key=lambda t: (t[0][1], t[0][0] != "small"))))


if __name__ == "__main__":
    main()
