"""Add the GEMM-duty rows of a ``lab/duty_clock_probe.py`` run to a profile (``op: "duty"``).

Each probe row (a GEMM timed with that share of the GPU's time in GEMMs, copies in between,
after ``settle_s`` of it) becomes ``{"op": "duty", "class": "gemm", "shape", "duty", "time_ns",
"cool_time_ns", "repeats", "sm_mhz", "power_w", "run"}``, ``cool_time_ns`` being the probe's
``cool`` row of the same GEMM; the probe's date, command, device and torch become a ``runs``
entry (the probe records no driver, CUDA or NCCL version: said in the entry). Existing ``duty``
rows are replaced.

    python -m lab.duty_rows PROBE.json PROFILE.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from moesim.calibrate.jsonio import dump_profile


def main(argv: "list[str] | None" = None) -> int:
    probe_path, profile_path = (Path(a) for a in (argv or sys.argv[1:]))
    probe, profile = json.loads(probe_path.read_text()), json.loads(profile_path.read_text())
    if probe["device"] != profile["device"]:
        raise SystemExit(f"the probe ran on {probe['device']}, the profile is {profile['device']}")
    cool = {r["op"]: r["gemm_ms"] for r in probe["rows"] if r.get("protocol") == "cool"}
    run = len(profile["runs"])
    profile["runs"].append({"date": probe["date"], "command": probe["command"], "gpu_count": 1,
                            "device": probe["device"], "torch": probe["torch"], "mode": "duty probe",
                            "settle_s": probe["settle_s"],
                            "note": "lab/duty_clock_probe.py on one fresh H100 (driver, CUDA and NCCL versions not "
                                    "recorded by the probe; file data/validation/runs/session_2026_12_06i/h100_duty.json)"})
    rows = [{"op": "duty", "class": "gemm", "shape": r["op"], "duty": round(r["duty"], 4),
             "time_ns": round(r["gemm_ms"] * 1e6, 1), "cool_time_ns": round(cool[r["op"]] * 1e6, 1),
             "repeats": int(r["samples"]), "sm_mhz": r["sm_mhz"], "power_w": r["power_w"], "run": run}
            for r in probe["rows"] if "duty" in r and r["op"] in cool]
    profile["samples"] = [s for s in profile["samples"] if s["op"] != "duty"] + rows
    dump_profile(profile, profile_path)
    print(f"{profile_path}: {len(rows)} duty rows (run {run})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
