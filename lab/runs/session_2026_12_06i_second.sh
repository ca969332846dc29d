#!/bin/bash
# Ninth session of 2026-12-06, second device script: whether Megatron's expert MLP call costs more
# with varying row counts (lab/loop_dynamic_probe.py), then the host_megatron section with the
# layer overhead at 8, 32 and 128 local experts (profile rows).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt; grep -m1 "model name" /proc/cpuinfo | tee -a $W/gpu.txt
GPU=h100; nvidia-smi -L | grep -q H200 && GPU=h200
timeout 150 python3 -m lab.loop_dynamic_probe --out $W/${GPU}_loop_dynamic.json > $W/loop_log.txt 2>&1
echo "loop rc=$? $(date -u +%T)"; grep -v -i warn $W/loop_log.txt | tail -14
timeout 150 python3 -m moesim.calibrate.measure --device cuda --sections host_megatron --budget-s 120 \
    --out $W/${GPU}_host_megatron.json > $W/host_log.txt 2>&1
echo "host_megatron rc=$? $(date -u +%T)"; grep -v -i warn $W/host_log.txt | tail -4
