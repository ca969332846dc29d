#!/bin/bash
# Third device call of the 2026-12-06 third session, whichever single GPU comes: the host-bound
# classes (Megatron movement, torchtitan loop) timed with rounds spread over seconds
# (layer_workloads --round-gap-s 1), so a case does not read one burst of the host's speed state.
# Outputs: $OUT/run.tgz. Run from a snapshot holding moesim/ and lab/.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
date -u
timeout 480 python3 -m moesim.calibrate.layer_workloads --device cuda --out $W/layers_${gpu}_gap.json \
    --budget-s 450 --no-inventory --round-gap-s 1.0 --only megatron,loop > $W/layers_log.txt 2>&1
echo "layers rc=$? $(date -u +%T)"; tail -2 $W/layers_log.txt
tar czf $OUT/run.tgz -C $W .
