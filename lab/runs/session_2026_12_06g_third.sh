#!/bin/bash
# Seventh session of 2026-12-06, third device script (the second never got a machine: six
# refusals): the host_megatron section alone (Megatron's expert MLP call and MoELayer overhead),
# then Megatron-Core's MoELayer with the fused weighted SwiGLU, saved after every case.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
GPU=h100; nvidia-smi -L | grep -q H200 && GPU=h200
timeout 120 python3 -m moesim.calibrate.measure --device cuda --sections host_megatron --budget-s 100 \
    --out $W/${GPU}_host_megatron.json > $W/host_log.txt 2>&1
echo "host rc=$? $(date -u +%T)"; grep -v -i warn $W/host_log.txt | tail -6
timeout 240 python3 -m lab.mcore_moe_workloads --device cuda --budget-s 220 --out $W/${GPU}_mcore.json > $W/mcore_log.txt 2>&1
echo "mcore rc=$? $(date -u +%T)"; grep -v -i warn $W/mcore_log.txt | tail -40
