#!/bin/bash
# Fifth session of 2026-12-06, first device call: single kernels on a fresh H100 (none stored for
# H100 before), the standard off-grid set and the held-out set of public models' shapes
# (--shape-set holdout), each as found (a short burst on a cool GPU) and steady (5 s of GEMM load,
# then 60 ms before every entry: the calibration grid's state).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
V="--device cuda --parts single --clock-probe --lead-us 500"
for set in holdout standard; do
  timeout 150 python3 -m moesim.calibrate.validate_workloads $V --shape-set $set \
      --out $W/${gpu}_${set}_as_found.json --budget-s 120 > $W/${set}_as_found_log.txt 2>&1
  echo "$set as_found rc=$? $(date -u +%T)"; tail -3 $W/${set}_as_found_log.txt
  timeout 200 python3 -m moesim.calibrate.validate_workloads $V --shape-set $set --heat-ms 60 --warm-s 5 \
      --out $W/${gpu}_${set}_steady.json --budget-s 170 > $W/${set}_steady_log.txt 2>&1
  echo "$set steady rc=$? $(date -u +%T)"; tail -3 $W/${set}_steady_log.txt
done
