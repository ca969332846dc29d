#!/bin/bash
# Device run, second session of 2026-12-06 (issues 13, 18): on the H200 the sections its profile
# lacks (grouped_gemm_v, fp8_scaled, moe_kernels, host_classes), the base kernel sections again at
# short heat (a fresh machine's profile), layer validation workloads, and Kineto traces of one dense
# and one MoE case. Everything is tarred into $OUT/h200_run.tgz (the device returns at most 8 files).
# Run as: bash lab/runs/session_2026_12_06b_h200.sh from a snapshot holding moesim/ and lab/.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W/traces
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
m() { timeout $1 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s $2 --budget-s $3 \
      --sections $4 --out $W/${gpu}_$5.json >> $W/sections_log.txt 2>&1; echo "$5 rc=$? $(date -u +%T)"; }
date -u
m 100 5 75 launch,host_ops,gemm,attention,memory,swiglu base
m 80 2 60 grouped_gemm_v grouped
m 55 2 40 fp8_scaled fp8s
m 55 2 40 moe_kernels,host_classes moe_host
timeout 170 python3 -m moesim.calibrate.layer_workloads --device cuda --out $W/layers_${gpu}.json \
    --budget-s 140 --profile-trace $W/traces > $W/layers_log.txt 2>&1; echo "layers rc=$? $(date -u +%T)"
grep -E "samples|errors|skipped|wrote" $W/sections_log.txt | tail -12
grep -v "^USDT" $W/layers_log.txt | tail -4
ls -la $W $W/traces
tar czf $OUT/${gpu}_run.tgz -C $W .
ls -la $OUT
