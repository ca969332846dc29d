#!/bin/bash
# Run 9 (nvidia-h200, one GPU): the event-region cost of chained kernels and the clock-bound share
# of memory kernels (lab.chain_probe), both at boost clocks and under the profile's
# protocol. Writes under $OUT.
# Run as: bash lab/runs/run9_commands.sh 2>&1 | tee $OUT/log.txt
set -x
export PYTHONUNBUFFERED=1
date -u; uname -r; nproc
nvidia-smi --query-gpu=index,name,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv
timeout 300 python3 -m lab.chain_probe --out $OUT/chain_probe.json
date -u
