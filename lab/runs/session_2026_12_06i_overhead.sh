#!/bin/bash
# Ninth session of 2026-12-06: Megatron's layer overhead probe at 8, 32 and 128 local experts
# (lab/mcore_overhead_vs_experts.py), rerun after its first try lacked the grouped_gemm stand-in.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
GPU=h100; nvidia-smi -L | grep -q H200 && GPU=h200
timeout 150 python3 -m lab.mcore_overhead_vs_experts --out $W/${GPU}_overhead_vs_experts.json > $W/overhead_log.txt 2>&1
echo "overhead rc=$? $(date -u +%T)"; grep -v -i warn $W/overhead_log.txt | tail -12
