"""Qwen3-235B-A22B pre-training on 256 H100 as NVIDIA's Megatron-MoE-ModelZoo ran it, against moesim.

Published (github.com/yanring/Megatron-MoE-ModelZoo ``best_practice/qwen3/readme.md``, "Performance
Results / H100", 256 H100, NVLink 4, InfiniBand 8 x 50 GB/s; commit e865051 of the repository),
"Cross-node EP strategy" rows, code moe_dev(f3e6c5): 235B, DeepEP, BF16, 256 GPUs, seq 4096, TP 2,
CP 1, EP 32, PP 8, EDP 1, ETP 1, VPP 4, DP 16, MBS 1, GBS 2048, GA 128, recompute "norm, act" ->
**19.7 s per step, 245 TFLOP/s/GPU**; the same "+1f1b overlap" -> **17.6 s, 276 TFLOP/s/GPU**.
At 2,048 x 4,096 tokens a step: 19.7 s = **1,663 tokens/s/GPU**, 17.6 s = **1,862**.
The launch (``best_practice/qwen3/run_h100_235b.sh`` with ``sbatch_benchmarking.sh`` and
``model_configs/benchmarking/Qwen3-235B-A22B.yaml``): ``--recompute-granularity selective
--recompute-modules moe_act layernorm --moe-router-force-load-balancing``, DeepEP
(``--moe-token-dispatcher-type flex --moe-flex-dispatcher-backend deepep``, Megatron's default 20
SMs), PR=bf16 adds ``--tp-comm-overlap``, ``--sequence-parallel``, ``--use-distributed-optimizer
--overlap-grad-reduce --overlap-param-gather``, ``--moe-permute-fusion --moe-router-fusion``,
``--moe-grouped-gemm``, CUDA graphs only of ``moe_router moe_preprocess``; A2A_OVERLAP=1 adds
``--overlap-moe-expert-parallel-comm --delay-wgrad-compute`` (the "+1f1b overlap" row).

In moesim: 32 DGX H100 nodes, TP 2 x DP 16 x PP 8, Megatron's interleaved 1F1B with 4 chunks per
rank over 128 microbatches of one 4K sequence, balanced routing (force-balanced), DeepEP dispatch on
20 SMs, fused permute / router, the memory options of
``moesim.memory.published.PUBLISHED_LAYOUTS["qwen3-235b-256-h100"]``, eager host (the recipe graphs
only the router and the preprocess). EP 32 is folded over TP 2 x DP 16 as Megatron does with expert
TP 1 (``ep_layout="folded"``: each EP group 16 whole TP groups on 4 consecutive nodes, 4 experts a
GPU, expert-DP 1). The 94 layers split over 32 virtual stages as moesim does (first 30 stages 3
layers, the last 2 stages 2), not with Megatron's embedding and loss counted as layers; the memory
budget counts them Megatron's way. Scenarios: ``published`` (the 19.7 s row) and ``ep-a2a-overlap``
(the 17.6 s row). Reduced engine (``moesim.scale``).

Run: python -m moesim run experiments/published_qwen3_235b_h100.py --no-trace --no-plots
Breakdown (compute / communication / exposed / bubble): python -m lab.published_breakdown experiments/published_qwen3_235b_h100.py
"""
import dataclasses

from moesim.experiment import Comparison, Experiment, MoEOptions, OverlapOptions, ParallelPlan, Scenario
from moesim.memory.published import PUBLISHED_LAYOUTS
from moesim.workload.presets import get_model

PUBLISHED_STEP_S = 19.7
PUBLISHED_STEP_OVERLAP_S = 17.6
GLOBAL_BATCH, SEQ_LEN, GPUS = 2048, 4096, 256
PUBLISHED_TOKENS_PER_S_PER_GPU = round(GLOBAL_BATCH * SEQ_LEN / (PUBLISHED_STEP_S * GPUS))
PUBLISHED_TOKENS_PER_S_PER_GPU_OVERLAP = round(GLOBAL_BATCH * SEQ_LEN / (PUBLISHED_STEP_OVERLAP_S * GPUS))
LAYOUT = PUBLISHED_LAYOUTS["qwen3-235b-256-h100"]
OVERLAP = OverlapOptions(tp_comm_overlap=True, overlap_grad_reduce=True, overlap_param_gather=True, deepep_num_sms=20)

PUBLISHED = Scenario(
    name="published", topology="dgx_h100", nodes=32, model=get_model(LAYOUT.model),
    plan=ParallelPlan(tp=2, dp=16, pp=8, vpp=4, ep=32, ep_layout="folded", micro_batch_size=1, num_microbatches=128),
    schedule="interleaved", engine="reduced", host="eager", memory=LAYOUT.memory,
    moe=MoEOptions(dispatcher="deepep", token_movement="fused", grouped_gemm="te"), overlap=OVERLAP,
    description=f"Megatron-MoE-ModelZoo H100 row: published {PUBLISHED_STEP_S} s, "
                f"{PUBLISHED_TOKENS_PER_S_PER_GPU} tokens/s/GPU",
)

EXPERIMENT = Experiment(
    name="published_qwen3_235b_h100",
    description="Qwen3-235B-A22B, 256 H100, BF16, TP2 PP8 VP4 EP32 (folded over TP x DP), GBS 2048 x 4K: "
                "Megatron-MoE-ModelZoo's published run",
    scenarios=(
        PUBLISHED,
        dataclasses.replace(PUBLISHED, name="ep-a2a-overlap", overlap=dataclasses.replace(
            OVERLAP, overlap_moe_expert_parallel_comm=True, delay_wgrad_compute=True),
            description=f"the '+1f1b overlap' row: published {PUBLISHED_STEP_OVERLAP_S} s, "
                        f"{PUBLISHED_TOKENS_PER_S_PER_GPU_OVERLAP} tokens/s/GPU"),
    ),
    comparisons=(
        Comparison("published", "ep-a2a-overlap",
                   "--overlap-moe-expert-parallel-comm --delay-wgrad-compute (published 19.7 -> 17.6 s)"),
    ),
)
