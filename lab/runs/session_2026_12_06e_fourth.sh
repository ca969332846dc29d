#!/bin/bash
# Fifth session of 2026-12-06, fourth device call: layers and MoE blocks of held-out public-model
# shapes no stored case has (layer_workloads --models holdout: GPT-OSS-20B-, Qwen2-57B-A14B- and
# DeepSeek-V3-EP4-slice-shaped MoE blocks, Qwen2.5-7B and Mistral-NeMo-12B decoder layers) on a fresh
# GPU, predicted by the code of the commit that added this script (no cost change after it).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
timeout 75 python3 -m moesim.calibrate.layer_workloads --device cuda --models holdout --no-inventory --only t4096,t16384,dense \
    --out $W/layers_${gpu}_holdout.json --budget-s 55 > $W/layers_log.txt 2>&1
echo "rc=$? $(date -u +%T)"; tail -4 $W/layers_log.txt
