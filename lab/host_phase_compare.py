"""Split the host model's miss by phase: ``lab/host_phase_probe.py``'s times against the simulated
host lane, priced (a) by the shipped profile and (b) by the same profile with its ``host_op`` /
``host_mix`` rows of the classes the probe's machine measured replaced by that machine's
(``moesim calibrate measure --sections host_classes`` before and after the probe), so machine
speed cancels in (b).

Simulated per iteration: ``fwd`` = the no-grad forward's issue; ``fwd_grad`` = the forward part
(spans without ``BW``) of the forward+backward run's issue; ``bwd`` = its backward part;
measured ``bwd`` = ``fwd_bwd - fwd_grad``. Medians over the probe's repeats.

``python -m lab.host_phase_compare DIR`` (DIR holds h100_host_phase.json, h100_host_before.json,
h100_host_after.json).
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

from lab.host_backward_excess import split
from moesim.validate.layers import load_layer_file

SHIPPED = Path(__file__).resolve().parents[1] / "moesim" / "profiles" / "h100_sxm.json"


def machine_profile(run_files: list[Path], out: Path) -> Path:
    doc = json.loads(SHIPPED.read_text())
    runs = max(int(s.get("run", 0)) for s in doc["samples"]) + 1
    # each file its own run number, so the mix factor pairs rows of one run
    new = [{**s, "run": runs + i} for i, f in enumerate(run_files) for s in json.loads(f.read_text())["samples"]
           if s["op"] in ("host_op", "host_mix")]
    calls = {s["call"] for s in new}
    doc["samples"] = [s for s in doc["samples"] if not (s["op"] == "host_mix" or
                                                        (s["op"] == "host_op" and s["call"] in calls))] + new
    out.write_text(json.dumps(doc))
    return out


def simulated(entry, gpu: str, profile: "Path | None") -> dict[str, float]:
    fwd, bwd = split(entry, gpu, profile)
    return {"fwd": fwd, "bwd": bwd}


def main() -> None:
    d = Path(sys.argv[1])
    probe = json.loads((d / "h100_host_phase.json").read_text())
    tmp = Path(tempfile.mkdtemp())
    prof = machine_profile([d / "h100_host_before.json", d / "h100_host_after.json"], tmp / "h100_machine.json")
    med = {k: statistics.median([v for v in vs if v]) for k, vs in probe["host_steady_ns"].items() if any(vs)}
    entries = []
    for cid in probe["cases"]:
        for pass_ in ("fwd", "fwd_bwd"):
            w = dict(probe["workloads"][cid])
            eid = cid.rsplit(".", 1)[0] + "." + pass_
            w["pass"] = pass_
            if pass_ == "fwd":
                w["grad"] = {"mode": "none", "autograd": "torch.no_grad()"}
            entries.append({"id": eid, "workload": w,
                            "measured": {"time_ns": probe["gpu_ns"][f"{cid}|{pass_}"] or 1e6, "iterations": 2}})
    lf_path = tmp / "layers.json"
    lf_path.write_text(json.dumps({"format": "moesim.layer_workloads/1", "provenance": probe["provenance"],
                                   "entries": entries}))
    lf = load_layer_file(lf_path, "H100")
    fixed = probe.get("backward_fixed") or {}
    if fixed:
        print("chains of 1 and 4 linear layers, steady host issue: intercepts (per call, not per layer) "
              + ", ".join(f"{k} {v / 1e3:.0f} us" for k, v in fixed.items() if k.endswith("_ns") and isinstance(v, (int, float))))
    print(f"{'case':58s} {'phase':8s} {'measured':>9s} {'shipped':>8s} {'ratio':>6s} {'machine':>8s} {'ratio':>6s}  (us)")
    for e in lf.entries:
        cid = e.case_id.rsplit(".", 1)[0] + ".fwd_bwd"
        a, b = simulated(e, lf.gpu, None), simulated(e, lf.gpu, prof)
        if e.passes == "fwd":
            rows = [("fwd", med.get(f"{cid}|fwd"), a["fwd"], b["fwd"])]
        else:
            fg, fb = med.get(f"{cid}|fwd_grad"), med.get(f"{cid}|fwd_bwd")
            rows = [("fwd_grad", fg, a["fwd"], b["fwd"]),
                    ("bwd", fb - fg if fb and fg else None, a["bwd"], b["bwd"]),
                    ("fwd_bwd", fb, a["fwd"] + a["bwd"], b["fwd"] + b["bwd"])]
        for phase, m, sa, sb in rows:
            if m:
                print(f"{e.case_id:58s} {phase:8s} {m / 1e3:9.0f} {sa / 1e3:8.0f} {m / sa:6.2f} {sb / 1e3:8.0f} {m / sb:6.2f}")


if __name__ == "__main__":
    main()
