"""The body of one distributed-section worker: every collective at every size, then the
compute/communication overlap and the CUDA-graph replays, on one rank of the process group.

:func:`collectives_worker` runs in each process :mod:`moesim.calibrate.dist` starts (``measure``'s
``collectives``, ``collectives_graph`` and ``overlap`` sections; ``validate_workloads``' collective
entries). The calls it times are :mod:`moesim.calibrate.collectives`'; the overlap experiments are
:mod:`moesim.calibrate.overlap`'s. Every rank takes the same branches (:func:`_agree`), so the number of
calls per size never differs between ranks.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist

from moesim.calibrate.collectives import graph_ops_for, iterations_for, make_collective, time_graph, time_iterations
from moesim.calibrate.section import error_line


def _agree(flag: bool, device: str) -> bool:
    """True only if every rank passes True (all ranks then take the same branch)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() >= 1.0)


def collectives_worker(rank: int, world: int, device: str, cfg: dict) -> dict:
    """Time every collective at every size; raw per-iteration times keyed ``op|nbytes``.

    ``cfg["graph"]`` adds the same under CUDA-graph replay (``graph_times``);
    ``cfg["overlap"]`` adds the compute/communication interference experiments.
    """
    times: dict[str, list[float]] = {}
    graph_times: dict[str, list[float]] = {}
    errors: list[str] = []
    deadline = time.monotonic() + float(cfg.get("budget_s", 120))
    host_calls = None
    if cfg.get("host_ops"):
        from moesim.calibrate.hostops import host_collective_calls
        host_calls = host_collective_calls(rank, world, device)
    # ``rounds`` > 1 times every (op, size) that many times, interleaved, so that a drift of the
    # host's speed over the run spreads over all sizes alike; ``host_cal_sizes`` are timed the same
    # way in every round, first for each op (calibration of the eager host interval, not entries)
    sizes = [int(b) for b in cfg.get("host_cal_sizes", ())] + [int(b) for b in cfg["sizes"]]
    failed: set[str] = set()
    for _ in range(max(1, int(cfg.get("rounds", 1)))):
        for op in cfg["ops"]:
            for nbytes in sizes:
                key = f"{op}|{nbytes}"
                if key in failed:
                    continue
                if not _agree(time.monotonic() < deadline, device):
                    errors.append(f"{key}: skipped (budget)")
                    failed.add(key)
                    continue
                try:
                    fn = make_collective(op, nbytes, rank, world, device)
                    warm, iters = iterations_for(nbytes)
                    times.setdefault(key, []).extend(time_iterations(fn, warm, iters, device))
                except Exception as exc:
                    errors.append(f"{key}: {error_line(exc)}")
                    failed.add(key)
                    times.pop(key, None)
                    if device == "cuda":
                        torch.cuda.empty_cache()
    overlap = None
    if cfg.get("overlap") and device == "cuda":  # before graph capture, the step most likely to fail
        from moesim.calibrate.overlap import overlap_measurements
        overlap = overlap_measurements(rank, world, cfg)
    if cfg.get("graph") and device == "cuda":
        for op in cfg["graph_ops"]:
            for nbytes in cfg["graph_sizes"]:
                if not _agree(time.monotonic() < deadline + float(cfg.get("graph_budget_s", 60)), device):
                    errors.append(f"graph {op}|{nbytes}: skipped (budget)")
                    continue
                try:
                    fn = make_collective(op, nbytes, rank, world, device)
                    graph_times[f"{op}|{nbytes}"] = time_graph(fn, ops=graph_ops_for(nbytes))
                    del fn
                except Exception as exc:
                    errors.append(f"graph {op}|{nbytes}: {error_line(exc)}")
                if not _agree(f"{op}|{nbytes}" in graph_times, device):
                    graph_times.pop(f"{op}|{nbytes}", None)
                    break  # one failed capture: skip this op's other sizes on every rank
    result = {"times": times, "graph_times": graph_times, "errors": errors}
    if host_calls is not None:
        result["host_calls"] = host_calls
    if overlap is not None:
        result["overlap"] = overlap
    return result
