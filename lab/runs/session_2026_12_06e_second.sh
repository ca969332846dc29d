#!/bin/bash
# Fifth session of 2026-12-06, second device call: the clock section on a fresh H100 under the
# steady protocol (--heat-ms 60 --preheat-s 5: the H200 clock rows' heating and the validation's
# steady state), twice, and once under the H100 profile's own grid protocol (--heat-ms 20).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
for tag in steady_a grid20 steady_b; do
  heat=60; [ $tag = grid20 ] && heat=20
  timeout 150 python3 -m moesim.calibrate.measure --device cuda --heat-ms $heat --preheat-s 5 --budget-s 90 \
      --sections clock --out $W/${gpu}_clock_${tag}.json > $W/clock_${tag}_log.txt 2>&1
  echo "$tag rc=$? $(date -u +%T)"
  python3 -c "
import json; d=json.load(open('$W/${gpu}_clock_${tag}.json'))
print([(r['class'], r.get('direction',''), round(r['sm_mhz'])) for r in d['samples']]); print(d.get('errors'))"
done
