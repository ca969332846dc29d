"""Planning scenario presets, all defined here: the registry :data:`PRESETS` and :func:`get_preset`.

A :class:`ScenarioPreset` is what an engineer knows before renting a cluster: the model (a
name in :data:`moesim.workload.presets.MODELS`), the fabric (a file in ``topologies/`` and a
node count), a default parallel plan and pipeline schedule, a routing assumption, the global
batch (sequences per optimizer step), the sequence length and the memory settings. The planner
(:mod:`moesim.planner.plan`) searches around the default plan; the breakdown and the benches use
the preset to build :class:`~moesim.experiment.Scenario` objects.

The first four are the scenarios of the "MoE Parallelism Planner" lab (reference
``moe_and_hardware.md`` §7.2-7.3), with the lab's model shapes (``lab-*`` model presets) and
its layouts. The lab counts DP and EP as separate factors (DP9 x PP8 x TP2 x EP4 = 576); in
moesim EP is carved out of DP, so the same layout is dp = 9 * 4 = 36, ep = 4. The lab's
micro-batch of ``mbs`` sequences per DP x EP group becomes ``mbs / ep`` per GPU; we keep its
global batch (DP x mbs x microbatches sequences) and use one sequence per microbatch. The lab
assumed perfectly balanced routing (its gap 1, §7.5); these presets assume real-text skew
(Zipf s = 0.45, OLMoE WikiText, §5.2) unless the preset says otherwise.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from moesim.errors import ConfigError, unknown_name
from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario
from moesim.memory import MemoryConfig
from moesim.moe.routing import RoutingConfig

# Zipf exponent of real text (OLMoE WikiText, reference §5.2); code is ~0.9-1.0.
REAL_TEXT_ZIPF_S = 0.45
# Presets above this many GPUs are "huge": the planner screens them with memory and the coarse
# estimate and simulates only reduced proxies that stay under its task limit.
HUGE_GPUS = 64


def skewed_routing(zipf_s: float = REAL_TEXT_ZIPF_S, gating: str = "topk", seed: int = 7) -> RoutingConfig:
    """A Zipf routing assumption; the run sets ``tokens_per_rank`` from the model and plan."""
    return RoutingConfig(kind="zipf", zipf_s=zipf_s, gating=gating, seed=seed)


@dataclass(frozen=True)
class ScenarioPreset:
    """One planning scenario. ``global_batch`` counts sequences per optimizer step and must equal
    ``plan.dp * plan.micro_batch_size * plan.num_microbatches``. ``routing`` None means perfectly
    balanced routing. ``dispatcher`` is the MoE token dispatcher (:mod:`moesim.moe.deepep`). ``uneven_layers`` lets the planner consider pipeline splits that do not
    divide the layer count (the first stages take one layer more), as DeepSeek-V3's 61 layers
    on PP16; the simulator needs an even split, so such plans are simulated with a reduced,
    evenly split layer count and the output says so."""

    name: str
    description: str
    model: Any
    topology: str
    plan: ParallelPlan
    global_batch: int
    seq_len: int
    nodes: int | None = None
    schedule: str = "1f1b"
    routing: RoutingConfig | None = field(default_factory=skewed_routing)
    placement: str = "contiguous"
    num_redundant: int = 0
    memory: MemoryConfig = field(default_factory=lambda: MemoryConfig(recompute="selective", distributed_optimizer=True))
    uneven_layers: bool = False
    source: str = ""
    dispatcher: str = "alltoall"
    # ``topology`` is a name in topologies/ or a path to a YAML file (tests use small fabrics).

    def __post_init__(self) -> None:
        for name in ("global_batch", "seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"preset.{name}", f"must be an integer >= 1, got {value!r}", source=self.name)
        p = self.plan
        if p.dp * p.micro_batch_size * p.num_microbatches != self.global_batch:
            raise ConfigError("preset.plan", f"dp*micro_batch_size*num_microbatches = {p.dp}*{p.micro_batch_size}*"
                              f"{p.num_microbatches} = {p.dp * p.micro_batch_size * p.num_microbatches} sequences, "
                              f"not the global batch {self.global_batch}",
                              "set num_microbatches = global_batch / (dp * micro_batch_size)", source=self.name)

    @cached_property
    def spec(self) -> Any:
        """The model spec (``model`` is a preset name or a spec) at this preset's sequence length."""
        from moesim.workload.presets import get_model

        spec = get_model(self.model) if isinstance(self.model, str) else self.model
        return spec if spec.seq_len == self.seq_len else dataclasses.replace(spec, seq_len=self.seq_len)

    @cached_property
    def topo(self) -> Any:
        """The loaded fabric (cached: a 2048-GPU cluster takes a moment to build)."""
        from moesim.topology.loader import load_topology

        return load_topology(self.topology, **({"nodes": self.nodes} if self.nodes else {}))

    @property
    def num_gpus(self) -> int:
        return self.topo.num_gpus

    @property
    def huge(self) -> bool:
        return self.num_gpus > HUGE_GPUS

    def scenario(self, plan: ParallelPlan | None = None, schedule: str | None = None, placement: str | None = None,
                 num_redundant: int | None = None, name: str | None = None, network: str = "fluid",
                 spec: Any = None, memory: MemoryConfig | None = None, routing: Any = "preset") -> Scenario:
        """A runnable :class:`Scenario`: this preset with any of its choices replaced."""
        return Scenario(
            name=name or self.name, topology=self.topology, nodes=self.nodes, model=spec if spec is not None else self.spec,
            plan=plan or self.plan, schedule=schedule or self.schedule, network=network,
            description=self.description, memory=memory or self.memory,
            moe=MoEOptions(routing=self.routing if routing == "preset" else routing,
                           placement=placement or self.placement,
                           num_redundant=self.num_redundant if num_redundant is None else num_redundant,
                           dispatcher=self.dispatcher))

    def with_overrides(self, **changes: Any) -> "ScenarioPreset":
        """A copy with fields replaced (``nodes=1``, ``model="gpt-oss-120b"``, ``global_batch=64``);
        a new global batch rescales the default plan's microbatches."""
        if "global_batch" in changes and "plan" not in changes:
            gb, p = changes["global_batch"], self.plan
            per = p.dp * p.micro_batch_size
            if not isinstance(gb, int) or gb < 1 or gb % per:
                raise ConfigError("global_batch", f"{gb!r} sequences do not split over dp*micro_batch_size = {per} "
                                  "of the preset's own layout, which every plan starts from (the search's other "
                                  "layouts may divide it, but the preset must describe a step)",
                                  f"use a multiple of {per}", source=self.name)
            changes["plan"] = dataclasses.replace(p, num_microbatches=gb // per)
        return dataclasses.replace(self, **changes)


def _lab(name: str, description: str, model: str, topology: str, nodes: int, plan: ParallelPlan, global_batch: int,
         seq_len: int, source: str, **extra: Any) -> ScenarioPreset:
    return ScenarioPreset(name=name, description=description, model=model, topology=topology, nodes=nodes, plan=plan,
                          global_batch=global_batch, seq_len=seq_len, source=source, **extra)


# The lab's GPT-OSS / DeepSeek-R1 baseline layout DP9 x PP8 x TP2 x EP4 (§7.3 gpt_gb200 and
# deepseek_gb200 "base"): 576 GPUs = 8 NVL72 racks. GPT: mbs 48, 24 microbatches -> 9*48*24 =
# 10368 sequences; DeepSeek: mbs 32, 24 microbatches -> 6912 sequences.
_GB200_LAB_PLAN = dict(tp=2, pp=8, dp=36, ep=4)

PRESETS: dict[str, ScenarioPreset] = {p.name: p for p in (
    _lab("gpt-oss-120b-gb200-ib", "Lab GPT-OSS-120B (96 layers, 256 experts top-2) on 8 GB200 NVL72 racks, InfiniBand",
         "lab-gpt-oss-120b", "gb200_nvl72", 8, ParallelPlan(**_GB200_LAB_PLAN, num_microbatches=288), 10368, 4096,
         "lab SPEC_PRESETS gpt_oss_120b_gb200_ib; scenario gpt_gb200 base DP9xPP8xTP2xEP4 (reference §7.2-7.3)"),
    _lab("gpt-oss-120b-gb200-ethernet", "The same on RoCE Ethernet at half the NIC bandwidth (the lab's 2x400G vs 2x800G)",
         "lab-gpt-oss-120b", "gb200_nvl72_ethernet", 8, ParallelPlan(**_GB200_LAB_PLAN, num_microbatches=288), 10368,
         4096, "lab SPEC_PRESETS gpt_oss_120b_gb200_ethernet (reference §7.2)"),
    # The lab's 678B (316B of it dense, hidden 14336) keeps ~2 GiB of selectively recomputed
    # activations per layer and microbatch: no layout of 576 GPUs fits (`--nodes 8` with
    # selective recompute is over by ~100 GiB), so full recomputation.
    _lab("deepseek-r1-gb200", "Lab DeepSeek-R1-678B (128 layers, 256 experts top-2) on 8 GB200 NVL72 racks, InfiniBand",
         "lab-deepseek-r1-678b", "gb200_nvl72", 8, ParallelPlan(**_GB200_LAB_PLAN, num_microbatches=192), 6912, 4096,
         "lab SPEC_PRESETS deepseek_r1_678b_gb200_ib; scenario deepseek_gb200 base (reference §7.2-7.3)",
         memory=MemoryConfig(recompute="full", distributed_optimizer=True)),
    # Lab "parallelism_breakdown" optimized layout 4x4x2x4 (DP4 PP4 TP2 EP4, mbs 32, 16
    # microbatches) on "DGX A100 (16 nodes)": dp = 4 * 4 = 16, global 4 * 32 * 16 = 2048 sequences.
    _lab("moe-175b-dgx-a100", "Lab 175B MoE (96 layers, 24 MoE, 128 experts top-2) on 16 DGX A100 (128 GPUs)",
         "lab-moe-175b", "dgx_a100", 16, ParallelPlan(tp=2, pp=4, dp=16, ep=4, num_microbatches=128), 2048, 2048,
         "lab SPEC_PRESETS dgx_a100_175b; scenario parallelism_breakdown opt 4x4x2x4 (reference §7.2-7.3)"),
    # DeepSeek-V3 report §3.1-3.2, §4.2 (reference §1.2-1.3): 2048 H800, PP16 DualPipe x EP64
    # over 8 nodes x ZeRO-1 DP, no TP; 15360 sequences of 4K per step; node-limited routing
    # (<= 4 nodes per token) with aux-loss-free balancing (mild skew assumed); BF16 optimizer
    # states. DeepSeek recomputes RMSNorm and MLA up-projections AND caches activations in FP8
    # (§3.2.3, §3.3); moesim's memory model keeps bf16 activations, under which selective
    # recompute needs ~148 GiB of activations per GPU, so "full" recompute stands in for both.
    ScenarioPreset(
        name="deepseek-v3-h800", model="deepseek-v3", topology="h800_cluster", nodes=256,
        description="DeepSeek-V3 671B on 2048 H800 (256 nodes): PP16 DualPipe x EP64 x ZeRO-1 DP, no TP. "
                    "Simulate a step with engine='reduced' (experiments/deepseek_v3_2048.py)",
        plan=ParallelPlan(tp=1, pp=16, dp=128, ep=64, num_microbatches=120), schedule="dualpipe",
        global_batch=15360, seq_len=4096, routing=skewed_routing(0.3, gating="node_limited"),
        memory=MemoryConfig(recompute="full", zero_stage=1, optimizer_state_dtype="bf16"), uneven_layers=True,
        dispatcher="deepep", source="arXiv:2412.19437 §3.1-3.2, §4.2 (reference §1.2-1.3)"),
    # One DGX H100 cannot hold Mixtral's Adam state (experts are at most 8-way sharded, see
    # `moesim plan --scenario mixtral-8x7b-dgx-h100 --nodes 1`), so two nodes; even there,
    # selectively recomputed 4K-token activations (~31 GiB) leave every layout a few GiB over
    # 80 GiB, so full recomputation.
    ScenarioPreset(
        name="mixtral-8x7b-dgx-h100", model="mixtral-8x7b", topology="dgx_h100", nodes=2,
        description="Mixtral 8x7B (8 experts top-2) on 2 DGX H100 (16 GPUs), 64 sequences of 4K per step",
        plan=ParallelPlan(tp=2, pp=1, dp=8, ep=8, num_microbatches=8), global_batch=64, seq_len=4096,
        memory=MemoryConfig(recompute="full", distributed_optimizer=True),
        source="mistralai/Mixtral-8x7B-v0.1 config.json; topology dgx_h100.yaml"),
    ScenarioPreset(
        name="qwen3-30b-a3b-dgx-h200", model="qwen3-30b-a3b", topology="dgx_h200", nodes=1,
        description="Qwen3-30B-A3B (128 experts top-8) on one DGX H200 (8 GPUs), 32 sequences of 4K per step",
        plan=ParallelPlan(tp=1, pp=1, dp=8, ep=8, num_microbatches=4), global_batch=32, seq_len=4096,
        memory=MemoryConfig(recompute="none", distributed_optimizer=True),
        source="Qwen/Qwen3-30B-A3B config.json; topology dgx_h200.yaml"),
)}


def get_preset(name: str) -> ScenarioPreset:
    """The preset called ``name``; ConfigError listing the valid names otherwise."""
    if name not in PRESETS:
        raise unknown_name("scenario", name, list(PRESETS))
    return PRESETS[name]
