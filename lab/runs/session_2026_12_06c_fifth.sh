#!/bin/bash
# Fifth device call of the 2026-12-06 third session, whichever single GPU comes: every layer
# workload (steady-state host protocol), for a second fresh machine of that kind.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
timeout 230 python3 -m moesim.calibrate.layer_workloads --device cuda --out $W/layers_${gpu}.json \
    --budget-s 200 --no-inventory > $W/layers_log.txt 2>&1; echo "layers rc=$? $(date -u +%T)"; tail -1 $W/layers_log.txt
