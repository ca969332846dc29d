#!/bin/bash
# Third device call of the 2026-12-06 afternoon session. Whichever single GPU comes:
# - H200: the sections its profile lacks (grouped_gemm_v, fp8_scaled, moe_kernels, host_classes with
#   its host_mix row, attention_gqa) and the layer validation workloads;
# - H100: host_classes again (is the mixed-program factor stable across machines?) and every
#   layer workload with the host issue time of the sync-free cases.
# Everything is tarred into $OUT/run.tgz. Run from a snapshot holding moesim/ and lab/.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
m() { timeout $1 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s $2 --budget-s $3 \
      --sections $4 --out $W/${gpu}_$5.json >> $W/sections_log.txt 2>&1; echo "$5 rc=$? $(date -u +%T)"; }
date -u
if [ $gpu = h200 ]; then
  m 80 5 60 grouped_gemm_v grouped
  m 55 2 40 fp8_scaled fp8s
  m 90 2 75 moe_kernels,host_classes moe_host
  m 60 2 45 attention_gqa gqa
  LB=130
else
  m 110 3 95 host_classes host
  LB=150
fi
timeout $((LB + 40)) python3 -m moesim.calibrate.layer_workloads --device cuda --out $W/layers_${gpu}.json \
    --budget-s $LB --no-inventory > $W/layers_log.txt 2>&1; echo "layers rc=$? $(date -u +%T)"
grep -E "samples|errors|skipped|wrote|incomplete" $W/sections_log.txt | tail -12
grep -v "^USDT" $W/layers_log.txt | tail -3
tar czf $OUT/run.tgz -C $W .
ls -la $OUT
