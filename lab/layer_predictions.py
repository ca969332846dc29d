"""Predictions of a held-out layer set, written before it is timed (pre-registration).

``python -m lab.layer_predictions --models holdout3 --gpu H100 --out lab/predictions/holdout3_h100.json``
describes every case of ``moesim.calibrate.layer_workloads --models SET`` as the harness would
(its program, its routing drawn from the harness's seed, its parameter shapes, on meta tensors: no
weights are made) and predicts it through ``moesim validate``'s path (``predict_entry``). The
harness times ``round(25 ms / t)`` iterations back to back (at most 20); the prediction uses the
count its own first estimate implies. The file records the commit it was computed at.

``--compare MEASURED.json [...]``: the stored predictions against a timed file of the same set
(per case: predicted, measured, error), without predicting again.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

import torch

from moesim.calibrate import layer_programs as lp
from moesim.calibrate import layer_workloads as lw
from moesim.calibrate.layer_cases import ALL_DENSE, ALL_MOE, plan_cases


def _meta_randn(shape, device, seed, std):   # shapes only: the description needs no weights
    return torch.empty(shape, device="meta", dtype=torch.bfloat16).requires_grad_()


def entries(models: str) -> list[dict]:
    lp._randn = _meta_randn
    out = []
    weights: dict = {}
    for case in plan_cases(False, models):
        if case.kind == "dense_layer":
            w = weights.setdefault(case.model, lp.DenseLayer(ALL_DENSE[case.model], "meta"))
            routing, params = None, w.params()
        else:
            shape = ALL_MOE[case.model]
            w = weights.setdefault(case.model, lp.MoEWeights(shape, "meta"))
            routing = lw.draw_routing(shape, case.tokens, case.routing, case.zipf_s)[1]
            params = w.params(case.movement == "megatron")
        out.append({"id": case.id, "workload": lw.describe(case, routing, params, [])})
    return out


def predict(models: str, gpu: str) -> dict[str, float]:
    from moesim.validate.layers import _entry, predict_entry

    got = {}
    for i, e in enumerate(entries(models)):
        first = predict_entry(_entry({**e, "measured": {"time_ns": 1e6, "iterations": 1}}, i, "pred"), gpu)
        iters = max(1, min(lw.GPU_TIMING.max_iters, round(lw.GPU_TIMING.round_target_ms * 1e6 / first.predicted_ns)))
        final = predict_entry(_entry({**e, "measured": {"time_ns": 1e6, "iterations": iters}}, i, "pred"), gpu)
        got[e["id"]] = round(final.predicted_ns, 1)
        print(f"{e['id']:70s} {final.predicted_ns / 1e6:8.3f} ms  (x{iters})", flush=True)
    return got


def compare(pred_file: Path, measured: list[Path]) -> None:
    pred = json.loads(pred_file.read_text())
    errors = {}
    for m in measured:
        for e in json.loads(m.read_text())["entries"]:
            if e["id"] in pred["predicted_ns"]:
                t = e["measured"]["time_ns"]
                errors[e["id"]] = pred["predicted_ns"][e["id"]] / t - 1
                print(f"{e['id']:70s} {t / 1e6:8.3f} {pred['predicted_ns'][e['id']] / 1e6:8.3f} {100 * errors[e['id']]:+6.1f}%")
    if errors:
        print(f"{len(errors)} cases, predicted at {pred['commit']}: median |error| "
              f"{100 * statistics.median(abs(v) for v in errors.values()):.1f}%, max {100 * max(map(abs, errors.values())):.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="holdout3")
    ap.add_argument("--gpu", default="H100")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", type=Path, nargs="*")
    a = ap.parse_args()
    if a.compare:
        compare(a.out, a.compare)
        return
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {"models": a.models, "gpu": a.gpu, "commit": commit, "predicted_ns": predict(a.models, a.gpu),
           "how": "python -m lab.layer_predictions (see its docstring); the harness's iteration count from the "
                  "prediction's own first estimate"}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
