"""The reference that relates the profile's per-call host costs to the host probe's time.

A session's in-process host probe (:func:`lab.host_probe.in_process_probe`) says
how fast the host of its processes was; the profile's host table (``host_ops`` of
``moesim.calibrate.measure``: each call issued back to back with the GPU busy, and the NCCL
calls and small eager collectives of the profile's collective section) says what each call
costs on the host the profile ran on. To scale one by the other, the two must be measured in
the same process: here every rank of an NCCL group of ``world`` processes (the sessions'
setting) alternates, ``alternations`` times, (1) the host probe, (2) the host table's single-GPU
calls with :func:`moesim.calibrate.hostops.time_host_calls` (the ``host_ops`` method), (3) the
NCCL calls with :func:`moesim.calibrate.hostops.host_collective_calls`, (4) eager loops of small
collectives (4 KiB to 1 MiB, the sizes whose eager time is the predictor's host interval) with
:func:`moesim.calibrate.collectives.time_iterations`. The output holds every alternation's raw
figures and, per call, the ratio "host cost / probe round time" (median over alternations and
ranks), which ``moesim.validate.host`` turns into the probe time the profile's host would have.

``python3 -m lab.host_reference --out host_reference.json`` (2 GPUs, about 40 s).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from lab.host_probe import environment
from moesim.calibrate import hostops, provenance
from moesim.calibrate.collectives import make_collective, time_iterations
from moesim.calibrate.dist import run_workers
from moesim.calibrate.host_rounds import PROBE_MODES, SEQUENCE, in_process_probe

ALTERNATIONS = 3
EAGER_OPS = ("all_reduce", "all_to_all", "all_to_all_v")
EAGER_SIZES = tuple(4**i * 4096 for i in range(5))  # 4 KiB .. 1 MiB (moesim.validate.collectives)


def _single_calls(device: str) -> dict[str, float]:
    """Median host ns per call of every host-table single-GPU call (the ``host_ops`` method)."""
    out = {}
    for name, fn in hostops._single_gpu_calls(device).items():
        out[name] = statistics.median(hostops.time_host_calls(fn, device))
    torch.cuda.empty_cache()
    return out


def _eager_collectives(rank: int, world: int, device: str) -> dict[str, list[float]]:
    """Per-iteration eager times of small collectives (CUDA events), keyed ``op|nbytes``."""
    out = {}
    for op in EAGER_OPS:
        for nbytes in EAGER_SIZES:
            dist.barrier()
            out[f"{op}|{nbytes}"] = time_iterations(make_collective(op, nbytes, rank, world, device), 5, 30, device)
    return out


def reference_worker(rank: int, world: int, device: str, cfg: dict) -> dict:
    alternations = []
    for i in range(int(cfg.get("alternations", ALTERNATIONS))):
        t0 = time.time()
        rec = {"probe": in_process_probe(rank, world)}
        rec["single_calls_ns"] = _single_calls(device)
        dist.barrier()
        rec["collective_calls_ns"] = {k: statistics.median(v) for k, v in
                                      hostops.host_collective_calls(rank, world, device).items()}
        rec["eager_collectives_ns"] = _eager_collectives(rank, world, device)
        rec["probe_after"] = in_process_probe(rank, world)
        rec["seconds"] = time.time() - t0
        alternations.append(rec)
    return {"rank": rank, "alternations": alternations}


def summarize(ranks: list[dict]) -> dict:
    """Per probe mode and call: median over (rank, alternation) of host cost / probe round time,
    the probe taken as the mean of the probes just before and after the call's measurement.
    Eager collectives use, per iteration, the minimum over ranks (as the profile does) and the
    mean probe of the ranks."""
    out: dict = {}
    for mode in PROBE_MODES:
        key = f"{mode}_round_ns"
        ratios: dict[str, list[float]] = {}
        probes = []
        n_alt = min(len(r["alternations"]) for r in ranks)
        for a in range(n_alt):
            recs = [r["alternations"][a] for r in ranks]
            probe = [0.5 * (x["probe"][key] + x["probe_after"][key]) for x in recs]
            probes += probe
            for x, p in zip(recs, probe):
                for name, ns in {**x["single_calls_ns"], **x["collective_calls_ns"]}.items():
                    ratios.setdefault(name, []).append(ns / p)
            for name in recs[0]["eager_collectives_ns"]:
                per_iter = [min(v) for v in zip(*(x["eager_collectives_ns"][name] for x in recs))]
                ratios.setdefault(f"eager:{name}", []).append(statistics.median(per_iter) / statistics.mean(probe))
        out[mode] = {"probe_round_ns_median": statistics.median(probes), "probe_round_ns_all": probes,
                     "host_over_probe": {k: statistics.median(v) for k, v in ratios.items()},
                     "host_over_probe_spread": {k: [min(v), max(v)] for k, v in ratios.items()}}
    return out


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("host_reference.json"))
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--alternations", type=int, default=ALTERNATIONS)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    doc: dict = {"provenance": provenance.collect("cuda", torch.cuda.device_count()), "environment": environment(),
                 "command": " ".join(["python3 -m lab.host_reference", *(sys.argv[1:] if argv is None else argv)]),
                 "sequence": list(SEQUENCE), "world": args.world, "alternations": args.alternations,
                 "eager_ops": list(EAGER_OPS), "eager_sizes": list(EAGER_SIZES)}
    results, errors = run_workers(reference_worker, args.world, "nccl", {"alternations": args.alternations, "timeout_s": 300},
                                  timeout_s=300)
    doc["errors"] = errors
    doc["ranks"] = results
    args.out.write_text(json.dumps(doc, indent=1) + "\n")  # the raw figures, whatever follows
    if len(results) == args.world:
        doc["summary"] = summarize(results)
        for mode, s in doc["summary"].items():
            print(f"{mode}: probe {s['probe_round_ns_median'] / 1e3:.0f} us; " + ", ".join(
                f"{k} {v:.4f}" for k, v in sorted(s["host_over_probe"].items())), flush=True)
        for r in results:
            for a in r["alternations"]:
                print(f"rank {r['rank']}: probe busy {a['probe']['busy_round_ns'] / 1e3:.0f}/{a['probe_after']['busy_round_ns'] / 1e3:.0f}"
                      f" caught_up {a['probe']['caught_up_round_ns'] / 1e3:.0f}/{a['probe_after']['caught_up_round_ns'] / 1e3:.0f} us;"
                      f" mm {a['single_calls_ns']['mm'] / 1e3:.1f} swiglu {a['single_calls_ns']['swiglu_ffn'] / 1e3:.1f}"
                      f" a2a_splits {a['collective_calls_ns'].get('all_to_all_single_splits', 0) / 1e3:.1f} us; {a['seconds']:.1f} s",
                      flush=True)
    print(errors, flush=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
