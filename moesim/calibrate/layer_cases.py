"""The layer-workload catalogue: which cases ``moesim.calibrate.layer_workloads`` times.

A :class:`Case` is one program (MoE block: torchtitan grouped or per-expert loop, Megatron's
token movement; or a dense decoder layer) at one token count, routing skew and pass. The model
sets: ``standard`` (Qwen3-30B-A3B, Mixtral-8x7B, DeepSeek-V2-Lite shapes, Llama-3-8B) and two
held-out sets of public models' shapes, each chosen and committed before any of its cases was
timed (``holdout``, ``holdout2``, ``holdout3``); ``smoke`` shapes run on a CPU. :func:`plan_cases` orders the cases
in tiers, cheaper-to-lose last, so a short budget drops those first.
"""
from __future__ import annotations

from dataclasses import dataclass

from moesim.calibrate.layer_programs import DenseShape, MoEShape


@dataclass(frozen=True)
class Case:
    """One workload to time. ``experts``/``movement``/``combine``/routing are empty for dense layers."""

    kind: str  # "moe_block" | "dense_layer"
    model: str
    tokens: int
    pass_: str  # "fwd" | "fwd_bwd"
    experts: str = ""  # "grouped" | "loop"
    movement: str = ""  # "torchtitan" | "megatron"
    combine: str = ""  # "scatter_add" | "index_put_sum"
    routing: str = ""  # "uniform" | "zipf"
    zipf_s: float = 0.0
    tier: int = 0

    @property
    def id(self) -> str:
        if self.kind == "dense_layer":
            return f"{self.model}.dense.s{self.tokens}.{self.pass_}"
        skew = "uniform" if self.routing == "uniform" else f"zipf{self.zipf_s:g}"
        return f"{self.model}.{self.movement}.{self.experts}.{self.combine}.t{self.tokens}.{skew}.{self.pass_}"


MOE_SHAPES = {
    "qwen3_30b_a3b": MoEShape("qwen3_30b_a3b", 2048, 128, 8, 768, 0, "qwen3-30b-a3b"),
    "mixtral_8x7b": MoEShape("mixtral_8x7b", 4096, 8, 2, 14336, 0, "mixtral-8x7b"),
    "deepseek_v2_lite": MoEShape("deepseek_v2_lite", 2048, 64, 6, 1408, 2, None),
}
DENSE_SHAPES = {"llama3_8b": DenseShape("llama3_8b", 4096, 32, 8, 128, 14336, "llama3-8b")}
# ``--models holdout``: shapes of public models no stored case has (chosen before any was timed)
HOLDOUT_MOE = {
    "gpt_oss_20b": MoEShape("gpt_oss_20b", 2880, 32, 4, 2880, 0, None),
    "qwen2_57b_a14b": MoEShape("qwen2_57b_a14b", 3584, 64, 8, 2560, 0, None),
    "dsv3_ep4_slice": MoEShape("dsv3_ep4_slice", 7168, 64, 8, 2048, 1, None),
}
HOLDOUT_DENSE = {"qwen2_5_7b": DenseShape("qwen2_5_7b", 3584, 28, 4, 128, 18944, None),
                 "mistral_nemo_12b": DenseShape("mistral_nemo_12b", 5120, 32, 8, 128, 14336, None)}
# ``--models holdout2``: a second set, chosen 2026-12-07 before any was timed: OLMoE-1B-7B (64 experts,
# top-8, FFN 1,024), Phi-3.5-MoE (16, top-2, 6,400), a Llama-4-Scout-shaped block (16, top-1, 8,192,
# one shared expert); the decoder layers of Llama-3.2-3B and Qwen2.5-14B
HOLDOUT2_MOE = {
    "olmoe_1b_7b": MoEShape("olmoe_1b_7b", 2048, 64, 8, 1024, 0, None),
    "phi3_5_moe": MoEShape("phi3_5_moe", 4096, 16, 2, 6400, 0, None),
    "llama4_scout": MoEShape("llama4_scout", 5120, 16, 1, 8192, 1, None),
}
HOLDOUT2_DENSE = {"llama3_2_3b": DenseShape("llama3_2_3b", 3072, 24, 8, 128, 8192, None),
                  "qwen2_5_14b": DenseShape("qwen2_5_14b", 5120, 40, 8, 128, 13824, None)}
