#!/bin/bash
# Fourth session of 2026-12-06, fourth device call: the fp8_scaled section with the fp8 grouped
# GEMM's dgrad and wgrad layouts (torch._scaled_grouped_mm, rowwise) for the profile of whichever
# GPU comes. Output: $OUT/w/<gpu>_fp8s.json.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
timeout 170 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s 3 --budget-s 140 \
    --sections fp8_scaled --out $W/${gpu}_fp8s.json > $W/sections_log.txt 2>&1
echo "fp8 rc=$? $(date -u +%T)"; grep -E "samples|errors|wrote|incomplete|runnable" $W/sections_log.txt | tail -6
python3 -c "
import json,collections; d=json.load(open('$W/${gpu}_fp8s.json'))
print(collections.Counter((r['op'], r.get('layout')) for r in d['samples'])); print(d.get('errors'))"
