#!/bin/bash
# Fourth session of 2026-12-06, second device call: harness vs probe vs harness with GC off,
# alternating in one process (lab/harness_vs_probe.py).
export PYTHONUNBUFFERED=1 PYTHONPATH=.
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
timeout 400 python3 lab/harness_vs_probe.py --out $W/harness_vs_probe.json > $W/hvp_log.txt 2>&1
echo "rc=$? $(date -u +%T)"; tail -5 $W/hvp_log.txt
