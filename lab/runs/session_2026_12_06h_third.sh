#!/bin/bash
# Eighth session of 2026-12-06, third device script: GEMM time against GEMM duty (power-limited
# clock: lab/duty_clock_probe.py), then Megatron-Core's MoELayer cases again with kernel_times
# taken from the last of five back-to-back iterations (the steady clock, not an idle GPU's boost),
# after Megatron's layer overhead probe at 8, 32 and 128 experts (lab/mcore_overhead_vs_experts.py).
# Not run in its session: twelve tries on nvidia-h100-x1 / nvidia-h200 got no machine.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt; grep -m1 "model name" /proc/cpuinfo | tee -a $W/gpu.txt
GPU=h100; nvidia-smi -L | grep -q H200 && GPU=h200
timeout 200 python3 -m lab.duty_clock_probe --out $W/${GPU}_duty.json --settle-s 3 > $W/duty_log.txt 2>&1
echo "duty rc=$? $(date -u +%T)"; grep -v -i warn $W/duty_log.txt | cut -c1-220 | tail -30
timeout 90 python3 -m lab.mcore_overhead_vs_experts --out $W/${GPU}_overhead_vs_experts.json > $W/overhead_log.txt 2>&1
echo "overhead rc=$? $(date -u +%T)"; grep -v -i warn $W/overhead_log.txt | tail -12
timeout 200 python3 -m lab.mcore_moe_workloads --device cuda --budget-s 170 --out $W/${GPU}_mcore.json > $W/mcore_log.txt 2>&1
echo "mcore rc=$? $(date -u +%T)"; grep -v -i warn $W/mcore_log.txt | tail -5
