#!/bin/bash
# Sixteenth session (2026-12-07f), one lent GPU: section grouped_gemm_te (Transformer Engine's
# per-expert cuBLAS GEMMs over 4 streams; bf16, and fp8 with per-tensor scales for the first two
# rounds' vectors) for the GPU's profile; on an H200 also the burst clock and duty curve the H200
# profile lacks (PART=D of session_2026_12_07e.sh, shorter budgets).
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
{ nvidia-smi -L; nvidia-smi --query-gpu=driver_version,clocks.max.sm --format=csv; grep -m1 "model name" /proc/cpuinfo; nproc; } | tee $W/gpu.txt
M="python3 -m moesim.calibrate.measure --device cuda"
# second machine: the section times each call as a CUDA graph's replay under the Timer's protocol
# (heat, L2 flush), as every other row; a one-call check of the capture first
python3 - <<'PY' || exit 1
import torch
from moesim.calibrate import grouped as g
from moesim.calibrate.timing import Timer
t = Timer("cuda", heat_ms=20)
for dt in ("bf16", "fp8"):
    mk = g.randn_big if dt == "bf16" else g.fp8_big
    bufs = tuple(mk(8 * 2048 * 2048, "cuda", i) for i in range(3))
    for lay in ("fwd", "dgrad", "wgrad"):
        print(dt, lay, g._te_graph_time(t, g.te_grouped_call(lay, bufs, [256] * 8, 768, 2048, "cuda")))
PY
if nvidia-smi -L | grep -q H200; then
  timeout 230 $M --heat-ms 20 --preheat-s 2 --budget-s 200 --sections grouped_gemm_te --out $W/h200_te.json > $W/te_log.txt 2>&1
  echo "te rc=$? $(date -u +%T)"
  timeout 100 $M --heat-ms 20 --preheat-s 5 --budget-s 80 --sections clock --out $W/h200_clock.json > $W/clock_log.txt 2>&1; echo "clock rc=$? $(date -u +%T)"
  timeout 100 $M --budget-s 75 --sections duty --out $W/h200_duty.json > $W/duty_log.txt 2>&1; echo "duty rc=$? $(date -u +%T)"
else
  timeout 380 $M --heat-ms 20 --preheat-s 2 --budget-s 340 --sections grouped_gemm_te --out $W/h100_te.json > $W/te_log.txt 2>&1
  echo "te rc=$? $(date -u +%T)"
fi
for f in $W/*_log.txt; do echo "== $f"; grep -v -i warn $f | tail -4; done
python3 - <<'PY'
import json, os, glob, collections
for f in glob.glob(os.environ["OUT"] + "/w/*_te.json"):
    rows = [s for s in json.load(open(f))["samples"] if s["op"] == "grouped_gemm_te"]
    print(f, len(rows), collections.Counter((r["dtype"], r["layout"]) for r in rows))
PY
