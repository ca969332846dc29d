#!/bin/bash
# Fourth session of 2026-12-06, third device call (H100): the attention_flash section (SDPA held
# to FlashAttention-2, grouped K/V heads) for the H100 profile. Output: $OUT/w/h100_flash.json.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
timeout 100 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s 3 --budget-s 70 \
    --sections attention_flash --out $W/${gpu}_flash.json > $W/sections_log.txt 2>&1
echo "flash rc=$? $(date -u +%T)"; grep -E "samples|errors|wrote|incomplete" $W/sections_log.txt | tail -5
