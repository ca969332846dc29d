#!/bin/bash
# Thirteenth session (2026-12-07c), last device call. On an H200: the after-sync host curve (three
# runs of host_after_sync) and the eager-kernel rows the H200 profile lacks. On an H100: is the
# after-sync slowness the same with autograd recording (lab/after_sync_probe --autograd)?
# ONLY_H200=1: run nothing on an H100 (its branch ran once already, data in fourth/).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt; grep -m1 "model name" /proc/cpuinfo | tee -a $W/gpu.txt
M="python3 -m moesim.calibrate.measure --device cuda"
if nvidia-smi -L | grep -q H200; then
  for i in 1 2 3; do
    timeout 60 $M --budget-s 40 --sections host_after_sync --out $W/h200_after_sync_$i.json > $W/sync_log_$i.txt 2>&1; echo "sync $i rc=$?"; sleep 5
  done
  timeout 170 $M --heat-ms 20 --preheat-s 2 --budget-s 140 --sections eager_kernels --out $W/h200_eager.json > $W/eager_log.txt 2>&1
  echo "eager rc=$? $(date -u +%T)"; grep -v -i warn $W/eager_log.txt | tail -2
elif [ "$ONLY_H200" = 1 ]; then
  echo "not an H200: nothing run"; exit 3
else
  for i in 1 2; do
    timeout 100 python3 -m lab.after_sync_probe --calls 256 --rounds 30 --out $W/plain_$i.json 2>&1 | grep -v -i warn | tail -4
    timeout 100 python3 -m lab.after_sync_probe --autograd --calls 256 --rounds 30 --out $W/autograd_$i.json 2>&1 | grep -v -i "warn\|run_backward" | tail -4
  done
fi
