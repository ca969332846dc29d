"""Where a case's GPU time goes, measured against moesim: the ``kernel_times`` a layer-workloads
file stores (``layer_workloads --kernel-times``; the CUDA kernels of one steady-state iteration)
grouped by kernel family, next to the GPU time per op class of the same case simulated through
``moesim validate``'s path (``entry_scenario`` + ``simulate_block``). Diagnostic only.

    python -m lab.kernel_times_compare FILE [--only TEXT]
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

FAMILIES = (   # (family, pattern on the kernel name), first match wins
    ("grouped GEMM", r"prepare_grouped_gemm|GemmUniversal.*Gr|Grouped"),
    ("GEMM", r"nvjet|gemm|xmma|cublas|cutlass"),
    ("scatter_add", r"scatter_gather_internal_kernel|scatter_add|index_add|indexFuncLargeIndex"),
    ("scatter (fill)", r"scatter_fill"),
    ("gather / index_select", r"vectorized_gather|index_elementwise|indexSelect"),
    ("topk / sort", r"gatherTopK|bitonicSort|radixSort|RadixSort|sort"),
    ("masked_select / nonzero", r"DeviceReduce|DeviceSelect|DeviceCompact|write_indices|DeviceScan"),
    ("cat / copy", r"CatArray|direct_copy|copy_kernel|Memcpy DtoD"),
    ("zeros / fill", r"FillFunctor|Memset"),
    ("softmax", r"softmax"),
    ("activation (fused)", r"silu|triton|glu"),
    ("reduce", r"reduce_kernel"),
    ("host copies", r"Memcpy DtoH|Memcpy HtoD"),
    ("elementwise", r"elementwise"),
)


def family(name: str) -> str:
    for fam, pat in FAMILIES:
        if re.search(pat, name):
            return fam
    return "other"


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("file")
    p.add_argument("--only", default="")
    a = p.parse_args(argv)
    from moesim.experiment.block import simulate_block
    from moesim.validate.layers import entry_scenario, load_layer_file

    raw = json.load(open(a.file))
    times = raw.get("kernel_times", {})
    lf = load_layer_file(a.file)
    for e in lf.entries:
        if e.case_id not in times or a.only not in e.case_id:
            continue
        kt = times[e.case_id]
        fams: dict[str, float] = defaultdict(float)
        for name, us in kt["kernels"]:
            fams[family(name)] += us
        r = simulate_block(entry_scenario(e, lf.gpu))
        sim = {c.name: c.time_ns / 1e3 for c in r.op_classes if c.name != "host"}
        print(f"\n{e.case_id}: measured {e.measured_ns / 1e3:.0f} us/iter (kernels {kt['sum_us']:.0f}), "
              f"moesim {r.time_per_iteration_ns / 1e3:.0f} us/iter (GPU ops {sum(sim.values()):.0f})")
        for fam, us in sorted(fams.items(), key=lambda kv: -kv[1]):
            print(f"   measured {fam:28s} {us:9.1f}")
        for name, us in sorted(sim.items(), key=lambda kv: -kv[1]):
            print(f"   moesim   {name:28s} {us:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
