"""Is the host slower to issue right after it waited for the GPU? Megatron's MoE forward reads
the GPU three times (``.cpu()`` / ``.tolist()``), the per-expert loops once, and those host-bound
programs read 15-60% fast in moesim, which prices every call after a sync as in steady state.

The host_classes section's mixed chain (``MIX_CLASSES``, each call after a call of another class)
is issued N calls long, with per-call timestamps, in two states alternated round by round:
``steady`` (a long ``torch.cuda._sleep`` queued first: the host never waits) and ``after_sync``
(right after ``.item()`` of a GPU value that the previous work produced: the host waited for the
GPU, the GPU is idle). Also ``after_sleep``: the same wait done by ``time.sleep`` of the GPU's
remaining time (no CUDA call blocked) to tell a blocked CUDA call from an idle thread. Prints per
state the chain's host time and the cumulative time at call 1, 2, 4, 8, 16, 32, 64.

    python3 -m lab.after_sync_probe --out FILE [--calls 64] [--rounds 20]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from moesim.calibrate.host_classes import GPU_SIZES, classes, mixed_chain
from moesim.calibrate.host_sync import issue_stamps as issue
from moesim.calibrate.timing import BUSY_CYCLES_PER_NS

MARKS = (1, 2, 4, 8, 16, 32, 64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--calls", type=int, default=64)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--autograd", action="store_true", help="issue with autograd recording (a training forward)")
    args = p.parse_args()
    chains = classes(GPU_SIZES, "cuda")
    chain = mixed_chain(chains)
    n = args.calls
    probe = torch.zeros(1, device="cuda")
    for _ in range(3):
        issue(chain, n, args.autograd)
    torch.cuda.synchronize()
    res: dict[str, list[list[int]]] = {"steady": [], "after_sync": [], "after_sleep": []}
    for r in range(args.rounds):
        order = ("steady", "after_sync", "after_sleep") if r % 2 == 0 else ("after_sleep", "after_sync", "steady")
        for state in order:
            torch.cuda.synchronize()
            if state == "steady":
                torch.cuda._sleep(int(20e6 * BUSY_CYCLES_PER_NS))   # 20 ms of queued GPU wait
                res[state].append(issue(chain, n, args.autograd))
            elif state == "after_sync":
                torch.cuda._sleep(int(5e6 * BUSY_CYCLES_PER_NS))    # 5 ms of GPU work, then wait for it
                probe.add_(1.0)
                probe.item()
                res[state].append(issue(chain, n, args.autograd))
            else:
                torch.cuda._sleep(int(5e6 * BUSY_CYCLES_PER_NS))
                time.sleep(0.006)                                    # the GPU is done; no CUDA call blocked
                res[state].append(issue(chain, n, args.autograd))
            torch.cuda.synchronize()
    summary = {}
    for state, runs in res.items():
        a = np.array(runs, dtype=float)
        med = np.median(a, axis=0)
        summary[state] = {"total_us": round(float(med[-1]) / 1e3, 1),
                          "at_call_us": {m: round(float(med[m - 1]) / 1e3, 1) for m in MARKS if m <= n}}
        print(state, summary[state], flush=True)
    extra = np.median(np.array(res["after_sync"])[:, -1] - np.array(res["steady"])[:, -1]) / 1e3
    print(f"after_sync - steady, whole chain: {extra:.1f} us (median of round pairs)")
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "command": f"python3 -m lab.after_sync_probe --calls {n} --rounds {args.rounds}"
                                               + (" --autograd" if args.autograd else ""),
                                    "summary": summary, "stamps_ns": res}, indent=1))


if __name__ == "__main__":
    main()
