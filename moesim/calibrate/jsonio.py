"""Writing profile and validation JSON: header fields one per line, then one sample per line.

Standard library only, so merging and inspecting profiles needs no torch. One row per line
keeps the files readable, diffable and compact (a 2,000-sample profile is about 0.5 MB).
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path


def dump_profile(doc: dict, path: Path) -> None:
    """Write ``doc`` atomically (temporary file, then rename), one ``samples`` row per line; a NaN or
    infinity anywhere is a ValueError (a profile is strict JSON)."""
    head = {k: v for k, v in doc.items() if k != "samples"}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v, allow_nan=False)}," for k, v in head.items()]
    lines.append('  "samples": [')
    lines.append(",\n".join(f"    {json.dumps(s, separators=(', ', ': '), allow_nan=False)}" for s in doc["samples"]))
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


def eager_host_intervals(samples: list[dict]) -> dict:
    """Per op, the eager host interval calibrated in the session's own processes: the median of
    the per-call times (min over ranks per iteration, median over iterations) of its calibration
    sizes, which are small enough that the GPU waits for the host."""
    out: dict = {}
    for s in samples:
        rec = out.setdefault(s["collective"], {"per_size_ns": {}, "method": (
            "eager loop per-call time at sizes where the GPU waits for the host, min over ranks per "
            "iteration, median over iterations; median over these sizes")})
        rec["per_size_ns"][str(s["nbytes"])] = s["time_ns"]
    for rec in out.values():
        rec["interval_ns"] = round(statistics.median(rec["per_size_ns"].values()), 1)
    return out


def per_repeat_clock_mhz(probe_mhz: "list[float]") -> "list[float]":
    """Per timed repeat, the SM clock from the clock probes around it (``probe_mhz``: one before the
    first repeat, then one after each). A repeat's clock is the mean of the probes before and after
    it, except the first repeat's, which is the probe after it alone: the probe before it runs on a
    GPU the timer has just synchronized, so launch latency falls inside its short spin's events and
    it reads a clock far too high (up to 1e8 MHz in the stored sessions)."""
    if len(probe_mhz) < 2:
        return []
    return [float(probe_mhz[1])] + [0.5 * (a + b) for a, b in zip(probe_mhz[1:], probe_mhz[2:])]
