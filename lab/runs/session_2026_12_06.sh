#!/bin/bash
# Device run of 2026-12-06 (issue 13): the new calibration sections and the layer validation
# workloads on whichever single GPU the device tool lends (H100 also gets its base profile).
# Run as: bash lab/runs/session_2026_12_06.sh   (writes under $OUT). Budgets cut to fit what was
# left of the session's device time after repeated failed machine starts.
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi -L | tee $OUT/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $OUT/gpu.txt
date -u
if nvidia-smi -L | grep -q H200; then
  gpu=h200
  timeout 130 python3 -m moesim.calibrate.measure --device cuda --sections grouped_gemm_v,fp8_scaled \
      --out $OUT/${gpu}_grouped_fp8.json --budget-s 100 --preheat-s 8 > $OUT/${gpu}_sections_log.txt 2>&1
  echo "grouped/fp8 rc=$?"; date -u
  timeout 80 python3 -m moesim.calibrate.measure --device cuda --sections moe_kernels,host_classes --heat-ms 60 \
      --preheat-s 3 --budget-s 55 --out $OUT/${gpu}_moe_host.json >> $OUT/${gpu}_sections_log.txt 2>&1
  echo "moe/host rc=$?"; date -u
  LAYER_BUDGET=140
else
  gpu=h100
  timeout 180 python3 -m moesim.calibrate.measure --device cuda --out $OUT/${gpu}_base.json --budget-s 150 \
      --heat-ms 20 --preheat-s 8 --sections launch,kernel_region,host_ops,gemm,gemm_bwd,attention,memory,swiglu \
      > $OUT/${gpu}_sections_log.txt 2>&1
  echo "base rc=$?"; date -u
  timeout 110 python3 -m moesim.calibrate.measure --device cuda --out $OUT/${gpu}_new.json --budget-s 85 \
      --heat-ms 20 --preheat-s 3 --sections grouped_gemm_v,fp8_scaled,moe_kernels,host_classes \
      >> $OUT/${gpu}_sections_log.txt 2>&1
  echo "new sections rc=$?"; date -u
  LAYER_BUDGET=80
fi
timeout $((LAYER_BUDGET + 40)) python3 -m moesim.calibrate.layer_workloads --device cuda --out $OUT/layers_${gpu}.json \
    --budget-s $LAYER_BUDGET > $OUT/layers_${gpu}_log.txt 2>&1
echo "layers rc=$?"; date -u
grep -E "samples|errors|skipped|wrote" $OUT/${gpu}_sections_log.txt | tail -12
grep -v "^USDT" $OUT/layers_${gpu}_log.txt | tail -8
