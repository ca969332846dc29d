"""What the published Megatron-Bridge rows themselves say about time per layer per sequence.

For a run with tensor and context parallelism 1, every GPU spends ``seq / (tokens_per_s_per_gpu x
num_layers)`` seconds per layer per sequence (step / (microbatches per GPU x MBS x layers per GPU)
simplifies to that for any PP / DP / EP). Comparing rows of the same model across releases, GPUs,
micro-batch sizes and token-drop vs dropless separates what the hardware sets from what the
software does, with no simulator involved:

* the same GPU and MBS, token-drop (static shapes, no device-to-host count copies) against dropless
  (Megatron's and DeepEP's dispatch read the received-token counts on the host each layer);
* the same layout on H100 in two containers (26.02 and its patch release 26.02.01);
* H100 against B200 at the same MBS, next to their dense tensor-core peak ratio
  (:data:`moesim.costs.devices.DEVICES`): where the time per layer barely moves while the peak
  grows 2.3x, the GPU's arithmetic is not what sets the pace.

Source of every row: NVIDIA-NeMo/Megatron-Bridge ``docs/performance-summary-archive.md`` and
``docs/performance-summary.md`` (25.09, 25.11, 26.02, 26.02.01, 26.04 containers; each row's
layout as published; the 25.09 table names no precision: "n/a"). Torch-free; prints a table and
the pairs.

Run: python -m lab.published_per_layer
"""
from __future__ import annotations

from dataclasses import dataclass

from moesim.costs.devices import DEVICES


@dataclass(frozen=True)
class Row:
    """One published row (layout columns as the table gives them)."""

    model: str
    release: str
    system: str
    gpus: int
    precision: str
    gbs: int
    mbs: int
    pp: int
    vp: int
    ep: int
    dropless: bool
    tokens_per_s_per_gpu: float


LAYERS = {"qwen3-30b-a3b": 48, "gpt-oss-120b": 36}
SEQ = 4096
ROWS = (
    Row("qwen3-30b-a3b", "25.09", "H100", 16, "n/a", 512, 2, 2, 24, 8, False, 10494),
    Row("qwen3-30b-a3b", "25.11", "H100", 16, "fp8", 512, 2, 2, 24, 8, True, 5275),
    Row("qwen3-30b-a3b", "26.02", "H100", 16, "fp8", 1024, 1, 2, 12, 8, True, 5113),
    Row("qwen3-30b-a3b", "26.02.01", "H100", 16, "fp8", 1024, 1, 2, 12, 8, True, 9058),
    Row("qwen3-30b-a3b", "26.04", "H100", 16, "fp8", 1024, 1, 1, 1, 16, True, 8901),
    Row("qwen3-30b-a3b", "25.09", "B200", 8, "n/a", 512, 1, 1, 1, 8, False, 18066),
    Row("qwen3-30b-a3b", "25.11", "B200", 8, "fp8", 512, 1, 1, 1, 8, True, 9299),
    Row("qwen3-30b-a3b", "26.02", "B200", 8, "fp8", 512, 1, 1, 1, 8, True, 9691),
    Row("qwen3-30b-a3b", "26.02", "GB200", 8, "fp8", 512, 4, 1, 1, 8, True, 26084),
    Row("gpt-oss-120b", "25.11", "H100", 64, "bf16", 512, 4, 4, 1, 8, True, 5630),
    Row("gpt-oss-120b", "26.02", "H100", 64, "bf16", 1280, 1, 4, 1, 8, True, 5993),
    Row("gpt-oss-120b", "26.04", "H100", 64, "bf16", 1280, 1, 4, 1, 8, True, 5810),
    Row("gpt-oss-120b", "25.11", "B200", 64, "bf16", 512, 4, 1, 1, 8, True, 8213),
    Row("gpt-oss-120b", "26.02", "B200", 64, "bf16", 1280, 4, 1, 1, 64, True, 8047),
)


def ms_per_layer_per_sequence(row: Row) -> float:
    """Time one GPU spends per layer per sequence (TP = CP = 1 in every row here)."""
    return 1e3 * SEQ / (row.tokens_per_s_per_gpu * LAYERS[row.model])


def peak_ratio(a: str, b: str, dtype: str) -> float:
    """Dense tensor-core peak of GPU ``b`` over GPU ``a`` for ``dtype``."""
    return DEVICES[b].peak_flops_for(dtype) / DEVICES[a].peak_flops_for(dtype)


def _find(model: str, release: str, system: str, mbs: int | None = None) -> Row:
    return next(r for r in ROWS if r.model == model and r.release == release and r.system == system
                and (mbs is None or r.mbs == mbs))


PAIRS = (
    ("token-drop vs dropless, B200, MBS 1", ("qwen3-30b-a3b", "25.09", "B200"), ("qwen3-30b-a3b", "25.11", "B200")),
    ("token-drop vs dropless, H100, MBS 2", ("qwen3-30b-a3b", "25.09", "H100"), ("qwen3-30b-a3b", "25.11", "H100")),
    ("26.02 vs its patch 26.02.01, H100, same layout", ("qwen3-30b-a3b", "26.02.01", "H100"),
     ("qwen3-30b-a3b", "26.02", "H100")),
    ("B200 vs H100, dropless MBS 1 (Qwen3-30B-A3B)", ("qwen3-30b-a3b", "26.02", "B200"),
     ("qwen3-30b-a3b", "26.02.01", "H100")),
    ("B200 vs H100, dropless MBS 4 (GPT-OSS, EP 8)", ("gpt-oss-120b", "25.11", "B200"), ("gpt-oss-120b", "25.11", "H100")),
    ("H100 MBS 4 vs MBS 1 (GPT-OSS)", ("gpt-oss-120b", "25.11", "H100"), ("gpt-oss-120b", "26.02", "H100")),
)


def main() -> None:
    print(f"{'model':14} {'release':8} {'system':6} {'GPUs':>4} {'prec':5} {'GBS':>5} {'MBS':>3} {'PP':>2} "
          f"{'VP':>3} {'EP':>3} {'routing':9} {'tok/s/GPU':>9} {'ms/layer/seq':>12}")
    for r in ROWS:
        print(f"{r.model:14} {r.release:8} {r.system:6} {r.gpus:>4} {r.precision:5} {r.gbs:>5} {r.mbs:>3} {r.pp:>2} "
              f"{r.vp:>3} {r.ep:>3} {'dropless' if r.dropless else 'tokendrop':9} {r.tokens_per_s_per_gpu:>9,.0f} "
              f"{ms_per_layer_per_sequence(r):>12.2f}")
    print("\npairs (first is the faster row; time ratio slow / fast; peak ratio of the GPUs where they differ):")
    for label, fast_key, slow_key in PAIRS:
        fast, slow = _find(*fast_key), _find(*slow_key)
        tf, ts = ms_per_layer_per_sequence(fast), ms_per_layer_per_sequence(slow)
        peak = "" if fast.system == slow.system else \
            f"; {fast.system}/{slow.system} dense {fast.precision} peak {peak_ratio(slow.system, fast.system, fast.precision):.2f}x"
        print(f"  {label}: {tf:.2f} vs {ts:.2f} ms -> {ts / tf:.2f}x, +{ts - tf:.2f} ms per layer per sequence{peak}")


if __name__ == "__main__":
    main()
