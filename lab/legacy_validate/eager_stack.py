"""Eager steps of stacked layers, predicted with the engine's host threads (``host="eager"``).

``lab.eager_probe --stack L`` times one and L stacked Llama-3-8B layers (forward +
backward, autograd) on one GPU at several token counts: the GPU's own time (host ahead) and the
step as eager PyTorch runs it (GPU idle when the host starts issuing). This module predicts both
the way ``moesim run`` would: each layer's forward, input backward and weight backward as one
compute task each, from the calibrated profile's kernel costs (their kernels back to back, the
region cost once: :mod:`moesim.costs.regions`), run on the engine; for the eager time a host thread
(:func:`moesim.lowering.host.add_eager_host`) issues them at the profile's ``eager_host`` cost per
counted kernel. ``python -m lab.legacy_validate.eager_stack FILE [FILE ...]`` prints the table.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from moesim.costs.regions import kernel_region
from moesim.engine import Simulation
from moesim.lowering.host import add_eager_host
from moesim.lowering.stage_costs import program_work
from moesim.topology import load_topology
from moesim.workload import layers as wl
from moesim.workload.presets import get_model

MODEL = "llama3-8b"


def _task(cost: Any, program: list) -> tuple[int, int, int]:
    w = program_work(cost, program, kernel_region(cost))  # as moesim run costs a segment
    return int(w.duration_ns), int(w.region_ns), w.kernels


def predict(cost: Any, tokens: int, layers: int, per_kernel_ns: float) -> tuple[int, int]:
    """(GPU time with the host ahead, eager step time) of ``layers`` stacked layers at ``tokens``."""
    spec = dataclasses.replace(get_model(MODEL), seq_len=tokens)
    f = _task(cost, wl.forward_program(spec, 1, 1, 1, False, 1))
    b = _task(cost, wl.backward_input_program(spec, 1, 1, 1, False, 1))
    w = _task(cost, list(wl.backward_weight_ops(spec, 1, 1, 1, False, 1)))
    out = []
    for eager in (False, True):
        sim = Simulation(load_topology("h200x2_nvlink"), record_link_counters=False)
        order = [("F", f)] * layers + [t for _ in range(layers) for t in (("B", b), ("W", w))]
        for i, (name, (ns, region, kernels)) in enumerate(order):
            sim.compute(0, ns, f"{name}{i}", region_ns=region, args={"kernels": kernels})
        if eager:
            add_eager_host(sim, per_kernel_ns, lambda category: 0.0)
        out.append(sim.run().makespan_ns)
    return out[0], out[1]


def rows(cost: Any, doc: dict, per_kernel_ns: float) -> list[dict]:
    """Measured and predicted GPU and eager times for every row of a probe file."""
    out = []
    for r in list(doc.get("rows") or []) + list(doc.get("stack_rows") or []):
        gpu, eager = predict(cost, int(r["tokens"]), int(r.get("layers", 1)), per_kernel_ns)
        out.append({"tokens": int(r["tokens"]), "layers": int(r.get("layers", 1)),
                    "gpu_ns": float(r["gpu_ns"]), "gpu_pred_ns": gpu, "gpu_error": gpu / float(r["gpu_ns"]) - 1.0,
                    "eager_ns": float(r["eager_ns"]), "eager_pred_ns": eager,
                    "eager_error": eager / float(r["eager_ns"]) - 1.0})
    return out


def main(argv: "list[str] | None" = None) -> int:
    from moesim.costs.calibrated import CalibratedCostModel
    from moesim.costs.roofline import make_cost_model
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    cost = CalibratedCostModel("h200_sxm", fallback=make_cost_model("H200"))
    per = cost.eager_host_ns()
    print(f"eager host per counted kernel: {per / 1e3:.1f} us ({cost.name})")
    print("| run | tokens | layers | GPU measured (us) | predicted | error | eager measured (us) | predicted | error |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in paths:
        for r in rows(cost, json.loads(p.read_text()), per):
            print(f"| {p.name.split('_')[0]} | {r['tokens']} | {r['layers']} | {r['gpu_ns'] / 1e3:,.0f} | "
                  f"{r['gpu_pred_ns'] / 1e3:,.0f} | {100 * r['gpu_error']:+.1f}% | {r['eager_ns'] / 1e3:,.0f} | "
                  f"{r['eager_pred_ns'] / 1e3:,.0f} | {100 * r['eager_error']:+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
