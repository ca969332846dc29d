#!/bin/bash
# Fifteenth session (2026-12-07e). On an H200: the H200 profile's missing sections (PART=A: eager
# kernels, FlashAttention rows, MoE kernel variants; PART=B: the grouped grid's fused fc1 and
# many-expert shapes, three host_after_sync runs; PART=C: burst clock, duty curve, host classes;
# PART=D: burst clock and duty curve on shorter budgets).
# On an H100: lab/runs/session_2026_12_07e_h100.sh.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
{ nvidia-smi -L; grep -m1 "model name" /proc/cpuinfo; nproc; grep -m1 "cpu MHz" /proc/cpuinfo; } | tee $W/gpu_${PART}.txt
M="python3 -m moesim.calibrate.measure --device cuda"
if nvidia-smi -L | grep -q H200; then
  case "$PART" in
  A) timeout 240 $M --heat-ms 20 --preheat-s 3 --budget-s 210 --sections eager_kernels --out $W/h200_eager.json > $W/eager_log.txt 2>&1; echo "eager rc=$? $(date -u +%T)"
     timeout 90 $M --heat-ms 20 --preheat-s 2 --budget-s 70 --sections attention_flash --out $W/h200_flash.json > $W/flash_log.txt 2>&1; echo "flash rc=$? $(date -u +%T)"
     timeout 80 $M --heat-ms 20 --preheat-s 2 --budget-s 60 --sections moe_kernels --out $W/h200_moe.json > $W/moe_log.txt 2>&1; echo "moe rc=$? $(date -u +%T)";;
  B) timeout 150 $M --heat-ms 20 --preheat-s 2 --budget-s 130 --sections grouped_gemm_v --out $W/h200_grouped.json > $W/grouped_log.txt 2>&1; echo "grouped rc=$? $(date -u +%T)"
     for i in 1 2 3; do
       timeout 60 $M --budget-s 40 --sections host_after_sync --out $W/h200_after_sync_$i.json > $W/sync_log_$i.txt 2>&1; echo "sync $i rc=$?"; sleep 5
     done;;
  C) timeout 180 $M --heat-ms 20 --preheat-s 5 --budget-s 150 --sections clock --out $W/h200_clock.json > $W/clock_log.txt 2>&1; echo "clock rc=$? $(date -u +%T)"
     timeout 180 $M --budget-s 150 --sections duty --out $W/h200_duty.json > $W/duty_log.txt 2>&1; echo "duty rc=$? $(date -u +%T)"
     timeout 120 $M --heat-ms 20 --preheat-s 1 --budget-s 95 --sections host_classes --out $W/h200_host_classes.json > $W/host_log.txt 2>&1; echo "host rc=$? $(date -u +%T)";;
  D) timeout 110 $M --heat-ms 20 --preheat-s 5 --budget-s 90 --sections clock --out $W/h200_clock.json > $W/clock_log.txt 2>&1; echo "clock rc=$? $(date -u +%T)"
     timeout 100 $M --budget-s 80 --sections duty --out $W/h200_duty.json > $W/duty_log.txt 2>&1; echo "duty rc=$? $(date -u +%T)";;
  esac
  for f in $W/*_log*.txt; do echo "== $f"; grep -v -i warn $f | tail -3; done
else
  bash lab/runs/session_2026_12_07e_history.sh
fi
