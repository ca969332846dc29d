"""torchtitan's expert-parallel dispatch reads its split sizes on the host (``output_splits`` copied to
the CPU with ``non_blocking=False``): with EP > 1 every MoE layer's forward syncs an eager host once
per microbatch; EP 1 (no all-to-all), a padded dispatch (static splits) and the backward do not."""
from __future__ import annotations

import dataclasses

from moesim.experiment.build import build_scenario
from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario
from moesim.memory import MemoryConfig
from moesim.workload import moe as moe_ops
from moesim.workload import token_movement as tokmove
from moesim.workload.presets import get_model

SPEC = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=2)


def _names(program) -> list[str]:
    return [getattr(x, "name", "") for x in program]


def test_the_forward_program_reads_the_splits_only_with_an_all_to_all() -> None:
    assert "moe.splits_to_host" in _names(moe_ops.moe_block_forward_program(SPEC, 1, ep=8))
    assert "moe.splits_to_host" not in _names(moe_ops.moe_block_forward_program(SPEC, 1, ep=1))
    assert "moe.splits_to_host" not in _names(moe_ops.moe_block_backward_input_program(SPEC, 1, ep=8))
    for movement in ("megatron", "fused"):   # their router already reads the counts (router.counts)
        assert "moe.splits_to_host" not in _names(moe_ops.moe_block_forward_program(SPEC, 1, ep=8,
                                                                                       token_movement=movement))
    assert "moe.splits_to_host" in tokmove.HOST_SYNC_OPS


def _syncs(ep: int, experts: str = "grouped", host: str = "eager") -> int:
    scn = Scenario(name="t", topology="dgx_h100", model=SPEC, host=host, mode="train",
                   plan=ParallelPlan(tp=1, dp=8, pp=1, ep=ep, num_microbatches=2),
                   moe=MoEOptions(experts=experts, capacity_factor=1.25 if experts == "padded" else None),
                   memory=MemoryConfig(recompute="none"))
    return build_scenario(scn, force=True).counts.get("host_syncs", 0)


def test_an_eager_step_syncs_once_per_moe_layer_forward_per_microbatch_with_ep() -> None:
    gpus, layers, microbatches = 8, 2, 2
    assert _syncs(8) == gpus * layers * microbatches
    assert _syncs(1) == 0
    assert _syncs(8, experts="padded") == 0
    assert _syncs(8, host="graphs") == 0
