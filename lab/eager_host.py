"""The profile's ``eager_host`` record: host time of eager PyTorch per kernel moesim counts.

``lab.eager_probe`` times the host thread of an eager Llama-style layer (forward
plus backward, autograd) on the GPU machine. moesim's lowering counts a layer's kernels by its
program (one per GEMM, attention, norm, activation...: 28 for a Llama-3-8B layer's forward,
input backward and weight backward at TP1), where PyTorch launches about three times as many
(transposes, casts, gradient accumulation). ``Scenario.host = "eager"`` charges each counted
kernel this record's ``per_kernel_ns``: what one more layer costs the host thread, over the
layer's counted kernels (:func:`derive`), so that a simulated layer's issue takes what a real one did.
Torch-free (it reads the probe's JSON), so it runs anywhere:

``python -m lab.eager_host --from RUN.json [RUN.json ...] --into moesim/profiles/h200_sxm.json``
(runs of ``eager_probe --stack L``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from moesim.calibrate.jsonio import dump_profile
from moesim.errors import ConfigError

MODEL = "llama3-8b"  # the probe's layer: hidden 4096, 32 heads, 8 KV heads, head_dim 128, FFN 14336


def counted_kernels(tokens: int) -> int:
    """Kernels moesim counts for one layer's forward, input backward and weight backward (TP1)."""
    from moesim.workload import layers as wl
    from moesim.workload.common import CommOp
    from moesim.workload.presets import get_model

    spec = dataclasses.replace(get_model(MODEL), seq_len=tokens)
    programs = (wl.forward_program(spec, 1, 1, 1, False, 1), wl.backward_input_program(spec, 1, 1, 1, False, 1),
                list(wl.backward_weight_ops(spec, 1, 1, 1, False, 1)))
    return sum(1 for program in programs for op in program if not isinstance(op, CommOp))


def derive(docs: list[tuple[str, dict]]) -> dict:
    """The ``eager_host`` record from probe files ``(path, document)`` run with ``--stack L``:
    per token count, the host time L stacked layers take beyond one layer, over the (L - 1) layers'
    counted kernels; ``per_kernel_ns`` is the median over token counts and files. The difference
    removes the host work a step does once (the ``backward()`` call's setup and teardown: about
    1.4 ms, most of it outside the GPU's timeline), which a single layer's time per kernel counts
    in full (runs 24-25: 118 us per counted kernel, 22-97% over the eager time of stacked layers)."""
    rows, runs = [], []
    for path, doc in docs:
        layer = doc.get("layer") or {}
        if (layer.get("hidden"), layer.get("heads"), layer.get("kv_heads"), layer.get("ffn")) != (4096, 32, 8, 14336):
            raise ConfigError("layer", f"{path}: the probe's layer {layer} is not {MODEL}'s", "re-run eager_probe")
        single = {int(r["tokens"]): r for r in doc.get("rows") or []}
        for r in doc.get("stack_rows") or []:
            tokens, layers = int(r["tokens"]), int(r["layers"])
            one = single.get(tokens)
            if one is None or layers < 2:
                continue
            counted = counted_kernels(tokens)
            per = (float(r["host_ns"]) - float(one["host_ns"])) / ((layers - 1) * counted)
            rows.append([path, tokens, layers, round(float(one["host_ns"])), round(float(r["host_ns"])), counted,
                         round(per, 1)])
        runs.append({k: doc.get(k) for k in ("date", "device", "driver", "cuda", "torch", "command")} | {"source": path})
    if not rows:
        raise ConfigError("--from", "no stacked rows in the probe files",
                          "run python3 -m lab.eager_probe --stack 4 (or more layers)")
    return {"per_kernel_ns": round(statistics.median(r[6] for r in rows), 1),
            "what": "host time of eager PyTorch (forward + backward with autograd) per kernel moesim counts; "
                    "Scenario.host='eager' charges it per counted kernel (moesim.lowering.host)",
            "derived": f"median over token counts and files of (host time of L stacked {MODEL} layers - of one) / "
                       "((L - 1) x counted kernels of a layer) (lab.eager_host)",
            "rows": [["source", "tokens", "layers", "host_ns_1_layer", "host_ns_L_layers", "counted_kernels_per_layer",
                      "host_ns_per_counted"]] + rows,
            "runs": runs}


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="sources", nargs="+", type=Path, required=True)
    p.add_argument("--into", type=Path, required=True, help="profile JSON to write the record into")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    rec = derive([(str(s), json.loads(s.read_text())) for s in args.sources])
    prof = json.loads(args.into.read_text())
    prof["eager_host"] = rec
    dump_profile(prof, args.into)
    print(f"{args.into}: eager_host.per_kernel_ns = {rec['per_kernel_ns']} ({len(rec['rows']) - 1} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