# ``--models holdout3``: a third set, chosen 2026-12-07 (seventeenth session) before any was timed:
# the MoE blocks of Qwen3-235B-A22B (128 experts, top-8, FFN 1,536) and GPT-OSS-120B (128, top-4,
# 2,880), both compared with published runs, and a Qwen1.5-MoE-A2.7B-shaped block (60 experts,
# top-4, FFN 1,408, its 5,632-wide shared expert as four); the decoder layers of Llama-3-70B and a
# Gemma-2-9B-shaped layer (head_dim 256, which no profile's attention grid has: priced as a stated
# stand-in)
HOLDOUT3_MOE = {
    "qwen3_235b_a22b": MoEShape("qwen3_235b_a22b", 4096, 128, 8, 1536, 0, None),
    "gpt_oss_120b": MoEShape("gpt_oss_120b", 2880, 128, 4, 2880, 0, None),
    "qwen1_5_moe_a2_7b": MoEShape("qwen1_5_moe_a2_7b", 2048, 60, 4, 1408, 4, None),
}
HOLDOUT3_DENSE = {"llama3_70b": DenseShape("llama3_70b", 8192, 64, 8, 128, 28672, None),
                  "gemma2_9b_shape": DenseShape("gemma2_9b_shape", 3584, 16, 8, 256, 14336, None)}
MODEL_SETS = ("standard", "holdout", "holdout2", "holdout3")
SMOKE_MOE = {"tiny_moe": MoEShape("tiny_moe", 64, 8, 2, 96, 1, None)}
SMOKE_DENSE = {"tiny_dense": DenseShape("tiny_dense", 64, 4, 2, 16, 128, None)}
SKEWS = (("uniform", 0.0), ("zipf", 0.5), ("zipf", 1.0))
PASSES = ("fwd", "fwd_bwd")


ALL_MOE = SMOKE_MOE | MOE_SHAPES | HOLDOUT_MOE | HOLDOUT2_MOE | HOLDOUT3_MOE
ALL_DENSE = SMOKE_DENSE | DENSE_SHAPES | HOLDOUT_DENSE | HOLDOUT2_DENSE | HOLDOUT3_DENSE


def plan_cases(smoke: bool, models: str = "standard") -> list[Case]:
    """Every case in run order: cheaper-to-lose tiers last, so a short budget drops those first.
    ``models``: the standard shapes, or ``holdout`` / ``holdout2`` / ``holdout3`` (public models' shapes no stored
    case had when the set was chosen)."""
    if models not in MODEL_SETS:
        raise ValueError(f"unknown model set {models!r}: use one of {', '.join(MODEL_SETS)}")
    sets = {"standard": (MOE_SHAPES, DENSE_SHAPES), "holdout": (HOLDOUT_MOE, HOLDOUT_DENSE),
            "holdout2": (HOLDOUT2_MOE, HOLDOUT2_DENSE), "holdout3": (HOLDOUT3_MOE, HOLDOUT3_DENSE)}
    moe, dense = (SMOKE_MOE, SMOKE_DENSE) if smoke else sets[models]
    tokens = (32, 64) if smoke else (1024, 4096, 8192, 16384)
    seqs = (32,) if smoke else (2048, 4096, 8192)
    few_tokens = tokens if smoke else (1024, 4096, 16384)
    few_skews = SKEWS if smoke else (SKEWS[0], SKEWS[2])
    out: list[Case] = []
    for m in moe:  # tier 1: torchtitan grouped, every token count and skew
        out += [Case("moe_block", m, t, p, "grouped", "torchtitan", "scatter_add", r, s, 1)
                for t in tokens for r, s in SKEWS for p in PASSES]
    for d in dense:  # tier 2: dense layers
        out += [Case("dense_layer", d, s, p, tier=2) for s in seqs for p in PASSES]
    for m in moe:  # tier 3: megatron permute/unpermute, grouped experts
        out += [Case("moe_block", m, t, p, "grouped", "megatron", "scatter_add", r, s, 3)
                for t in tokens for r, s in few_skews for p in PASSES]
    for m in moe:  # tier 4: torchtitan per-expert loop
        out += [Case("moe_block", m, t, p, "loop", "torchtitan", "scatter_add", r, s, 4)
                for t in few_tokens for r, s in few_skews for p in PASSES]
    for m in moe:  # tier 5: torchtitan main's combine (index_put + sum over top-k)
        out += [Case("moe_block", m, t, p, "grouped", "torchtitan", "index_put_sum", "uniform", 0.0, 5)
                for t in sorted({tokens[1], tokens[-1]}) for p in PASSES]
    return out
