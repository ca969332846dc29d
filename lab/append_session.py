"""Append one measurement session's entries to a stored validation file, keeping what is there.

``python3 -m lab.append_session --into data/validation/h200_measurements.json
--from session.json --tag r5`` adds every entry of ``session.json`` (written by
``moesim.calibrate.validate_workloads``) as a new session: its ids get ``#TAG`` so they stay
distinct from earlier sessions' measurements of the same workload, each entry records its
session index, and the session's provenance (device, driver, CUDA, NCCL, torch, date, command,
GPUs, kernel release when given, the per-rank in-process host probe when recorded) is appended
to ``sessions``. Existing entries and sessions are
never changed; an id already present is an error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROVENANCE_KEYS = ("device", "driver", "cuda", "nccl", "torch", "date", "command", "gpu_count", "gpu_topology",
                   "environment", "host_probe")


def append_session(into: dict, session: dict, tag: str, note: str = "") -> dict:
    """``into`` with ``session``'s entries appended as a new session (a new dict; ``into`` unchanged)."""
    out = json.loads(json.dumps(into))
    sessions = out.setdefault("sessions", [])
    index = len(sessions)
    record = {k: session[k] for k in PROVENANCE_KEYS if k in session}
    record.update({"tag": tag, "note": note} if note else {"tag": tag})
    sessions.append(record)
    ids = {s["id"] for s in out["samples"]}
    for entry in session.get("samples") or []:
        new = dict(entry, id=f"{entry['id']}#{tag}", session=index)
        if new["id"] in ids:
            raise ValueError(f"id {new['id']!r} already stored")
        ids.add(new["id"])
        out["samples"].append(new)
    return out


def dumps(doc: dict) -> str:
    """The stored file's layout: one top-level key per line, ``samples`` one entry per line."""
    lines = []
    keys = list(doc)
    for i, key in enumerate(keys):
        comma = "," if i < len(keys) - 1 else ""
        if key == "samples":
            body = ",\n".join(f"    {json.dumps(e)}" for e in doc[key])
            lines.append(f'  "samples": [\n{body}\n  ]{comma}')
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(doc[key])}{comma}")
    return "{\n" + "\n".join(lines) + "\n}\n"


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--into", type=Path, required=True)
    p.add_argument("--from", dest="src", type=Path, required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--note", default="")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    doc = append_session(json.loads(args.into.read_text()), json.loads(args.src.read_text()), args.tag, args.note)
    args.into.write_text(dumps(doc))
    print(f"{args.into}: {len(doc['samples'])} entries, {len(doc['sessions'])} sessions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
