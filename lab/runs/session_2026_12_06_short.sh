#!/bin/bash
# Device run of 2026-12-06 (issue 13), the short form: what fits the device time left after
# repeated failed machine starts. New calibration sections and layer validation workloads on
# whichever single GPU comes. Run as: bash lab/runs/session_2026_12_06_short.sh (writes under $OUT)
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi -L | tee $OUT/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $OUT/gpu.txt
date -u
if nvidia-smi -L | grep -q H200; then
  gpu=h200
  timeout 80 python3 -m moesim.calibrate.measure --device cuda --sections grouped_gemm_v \
      --out $OUT/${gpu}_grouped.json --budget-s 60 --preheat-s 5 > $OUT/${gpu}_sections_log.txt 2>&1
  echo "grouped rc=$?"; date -u
  LAYER_BUDGET=100
else
  gpu=h100
  timeout 110 python3 -m moesim.calibrate.measure --device cuda --out $OUT/${gpu}_base.json --budget-s 90 \
      --heat-ms 20 --preheat-s 5 --sections launch,host_ops,gemm,attention,memory,swiglu \
      > $OUT/${gpu}_sections_log.txt 2>&1
  echo "base rc=$?"; date -u
  timeout 60 python3 -m moesim.calibrate.measure --device cuda --sections grouped_gemm_v \
      --out $OUT/${gpu}_grouped.json --budget-s 45 --heat-ms 20 --preheat-s 2 >> $OUT/${gpu}_sections_log.txt 2>&1
  echo "grouped rc=$?"; date -u
  LAYER_BUDGET=45
fi
timeout 50 python3 -m moesim.calibrate.measure --device cuda --sections moe_kernels,host_classes --heat-ms 20 \
    --preheat-s 2 --budget-s 35 --out $OUT/${gpu}_moe_host.json >> $OUT/${gpu}_sections_log.txt 2>&1
echo "moe/host rc=$?"; date -u
timeout $((LAYER_BUDGET + 30)) python3 -m moesim.calibrate.layer_workloads --device cuda --out $OUT/layers_${gpu}.json \
    --budget-s $LAYER_BUDGET > $OUT/layers_${gpu}_log.txt 2>&1
echo "layers rc=$?"; date -u
grep -E "samples|errors|skipped|wrote" $OUT/${gpu}_sections_log.txt | tail -12
grep -v "^USDT" $OUT/layers_${gpu}_log.txt | tail -8
