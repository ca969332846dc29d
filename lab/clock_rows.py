"""Turn a ``lab/clock_reference.py`` file (each shape's time and SM clock under the profile's
protocol) into a calibration run of ``clock`` rows, the form ``moesim calibrate run --sections
clock`` writes, so ``moesim calibrate merge`` can add it to the profile it was measured for.

``python -m lab.clock_rows data/validation/clock_reference.json OUT.json``
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SHAPE = {"gemm": ("m", "n", "k"), "attention": ("direction", "batch", "heads", "seq", "head_dim")}
STATS = ("time_ns", "repeats", "p25_ns", "p75_ns", "min_ns", "max_ns")


def convert(doc: dict) -> dict:
    rows = [{"op": "clock", "class": s["op"], **{k: s[k] for k in SHAPE[s["op"]]},
             **{k: s[k] for k in STATS if k in s}, "sm_mhz": s["clock"]["sm_mhz"]} for s in doc["samples"]]
    header = {k: v for k, v in doc.items() if k not in ("samples", "protocol")}
    heat = "--heat-ms 60" if "heat 60.0 ms" in doc.get("protocol", "") else ""
    return {"schema_version": 1, **header, "command": f"{doc['command']} {heat}".strip(),
            "notes": f"clock rows from {doc['command']} ({doc.get('protocol', '')}); converted by lab/clock_rows.py",
            "samples": rows}


if __name__ == "__main__":
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.write_text(json.dumps(convert(json.loads(src.read_text())), indent=1) + "\n")
