#!/bin/bash
# First session of 2026-12-07: per-kernel device times (--kernel-times) of moesim's Megatron-style
# harness program (megatron grouped: reads 8-11% low at 4,096-16,384 tokens with no kernel-level
# record of where), the torchtitan program of the same shapes and the Llama-3-8B layer, on one
# fresh GPU, with the SM clock sampled alongside (nvidia-smi, 200 ms).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt; grep -m1 "model name" /proc/cpuinfo | tee -a $W/gpu.txt
GPU=h100; nvidia-smi -L | grep -q H200 && GPU=h200
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv,noheader -lms 200 > $W/smi_layers.csv &
SMI=$!
timeout 210 python3 -m moesim.calibrate.layer_workloads --device cuda --kernel-times --budget-s 170 \
    --only llama3_8b.dense.s8192,megatron.grouped.scatter_add.t16384.uniform,torchtitan.grouped.scatter_add.t16384.uniform,megatron.grouped.scatter_add.t4096.uniform \
    --out $W/${GPU}_kernel_times.json > $W/kt_log.txt 2>&1
echo "layer_workloads rc=$? $(date -u +%T)"; grep -v -i warn $W/kt_log.txt | tail -34
kill $SMI
