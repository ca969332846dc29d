"""Merge several calibration runs into one profile (later runs win for the same measurement).

Two sessions on different machines (say one with 2 GPUs, one with 4) measure different parts;
this joins them. A measurement is identified by its op and shape fields (everything except
the statistics), with the loader's defaults filled in (``layout="fwd"`` for GEMMs,
``mode="eager"`` for collectives, ``cache="cold"`` for memory ops), so a re-measured shape
replaces the older row. Each row gains ``run``, the index of its input in the merged file's ``runs`` list, which keeps every
input's provenance. Inputs must agree on device, driver, CUDA, NCCL and torch versions.
``--average OP[,OP]`` keeps every run's row of those ops instead, among runs with the same
heating protocol (``heat_ms``); a run with another protocol still replaces them (repeated
measurements of a noisy op: the cost model averages a cell's rows in log space).
``--validation`` merges validation-workload files instead (entries keyed by their ids).
``--borrow OP[,OP] DONOR.json`` copies the donor profile's rows of those ops (e.g. ``collective``
from an H200 profile into an H100 profile measured on one GPU, the same NVLink 4 / NVSwitch
generation), each marked ``borrowed_from`` and listed under the merged file's ``borrowed``, so the
cost model and every result say which op classes were measured on another device.
Standard library only.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from moesim.calibrate.grids import DEFAULT_HEAT_MS
from moesim.calibrate.jsonio import dump_profile

SAME_ACROSS_RUNS = ("schema_version", "device", "driver", "cuda", "nccl", "torch")
STAT_KEYS = {"time_ns", "repeats", "p25_ns", "p75_ns", "min_ns", "max_ns", "algbw_gbps", "busbw_gbps", "alone_ns", "run",
             "dense_ns", "borrowed_from", "sm_mhz", "cool_time_ns"}  # dense_ns: a grouped row's same-run dense reference, re-measured every
# run; borrowed_from: a row measured here replaces the same shape borrowed from another device
DEFAULTS = {"gemm": {"layout": "fwd"}, "collective": {"mode": "eager"}, "memory": {"cache": "cold"}}
RUN_KEYS = ("date", "command", "gpu_count", "gpu_topology", "mode", "environment", "driver", "cuda", "nccl", "torch",
            "host_cpu", "heat_ms")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HEAT = re.compile(r"--heat-ms[ =]([0-9.]+)")


def sample_key(sample: dict) -> str:
    """Identity of a measurement: op and shape fields with defaults filled in."""
    full = {**DEFAULTS.get(sample["op"], {}), **sample}
    return json.dumps({k: v for k, v in full.items() if k not in STAT_KEYS}, sort_keys=True)


def merge_profiles(docs: list[dict], average_ops: tuple[str, ...] = (), mixed_versions: bool = False) -> dict:
    """One profile from several run documents, later ones replacing earlier identical rows, except
    rows of ``average_ops`` measured with the same heating protocol, which are all kept.
    ``mixed_versions`` accepts inputs whose driver / CUDA / NCCL / torch versions differ (the device
    must not): each run record keeps its own versions, the header the first input's."""
    first = docs[0]
    for i, doc in enumerate(docs[1:], 1):
        for key in SAME_ACROSS_RUNS:
            if doc.get(key) != first.get(key) and not (mixed_versions and key not in ("schema_version", "device")):
                raise SystemExit(f"input {i}: {key} {doc.get(key)!r} differs from input 0's {first.get(key)!r}"
                                 + ("" if key in ("schema_version", "device") else
                                    " (--mixed-versions keeps each run's versions in its run record)"))
    rows: dict[str, list[tuple[object, int, dict]]] = {}  # key -> (heating protocol, input, row) kept
    offset = 0
    for i, doc in enumerate(docs):
        own_runs = bool(doc.get("runs"))
        records = _run_records(doc)
        for s in doc["samples"]:  # a merged input's rows keep their run, shifted past earlier inputs' runs
            run = int(s.get("run", 0)) if own_runs else 0
            protocol = _heat_protocol(records[run] if run < len(records) else doc, doc)
            full = {**DEFAULTS.get(s["op"], {}), **s, "run": offset + run}
            key = sample_key(s)
            # rows of one input are all kept (a merged input may hold averaged repeats); a later input
            # replaces earlier ones, except averaged ops measured under the same heating protocol
            kept = [(p, j, r) for p, j, r in rows.pop(key, [])
                    if j == i or (s["op"] in average_ops and p == protocol)]
            rows[key] = kept + [(protocol, i, full)]  # re-insert so the order follows the latest run
        offset += len(_run_records(doc))
    runs = [run for d in docs for run in _run_records(d)]
    widest = max(docs, key=lambda d: d.get("gpu_count", 1))
    region = next((d["kernel_region"] for d in reversed(docs) if d.get("kernel_region")), None)  # later runs win
    eager = next((d["eager_host"] for d in reversed(docs) if d.get("eager_host")), None)
    merged = {k: first[k] for k in SAME_ACROSS_RUNS}
    merged.update({
        "gpu_count": widest.get("gpu_count", 1),
        "date": first["date"],
        "command": " ; ".join(d["command"] for d in docs),
        "gpu_memory_bytes": first.get("gpu_memory_bytes", 0),
        "sm_count": first.get("sm_count", 0),
        "gpu_topology": _ANSI.sub("", widest.get("gpu_topology", "")),
        "notes": first.get("notes", "") + f" Merged from {len(docs)} runs (see runs; each sample's run indexes it)."
                 + (f" Rows of {', '.join(average_ops)} from every run are kept and averaged by the model." if average_ops else ""),
        "runs": runs,
        **({"kernel_region": region} if region else {}),
        **({"eager_host": eager} if eager else {}),
        "errors": [e for d in docs for e in d.get("errors", [])],
        "samples": [r for kept in rows.values() for _, _, r in kept],
    })
    borrowed = _surviving_borrowed(docs, merged["samples"])
    if borrowed:
        merged["borrowed"] = borrowed
    return merged


