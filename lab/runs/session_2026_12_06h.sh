#!/bin/bash
# Eighth session of 2026-12-06, first device script: the grouped-GEMM grid again with the fused
# fc1 shapes (2F wide, and its transpose) and with many-expert shapes measured at their largest
# per-expert counts (totals cut to the row / FLOP caps instead of dropped); then Megatron's host
# classes and the torch host classes on the same machine, with the CPU model recorded.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee -a $W/gpu.txt
grep -m1 "model name" /proc/cpuinfo | tee -a $W/gpu.txt; nproc | tee -a $W/gpu.txt
GPU=h100; nvidia-smi -L | grep -q H200 && GPU=h200
timeout 270 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s 3 --budget-s 240 \
    --sections grouped_gemm_v --out $W/${GPU}_grouped.json > $W/grouped_log.txt 2>&1
echo "grouped rc=$? $(date -u +%T)"; grep -v -i warn $W/grouped_log.txt | tail -4
timeout 90 python3 -m moesim.calibrate.measure --device cuda --sections host_megatron --budget-s 60 \
    --out $W/${GPU}_host_megatron.json > $W/host_log.txt 2>&1
echo "host_megatron rc=$? $(date -u +%T)"; grep -v -i warn $W/host_log.txt | tail -3
timeout 100 python3 -m moesim.calibrate.measure --device cuda --heat-ms 20 --preheat-s 1 --budget-s 75 \
    --sections host_classes --out $W/${GPU}_host_classes.json > $W/host_classes_log.txt 2>&1
echo "host_classes rc=$? $(date -u +%T)"; grep -v -i warn $W/host_classes_log.txt | tail -3
