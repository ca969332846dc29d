#!/bin/bash
# Second device call of the 2026-12-06 third session, whichever single GPU comes: is the host slower
# early on a fresh machine? lab/host_steady_probe.py at the start and at the end, between them
# host_classes (with host_mix) and every layer workload (steady-state host issue, host_steady_ns).
# Outputs: $OUT/run.tgz. Run from a snapshot holding moesim/ and lab/.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
lscpu | grep -E "Model name|^CPU\(s\)|Thread" | tee -a $W/gpu.txt; uptime | tee -a $W/gpu.txt
top -bn1 | head -15 > $W/top_start.txt
probe() { PYTHONPATH=. timeout 120 python3 lab/host_steady_probe.py --device cuda --out $W/probe_$1.json > $W/probe_$1_log.txt 2>&1
          echo "probe $1 rc=$? $(date -u +%T)"; }
date -u
probe start
timeout 110 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s 2 --budget-s 90 \
    --sections host_classes --out $W/${gpu}_host.json > $W/sections_log.txt 2>&1; echo "host rc=$? $(date -u +%T)"
timeout 200 python3 -m moesim.calibrate.layer_workloads --device cuda --out $W/layers_${gpu}.json \
    --budget-s 170 --no-inventory > $W/layers_log.txt 2>&1; echo "layers rc=$? $(date -u +%T)"
probe end
top -bn1 | head -15 > $W/top_end.txt; uptime | tee -a $W/gpu.txt
grep -E "samples|errors|wrote" $W/sections_log.txt | tail -3; tail -1 $W/layers_log.txt
tar czf $OUT/run.tgz -C $W .