def _heat_protocol(run: dict, doc: dict) -> float:
    """The heating protocol (``heat_ms``) a row was measured under: its run record's, else the
    ``--heat-ms`` of the run's command, else that command's default (``moesim.calibrate.measure``
    on cuda heats by default); an unmerged input's header answers for its one run. A merged
    profile's header (its command joins every run's) answers for none: each row answers for its
    run. 0 where nothing says."""
    for source in (run,) if doc.get("runs") else (run, doc):
        if source.get("heat_ms") is not None:
            return float(source["heat_ms"])
        found = _HEAT.search(str(source.get("command", "")))
        if found:
            return float(found.group(1))
    command = str(run.get("command", ""))
    if "moesim.calibrate.measure" in command and "--device cuda" in command:
        return DEFAULT_HEAT_MS
    return 0.0


def _surviving_borrowed(docs: list[dict], samples: list[dict]) -> list[dict]:
    """The inputs' ``borrowed`` records whose op still has borrowed rows in the merged samples (a
    later input that measured those rows itself retires the record)."""
    still = {r["op"] for r in samples if r.get("borrowed_from")}
    out: list[dict] = []
    for d in docs:
        for rec in d.get("borrowed") or []:
            if rec.get("op") in still and rec not in out:
                out.append(rec)
    return out


def _run_records(doc: dict) -> list[dict]:
    """The run records an input contributes: its own ``runs`` when it is a merged profile (their
    rows' ``run`` indices are remapped by :func:`merge_profiles`), else one record of its header."""
    own = {k: (_ANSI.sub("", doc[k]) if isinstance(doc.get(k), str) else doc.get(k)) for k in RUN_KEYS if k in doc}
    return [{**own, **r} for r in doc["runs"]] if doc.get("runs") else [own]


