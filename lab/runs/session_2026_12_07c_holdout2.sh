#!/bin/bash
# Thirteenth session (2026-12-07c), one device call. On an H100: a second held-out set of layers
# and MoE blocks (`layer_workloads --models holdout2`, shapes chosen before any was timed:
# OLMoE-1B-7B, Phi-3.5-MoE, a Llama-4-Scout-shaped block with its shared expert; the decoder layers
# of Llama-3.2-3B and Qwen2.5-14B), predicted by the code of the commit that added this script.
# On an H200: the H200 profile's missing sections instead (session_2026_12_07c_h200.sh, part 1).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt; grep -m1 "model name" /proc/cpuinfo | tee -a $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
if nvidia-smi -L | grep -q H200; then PART=1 exec bash lab/runs/session_2026_12_07c_h200.sh; fi
L="python3 -m moesim.calibrate.layer_workloads --device cuda --models holdout2 --no-inventory"
timeout 170 $L --only dense --out $W/layers_h100_holdout2_dense.json --budget-s 150 > $W/layers_dense_log.txt 2>&1
echo "dense rc=$? $(date -u +%T)"; tail -4 $W/layers_dense_log.txt
timeout 370 $L --only t4096,t16384 --out $W/layers_h100_holdout2_moe.json --budget-s 340 > $W/layers_moe_log.txt 2>&1
echo "moe rc=$? $(date -u +%T)"; tail -4 $W/layers_moe_log.txt
