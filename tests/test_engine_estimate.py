"""The size estimate's exchange-flow count (what its per-flow-in-flight cost multiplies)."""
from __future__ import annotations

import dataclasses

import pytest

from moesim.experiment import MoEOptions, ParallelPlan, Scenario
from moesim.experiment.estimate import (CONSTANTS, _dp_flows, count_run, estimate_run, exchange_flows,
                                        flows_in_flight, parts_of)
from moesim.experiment.runner import run_scenario
from moesim.moe.routing import RoutingConfig
from moesim.workload.presets import get_model


def small_moe(ep: int = 8) -> Scenario:
    spec = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=2, seq_len=1024)
    return Scenario(name="moe_small", topology="dgx_h100", nodes=1, model=spec,
                    plan=ParallelPlan(dp=ep, ep=ep, num_microbatches=2),
                    moe=MoEOptions(routing=RoutingConfig(kind="uniform")))


def test_exchange_flows_are_the_run_flows_less_the_gradient_all_reduce():
    scn = small_moe()
    parts = parts_of(scn)
    res, _ = run_scenario(scn, force=True)
    plan = parts.plan
    dp_flows = plan.pp * plan.tp * _dp_flows(parts)  # one chunk per stage (1F1B)
    assert exchange_flows(parts) == res.num_flows - dp_flows == count_run(parts)[1] - dp_flows
    assert flows_in_flight(parts) == 8 * 7


def test_exchange_flows_cost_their_in_flight_term():
    parts = parts_of(small_moe())
    base = estimate_run(parts, dataclasses.replace(CONSTANTS, seconds_per_exchange_flow={"fluid": (0.0, 0.0)}))
    more = estimate_run(parts, dataclasses.replace(CONSTANTS, seconds_per_exchange_flow={"fluid": (0.0, 1e-6)}))
    assert more.wall_s - base.wall_s == pytest.approx(exchange_flows(parts) * 56 * 1e-6, rel=1e-12)
    dense = dataclasses.replace(parts, model=get_model("llama3-8b"), plan=ParallelPlan(dp=8))
    assert exchange_flows(dense) == 0 and flows_in_flight(dense) == 8  # no MoE, no pipeline sends


def test_deepep_exchange_flows_are_the_two_hop_pairs_of_the_run():
    """DeepEP across nodes sends to the rail peer only: 16 GPUs on 2 nodes exchange over 16 x 7
    NVLink pairs and 16 x 1 rail pairs per dispatch, not 16 x 15."""
    scn = dataclasses.replace(small_moe(16), nodes=2, moe=MoEOptions(routing=RoutingConfig(kind="uniform"),
                                                                   dispatcher="deepep"))
    parts = parts_of(scn)
    res, _ = run_scenario(scn, force=True)
    plan = parts.plan
    dp_flows = plan.pp * plan.tp * _dp_flows(parts)
    assert flows_in_flight(parts) == 16 * 7 + 16 * 1
    assert exchange_flows(parts) == res.num_flows - dp_flows == count_run(parts)[1] - dp_flows


def test_folded_ep_groups_are_counted_when_ep_exceeds_dp():
    """EP 8 folded over TP 2 x DP 4: one group of 8 per stage (tp * dp / ep), not tp * (dp // ep) = 0."""
    scn = dataclasses.replace(small_moe(), plan=ParallelPlan(tp=2, dp=4, ep=8, ep_layout="folded",
                                                             num_microbatches=2))
    parts = parts_of(scn)
    res, _ = run_scenario(scn, force=True)
    assert count_run(parts)[1] == res.num_flows == 1168 and exchange_flows(parts) == 2 * 2 * 2 * 2 * 8 * 7
