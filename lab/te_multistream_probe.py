"""Transformer Engine's grouped GEMM on Hopper, against ``torch._grouped_mm``, GPU time only. (GPU,
torch; nothing here feeds a prediction.)

Megatron-Core's ``TEGroupedMLP`` runs its expert GEMMs through TE's ``general_grouped_gemm``; on
Hopper, unless ``NVTE_USE_CUTLASS_GROUPED_GEMM=1``, TE's ``nvte_multi_tensor_gemm`` takes its cuBLAS
path (``multi_stream_cublas_gemm`` in ``transformer_engine/common/gemm/cublaslt_gemm.cu``): the
caller's stream records an event, 4 compute streams wait for it, GEMM ``i`` runs on stream ``i % 4``,
then the caller's stream waits for all 4. moesim prices grouped GEMMs from ``torch._grouped_mm`` (one
CUTLASS kernel). This replays TE's stream pattern with ``torch.mm`` per expert (cuBLAS) and times,
per expert shape of the published Megatron runs at their layouts, forward (x w^T), dgrad and wgrad:
(a) ``torch._grouped_mm``, (b) TE's 4-stream pattern, (c) the experts one after another on one
stream. The host is kept ahead of the GPU (a ``torch.cuda._sleep`` queued first), so the times are
the GPU's.

    python3 -m lab.te_multistream_probe --out FILE
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch


STREAMS = 4
# (name, local experts, rows per expert, hidden K, expert width N per projection): fc1 is K -> 2F
# (gate and up fused, Megatron's linear_fc1), fc2 F -> K; balanced routing at the run's layout
SHAPES = [
    ("gpt_oss_120b_ep8.fc1", 16, 1024, 2880, 5760), ("gpt_oss_120b_ep8.fc2", 16, 1024, 2880, 2880),
    ("qwen3_30b_a3b_ep8.fc1", 16, 256, 2048, 1536), ("qwen3_30b_a3b_ep8.fc2", 16, 256, 768, 2048),
    ("qwen3_30b_a3b_ep8_mbs2.fc1", 16, 512, 2048, 1536), ("qwen3_30b_a3b_ep8_mbs2.fc2", 16, 512, 768, 2048),
    ("qwen3_235b_ep32f.fc1", 4, 4096, 4096, 3072), ("qwen3_235b_ep32f.fc2", 4, 4096, 1536, 4096),
    ("deepseek_v3_ep64f.fc1", 4, 4096, 7168, 4096), ("deepseek_v3_ep64f.fc2", 4, 4096, 2048, 7168),
]


TE_REPEATS = 8


def _te_time_ns(fn: Callable[[], None], groups: int) -> dict:
    """GPU time of one TE-pattern call on a GPU: the host is kept ahead of the GPU by a queued spin,
    so the per-group launches do not show (TE issues them from C++; the section's Timer would
    time the Python issue loop); median of ``TE_REPEATS``."""
    import statistics

    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(TE_REPEATS):
        torch.cuda._sleep(1_000_000 + 40_000 * groups)   # ~0.5 ms + ~20 us a group of GPU spin
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e6)
    times.sort()
    return {"time_ns": round(statistics.median(times), 1), "repeats": TE_REPEATS,
            "p25_ns": round(times[len(times) // 4], 1), "p75_ns": round(times[3 * len(times) // 4], 1)}


def _time(fn, groups: int = 16) -> float:
    """Median GPU time of ``fn`` in us, the host kept ahead by a queued spin (no heat, L2 warm: this
    probe's own protocol, the same for both sides of each ratio)."""
    return _te_time_ns(fn, groups)["time_ns"] / 1e3


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--grid", action="store_true", help="a grid of expert counts x rows x (K, N) instead")
    a = ap.parse_args(argv)
    shapes = SHAPES if not a.grid else [
        (f"grid.e{e}.r{r}.k{k}.n{n}", e, r, k, n) for (k, n) in ((2048, 1536), (768, 2048), (4096, 3072))
        for e in (8, 16, 32, 64) for r in (64, 256, 1024, 2048)]
    streams = [torch.cuda.Stream() for _ in range(STREAMS)]
    rows = []
    g = torch.Generator(device="cuda").manual_seed(7)
    for name, experts, rows_per, k, n in shapes:
        t = experts * rows_per
        x = torch.randn(t, k, device="cuda", dtype=torch.bfloat16, generator=g)
        w = torch.randn(experts, n, k, device="cuda", dtype=torch.bfloat16, generator=g)
        dy = torch.randn(t, n, device="cuda", dtype=torch.bfloat16, generator=g)
        offs = torch.arange(1, experts + 1, device="cuda", dtype=torch.int32) * rows_per
        xs, dys = list(x.split(rows_per)), list(dy.split(rows_per))
        per = {  # one expert's GEMM, as TE's GroupedLinear calls it
            "fwd": lambda i: torch.mm(xs[i], w[i].t()),
            "dgrad": lambda i: torch.mm(dys[i], w[i]),
            "wgrad": lambda i: torch.mm(xs[i].t(), dys[i]),
        }
        grouped = {
            "fwd": lambda: torch._grouped_mm(x, w.transpose(-2, -1), offs=offs),
            "dgrad": lambda: torch._grouped_mm(dy, w, offs=offs),
            "wgrad": lambda: torch._grouped_mm(x.t(), dy, offs=offs),
        }
        for direction, one in per.items():
            def te_pattern(one=one) -> None:
                main = torch.cuda.current_stream()
                ev = torch.cuda.Event()
                ev.record(main)
                used = streams[:min(STREAMS, experts)]
                for s in used:
                    s.wait_event(ev)
                for i in range(experts):
                    with torch.cuda.stream(streams[i % STREAMS]):
                        one(i)
                for s in used:
                    done = torch.cuda.Event()
                    done.record(s)
                    main.wait_event(done)

            def serial(one=one) -> None:
                for i in range(experts):
                    one(i)

            for fn in (grouped[direction], te_pattern, serial):   # warm-up: kernels chosen, memory pooled
                for _ in range(3):
                    fn()
            torch.cuda.synchronize()
            us = {"grouped_mm": _time(grouped[direction], experts), "te_4_streams": _time(te_pattern, experts),
                  "one_stream": _time(serial, experts)}
            flops = 2.0 * t * k * n
            rows.append({"shape": name, "direction": direction, "experts": experts, "rows_per_expert": rows_per,
                         "k": k, "n": n, **{f"{key}_us": round(v, 2) for key, v in us.items()},
                         "te_over_grouped": round(us["te_4_streams"] / us["grouped_mm"], 3),
                         "tflops_grouped": round(flops / us["grouped_mm"] / 1e6, 1),
                         "tflops_te": round(flops / us["te_4_streams"] / 1e6, 1)})
            r = rows[-1]
            print(f"{name:<28}{direction:<6} grouped {r['grouped_mm_us']:>8.1f} us  TE 4 streams "
                  f"{r['te_4_streams_us']:>8.1f}  one stream {r['one_stream_us']:>8.1f}  TE/grouped "
                  f"{r['te_over_grouped']:.3f}", flush=True)
    Path(a.out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                       "cuda": torch.version.cuda, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