def borrow_rows(profile: dict, donor: dict, ops: tuple[str, ...], why: str) -> dict:
    """``profile`` with ``donor``'s rows of ``ops`` added (its own rows of those ops are dropped),
    each marked ``borrowed_from``, and a ``borrowed`` record per op naming the donor and why. The
    donor's run records come along (marked too), and each borrowed row's ``run`` indexes its own."""
    if not ops:
        raise SystemExit("--borrow needs at least one op, e.g. collective")
    source = f"{donor.get('device', '?')} profile of {str(donor.get('date', '?'))[:10]}"
    offset = len(profile.get("runs") or [])
    rows = [{**r, "borrowed_from": source, "run": offset + int(r.get("run", 0))}
            for r in donor["samples"] if r["op"] in ops]
    if not rows:
        raise SystemExit(f"the donor profile has no rows of {', '.join(ops)}")
    runs = [*(profile.get("runs") or []), *({**run, "borrowed_from": source} for run in _run_records(donor))]
    kept = [r for r in profile["samples"] if r["op"] not in ops]
    record = [*(profile.get("borrowed") or []), *({"op": op, "from": source, "why": why} for op in ops)]
    return {**profile, "runs": runs, "borrowed": record, "samples": kept + rows}


def merge_validation(docs: list[dict]) -> dict:
    """One validation file from several sessions; entries keep their ids (later wins on a clash),
    gain ``session`` (index into ``sessions``) and default to ``thermal: "as_found"``."""
    first = docs[0]
    entries: dict[str, dict] = {}
    for i, doc in enumerate(docs):
        for e in doc["samples"]:
            e = {**e, "session": i, "description": {"thermal": "as_found", **e["description"]}}
            entries.pop(e["id"], None)
            entries[e["id"]] = e
    merged = {k: first[k] for k in SAME_ACROSS_RUNS}
    merged.update({
        "gpu_count": max(d.get("gpu_count", 1) for d in docs),
        "date": first["date"],
        "command": " ; ".join(d["command"] for d in docs),
        "sessions": [{k: (_ANSI.sub("", d[k]) if isinstance(d.get(k), str) else d.get(k)) for k in RUN_KEYS if k in d}
                     for d in docs],
        "checks": {str(i): d["checks"] for i, d in enumerate(docs) if d.get("checks")},
        "errors": [e for d in docs for e in d.get("errors", [])],
        "samples": list(entries.values()),
    })
    return merged


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    validation = bool(args) and args[0] == "--validation"
    args = args[1:] if validation else args
    average: tuple[str, ...] = ()
    mixed = bool(args) and args[0] == "--mixed-versions"
    args = args[1:] if mixed else args
    if len(args) >= 2 and args[0] == "--average":
        average, args = tuple(a for a in args[1].split(",") if a), args[2:]
    borrow: tuple[tuple[str, ...], Path] | None = None
    if len(args) >= 3 and args[0] == "--borrow":
        borrow, args = (tuple(a for a in args[1].split(",") if a), Path(args[2])), args[3:]
    if len(args) < (2 if borrow else 3):
        print("usage: python -m moesim.calibrate.merge [--validation | [--mixed-versions] [--average OP[,OP]] "
              "[--borrow OP[,OP] DONOR.json]] "
              "OUT.json IN1.json [IN2.json ...]", file=sys.stderr)
        return 2
    docs = [json.loads(Path(p).read_text()) for p in args[1:]]
    merged = merge_validation(docs) if validation else merge_profiles(docs, average, mixed)
    if borrow:
        merged = borrow_rows(merged, json.loads(borrow[1].read_text()), borrow[0],
                             "not measurable on the lent single-GPU machine; same NVLink 4 / NVSwitch generation")
    dump_profile(merged, Path(args[0]))
    print(f"wrote {args[0]}: {len(merged['samples'])} rows from {len(args) - 1} inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
