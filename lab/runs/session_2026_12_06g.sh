#!/bin/bash
# Seventh session of 2026-12-06: Megatron-Core's own MoELayer (megatron-core 0.16.1 wheel, local
# spec, alltoall dispatcher, SequentialMLP and GroupedMLP) timed on one GPU, for `moesim validate`
# (lab/mcore_moe_workloads.py). On an H200 the attention grids follow (session_2026_12_06e_third.sh).
# Run from the archive root with the wheel installed to /tmp/site (see the device README).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
python3 -c "import megatron.core, torch; print('megatron-core', megatron.core.__version__, 'torch', torch.__version__)" 2>&1 | grep -v -i warn | tee -a $W/gpu.txt
GPU=h100; nvidia-smi -L | grep -q H200 && GPU=h200
timeout 330 python3 -m lab.mcore_moe_workloads --device cuda --budget-s 300 --out $W/${GPU}_mcore.json > $W/mcore_log.txt 2>&1
echo "mcore rc=$? $(date -u +%T)"; grep -v -i warn $W/mcore_log.txt | tail -52
if [ "$GPU" = h200 ]; then
  timeout 230 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s 3 --budget-s 200 \
      --sections attention,attention_gqa,attention_flash --out $W/h200_attention.json > $W/attention_log.txt 2>&1
  echo "attention rc=$? $(date -u +%T)"; grep -E "samples|errors|wrote" $W/attention_log.txt | tail -6
fi
