"""The layout sets the expert TP, in the memory budget and in the simulated gradient sync alike:
strided (EP inside each TP index's DP) is Megatron's expert TP = TP, folded is expert TP 1."""
from __future__ import annotations

import dataclasses

import pytest

from moesim.errors import ConfigError
from moesim.experiment import ParallelPlan, Scenario
from moesim.experiment.build import build_scenario, scenario_budget
from moesim.experiment.scenario import MoEOptions
from moesim.memory import MemoryConfig
from moesim.moe.routing import RoutingConfig
from moesim.workload.presets import get_model

SPEC = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=2, seq_len=1024)


def _scn(layout: str, memory: MemoryConfig | None = None) -> Scenario:
    return Scenario(name=layout, topology="dgx_h100", nodes=1, model=SPEC, memory=memory or MemoryConfig(),
                    plan=ParallelPlan(tp=2, dp=4, ep=4 if layout == "folded" else 2, ep_layout=layout,
                                      num_microbatches=2),
                    moe=MoEOptions(routing=RoutingConfig(kind="uniform")))


def test_strided_is_expert_tp_equal_tp_in_memory_and_in_the_gradient_sync() -> None:
    strided, folded = _scn("strided"), _scn("folded")
    assert (strided.plan.expert_tp, folded.plan.expert_tp) == (2, 1)
    whole = SPEC.num_experts // 2 * SPEC.expert_params   # EP2 strided: 64 experts a GPU, 1/2 of each
    b = scenario_budget(strided, SPEC, "H100")
    assert (b.sharding.expert_tp, b.sharding.expert_dp) == (2, 2)   # expert-DP: dp / ep GPUs of one TP index
    table = build_scenario(strided).table
    assert table.expert_grad_bytes(0, 0) == pytest.approx(SPEC.num_layers * whole / 2 * table.grad_dtype_bytes)
    # the dense part of the gradient is unchanged: the total holds only the GPU's half of each expert
    dense = table.grad_bytes(0, 0) - table.expert_grad_bytes(0, 0)
    ft = build_scenario(folded).table
    assert dense == pytest.approx(ft.grad_bytes(0, 0) - ft.expert_grad_bytes(0, 0))
    fb = scenario_budget(folded, SPEC, "H100")
    assert (fb.sharding.expert_tp, fb.sharding.expert_dp) == (1, 2)   # whole experts, tp * dp / ep


def test_an_expert_tp_the_layout_contradicts_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"memory\.expert_tp: 2 with plan\.ep_layout='folded'"):
        scenario_budget(_scn("folded", MemoryConfig(expert_tp=2)), SPEC, "H100")
    assert scenario_budget(_scn("strided", MemoryConfig(expert_tp=2)), SPEC, "H100").sharding.expert_tp == 2
