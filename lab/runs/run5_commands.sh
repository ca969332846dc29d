#!/bin/bash
# Run 5 (nvidia-h200-x2): host time inside a two-process NCCL program, and the SM clock of every
# single-GPU validation entry (sessions as_found, hot, steady with --clock-probe) plus the
# profile protocol's clock (clock_reference). Writes under $OUT.
set -x
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
date -u; uname -r; nproc
nvidia-smi -q -d POWER,CLOCK,PERFORMANCE,TEMPERATURE > $OUT/smi_before.txt 2>&1
timeout 200 python3 -m lab.host_probe --out $OUT/host_probe.json
date -u
( export CUDA_VISIBLE_DEVICES=0
  timeout 90 python3 -m moesim.calibrate.validate_workloads --device cuda --parts single --clock-probe \
      --out $OUT/session_as_found.json --budget-s 60
  timeout 90 python3 -m moesim.calibrate.validate_workloads --device cuda --parts single --clock-probe \
      --heat-ms 60 --warm-s 5 --out $OUT/session_steady.json --budget-s 80 ) > $OUT/gpu0_log.txt 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  timeout 90 python3 -m moesim.calibrate.validate_workloads --device cuda --parts single --clock-probe \
      --heat-ms 60 --out $OUT/session_hot.json --budget-s 70
  timeout 90 python3 -m lab.clock_reference --out $OUT/clock_reference.json ) > $OUT/gpu1_log.txt 2>&1 &
wait
date -u
cat $OUT/gpu0_log.txt $OUT/gpu1_log.txt
