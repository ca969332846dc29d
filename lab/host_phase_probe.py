"""Where the simulated host thread misses a layer harness's host time: forward or backward?

Stored files read the harness's steady host issue (``host_steady_ns``) of forward+backward
iterations 1.1-2.3x the simulated host lane (median ~1.5x, file by file), where the same file's
forwards read 0.8-1.9x: machine to machine the host's speed moves both, but the backward's extra
miss is the same on every machine. This probe separates the phases on one machine, in one process:
per case, interleaved over ``--repeats`` passes, the steady host issue (``layer_workloads.host_issue_ns``'s
protocol) of

- ``fwd``: the forward under ``torch.no_grad()`` (the harness's forward case);
- ``fwd_grad``: the same forward with autograd recording (inputs and weights requiring grad), the
  graph dropped after each iteration;
- ``fwd_bwd``: the harness's forward+backward (``x.grad = None; forward(x).backward(dy)``, weight
  ``.grad`` kept: every iteration adds into it).

``backward = fwd_bwd - fwd_grad``. Each case's GPU time is timed too (``layer_workloads.measure``).

``backward_fixed``: the same three steps for chains of 1 and 4 small linear layers (1,024 x 1,024
bf16, weights with ``.grad`` kept), steady state: the intercept ``t(1) - (t(4) - t(1)) / 3`` of each
is the per-call cost a class chain's ``long - short`` difference leaves out (for forward+backward:
the backward call's own fixed cost: graph task, device-thread handoff, completion). The stored
files' forward+backward host issue reads ~0.85 ms above the model, about the same on every
program and machine, which such a fixed cost would explain.
Run with ``moesim calibrate measure --sections host_classes`` before and after it on the same
machine, so its host rows and these times share the machine (lab/runs/session_2026_12_07g.sh).
Nothing here feeds a prediction.

``python3 -m lab.host_phase_probe --device cuda --out probe.json`` (``--device cpu``: a smoke run).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from moesim.calibrate import layer_workloads as lw
from moesim.calibrate.layer_cases import Case

CASES = (
    Case("dense_layer", "llama3_8b", 2048, "fwd_bwd", tier=2),
    Case("dense_layer", "llama3_8b", 4096, "fwd_bwd", tier=2),
    Case("moe_block", "qwen3_30b_a3b", 4096, "fwd_bwd", "grouped", "torchtitan", "scatter_add", "uniform", 0.0, 1),
    Case("moe_block", "mixtral_8x7b", 4096, "fwd_bwd", "grouped", "torchtitan", "scatter_add", "uniform", 0.0, 1),
    Case("moe_block", "deepseek_v2_lite", 4096, "fwd_bwd", "grouped", "torchtitan", "scatter_add", "uniform", 0.0, 1),
)
SMOKE = (Case("dense_layer", "tiny_dense", 32, "fwd_bwd", tier=2),
         Case("moe_block", "tiny_moe", 64, "fwd_bwd", "grouped", "torchtitan", "scatter_add", "uniform", 0.0, 1))


def steps(runner: lw.Runner, case: Case) -> dict:
    """The three steps of one case, sharing its weights and input."""
    fwd_bwd, desc = runner.build(case)
    fwd, _ = runner.build(dataclasses.replace(case, pass_="fwd"))
    captured: dict = {}
    original = lw.Runner._step

    def grab(c, forward, x, params):
        captured.update(forward=forward, x=x)
        return original(c, forward, x, params)
    lw.Runner._step = staticmethod(grab)
    try:
        runner.build(case)
    finally:
        lw.Runner._step = staticmethod(original)
    forward, x = captured["forward"], captured["x"]

    def fwd_grad() -> None:
        x.grad = None
        forward(x)
    return {"fwd": fwd, "fwd_grad": fwd_grad, "fwd_bwd": fwd_bwd}, desc


def backward_fixed(device: str, repeats: int) -> dict:
    """Steady host issue of chains of 1 and 4 linear layers (no-grad forward, recording forward,
    forward+backward), interleaved over ``repeats``, and each step's intercept."""
    ws = [(torch.randn(1024, 1024, device=device, dtype=torch.bfloat16) * 0.02).requires_grad_() for _ in range(4)]
    x = torch.randn(1024, 1024, device=device, dtype=torch.bfloat16).requires_grad_()
    dy = torch.randn(1024, 1024, device=device, dtype=torch.bfloat16)

    def chain(n: int):
        def fwd() -> None:
            with torch.no_grad():
                y = x
                for w in ws[:n]:
                    y = torch.nn.functional.linear(y, w)

        def fwd_grad() -> None:
            x.grad = None
            y = x
            for w in ws[:n]:
                y = torch.nn.functional.linear(y, w)

        def fwd_bwd() -> None:
            x.grad = None
            y = x
            for w in ws[:n]:
                y = torch.nn.functional.linear(y, w)
            y.backward(dy)
        return {"fwd": fwd, "fwd_grad": fwd_grad, "fwd_bwd": fwd_bwd}
    steps = {n: chain(n) for n in (1, 4)}
    for n in steps:   # warm-up: the weights' .grad exists from here on (kept, as in the harness)
        for f in steps[n].values():
            f()
    times: dict[str, list] = {}
    for _ in range(repeats):
        for n, fs in steps.items():
            for name, f in fs.items():
                times.setdefault(f"{name}|{n}", []).append(lw.host_issue_ns(f, device, 2e5))
    med = {k: statistics.median([v for v in vs if v]) for k, vs in times.items() if any(vs)}
    out = {"host_steady_ns": times}
    for name in ("fwd", "fwd_grad", "fwd_bwd"):
        if f"{name}|1" in med and f"{name}|4" in med:
            per = (med[f"{name}|4"] - med[f"{name}|1"]) / 3
            out[f"{name}_intercept_ns"] = round(med[f"{name}|1"] - per, 1)
            out[f"{name}_per_layer_ns"] = round(per, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=4)
    a = ap.parse_args()
    runner = lw.Runner(a.device)
    cases = CASES if a.device == "cuda" else SMOKE
    built = {c.id: steps(runner, c) for c in cases}
    gpu = {}
    for c in cases:
        for name in ("fwd", "fwd_bwd"):
            got = lw.measure(built[c.id][0][name], a.device, 30.0)
            gpu[f"{c.id}|{name}"] = got.time_ns if not isinstance(got, str) else None
    host: dict[str, list] = {}
    t0 = time.time()
    for r in range(a.repeats):
        for c in cases:
            for name, step in built[c.id][0].items():
                g = gpu.get(f"{c.id}|{'fwd' if name == 'fwd' else 'fwd_bwd'}") or 5e6
                ns = lw.host_issue_ns(step, a.device, g) if a.device == "cuda" else None
                host.setdefault(f"{c.id}|{name}", []).append(ns)
                print(f"{r} {c.id} {name} {ns}", flush=True)
    fixed = backward_fixed(a.device, a.repeats) if a.device == "cuda" else {}
    doc = {"provenance": lw.file_provenance(a.device, 0.0), "seconds": round(time.time() - t0, 1),
           "backward_fixed": fixed,
           "cases": [c.id for c in cases], "gpu_ns": gpu, "host_steady_ns": host,
           "workloads": {c.id: built[c.id][1] for c in cases}}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
