#!/bin/bash
# Fifteenth session (2026-12-07e): does a layer case's time depend on the load before it? The same
# Llama-3-8B s2048 dense cases timed after 10 s idle with no preheat, then after a 15 s preheat,
# the SM clock sampled beside them.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu_hist.txt
(nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,utilization.gpu --format=csv,noheader -lms 50 > $W/smi_hist.csv &)
P="python3 -m moesim.calibrate.layer_workloads --device cuda --no-inventory --only llama3_8b.dense.s2048"
sleep 10
timeout 60 $P --preheat-s 0 --out $W/hist_cool.json 2>&1 | grep -v -i warn | tail -3
timeout 90 $P --preheat-s 15 --out $W/hist_hot.json 2>&1 | grep -v -i warn | tail -3
pkill nvidia-smi
