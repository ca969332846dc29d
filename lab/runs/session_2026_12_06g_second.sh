#!/bin/bash
# Seventh session of 2026-12-06, second device call: Megatron-Core's MoELayer again with the fused
# weighted SwiGLU (Megatron-LM's --bias-swiglu-fusion default; the first call ran it unfused), and
# the host_megatron calibration section (Megatron's per-expert MLP call host time) with host_classes
# beside it on the same machine. megatron-core wheel installed to /tmp/site by the caller.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
GPU=h100; nvidia-smi -L | grep -q H200 && GPU=h200
timeout 190 python3 -m moesim.calibrate.measure --device cuda --sections host_megatron,host_classes --budget-s 160 \
    --out $W/${GPU}_host_megatron.json > $W/host_log.txt 2>&1
echo "host rc=$? $(date -u +%T)"; grep -v -i warn $W/host_log.txt | tail -8
timeout 330 python3 -m lab.mcore_moe_workloads --device cuda --budget-s 300 --out $W/${GPU}_mcore.json > $W/mcore_log.txt 2>&1
echo "mcore rc=$? $(date -u +%T)"; grep -v -i warn $W/mcore_log.txt | tail -52
