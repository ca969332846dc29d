#!/bin/bash
# Run 8 (nvidia-h200-x2): one complete, fully instrumented validation session on one machine.
# Single-GPU entries with the SM clock per case (as_found and @steady on GPU 0, @hot on GPU 1, as
# sessions 3-5 did), the miss probe (lab.miss_probe) on GPU 1 meanwhile, then the
# distributed entries with the in-process host probe in each rank (as session 7), then the
# host-speed reference again if time allows. Writes under $OUT.
# Run as: bash lab/runs/run8_commands.sh 2>&1 | tee $OUT/log.txt
set -x
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
date -u; uname -r; nproc
nvidia-smi --query-gpu=index,name,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv
( export CUDA_VISIBLE_DEVICES=0
  timeout 90 python3 -m moesim.calibrate.validate_workloads --device cuda --parts single --clock-probe \
      --out $OUT/session_as_found.json --budget-s 60
  timeout 100 python3 -m moesim.calibrate.validate_workloads --device cuda --parts single --clock-probe \
      --heat-ms 60 --warm-s 5 --out $OUT/session_steady.json --budget-s 80 ) > /tmp/gpu0_log.txt 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  timeout 90 python3 -m moesim.calibrate.validate_workloads --device cuda --parts single --clock-probe \
      --heat-ms 60 --out $OUT/session_hot.json --budget-s 70
  timeout 60 python3 -m lab.miss_probe --out $OUT/miss_probe.json ) > /tmp/gpu1_log.txt 2>&1 &
wait
date -u
cat /tmp/gpu0_log.txt /tmp/gpu1_log.txt
timeout 200 python3 -m moesim.calibrate.validate_workloads --device cuda --parts distributed \
    --out $OUT/session_distributed.json --budget-s 170
date -u
timeout 45 python3 -m lab.host_reference --out $OUT/host_reference.json --alternations 2
date -u
