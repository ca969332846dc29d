"""Published MoE training layouts with the memory options they ran with, for checking that
moesim's budget fits where the run fit.

Each :class:`PublishedLayout` cites its source and keeps the run's options by Megatron's
names (or, for DeepSeek-V3's own framework, the report's words mapped onto them). Nothing
here is tuned to a published memory figure (none is published); the budgets must only fit.

* ``deepseek-v3-2048-h800``: arXiv:2412.19437 §3.2-3.3 (reference §1.2): PP16 DualPipe, EP64
  over 8 nodes, ZeRO-1 over DP128, no TP; recompute RMSNorm (``layernorm``) and MLA
  up-projections (``mla_up_proj``) (§3.2.3); FP8 GEMMs with their inputs cached in FP8 and the
  MoE SwiGLU input cached in FP8 with its output recomputed (``moe_act``) (§3.3.3); BF16 Adam
  moments, FP32 master weights and gradients (§3.3.3); shallowest and deepest layers with the
  embedding and head on one rank (§3.2.3), here Megatron's split accounting (61 layers +
  embedding + MTP + loss = 64 slots = 16 x 4). 15,360 sequences of 4K: 120 microbatches.
* ``deepseek-v3-1024-h100``: Megatron-MoE-ModelZoo best_practice/DeepSeekV3/run.sh (H100,
  "best config on 1024 H100 GPUs"): TP2 PP8 VPP4 EP64 ETP1, MBS 1, GBS 8192, FP8 blockwise with
  ``--fp8-param-gather``, ``--use-precision-aware-optimizer`` with bf16 moments,
  ``--recompute-modules mla_up_proj mlp``, MTP 1, layout ``Et|(tt|)*30mL`` (the split accounting).
* ``qwen3-235b-256-h100``: Megatron-MoE-ModelZoo best_practice/qwen3/run_h100_235b.sh and
  model_configs/benchmarking/Qwen3-235B-A22B.yaml: TP2 PP8 VPP4 EP32 ETP1, MBS 1, GBS 2048, BF16,
  distributed optimizer (fp32 Adam), ``--recompute-modules moe_act layernorm``,
  ``--account-for-embedding-in-pipeline-split --account-for-loss-in-pipeline-split``.
"""
from __future__ import annotations

from dataclasses import dataclass

from moesim.errors import unknown_name
from moesim.memory.budget import Budget, memory_budget
from moesim.memory.config import MemoryConfig
from moesim.workload.parallel import ParallelPlan
from moesim.workload.presets import get_model

_SPLIT = dict(account_for_embedding_in_pipeline_split=True, account_for_loss_in_pipeline_split=True)


@dataclass(frozen=True)
class PublishedLayout:
    """A published training layout: model, plan, schedule, device, memory options, source."""

    name: str
    model: str
    plan: ParallelPlan
    schedule: str
    device: str
    memory: MemoryConfig
    source: str


PUBLISHED_LAYOUTS: dict[str, PublishedLayout] = {p.name: p for p in (
    PublishedLayout(
        "deepseek-v3-2048-h800", "deepseek-v3", ParallelPlan(tp=1, pp=16, dp=128, ep=64, num_microbatches=120),
        "dualpipe", "H800",
        MemoryConfig(recompute="selective", recompute_modules=("layernorm", "mla_up_proj", "moe_act"), zero_stage=1,
                     optimizer_state_dtype="bf16", fp8_linear_inputs=True, fp8_swiglu_inputs=True, ep=64, **_SPLIT),
        "arXiv:2412.19437 §3.2.3, §3.3.2-3.3.3, §4.2"),
    PublishedLayout(
        "deepseek-v3-1024-h100", "deepseek-v3",
        ParallelPlan(tp=2, pp=8, vpp=4, dp=64, ep=64, ep_layout="folded", num_microbatches=128), "interleaved", "H100",
        MemoryConfig(recompute="selective", recompute_modules=("mla_up_proj", "mlp"), distributed_optimizer=True,
                     precision_aware_optimizer=True, exp_avg_dtype="bf16", exp_avg_sq_dtype="bf16",
                     param_dtype="fp8", fp8_linear_inputs=True, ep=64, **_SPLIT),
        "github.com/yanring/Megatron-MoE-ModelZoo best_practice/DeepSeekV3/run.sh + sbatch_benchmarking.sh (PR=fp8)"),
    # EP32 spans TP2 x DP16 (Megatron parallel folding, expert-DP 1)
    PublishedLayout(
        "qwen3-235b-256-h100", "qwen3-235b-a22b",
        ParallelPlan(tp=2, pp=8, vpp=4, dp=16, ep=32, ep_layout="folded", num_microbatches=128), "interleaved", "H100",
        MemoryConfig(recompute="selective", recompute_modules=("moe_act", "layernorm"), distributed_optimizer=True,
                     ep=32, **_SPLIT),
        "github.com/yanring/Megatron-MoE-ModelZoo best_practice/qwen3/run_h100_235b.sh, "
        "model_configs/benchmarking/Qwen3-235B-A22B.yaml"),
)}


def published_budget(name: str, memory: MemoryConfig | None = None) -> Budget:
    """The per-GPU budget of published layout ``name`` (``memory`` replaces its options)."""
    if name not in PUBLISHED_LAYOUTS:
        raise unknown_name("layout", name, list(PUBLISHED_LAYOUTS))
    p = PUBLISHED_LAYOUTS[name]
    return memory_budget(get_model(p.model), p.plan, p.schedule, memory or p.memory, p.device)
