"""Qwen3-30B-A3B pre-training on 16 H100 as NVIDIA's Megatron-Bridge benchmark ran it, against moesim.

Published (NVIDIA-NeMo/Megatron-Bridge ``docs/performance-summary-archive.md``, Model
Qwen3_30B_a3B, row DGX-H100): 16 GPUs, FP8 (current scaling), GBS 1024, MBS 1, sequence 4096,
FSDP 0, TP 1, PP 2, CP 1, VP 12, EP 8, force-balanced, token-dropless:
"26.02 NeMo Container" -> **5,113 tokens/s/GPU, 118 model TFLOP/s/GPU**; "26.02.01 NeMo
Container" (the patch release, same row, same layout columns) -> **9,058 tokens/s/GPU, 208**.
(25.11: GBS 512, MBS 2, VP 24: 5,275; 25.09, token-drop: 10,494; 26.04: PP 1, EP 16: 8,901.)

The recipe of that layout (Megatron-Bridge tag v0.3.0, 2026-02-26, the 26.02 release:
``scripts/performance/configs/qwen/qwen3_workload_base_configs.py``
``QWEN3_30B_A3B_PRETRAIN_CONFIG_H100_FP8_CS_V1`` and ``qwen3_llm_pretrain.py``): PP 2, VP 12,
EP 8, ``moe_flex_dispatcher_backend="deepep"`` (flex dispatcher, Megatron's default 20 SMs),
``moe_a2a_overlap=True`` (``overlap_moe_expert_parallel_comm`` + ``delay_wgrad_compute``), no
recompute (``recompute_granularity=None``), router fusion, the provider's permute fusion, FP8
current scaling with no bf16 first/last layers, distributed optimizer with
``overlap_grad_reduce`` / ``overlap_param_gather``, no CUDA graphs. (On 2026-02-23 the H100
config moved to PP 1, EP 16, HybridEP, no EP overlap: the 26.04 row; the 26.02.01 row still
lists PP 2 VP 12 EP 8, so it is read here as the v0.3.0 recipe on the patched container.)

In moesim: 2 DGX H100 nodes, DP 8 x PP 2 with EP 8 inside each node, Megatron's interleaved 1F1B
with 12 chunks per rank over 128 microbatches of one 4K sequence, balanced routing, DeepEP on 20
SMs with fused permute / router, the EP overlap switches, FP8 GEMMs on bf16 activations
(``gemm_dtype="fp8"``, priced by the profile's fp8 GEMM rows, each with its operand's quantize
kernels, :mod:`moesim.lowering.fp8_quantize`), ZeRO-1, no recompute, eager host,
``--overlap-grad-reduce`` and ``--overlap-param-gather``.
Scenarios: ``published`` (the recipe above); ``tokendrop-25.09`` (the "25.09 NeMo Container"
H100 row, token-drop: **10,494 tokens/s/GPU**, GBS 512, MBS 2, PP 2, VP 24, EP 8; its
``scripts/performance/run_script.py`` at tag v0.1.0rc4 applies ``apply_moe_token_drop``, capacity
factor 1.0 with padding to capacity, the alltoall dispatcher, no EP overlap, no recompute,
``fp8_cs`` at MBS 2. With balanced routing every expert's rows equal its capacity, so moesim
runs it as dropless grouped experts of the same shapes; it still charges the counts' host copy
a padded run does not need, which moves its figure by under 1.5% against ``host="graphs"``);
``alltoall-no-overlap`` (what-if: Megatron's
alltoall dispatcher and unfused token movement without the EP overlap, the configuration this
file simulated before 2026-12-06c); ``bf16`` (the published scenario with bf16 GEMMs: how much
rests on the fp8 rows). Reduced engine (``moesim.scale``).

Run: python -m moesim run experiments/published_qwen3_30b_a3b_h100.py --no-trace --no-plots
Breakdown (compute / communication / exposed / bubble): python -m lab.published_breakdown experiments/published_qwen3_30b_a3b_h100.py
"""
import dataclasses

from moesim.experiment import Comparison, Experiment, MoEOptions, OverlapOptions, ParallelPlan, Scenario
from moesim.memory import MemoryConfig
from moesim.workload.presets import get_model

PUBLISHED_TOKENS_PER_S_PER_GPU = 5113           # 26.02 container
PUBLISHED_MODEL_TFLOPS_PER_GPU = 118
PUBLISHED_PATCH_TOKENS_PER_S_PER_GPU = 9058     # 26.02.01 container, same layout
PUBLISHED_PATCH_MODEL_TFLOPS_PER_GPU = 208
PUBLISHED_TOKENDROP_TOKENS_PER_S_PER_GPU = 10494  # 25.09 container, token-drop, MBS 2
MODEL = get_model("qwen3-30b-a3b")
OVERLAP = OverlapOptions(overlap_grad_reduce=True, overlap_param_gather=True, overlap_moe_expert_parallel_comm=True,
                         delay_wgrad_compute=True, deepep_num_sms=20)

PUBLISHED = Scenario(
    name="published", topology="dgx_h100", nodes=2, model=dataclasses.replace(MODEL, gemm_dtype="fp8"),
    plan=ParallelPlan(tp=1, dp=8, pp=2, vpp=12, ep=8, micro_batch_size=1, num_microbatches=128),
    schedule="interleaved", engine="reduced", host="eager", memory=MemoryConfig(zero_stage=1),
    moe=MoEOptions(dispatcher="deepep", token_movement="fused", grouped_gemm="te"), overlap=OVERLAP,
    description=f"Megatron-Bridge v0.3.0 recipe, DGX-H100 row: published {PUBLISHED_TOKENS_PER_S_PER_GPU} (26.02) "
                f"and {PUBLISHED_PATCH_TOKENS_PER_S_PER_GPU} (26.02.01) tokens/s/GPU",
)

EXPERIMENT = Experiment(
    name="published_qwen3_30b_a3b_h100",
    description="Qwen3-30B-A3B, 16 H100, FP8, TP1 PP2 VP12 EP8, GBS 1024 x 4K: Megatron-Bridge's published run",
    scenarios=(
        PUBLISHED,
        dataclasses.replace(PUBLISHED, name="tokendrop-25.09",
                            plan=dataclasses.replace(PUBLISHED.plan, micro_batch_size=2, num_microbatches=32, vpp=24),
                            moe=MoEOptions(token_movement="fused", grouped_gemm="te"),
                            overlap=OverlapOptions(overlap_grad_reduce=True),
                            description=f"25.09 token-drop row (capacity 1.0, padded; balanced routing gives the "
                                        f"same shapes): published {PUBLISHED_TOKENDROP_TOKENS_PER_S_PER_GPU} tokens/s/GPU"),
        dataclasses.replace(PUBLISHED, name="alltoall-no-overlap",
                            moe=MoEOptions(token_movement="megatron", grouped_gemm="te"),
                            overlap=OverlapOptions(overlap_grad_reduce=True),
                            description="what-if: alltoall dispatcher, Megatron's unfused token movement, "
                                        "no EP overlap (this file's scenario before 2026-12-06c)"),
        dataclasses.replace(PUBLISHED, name="bf16", model=MODEL,
                            description="what-if: the same in bf16 GEMMs (how much rests on the fp8 rows)"),
    ),
    comparisons=(
        Comparison("alltoall-no-overlap", "published", "DeepEP + EP overlap against alltoall without it"),
        Comparison("bf16", "published", "fp8 GEMMs against bf16"),
    ),
)
