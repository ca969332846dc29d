"""The published-run analyses: per-layer time from a published row, the sliding-window tile count,
and the recipe flags the Qwen3-30B-A3B comparison simulates (Megatron-Bridge v0.3.0)."""
from __future__ import annotations

import pytest

from lab.layer_gap import _band_tiles
from lab.published_per_layer import LAYERS, ROWS, SEQ, ms_per_layer_per_sequence
from moesim.experiment import load_experiment


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.model}-{r.release}-{r.system}")
def test_per_layer_time_is_the_step_over_its_layer_microbatches(row) -> None:
    """seq / (tokens/s/GPU x layers) equals step / (microbatches per GPU x MBS x layers per GPU)
    for TP = CP = 1, whatever PP, DP and EP."""
    step_s = row.gbs * SEQ / (row.tokens_per_s_per_gpu * row.gpus)
    dp = row.gpus // row.pp
    per_gpu = row.gbs // (dp * row.mbs) * row.mbs * LAYERS[row.model] // row.pp
    assert ms_per_layer_per_sequence(row) == pytest.approx(1e3 * step_s / per_gpu, rel=1e-12)


def test_qwen3_30b_26_02_row_is_the_known_step() -> None:
    """26.02, 5,113 tokens/s/GPU on 16 GPUs at GBS 1024 x 4K: a 51.3 s step, 16.7 ms per layer per sequence."""
    row = next(r for r in ROWS if r.model == "qwen3-30b-a3b" and r.release == "26.02" and r.system == "H100")
    assert 1024 * SEQ / (row.tokens_per_s_per_gpu * row.gpus) == pytest.approx(51.27, abs=0.01)
    assert ms_per_layer_per_sequence(row) == pytest.approx(16.69, abs=0.01)


@pytest.mark.parametrize("seq,window,tiles", [
    (4096, 4096, 32 * 33 // 2),   # causal: query tile i visits key tiles 0..i
    (4096, 8192, 32 * 33 // 2),   # a window past the sequence is the causal kernel
    (4096, 128, 63),              # tile 0 visits one key tile, every later one two
    (4096, 1, 32),                # the diagonal only
    (256, 128, 3),
])
def test_band_tiles_count_the_key_tiles_a_block_skipping_kernel_visits(seq, window, tiles) -> None:
    assert _band_tiles(seq, window) == tiles


def test_qwen3_30b_comparison_simulates_the_v0_3_0_recipe() -> None:
    """QWEN3_30B_A3B_PRETRAIN_CONFIG_H100_FP8_CS_V1 at Megatron-Bridge v0.3.0: DeepEP (20 SMs),
    moe_a2a_overlap (EP overlap + delayed wgrad), fused permute / router, no recompute, fp8."""
    exp = load_experiment("experiments/published_qwen3_30b_a3b_h100.py")
    scn = next(s for s in exp.scenarios if s.name == "published")
    assert (scn.moe.dispatcher, scn.moe.token_movement) == ("deepep", "fused")
    assert scn.overlap.overlap_moe_expert_parallel_comm and scn.overlap.delay_wgrad_compute
    assert scn.overlap.deepep_num_sms == 20
    assert scn.memory.recompute == "none"
    assert scn.model.gemm_dtype == "fp8"
    assert (scn.plan.pp, scn.plan.vpp, scn.plan.ep, scn.plan.micro_batch_size, scn.plan.num_microbatches) == \
        (2, 12, 8, 1, 128)
