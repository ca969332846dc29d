#!/bin/bash
# Fourth session of 2026-12-06, fifth device call: the clock section (each shape's time and SM
# clock under the H100 profile's protocol, --heat-ms 20 --preheat-s 5) for the H100 profile.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
timeout 150 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s 5 --budget-s 100 \
    --sections clock --out $W/${gpu}_clock.json > $W/sections_log.txt 2>&1
echo "clock rc=$? $(date -u +%T)"; grep -E "samples|errors|wrote" $W/sections_log.txt | tail -4
python3 -c "
import json; d=json.load(open('$W/${gpu}_clock.json'))
print([(r['class'], r.get('direction',''), round(r['sm_mhz'])) for r in d['samples']]); print(d.get('errors'))"
