#!/bin/bash
# Fifth session of 2026-12-06, third device call (an H200 only; exits on any other GPU): the
# attention grids (equal heads, enable_gqa, FlashAttention-2) and the clock section under the H100
# profile's protocol (--heat-ms 20 --preheat-s 3). The stored H200 attention grid (2026-11-28,
# --heat-ms 60) is 13-28% slower than the H200's own validation kernels at every protocol, which
# the H100 grid predicts within 2-7%.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
if ! nvidia-smi -L | grep -q H200; then echo "not an H200: nothing run"; exit 0; fi
timeout 420 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s 3 --budget-s 380 \
    --sections attention,attention_gqa,attention_flash,clock --out $W/h200_attention.json > $W/attention_log.txt 2>&1
echo "rc=$? $(date -u +%T)"; grep -E "samples|errors|wrote" $W/attention_log.txt | tail -6
