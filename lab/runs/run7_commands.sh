#!/bin/bash
# Run 7 (nvidia-h200-x2): the host-speed reference (host probe and the profile's per-call host
# measurement alternated in the same 2-process NCCL program), then the distributed validation
# session with the host probe in each rank's process before and after the timed workloads.
# Writes under $OUT.
set -x
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
date -u; uname -r; nproc
timeout 150 python3 -m lab.host_reference --out $OUT/host_reference.json --alternations 3
date -u
timeout 240 python3 -m moesim.calibrate.validate_workloads --device cuda --parts distributed \
    --out $OUT/session_distributed.json --budget-s 200
date -u
