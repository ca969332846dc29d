"""Compute / communication / exposed communication / host / bubble of each scenario of an experiment.

Runs every scenario of an experiment file (as ``python -m moesim run`` does, same engine and
costs) and prints, per scenario, tokens/s/GPU, step time, memory and, as the mean over the
simulated GPUs (lanes, for the reduced engine) in ms:

* compute: union of the compute stream's spans;
* comm busy: per communication stream (``comm.ep`` forward all-to-alls, ``comm.ep.bwd`` backward
  ones, ``comm.dp`` data-parallel collectives, ``comm.send`` / ``comm.recv`` pipeline transfers,
  ``comm.tp`` tensor-parallel collectives), and their union;
* exposed comm: time some communication stream is busy and the compute stream is not;
* host-bound: time the eager host thread is busy and neither compute nor communication runs;
* bubble: the rest (nothing runs: waiting on another GPU's work).

compute + exposed comm + host-bound + bubble = step time. Torch-free.

Run: python -m lab.published_breakdown experiments/published_gpt_oss_120b_h100.py
"""
from __future__ import annotations

import sys

from moesim.analysis.timeline import merge_intervals, overlap_ns
from moesim.experiment import load_experiment
from moesim.experiment.runner import run_scenario


def _union(spans) -> list[tuple[int, int]]:
    return merge_intervals((s.start_ns, s.end_ns) for s in spans if s.end_ns > s.start_ns)


def _length(intervals: list[tuple[int, int]]) -> int:
    return sum(e - s for s, e in intervals)


def breakdown(recorder, makespan_ns: int) -> dict:
    """Mean-over-GPUs figures (ms) of one recorded step (see the module docstring)."""
    by_rank: dict[int, list] = {}
    for span in recorder.spans:
        by_rank.setdefault(span.rank, []).append(span)
    ranks = [r for r, spans in by_rank.items() if any(s.stream == "compute" for s in spans)]
    out = {"compute": 0.0, "comm": 0.0, "exposed_comm": 0.0, "host_bound": 0.0, "bubble": 0.0}
    streams: dict[str, float] = {}
    for r in ranks:
        spans = by_rank[r]
        compute = _union(s for s in spans if s.stream == "compute")
        comm = _union(s for s in spans if s.stream.startswith("comm"))
        host = _union(s for s in spans if s.stream == "host")
        busy = merge_intervals(compute + comm)
        exposed = _length(comm) - overlap_ns(comm, compute)
        host_bound = _length(host) - overlap_ns(host, busy)
        for key, value in (("compute", _length(compute)), ("comm", _length(comm)), ("exposed_comm", exposed),
                           ("host_bound", host_bound),
                           ("bubble", makespan_ns - _length(compute) - exposed - host_bound)):
            out[key] += value / len(ranks) / 1e6
        for s in spans:
            if s.stream.startswith("comm"):
                key = s.stream.split(">")[0].split("<")[0]
                streams[key] = streams.get(key, 0.0) + (s.end_ns - s.start_ns) / len(ranks) / 1e6
    return {**out, "streams": dict(sorted(streams.items()))}


def main(path: str) -> None:
    exp = load_experiment(path)
    for scn in exp.scenarios:
        result, rec = run_scenario(scn, force=True)
        b = breakdown(rec, round(result.step_time_ms * 1e6))
        streams = ", ".join(f"{k} {v:.0f}" for k, v in b["streams"].items())
        print(f"{scn.name}: {result.tokens_per_s_per_gpu:.0f} tokens/s/GPU, step {result.step_time_ms:.0f} ms, "
              f"memory {result.memory_gib:.1f} GiB (fits 80 GB: {result.fits}), MFU {result.mfu:.3f}")
        print(f"  compute {b['compute']:.0f} | comm {b['comm']:.0f} ({streams}) | exposed comm "
              f"{b['exposed_comm']:.0f} | host-bound {b['host_bound']:.0f} | bubble {b['bubble']:.0f}  (ms)")


if __name__ == "__main__":
    main(sys.argv[1])
