"""DeepSeek-V3 training step on 2,048 H800 GPUs, and what overlap is worth there.

The report's setup (arXiv:2412.19437 §3.1-3.2; preset ``deepseek-v3-h800``): 256 nodes of 8
H800 on NVSwitch, one 400 Gb/s InfiniBand NIC per GPU on a rail-optimised fat tree, 16-way
DualPipe pipeline, 64-way expert parallelism over 8 nodes, ZeRO-1 data parallelism (DP128), no
TP; 15,360 sequences of 4K per step (120 microbatches of one sequence per pipeline); node-limited
routing (<= 4 nodes per token) with a mild Zipf skew (s = 0.3) standing in for aux-loss-free
balancing, experts placed contiguously; DeepEP dispatch (one copy of a token per destination
node over InfiniBand, forwarded over NVLink; fp8 dispatch, bf16 combine). Selective
recomputation as the report does it (§3.2.3, §3.3.3): RMSNorm (``layernorm``), MLA up-projections
(``mla_up_proj``) and the MoE SwiGLU output (``moe_act``), FP8-cached linear and SwiGLU inputs,
BF16 Adam moments, FP32 master weights and gradients, embedding and head counted in the pipeline
split (``moesim.memory.published``); the memory options and the budget's verdict are printed
with the results.

Simulated with the reduced engine (``moesim.scale``): one EP group by symmetry, one lane per
pipeline rank with every all-to-all solved as one phase on the group's real fabric and the
busiest GPU's expert queue; each result lists what was reduced. Scenarios:

* ``dualpipe``: the report's schedule, one microbatch's all-to-all hidden behind the other's
  compute, DP reduce-scatter overlapped with the backward;
* ``dualpipe-no-pair-overlap``: the same order, each F&B pair run one half after the other;
* ``dualpipe-no-overlap``: no pair overlap and the DP reduction after the whole backward;
* ``1f1b``: the baseline schedule DualPipe replaced (no F&B pairs).

Compute runs 1.20x slower while communication shares the GPU: the GEMM slowdown under NCCL
traffic measured on the H200 (moesim/profiles/h200_sxm.json; DeepEP on 20 of 132 SMs is a
different mechanism with a similar cost, 15% of the SMs).

Costs: the H800 datasheet roofline with bf16 GEMMs (no H800 profile; labelled uncalibrated;
DeepSeek runs its GEMMs in FP8, which this model does not). Reference: the report's 180K H800
GPU hours per trillion tokens is 1,543 tokens/s per GPU averaged over the whole run.

Run: python -m moesim run experiments/deepseek_v3_2048.py
"""
import dataclasses

from moesim.costs.calibrated import CalibratedCostModel
from moesim.costs.profile import load_profile
from moesim.experiment import Comparison, Experiment
from moesim.experiment.build import PROFILE_DIR
from moesim.memory.published import PUBLISHED_LAYOUTS, published_budget
from moesim.planner.presets import get_preset

PRESET = get_preset("deepseek-v3-h800")
MEMORY = PUBLISHED_LAYOUTS["deepseek-v3-2048-h800"].memory
BUDGET = published_budget("deepseek-v3-2048-h800")
MEASURED_SLOWDOWN = round(CalibratedCostModel(load_profile(PROFILE_DIR / "h200_sxm.json")).overlap_slowdown(), 3)


def scenario(name: str, schedule: str = "dualpipe", **plan):
    base = PRESET.scenario(name=name, schedule=schedule, memory=MEMORY)
    return dataclasses.replace(base, plan=dataclasses.replace(base.plan, **plan), overlap_slowdown=MEASURED_SLOWDOWN,
                               engine="reduced")


EXPERIMENT = Experiment(
    name="deepseek_v3_2048",
    description="DeepSeek-V3 671B on 2,048 H800: PP16 DualPipe x EP64 x ZeRO-1 DP128, 15,360 x 4K sequences",
    scenarios=(
        scenario("dualpipe"),
        scenario("dualpipe-no-pair-overlap", pair_overlap=False),
        scenario("dualpipe-no-overlap", pair_overlap=False, dp_overlap=False),
        scenario("1f1b", schedule="1f1b"),
    ),
    notes=(f"memory options: {MEMORY.options()}",
           f"memory per GPU (DualPipe PP16, 120 microbatches, H800): {BUDGET.verdict()}"),
    comparisons=(
        Comparison("dualpipe-no-pair-overlap", "dualpipe",
                   "hiding one microbatch's all-to-all behind the other's compute"),
        Comparison("dualpipe-no-overlap", "dualpipe", "all overlap: F&B pairs and the DP reduce-scatter"),
        Comparison("1f1b", "dualpipe", "DualPipe against the 1F1B it replaced"),
    ),
)
