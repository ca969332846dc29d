#!/bin/bash
# Run 15 (nvidia-h200-x2): run 13 repeated on a fresh machine (protocol v2 with MoE telemetry), to test whether a fully instrumented set stays within 15%.
# v2 = v1 (run 8) plus: single-GPU repeats start after a 500 us GPU-side wait that follows the L2
# flush (--lead-us 500: the host is always ahead of the timed op, so a region of short kernels has
# no launch gaps), and collectives timed in 3 interleaved rounds with, in every round and the same
# processes, eager loops at 64 KiB and 256 KiB (not validation sizes) that calibrate each op's
# eager host interval (--collective-rounds 3 --host-cal-sizes 65536,262144).
# Single-GPU entries with the SM clock per case (as_found and @steady on GPU 0, @hot on GPU 1),
# then the distributed entries with the in-process host probe in each rank. Writes under $OUT.
# Run as: bash lab/runs/run15_commands.sh 2>&1 | tee $OUT/log.txt
set -x
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
date -u; uname -r; nproc
nvidia-smi --query-gpu=index,name,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv
V2="--lead-us 500"
( export CUDA_VISIBLE_DEVICES=0
  timeout 90 python3 -m moesim.calibrate.validate_workloads --device cuda --parts single --clock-probe $V2 \
      --out $OUT/session_as_found.json --budget-s 60
  timeout 100 python3 -m moesim.calibrate.validate_workloads --device cuda --parts single --clock-probe $V2 \
      --heat-ms 60 --warm-s 5 --out $OUT/session_steady.json --budget-s 80 ) > /tmp/gpu0_log.txt 2>&1 &
( export CUDA_VISIBLE_DEVICES=1
  timeout 90 python3 -m moesim.calibrate.validate_workloads --device cuda --parts single --clock-probe $V2 \
      --heat-ms 60 --out $OUT/session_hot.json --budget-s 70 ) > /tmp/gpu1_log.txt 2>&1 &
wait
date -u
cat /tmp/gpu0_log.txt /tmp/gpu1_log.txt
timeout 240 python3 -m moesim.calibrate.validate_workloads --device cuda --parts distributed \
    --collective-rounds 3 --host-cal-sizes 65536,262144 --moe-repeats 30 --moe-telemetry --out $OUT/session_distributed.json --budget-s 210
date -u
