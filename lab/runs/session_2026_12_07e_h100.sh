#!/bin/bash
# Fifteenth session (2026-12-07e), on a lent H100: section duty with its attention rows through the
# calibrate CLI (provenance recorded), then lab/host_state_probe.py (steal, run-queue wait and
# interpreter speed over 30 s).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
{ nvidia-smi -L; grep -m1 "model name" /proc/cpuinfo; nproc; } | tee $W/gpu.txt
timeout 300 python3 -m moesim.calibrate.measure --device cuda --budget-s 270 --sections duty --out $W/h100_duty_attention.json > $W/duty_log.txt 2>&1; echo "duty rc=$? $(date -u +%T)"
grep -v -i warn $W/duty_log.txt | tail -3
python3 - <<'PY'
import json, os
d = json.load(open(os.environ["OUT"] + "/w/h100_duty_attention.json"))
print({k: v for k, v in d.get("provenance", {}).items() if k != "command"})
for r in d["samples"]:
    print(r["class"], r["shape"], r["duty"], round(r["time_ns"] / r["cool_time_ns"], 3), r.get("sm_mhz"), r.get("power_w"))
PY
timeout 60 python3 -m lab.host_state_probe --seconds 30 --window-ms 200 --out $W/host_state.json 2>&1 | grep -v -i warn | tail -4
