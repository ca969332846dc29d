#!/bin/bash
# Fourteenth session (2026-12-07d), on a lent H100: lab/expert_count_probe.py (host time per expert
# call against the number of distinct experts cycled), then section duty with its new attention
# rows (flash attention timed between GEMMs at a set GEMM share); lab/host_state_probe.py if
# HOST_STATE=1.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
{ nvidia-smi -L; grep -m1 "model name" /proc/cpuinfo; nproc; } | tee $W/gpu.txt
timeout 120 python3 -m lab.expert_count_probe --out $W/expert_count.json 2>&1 | grep -v -i warn | tail -22
timeout 300 python3 -m moesim.calibrate.measure --device cuda --budget-s 270 --sections duty --out $W/h100_duty_attention.json > $W/duty_log.txt 2>&1; echo "duty rc=$? $(date -u +%T)"
grep -v -i warn $W/duty_log.txt | tail -3
python3 - <<'PY'
import json, os
d = json.load(open(os.environ["OUT"] + "/w/h100_duty_attention.json"))
for r in d["samples"]:
    print(r["class"], r["shape"], r["duty"], round(r["time_ns"] / r["cool_time_ns"], 3), r.get("sm_mhz"), r.get("power_w"))
PY
if [ "$HOST_STATE" = 1 ]; then
  timeout 60 python3 -m lab.host_state_probe --seconds 30 --window-ms 200 --out $W/host_state.json 2>&1 | grep -v -i warn | tail -4
fi
