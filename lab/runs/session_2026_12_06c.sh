#!/bin/bash
# First device call of the 2026-12-06 third session. Whichever single GPU comes:
# - both: lab/host_steady_probe.py (host time of an iteration right after a sync vs in steady
#   state; per-call host time after a sync, after warm calls, after an .item());
# - H100: Kineto traces (CPU ops with shapes) of the Megatron t1024 and loop t1024 cases;
# - H200: what lab/runs/session_2026_12_06b_third.sh does (the H200 profile's missing sections and
#   the layer workloads).
# Outputs: $OUT/probe.json and $OUT/run.tgz. Run from a snapshot holding moesim/ and lab/.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
gpu=$(nvidia-smi -L | grep -q H200 && echo h200 || echo h100); echo "gpu=$gpu" | tee -a $W/gpu.txt
lscpu | grep -E "Model name|MHz|^CPU\(s\)" | tee -a $W/gpu.txt
date -u
PYTHONPATH=. timeout 150 python3 lab/host_steady_probe.py --device cuda --out $OUT/probe.json > $W/probe_log.txt 2>&1
echo "probe rc=$? $(date -u +%T)"; cut -c1-400 $W/probe_log.txt
if [ $gpu = h200 ]; then
  OUT=$W bash lab/runs/session_2026_12_06b_third.sh
  mv $W/run.tgz $OUT/run_h200.tgz
else
  timeout 100 python3 -m moesim.calibrate.layer_workloads --device cuda --out $W/layers_traced.json --budget-s 60 \
    --no-inventory --profile-trace $W/traces --trace-all \
    --only deepseek_v2_lite.megatron.grouped.scatter_add.t1024.uniform,qwen3_30b_a3b.torchtitan.loop.scatter_add.t1024.uniform,qwen3_30b_a3b.torchtitan.grouped.scatter_add.t1024.uniform.fwd \
    > $W/layers_log.txt 2>&1; echo "layers rc=$? $(date -u +%T)"; tail -3 $W/layers_log.txt
  gzip -q $W/traces/*.json
fi
tar czf $OUT/run.tgz -C $W .
ls -la $OUT
