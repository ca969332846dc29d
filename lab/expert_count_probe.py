"""Does one expert call's host time grow with the number of distinct experts the loop cycles through?
(GPU, torch; nothing here feeds a prediction)

The per-expert loops (torchtitan's ``_run_experts_for_loop``, Megatron-Core's ``SequentialMLP``)
read about 50 us per expert call slower than the host classes that price them, at 64-128 experts,
and about right at 8 (lab/notes/accuracy_history.md). The classes are timed on chains that cycle
through 16 experts. Hypothesis: the host's time per call grows with the working set the loop walks
(128 experts' parameters, autograd metadata and Python objects against 16). This probe issues 128
calls of an expert body cycling through N distinct experts (N = 1, 8, 16, 64, 128) with the GPU
kept busy (host_classes' timing: ``torch.cuda._sleep`` first, a sample where the GPU went idle refused), for two
bodies, with and without autograd recording:

- ``torchtitan``: ``matmul(x, w1[e].T)``, ``silu``, ``matmul(x, w3[e].T)``, ``mul``, ``matmul(h, w2[e].T)``
  on stacked ``[E, F, H]`` weights (the host_classes ``expert_loop_body``);
- ``module``: an ``nn.Module`` expert (three ``nn.Linear`` without bias, SwiGLU), one module per expert
  (as ``SequentialMLP`` holds them).

Per (body, N, phase): the median over rounds of the host time per call.

    python3 -m lab.expert_count_probe --out FILE [--rounds 7]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from moesim.calibrate.host_classes import _timed as host_timed

CALLS = 128
COUNTS = (1, 8, 16, 64, 128)
HIDDEN, FFN, ROWS = 1024, 512, 128


class Expert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Linear(HIDDEN, FFN, bias=False)
        self.w3 = nn.Linear(HIDDEN, FFN, bias=False)
        self.w2 = nn.Linear(FFN, HIDDEN, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _timed(fn, estimate_ns: float) -> "float | None":
    """Host ns of ``fn`` behind queued GPU work (host_classes' timing), None where refused."""
    try:
        return host_timed(fn, "cuda", estimate_ns)
    except RuntimeError:   # the GPU went idle before the host finished: the sample measured the GPU
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    dt = torch.bfloat16
    e_max = max(COUNTS)
    w1 = torch.randn(e_max, FFN, HIDDEN, device="cuda", dtype=dt).requires_grad_()
    w3 = torch.randn(e_max, FFN, HIDDEN, device="cuda", dtype=dt).requires_grad_()
    w2 = torch.randn(e_max, HIDDEN, FFN, device="cuda", dtype=dt).requires_grad_()
    modules = [Expert().to("cuda", dt) for _ in range(e_max)]
    x = torch.randn(ROWS, HIDDEN, device="cuda", dtype=dt).requires_grad_()

    def titan(e: int) -> torch.Tensor:
        return torch.matmul(F.silu(torch.matmul(x, w1[e].transpose(-2, -1))) * torch.matmul(x, w3[e].transpose(-2, -1)),
                            w2[e].transpose(-2, -1))

    bodies = {"torchtitan": titan, "module": lambda e: modules[e](x)}
    results = []
    for phase in ("plain", "fwd"):
        for name, body in bodies.items():
            def run(n: int, body=body) -> None:
                outs = []
                with torch.set_grad_enabled(phase == "fwd"):
                    for i in range(CALLS):
                        outs.append(body(i % n))
            for n in COUNTS:
                run(n)
            torch.cuda.synchronize()
            est = 0.0
            per = {n: [] for n in COUNTS}
            for r in range(args.rounds):
                order = COUNTS if r % 2 == 0 else tuple(reversed(COUNTS))
                for n in order:
                    t = _timed(lambda n=n: run(n), est or 5e6)
                    if t is not None:
                        per[n].append(t / CALLS)
                        est = max(est, t)
            for n in COUNTS:
                v = per[n]
                results.append({"body": name, "phase": phase, "distinct_experts": n, "calls": CALLS,
                                "per_call_ns": float(np.median(v)) if v else None, "samples": v})
                print(f"{name:10s} {phase:5s} N={n:3d}: {np.median(v) / 1e3 if v else float('nan'):7.1f} us/call "
                      f"({len(v)} samples)")
    args.out.write_text(json.dumps({"rows": results, "hidden": HIDDEN, "ffn": FFN, "rows_per_call": ROWS}, indent=1))


if __name__ == "__main__":
    main()
