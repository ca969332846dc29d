#!/bin/bash
# Sixth session of 2026-12-06, one device call. On an H200: the attention grids and clock section
# under the H100 profile's protocol (--heat-ms 20 --preheat-s 3; the stored H200 attention grid was
# measured at --heat-ms 60 and reads 13-28% slow), then the held-out layers and MoE blocks. On an
# H100: the held-out dense decoder layers (Qwen2.5-7B, Mistral-NeMo-12B shapes; never measured),
# then the held-out MoE blocks again on this fresh machine. Predictions: the code of the commit
# that added this script (no cost change after it).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
if [ $gpu = h200 ]; then
  timeout 330 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s 3 --budget-s 300 \
      --sections attention,attention_gqa,attention_flash,clock --out $W/h200_attention.json > $W/attention_log.txt 2>&1
  echo "attention rc=$? $(date -u +%T)"; grep -E "samples|errors|wrote" $W/attention_log.txt | tail -6
  timeout 220 python3 -m moesim.calibrate.layer_workloads --device cuda --models holdout --no-inventory --only dense,t4096,t16384 \
      --out $W/layers_h200_holdout.json --budget-s 200 > $W/layers_log.txt 2>&1
  echo "layers rc=$? $(date -u +%T)"; tail -4 $W/layers_log.txt
else
  timeout 170 python3 -m moesim.calibrate.layer_workloads --device cuda --models holdout --no-inventory --only dense \
      --out $W/layers_h100_holdout_dense.json --budget-s 150 > $W/layers_dense_log.txt 2>&1
  echo "dense rc=$? $(date -u +%T)"; tail -4 $W/layers_dense_log.txt
  timeout 350 python3 -m moesim.calibrate.layer_workloads --device cuda --models holdout --no-inventory --only t4096,t16384 \
      --out $W/layers_h100_holdout_moe.json --budget-s 320 > $W/layers_moe_log.txt 2>&1
  echo "moe rc=$? $(date -u +%T)"; tail -4 $W/layers_moe_log.txt
fi
