#!/bin/bash
# Thirteenth session (2026-12-07c): the H200 profile's missing sections, measured on a lent H200
# (the H100 profile has them since 2026-12-06/07): eager kernels (non-vectorized glu / prob_mul,
# eager RoPE programs), FlashAttention rows, the grouped grid's fused fc1 and many-expert shapes,
# MoE kernel variants (part 1); the burst clock and the duty curve, host classes (part 2).
# Usage (device): PART=1 bash lab/runs/session_2026_12_07c_h200.sh ; exits 3 on any GPU but an H200.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
nvidia-smi -L | tee $W/gpu_part${PART}.txt; grep -m1 "model name" /proc/cpuinfo | tee -a $W/gpu_part${PART}.txt
nvidia-smi -L | grep -q H200 || { echo "not an H200: nothing run"; exit 3; }
M="python3 -m moesim.calibrate.measure --device cuda"
if [ "$PART" = 1 ]; then
  timeout 240 $M --heat-ms 20 --preheat-s 3 --budget-s 210 --sections eager_kernels --out $W/h200_eager.json > $W/eager_log.txt 2>&1; echo "eager rc=$? $(date -u +%T)"
  timeout 90 $M --heat-ms 20 --preheat-s 2 --budget-s 70 --sections attention_flash --out $W/h200_flash.json > $W/flash_log.txt 2>&1; echo "flash rc=$? $(date -u +%T)"
  timeout 80 $M --heat-ms 20 --preheat-s 2 --budget-s 60 --sections moe_kernels --out $W/h200_moe.json > $W/moe_log.txt 2>&1; echo "moe rc=$? $(date -u +%T)"
  timeout 150 $M --heat-ms 20 --preheat-s 2 --budget-s 130 --sections grouped_gemm_v --out $W/h200_grouped.json > $W/grouped_log.txt 2>&1; echo "grouped rc=$? $(date -u +%T)"
else
  timeout 180 $M --heat-ms 20 --preheat-s 5 --budget-s 150 --sections clock --out $W/h200_clock.json > $W/clock_log.txt 2>&1; echo "clock rc=$? $(date -u +%T)"
  timeout 180 $M --budget-s 150 --sections duty --out $W/h200_duty.json > $W/duty_log.txt 2>&1; echo "duty rc=$? $(date -u +%T)"
  timeout 120 $M --heat-ms 20 --preheat-s 1 --budget-s 95 --sections host_classes --out $W/h200_host_classes.json > $W/host_log.txt 2>&1; echo "host rc=$? $(date -u +%T)"
fi
for f in $W/*_log.txt; do echo "== $f"; grep -v -i warn $f | tail -4; done
