#!/bin/bash
# Sixteenth session (2026-12-07f), last device budget: on an H200 only, the clock section (burst
# rows: cool_time_ns, which gpu_clock="boost" reads) and the duty curve the H200 profile lacks;
# on anything else nothing (exit at once).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
{ nvidia-smi -L; nvidia-smi --query-gpu=driver_version,clocks.max.sm --format=csv; } | tee $W/gpu_h200.txt
nvidia-smi -L | grep -q H200 || { echo "not an H200: nothing run"; exit 0; }
M="python3 -m moesim.calibrate.measure --device cuda"
timeout 110 $M --heat-ms 20 --preheat-s 5 --budget-s 90 --sections clock --out $W/h200_clock.json > $W/clock_log.txt 2>&1; echo "clock rc=$? $(date -u +%T)"
timeout 95 $M --budget-s 75 --sections duty --out $W/h200_duty.json > $W/duty_log.txt 2>&1; echo "duty rc=$? $(date -u +%T)"
for f in $W/*_log.txt; do echo "== $f"; grep -v -i warn $f | tail -3; done
