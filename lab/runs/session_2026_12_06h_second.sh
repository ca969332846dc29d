#!/bin/bash
# Eighth session of 2026-12-06, second device script (same warm machine as the first): Megatron-Core's
# MoELayer cases again (lab/mcore_moe_workloads.py), a third H100 for the megatron-core classes.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt; grep -m1 "model name" /proc/cpuinfo | tee -a $W/gpu.txt
GPU=h100; nvidia-smi -L | grep -q H200 && GPU=h200
timeout 280 python3 -m lab.mcore_moe_workloads --device cuda --budget-s 250 --out $W/${GPU}_mcore.json > $W/mcore_log.txt 2>&1
echo "mcore rc=$? $(date -u +%T)"; grep -v -i warn $W/mcore_log.txt | tail -30
