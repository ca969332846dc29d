"""DeepSeek-V3 pre-training on 2,048 H800 as its technical report describes it, against moesim.

Published (DeepSeek-AI, "DeepSeek-V3 Technical Report", arXiv:2412.19437): 2,048 H800 (256 nodes
of 8 on NVLink/NVSwitch, InfiniBand across nodes, §3.1); 16-way DualPipe pipeline, 64-way expert
parallelism over 8 nodes, ZeRO-1 data parallelism, no TP (§3.2); sequence 4K, batch 15,360
sequences after the ramp (§4.2); FP8 mixed-precision GEMMs (§3.3); recomputation of RMSNorm and
the MLA up-projections, BF16 AdamW moments (§3.2.3); DeepEP dispatch on 20 SMs (§3.2.2: "only 20
SMs are sufficient"). Throughput: "180K H800 GPU hours" per trillion tokens (Table 1 / §1) =
10^12 / (180,000 x 3,600 s) = **1,543 tokens/s/GPU** on average over pre-training (step time at
15,360 x 4,096 tokens: **19.9 s**). Memory: it ran, so it fit in 80 GB.

In moesim: the ``deepseek-v3-h800`` preset (256 nodes, PP16 DP128 EP64, 120 microbatches of one
4K sequence per pipeline, node-limited routing with a mild Zipf skew standing in for aux-loss-free
balancing, DeepEP two-hop dispatch), DualPipe with its F&B pair overlap, GEMMs in fp8
(``gemm_dtype="fp8"``), selective recompute of layernorm and mla_up_proj, ZeRO-1 with bf16
optimizer moments, ``deepep_num_sms=20`` (compute at 132/112 of its time while DeepEP runs),
``--overlap-grad-reduce``. Costs: the H800 datasheet roofline (no H800 profile; uncalibrated).
Reduced engine. ``1f1b`` is the same without DualPipe (what the report's schedule buys).

Run: python -m moesim run experiments/published_deepseek_v3_h800.py --no-trace --no-plots
Breakdown: python -m lab.published_breakdown experiments/published_deepseek_v3_h800.py
"""
import dataclasses

from moesim.experiment import Comparison, Experiment, OverlapOptions
from moesim.memory.published import PUBLISHED_LAYOUTS
from moesim.planner.presets import get_preset
from moesim.workload.presets import get_model

PUBLISHED_TOKENS_PER_S_PER_GPU = 1543
PRESET = get_preset("deepseek-v3-h800")
MEMORY = PUBLISHED_LAYOUTS["deepseek-v3-2048-h800"].memory   # the report's options (moesim.memory.published)
OVERLAP = OverlapOptions(deepep_num_sms=20, overlap_grad_reduce=True)


def scenario(name: str, schedule: str = "dualpipe", description: str = ""):
    base = PRESET.scenario(name=name, schedule=schedule, memory=MEMORY)
    return dataclasses.replace(base, model=dataclasses.replace(get_model("deepseek-v3"), gemm_dtype="fp8"),
                               engine="reduced", overlap=OVERLAP, description=description)


EXPERIMENT = Experiment(
    name="published_deepseek_v3_h800",
    description="DeepSeek-V3 671B, 2,048 H800, PP16 DualPipe x EP64 x ZeRO-1, 15,360 x 4K: the report's run",
    scenarios=(
        scenario("published", description=f"the report's layout: published {PUBLISHED_TOKENS_PER_S_PER_GPU} "
                                          "tokens/s/GPU (run average)"),
        scenario("1f1b", schedule="1f1b", description="what-if: 1F1B instead of DualPipe"),
    ),
    comparisons=(Comparison("1f1b", "published", "DualPipe against 1F1B"),),
)
