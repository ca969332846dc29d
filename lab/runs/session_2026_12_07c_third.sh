#!/bin/bash
# Thirteenth session (2026-12-07c), a fresh machine's check of the after-sync host curve (ee5904f):
# host-bound programs with device-to-host reads (Megatron's harness and the per-expert loop at
# 1,024 and 4,096 tokens, standard and held-out-2 shapes), predicted by that commit.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt; grep -m1 "model name" /proc/cpuinfo | tee -a $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100)
L="python3 -m moesim.calibrate.layer_workloads --device cuda --no-inventory"
timeout 150 $L --models standard --only megatron.grouped.scatter_add.t1024,megatron.grouped.scatter_add.t4096,loop.scatter_add.t1024 \
    --out $W/layers_${gpu}_sync_check_std.json --budget-s 130 > $W/log_std.txt 2>&1; echo "std rc=$?"; tail -2 $W/log_std.txt
timeout 150 $L --models holdout2 --only megatron.grouped.scatter_add.t1024,megatron.grouped.scatter_add.t4096,loop.scatter_add.t1024 \
    --out $W/layers_${gpu}_sync_check_h2.json --budget-s 130 > $W/log_h2.txt 2>&1; echo "h2 rc=$?"; tail -2 $W/log_h2.txt
