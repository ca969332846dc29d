#!/bin/bash
# Seventeenth session (2026-12-07g), one device call.
# 1. (H100) Where the simulated host thread misses the harness's host time, forward or backward:
#    this machine's host rows (section host_classes) before and after lab/host_phase_probe.py (the
#    steady host issue of no-grad forward, recording forward, forward+backward of five stored cases).
# 2. A third held-out set (`layer_workloads --models holdout3`, shapes chosen and committed before
#    any was timed: the MoE blocks of Qwen3-235B-A22B and GPT-OSS-120B, a Qwen1.5-MoE-A2.7B-shaped
#    block; the decoder layers of Llama-3-70B and a Gemma-2-9B-shaped layer with head_dim 256),
#    predicted by the code of the commit that added this script.
# On an H200 instead of 1.: the clock burst rows and duty curve its profile lacks, and the attention
# grid at the H100 profile's protocol.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
{ nvidia-smi -L; nvidia-smi --query-gpu=driver_version,clocks.max.sm,power.limit --format=csv,noheader; grep -m1 "model name" /proc/cpuinfo; nproc; } | tee $W/gpu.txt
M="python3 -m moesim.calibrate.measure --device cuda"
G=h100; MOE_S=200
if nvidia-smi -L | grep -q H200; then
  G=h200; MOE_S=150
  bash lab/runs/session_2026_12_07f_h200.sh
  # the H200 profile's attention rows (heat 60 ms, 2026-11-28) read ~25% slower than the H100's and than
  # the H200's own kernel cases: the attention grid again at the H100 profile's protocol (heat 20 ms)
  timeout 75 $M --heat-ms 20 --preheat-s 3 --budget-s 60 --sections attention --out $W/h200_attention.json > $W/attn_log.txt 2>&1; echo "attention rc=$? $(date -u +%T)"
else
  timeout 50 $M --sections host_classes --budget-s 35 --out $W/h100_host_before.json > $W/host_before_log.txt 2>&1; echo "host before rc=$? $(date -u +%T)"
  timeout 120 python3 -m lab.host_phase_probe --device cuda --out $W/h100_host_phase.json > $W/host_phase_log.txt 2>&1; echo "probe rc=$? $(date -u +%T)"
  timeout 50 $M --sections host_classes --budget-s 35 --out $W/h100_host_after.json > $W/host_after_log.txt 2>&1; echo "host after rc=$? $(date -u +%T)"
  tail -3 $W/host_phase_log.txt
fi
L="python3 -m moesim.calibrate.layer_workloads --device cuda --models holdout3 --no-inventory"
timeout 140 $L --only dense --out $W/layers_${G}_holdout3_dense.json --budget-s 120 > $W/layers_dense_log.txt 2>&1
echo "dense rc=$? $(date -u +%T)"; tail -4 $W/layers_dense_log.txt
timeout $MOE_S $L --only t4096,t16384 --out $W/layers_${G}_holdout3_moe.json --budget-s $((MOE_S - 25)) > $W/layers_moe_log.txt 2>&1
echo "moe rc=$? $(date -u +%T)"; tail -4 $W/layers_moe_log.txt
