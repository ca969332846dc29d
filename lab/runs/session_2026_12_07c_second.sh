#!/bin/bash
# Thirteenth session (2026-12-07c), second device call. (1) The held-out set 2 again on another
# fresh machine, part of it (dense, 4,096 tokens), predicted by the commit that added this script
# (the nearest-shape grouped pricing included). (2) The grouped grid's new shapes
# (`--sections grouped_gemm_v_more`: GLM-4.5, Qwen3-Coder-480B, Qwen3-Next-80B, DBRX), to merge
# into the H100 profile with lab/grouped_new_coverage.py.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt; grep -m1 "model name" /proc/cpuinfo | tee -a $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100)
timeout 150 python3 -m moesim.calibrate.layer_workloads --device cuda --models holdout2 --no-inventory \
    --only dense,t4096 --out $W/layers_${gpu}_holdout2_check.json --budget-s 130 > $W/layers_log.txt 2>&1
echo "layers rc=$? $(date -u +%T)"; tail -2 $W/layers_log.txt
timeout 330 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s 3 --budget-s 300 \
    --sections grouped_gemm_v_more --out $W/${gpu}_grouped_more.json > $W/grouped_log.txt 2>&1
echo "grouped rc=$? $(date -u +%T)"; grep -v -i warn $W/grouped_log.txt | tail -3
