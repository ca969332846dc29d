#!/bin/bash
# Fourth device call of the 2026-12-06 third session: Kineto traces (CPU ops with shapes, CUDA
# kernels) of the Megatron t1024 forward, uniform and Zipf-1 routing, Qwen3 and DeepSeek shapes:
# why is it predicted 15-39% low, and why does skew add up to 57% measured?
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
timeout 200 python3 -m moesim.calibrate.layer_workloads --device cuda --out $W/layers_traced.json --budget-s 120 \
  --no-inventory --profile-trace $W/traces --trace-all \
  --only qwen3_30b_a3b.megatron.grouped.scatter_add.t1024.uniform.fwd,qwen3_30b_a3b.megatron.grouped.scatter_add.t1024.zipf1.fwd,deepseek_v2_lite.megatron.grouped.scatter_add.t1024.uniform.fwd,deepseek_v2_lite.megatron.grouped.scatter_add.t1024.zipf1.fwd \
  > $W/layers_log.txt 2>&1; echo "layers rc=$? $(date -u +%T)"; tail -6 $W/layers_log.txt
gzip -q $W/traces/*.json
tar czf $OUT/run.tgz -C $W .
