#!/bin/bash
# Sixteenth session (2026-12-07f), one lent H100: section grouped_gemm_te (Transformer Engine's
# per-expert cuBLAS GEMMs over 4 streams; bf16, and fp8 with per-tensor scales for the first two
# rounds' vectors) for moesim/profiles/h100_sxm.json.
export PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p $W
{ nvidia-smi -L; nvidia-smi --query-gpu=driver_version,clocks.max.sm --format=csv; grep -m1 "model name" /proc/cpuinfo; nproc; } | tee $W/gpu.txt
M="python3 -m moesim.calibrate.measure --device cuda"
timeout 330 $M --heat-ms 20 --preheat-s 2 --budget-s 300 --sections grouped_gemm_te --out $W/h100_te.json > $W/te_log.txt 2>&1
echo "te rc=$? $(date -u +%T)"
grep -v -i warn $W/te_log.txt | tail -5
python3 - <<'PY'
import json, os, collections
d = json.load(open(os.environ["OUT"] + "/w/h100_te.json"))
rows = [s for s in d["samples"] if s["op"] == "grouped_gemm_te"]
print(len(rows), collections.Counter((r["dtype"], r["layout"]) for r in rows))
PY
