#!/bin/bash
# Fourth session of 2026-12-06, first device call: where the eager host time of a Megatron MoE
# forward and a torchtitan loop forward goes, statement by statement (lab/megatron_host_trace.py).
export PYTHONUNBUFFERED=1 PYTHONPATH=.
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
timeout 400 python3 lab/megatron_host_trace.py --device cuda --out $W/megatron_host_trace.json > $W/trace_log.txt 2>&1
echo "trace rc=$? $(date -u +%T)"; tail -20 $W/trace_log.txt
