"""GPT-OSS 120B pre-training on 64 H100 as NVIDIA's Megatron-Bridge benchmark ran it, against moesim.

Published (NVIDIA-NeMo/Megatron-Bridge ``docs/performance-summary-archive.md``, "26.02 NeMo
Container", Model GPT OSS 120B, row DGX-H100): 64 GPUs, BF16, GBS 1280, MBS 1, sequence 4096,
FSDP 0, TP 1, PP 4, CP 1, VP n/a, EP 8 -> **5,993 tokens/s/GPU, 163 model TFLOP/s/GPU**; "we
force-balance the token distribution among experts and all benchmarks are token-dropless".
The recipe (``scripts/performance/configs/gpt_oss/gpt_oss_workload_base_configs.py``,
``GPT_OSS_120B_PRETRAIN_CONFIG_H100_BF16_V2``): EP 8, PP 4, MBS 1, GBS 1280,
``recompute_modules=["layernorm", "moe_act"]``, no ``moe_a2a_overlap``, no CUDA graphs (checked at
Megatron-Bridge tag v0.3.0, the 26.02 release: ``gpt_oss_llm_pretrain.py`` adds
``moe_router_fusion`` and force balancing; the model provider ``GPTOSSProvider`` keeps Megatron's
``alltoall`` dispatcher with ``moe_permute_fusion=True``, ``moe_grouped_gemm``, biases, the
quick-GELU GLU with clamp 7.0 and offset 1.0, sinks (``softmax_type="learnable"``), 128-token
windows on alternate layers; ``overlap_grad_reduce`` / ``overlap_param_gather`` on).

In moesim: 8 DGX H100 nodes (``dgx_h100``), DP 16 x PP 4 with EP 8 inside each node, 1F1B over
1280 / 16 = 80 microbatches of one 4K sequence, balanced routing (forced balance), fused router
and permute (``token_movement="fused"``; before 2026-12-06c this file used Megatron's unfused
movement, which the recipe does not run), distributed optimizer (ZeRO-1), selective recompute of
layernorm and moe_act, ``--overlap-grad-reduce`` and ``--overlap-param-gather``, the calibrated H100 profile, an eager host (no CUDA graphs in this recipe).
Scenarios: ``published`` (as above) and ``graphs-host`` (the same with the host never behind,
to show what the eager host costs). Reduced engine (``moesim.scale``; each result lists what it reduced).

Run: python -m moesim run experiments/published_gpt_oss_120b_h100.py --no-trace --no-plots
Breakdown (compute / communication / exposed / bubble): python -m lab.published_breakdown runs/published_gpt_oss_120b_h100
"""
import dataclasses

from moesim.experiment import Comparison, Experiment, MoEOptions, OverlapOptions, ParallelPlan, Scenario
from moesim.memory import MemoryConfig

PUBLISHED_TOKENS_PER_S_PER_GPU = 5993
PUBLISHED_MODEL_TFLOPS_PER_GPU = 163

PUBLISHED = Scenario(
    name="published", topology="dgx_h100", nodes=8, model="gpt-oss-120b",
    plan=ParallelPlan(tp=1, dp=16, pp=4, ep=8, micro_batch_size=1, num_microbatches=80),
    schedule="1f1b", engine="reduced", host="eager",
    memory=MemoryConfig(recompute="selective", recompute_modules=("layernorm", "moe_act"), zero_stage=1),
    moe=MoEOptions(token_movement="fused", grouped_gemm="te"),
    overlap=OverlapOptions(overlap_grad_reduce=True, overlap_param_gather=True),
    description=f"Megatron-Bridge 26.02 DGX-H100 row: published {PUBLISHED_TOKENS_PER_S_PER_GPU} tokens/s/GPU",
)

EXPERIMENT = Experiment(
    name="published_gpt_oss_120b_h100",
    description="GPT-OSS 120B, 64 H100, BF16, TP1 PP4 EP8, GBS 1280 x 4K: Megatron-Bridge's published run",
    scenarios=(
        PUBLISHED,
        dataclasses.replace(PUBLISHED, name="graphs-host", host="graphs",
                            description="the same, the host never behind the GPU (what eager issue costs)"),
    ),
    comparisons=(Comparison("published", "graphs-host", "what moesim's eager host model costs this run"),),
)
