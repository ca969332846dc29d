"""DeepSeek-V3 pre-training on 1,024 H100 as NVIDIA ran it (Megatron-Bridge 25.09 benchmark,
Megatron-MoE-ModelZoo's "best config on 1024 H100 GPUs"), against moesim.

Published figure (NVIDIA-NeMo/Megatron-Bridge ``docs/performance-summary.md`` at tag v0.1.0rc4, also
``docs/performance-summary-archive.md``, "25.09 NeMo Container", System DGX-H100): DeepSeekV3
(dropless, force-balanced), 1,024 GPUs, GBS 8192, MBS 1, seq 4096, FSDP 0, TP 2, PP 8, CP 1, VP 4,
EP 64, GA 128 -> **1,297 tokens/s/GPU**, 338 (330 with DeepSeek's 128x128 / 1x128 FP8 blocks)
model TFLOP/s/GPU; step = 8,192 x 4,096 / (1,297 x 1,024) = **25.3 s**. The Megatron-MoE-ModelZoo
publishes no H100 DeepSeek-V3 step time; its launch (github.com/yanring/Megatron-MoE-ModelZoo
``best_practice/deepseek-v3/run_deepseek_v3_h100.sh``, commit e865051) is the same layout:
``A2A_OVERLAP=1 PP=8 VPP=4 TP=2 EP=64 NNODES=128 GBS=8192 PR=fp8`` with ``--recompute-modules
mla_up_proj mlp --mtp-num-layers 1 --pipeline-model-parallel-layout "Et|(tt|)*30mL"``; PR=fp8 is
``--fp8-recipe blockwise --fp8-param-gather`` with ``--use-precision-aware-optimizer`` and bf16 Adam
moments; A2A_OVERLAP=1 is ``--overlap-moe-expert-parallel-comm --delay-wgrad-compute``; DeepEP
(``--moe-token-dispatcher-type flex``, Megatron's default 20 SMs), ``--moe-permute-fusion
--moe-router-fusion``, distributed optimizer, sequence parallel (``model_configs/benchmarking/
DeepSeek-V3.yaml``). The Bridge 25.09 script (``scripts/performance/run_script.py`` at v0.1.0rc4)
sets the same for H100: DeepEP with forced balance, ``overlap_moe_expert_parallel_comm`` and
``delay_wgrad_compute`` on, shared-expert overlap off, recompute ``mla_up_proj mlp``,
``overlap_grad_reduce`` off, layout ``Et|(tt|)*30mL``, no CUDA graphs.

In moesim: 128 DGX H100 nodes, TP 2 x DP 64 x PP 8, interleaved 1F1B with 4 chunks per rank over 128
microbatches of one 4K sequence, the ``deepseek-v3`` preset (MLA, 3 dense + 58 MoE layers, 256
experts top-8 + 1 shared, one MTP module), GEMMs in fp8 (``gemm_dtype="fp8"``, the profile's fp8
rows with their quantize kernels), uniform random routing through DeepSeek-V3's group-limited gate
(``--moe-router-force-load-balancing`` draws random logits, then Megatron's router keeps 4 of 8
expert groups per token: ``moe_router_num_groups=8``, ``moe_router_group_topk=4`` in Bridge's
DeepSeek-V3 provider; with EP 64 folded over 8 nodes a group is one node's 32 experts, so a token
reaches at most 4 nodes), DeepEP dispatch on 20 SMs, fused permute / router, EP all-to-all overlap
on (the published setting), the memory options of
``moesim.memory.published.PUBLISHED_LAYOUTS["deepseek-v3-1024-h100"]``, eager host (no CUDA graphs).
EP 64 is folded over TP 2 x DP 32 as Megatron does with expert TP 1 (``ep_layout="folded"``: each EP
group 32 whole TP groups on 8 consecutive nodes, 4 experts a GPU, expert-DP 2). Differences from the
run, stated: the 61 layers + MTP split over 32 virtual stages as moesim does, not by the
"Et|(tt|)*30mL" layout; ``--overlap-param-gather`` (ModelZoo yaml) is off as in the Bridge run:
Megatron requires ``--overlap-grad-reduce`` for it, which the Bridge H100 script turns off.
Gradients are reduced in bf16 (the Bridge config's ``grad_reduce_in_fp32: false``,
``plan.grad_dtype_bytes=2``). Scenarios: ``published``; ``no-ep-a2a-overlap`` (what-if: the same
without the EP overlap; no published figure). Reduced engine (``moesim.scale``).

Run: python -m moesim run experiments/published_deepseek_v3_h100.py --no-trace --no-plots
Breakdown (compute / communication / exposed / bubble): python -m lab.published_breakdown experiments/published_deepseek_v3_h100.py
"""
import dataclasses

from moesim.experiment import Comparison, Experiment, MoEOptions, OverlapOptions, ParallelPlan, Scenario
from moesim.memory.published import PUBLISHED_LAYOUTS
from moesim.moe.routing import RoutingConfig
from moesim.workload.presets import get_model

PUBLISHED_TOKENS_PER_S_PER_GPU = 1297
GLOBAL_BATCH, SEQ_LEN, GPUS = 8192, 4096, 1024
PUBLISHED_STEP_S = GLOBAL_BATCH * SEQ_LEN / (PUBLISHED_TOKENS_PER_S_PER_GPU * GPUS)
LAYOUT = PUBLISHED_LAYOUTS["deepseek-v3-1024-h100"]
OVERLAP = OverlapOptions(overlap_moe_expert_parallel_comm=True, delay_wgrad_compute=True,
                         moe_shared_expert_overlap=False, overlap_grad_reduce=False, deepep_num_sms=20)

PUBLISHED = Scenario(
    name="published", topology="dgx_h100", nodes=128,
    model=dataclasses.replace(get_model(LAYOUT.model), gemm_dtype="fp8"),
    plan=ParallelPlan(tp=2, dp=64, pp=8, vpp=4, ep=64, ep_layout="folded", micro_batch_size=1, num_microbatches=128,
                      grad_dtype_bytes=2),
    schedule="interleaved", engine="reduced", host="eager", memory=LAYOUT.memory,
    moe=MoEOptions(dispatcher="deepep", token_movement="fused", grouped_gemm="te",
                   routing=RoutingConfig(kind="uniform", gating="group_limited")), overlap=OVERLAP,
    description=f"Megatron-Bridge 25.09 DGX-H100 row: published {PUBLISHED_TOKENS_PER_S_PER_GPU} tokens/s/GPU "
                f"({PUBLISHED_STEP_S:.1f} s)",
)

EXPERIMENT = Experiment(
    name="published_deepseek_v3_h100",
    description="DeepSeek-V3 671B, 1,024 H100, FP8, TP2 PP8 VP4 EP64, GBS 8192 x 4K: NVIDIA's published run",
    scenarios=(
        PUBLISHED,
        dataclasses.replace(PUBLISHED, name="no-ep-a2a-overlap", overlap=dataclasses.replace(
            OVERLAP, overlap_moe_expert_parallel_comm=False, delay_wgrad_compute=False),
            description="what-if: without Megatron's EP all-to-all overlap (no published figure)"),
    ),
    comparisons=(
        Comparison("no-ep-a2a-overlap", "published", "--overlap-moe-expert-parallel-comm --delay-wgrad-compute"),
    ),
)
