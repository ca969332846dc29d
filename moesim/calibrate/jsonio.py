"""Writing profile and validation JSON: header fields one per line, then one sample per line.

Standard library only, so merging and inspecting profiles needs no torch. One row per line
keeps the files readable, diffable and compact (a 2,000-sample profile is about 0.5 MB).
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def dump_profile(doc: dict, path: Path) -> None:
    """Write ``doc`` atomically (temporary file, then rename), one ``samples`` row per line."""
    head = {k: v for k, v in doc.items() if k != "samples"}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append('  "samples": [')
    lines.append(",\n".join(f"    {json.dumps(s, separators=(', ', ': '))}" for s in doc["samples"]))
    lines += ["  ]", "}"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def host_probe_record(results: list[dict]) -> "list[dict] | None":
    """Per rank: the host probe before and after the timed workloads (None when not run)."""
    recs = [{"rank": r, "before": res.get("host_probe_before"), "after": res.get("host_probe_after")}
            for r, res in enumerate(results)]
    return recs if all(x["before"] or x["after"] for x in recs) else None
