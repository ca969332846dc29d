"""Qwen3-30B-A3B pre-training on 16 H100 as NVIDIA's Megatron-Bridge benchmark ran it, against moesim.

Published (NVIDIA-NeMo/Megatron-Bridge ``docs/performance-summary-archive.md``, "26.02 NeMo
Container", Model Qwen3_30B_a3B, row DGX-H100): 16 GPUs, FP8 (current scaling), GBS 1024, MBS 1,
sequence 4096, FSDP 0, TP 1, PP 2, CP 1, VP 12, EP 8 -> **5,113 tokens/s/GPU, 118 model
TFLOP/s/GPU**; force-balanced, token-dropless. (The 25.11 row, GBS 512, MBS 2, VP 24: 5,275.)
The H100 FP8 recipe of that family sets ``moe_a2a_overlap=False``.

In moesim: 2 DGX H100 nodes, DP 8 x PP 2 with EP 8 inside each node, Megatron's interleaved 1F1B
with 12 chunks per rank (2 layers per virtual stage) over 1024 / 8 = 128 microbatches of one 4K
sequence, balanced routing, Megatron's token movement, FP8 GEMMs on bf16 activations
(``gemm_dtype="fp8"``, priced by the profile's fp8 GEMM rows, each with its operand's quantize
kernels, :mod:`moesim.lowering.fp8_quantize`), ZeRO-1, eager host (the FP8 recipe
names no CUDA graphs), ``--overlap-grad-reduce``. Scenarios: ``published``; ``ep-a2a-overlap``
(the same with ``--overlap-moe-expert-parallel-comm --delay-wgrad-compute``: what the switch
buys here, not a published figure); ``bf16`` (GEMMs in bf16: how much of the prediction rests on
the fp8 rows). Reduced engine (``moesim.scale``).

Run: python -m moesim run experiments/published_qwen3_30b_a3b_h100.py --no-trace --no-plots
Breakdown (compute / communication / exposed / bubble): python -m lab.published_breakdown runs/published_qwen3_30b_a3b_h100
"""
import dataclasses

from moesim.experiment import Comparison, Experiment, MoEOptions, OverlapOptions, ParallelPlan, Scenario
from moesim.memory import MemoryConfig
from moesim.workload.presets import get_model

PUBLISHED_TOKENS_PER_S_PER_GPU = 5113
PUBLISHED_MODEL_TFLOPS_PER_GPU = 118
MODEL = get_model("qwen3-30b-a3b")
GRAD_OVERLAP = OverlapOptions(overlap_grad_reduce=True)

PUBLISHED = Scenario(
    name="published", topology="dgx_h100", nodes=2, model=dataclasses.replace(MODEL, gemm_dtype="fp8"),
    plan=ParallelPlan(tp=1, dp=8, pp=2, vpp=12, ep=8, micro_batch_size=1, num_microbatches=128),
    schedule="interleaved", engine="reduced", host="eager", memory=MemoryConfig(zero_stage=1),
    moe=MoEOptions(token_movement="megatron"), overlap=GRAD_OVERLAP,
    description=f"Megatron-Bridge 26.02 DGX-H100 row: published {PUBLISHED_TOKENS_PER_S_PER_GPU} tokens/s/GPU",
)

EXPERIMENT = Experiment(
    name="published_qwen3_30b_a3b_h100",
    description="Qwen3-30B-A3B, 16 H100, FP8, TP1 PP2 VP12 EP8, GBS 1024 x 4K: Megatron-Bridge's published run",
    scenarios=(
        PUBLISHED,
        dataclasses.replace(PUBLISHED, name="ep-a2a-overlap", overlap=dataclasses.replace(
            GRAD_OVERLAP, overlap_moe_expert_parallel_comm=True, delay_wgrad_compute=True),
            description="what-if: Megatron's EP all-to-all overlap on (not the published setting)"),
        dataclasses.replace(PUBLISHED, name="bf16", model=MODEL,
                            description="what-if: the same in bf16 GEMMs (how much rests on the fp8 rows)"),
    ),
    comparisons=(
        Comparison("published", "ep-a2a-overlap", "--overlap-moe-expert-parallel-comm --delay-wgrad-compute"),
        Comparison("bf16", "published", "fp8 GEMMs against bf16"),
    ),
)
