"""What is the host doing when eager issue turns slow? (GPU, torch; nothing here feeds a prediction)

Earlier probes (lab/notes/accuracy_history.md) found the host's eager issue speed switching between
states lasting seconds, pinned or not, under GPU load or not, GC on or off. Candidate causes on a
virtual machine: the hypervisor taking the vCPU away (``steal`` in /proc/stat), the thread waiting
runnable on the guest's run queue (/proc/self/schedstat), or the core running slower per second of
CPU time (frequency or a shared physical core). This probe issues a fixed eager chain (the
host_classes section's mixed chain, no autograd, the GPU kept busy by a ``torch.cuda._sleep`` queued before
each chain, so the thread never waits for it) in windows of ``--window-ms`` for ``--seconds``, and per window stores:
the chain's issue time, the thread's CPU time (``time.thread_time_ns``), the process's run-queue
wait (schedstat field 2), the machine's steal / user / system / idle jiffies, and a pure-Python
loop's time (no CUDA, the interpreter's speed alone). The correlation of issue time with each
says which one moves with it.

    python3 -m lab.host_state_probe --out FILE [--seconds 40] [--window-ms 200]
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


def _stat() -> list[int]:
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    return [int(x) for x in parts]   # user nice system idle iowait irq softirq steal ...


def _schedstat() -> tuple[int, int]:
    with open("/proc/self/schedstat") as f:
        run, wait, _ = f.read().split()
    return int(run), int(wait)


def _py_loop(n: int = 20000) -> int:
    t0 = time.perf_counter_ns()
    s = 0
    for i in range(n):
        s += i * i
    return time.perf_counter_ns() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--window-ms", type=float, default=200.0)
    p.add_argument("--calls", type=int, default=64)
    args = p.parse_args()
    chain = mixed_chain(classes(GPU_SIZES, "cuda"))
    for _ in range(3):
        warm = issue(chain, args.calls, False)[-1]
    torch.cuda.synchronize()
    sleep_ns = max(2e6, 4.0 * warm)   # the GPU stays busy past the chain's issue, slow states included
    rows = []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        st0, (run0, wait0), th0, w0 = _stat(), _schedstat(), time.thread_time_ns(), time.perf_counter_ns()
        chains, issue_ns, py_ns = 0, [], []
        while (time.perf_counter_ns() - w0) < args.window_ms * 1e6:
            torch.cuda.synchronize()   # a short queue per chain: the launch queue never fills
            torch.cuda._sleep(int(BUSY_CYCLES_PER_NS * sleep_ns))
            issue_ns.append(issue(chain, args.calls, False)[-1])
            py_ns.append(_py_loop())
            chains += 1
        wall = time.perf_counter_ns() - w0
        st1, (run1, wait1), th1 = _stat(), _schedstat(), time.thread_time_ns()
        d = [b - a for a, b in zip(st0, st1)]
        rows.append({"wall_ns": wall, "chains": chains, "issue_ns_median": float(np.median(issue_ns)),
                     "py_loop_ns_median": float(np.median(py_ns)), "thread_cpu_ns": th1 - th0,
                     "runqueue_wait_ns": wait1 - wait0, "run_ns": run1 - run0,
                     "jiffies": {"user": d[0], "system": d[2], "idle": d[3], "steal": d[7] if len(d) > 7 else None}})
    issue_t = np.array([r["issue_ns_median"] for r in rows])
    out = {"rows": rows, "calls": args.calls, "window_ms": args.window_ms}
    cors = {}
    for key, vals in (("py_loop", [r["py_loop_ns_median"] for r in rows]),
                      ("cpu_share", [r["thread_cpu_ns"] / r["wall_ns"] for r in rows]),
                      ("runqueue_wait", [r["runqueue_wait_ns"] for r in rows]),
                      ("steal", [r["jiffies"]["steal"] or 0 for r in rows])):
        v = np.array(vals, dtype=float)
        cors[key] = float(np.corrcoef(issue_t, v)[0, 1]) if v.std() > 0 and issue_t.std() > 0 else None
    out["correlation_with_issue"] = cors
    q = np.percentile(issue_t, [5, 50, 95])
    out["issue_ns_p5_p50_p95"] = q.tolist()
    args.out.write_text(json.dumps(out, indent=1))
    print(f"windows {len(rows)}; chain issue p5/p50/p95 {q[0] / 1e3:.0f}/{q[1] / 1e3:.0f}/{q[2] / 1e3:.0f} us; "
          f"correlation with issue time: {cors}")
    slow, fast = issue_t > q[1] * 1.3, issue_t < q[1] * 1.1
    for name, mask in (("slow windows", slow), ("fast windows", fast)):
        if mask.any():
            sel = [r for r, m in zip(rows, mask) if m]
            print(f"{name} ({len(sel)}): py loop {np.median([r['py_loop_ns_median'] for r in sel]) / 1e3:.0f} us, "
                  f"cpu share {np.median([r['thread_cpu_ns'] / r['wall_ns'] for r in sel]):.2f}, "
                  f"runqueue wait {np.median([r['runqueue_wait_ns'] for r in sel]) / 1e6:.2f} ms, "
                  f"steal jiffies {np.median([r['jiffies']['steal'] or 0 for r in sel])}")


if __name__ == "__main__":
    main()
