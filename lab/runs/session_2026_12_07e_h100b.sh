#!/bin/bash
# Fifteenth session (2026-12-07e), second H100 script: lab/burst_length_probe.py at GEMM shares 0.7
# and 0.5 (does the GEMM slowdown depend on the GEMM burst length, settled and in a short run?).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
{ nvidia-smi -L; grep -m1 "model name" /proc/cpuinfo; nproc; } | tee $W/gpu_b.txt
for s in 0.7 0.5; do
  timeout 150 python3 -m lab.burst_length_probe --share $s --out $W/burst_share$s.json 2>&1 | grep -v -i warn
done
timeout 120 python3 -m lab.te_multistream_probe --out $W/te_multistream.json 2>&1 | grep -v -i warn
