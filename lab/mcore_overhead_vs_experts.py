"""Does Megatron-Core's MoELayer overhead (host class ``megatron_moe_layer``) grow with the number
of local experts? The alltoall dispatcher regroups tokens by ``torch.split`` into one chunk per
local expert and a ``torch.cat`` in expert order (and back, and the probabilities too): Python
per chunk. Runs the section's own probe (``framework_host.megatron_layer_overhead``) at several
expert counts, the rest of the probe unchanged, and writes the rows.

    python3 -m lab.mcore_overhead_vs_experts --out FILE [--experts 8,32,128]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from moesim.calibrate import framework_host


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--experts", default="8,32,128")
    args = p.parse_args()
    framework_host.install_gmm_stand_in()  # GroupedMLP needs grouped_gemm; the section's stand-in
    version = framework_host.megatron_version()
    rows = []
    for e in (int(x) for x in args.experts.split(",")):
        got = framework_host.megatron_layer_overhead("cuda", version, e)
        for r in got:
            print(e, r["phase"], r["time_ns"], r["megatron_ns"], r["plain_ns"], flush=True)
        rows += got
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "megatron_core": version,
                                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
