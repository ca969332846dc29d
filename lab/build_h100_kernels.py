"""Build ``data/validation/h100_measurements.json`` from the fifth session of 2026-12-06's two
passes of ``lab/runs/session_2026_12_06e.sh`` on one fresh H100: ``python -m lab.build_h100_kernels``.
Each (pass, shape set, protocol) file is one session; ids get ``#pass1`` / ``#pass2``."""
from __future__ import annotations

import json
from pathlib import Path

from lab.append_session import append_session, dumps

RUNS = Path("data/validation/runs/session_2026_12_06e")
OUT = Path("data/validation/h100_measurements.json")


def main() -> None:
    first = json.loads((RUNS / "pass1" / "h100_standard_as_found.json").read_text())
    doc = {k: first[k] for k in ("schema_version", "device", "driver", "cuda", "nccl", "torch", "gpu_count", "date")}
    doc.update(command="bash lab/runs/session_2026_12_06e.sh, twice on one fresh H100 (pass1, pass2)",
               sessions=[], errors=[], samples=[])
    for tag in ("pass1", "pass2"):
        for shapes in ("standard", "holdout"):
            for protocol in ("as_found", "steady"):
                src = json.loads((RUNS / tag / f"h100_{shapes}_{protocol}.json").read_text())
                doc = append_session(doc, src, tag, note=f"{shapes} shapes, {protocol}")
    OUT.write_text(dumps(doc))
    print(f"wrote {OUT}: {len(doc['samples'])} entries, {len(doc['sessions'])} sessions")


if __name__ == "__main__":
    main()
