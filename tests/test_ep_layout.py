"""Which GPUs form each expert-parallel group: strided (one set per TP index) or folded (Megatron's
MoE parallel folding, expert TP 1: whole TP groups on consecutive GPUs)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moesim.errors import ConfigError
from moesim.workload.parallel import ParallelPlan, ep_group_members


def test_exact_groups_of_both_layouts() -> None:
    # TP2 x DP4: strided EP2 pairs DP neighbours at one TP index; folded EP4 takes two whole TP groups
    assert ep_group_members(2, 4, 2, "strided") == [
        (0, 0, [(0, 0), (1, 0)]), (0, 1, [(2, 0), (3, 0)]), (1, 0, [(0, 1), (1, 1)]), (1, 1, [(2, 1), (3, 1)])]
    assert ep_group_members(2, 4, 4, "folded") == [
        (0, 0, [(0, 0), (0, 1), (1, 0), (1, 1)]), (0, 1, [(2, 0), (2, 1), (3, 0), (3, 1)])]
    plan = ParallelPlan(tp=2, dp=4, ep=4, ep_layout="folded")
    assert (plan.ep_dp_span, plan.expert_dp) == (2, 2)
    assert (ParallelPlan(tp=2, dp=4, ep=2).ep_dp_span, ParallelPlan(tp=2, dp=4, ep=2).expert_dp) == (2, 2)


@given(st.sampled_from([1, 2, 4, 8]), st.integers(1, 8), st.integers(1, 4), st.sampled_from(["strided", "folded"]))
def test_every_gpu_of_a_stage_is_in_exactly_one_group(tp, dp_groups, ep_mult, layout) -> None:
    ep = tp * ep_mult if layout == "folded" else ep_mult
    dp = dp_groups * (ep // tp if layout == "folded" else ep)
    plan = ParallelPlan(tp=tp, dp=dp, ep=ep, ep_layout=layout)
    groups = ep_group_members(tp, dp, ep, layout)
    members = [m for _t, _k, g in groups for m in g]
    assert sorted(members) == [(d, t) for d in range(dp) for t in range(tp)]
    assert all(len(g) == ep for _t, _k, g in groups) and len(groups) == tp * dp // ep
    for _t, _k, g in groups:
        if layout == "folded":   # whole TP groups, consecutive in the TP-innermost numbering
            assert sorted(d * tp + t for d, t in g) == list(range(g[0][0] * tp, g[0][0] * tp + ep))
        else:                    # one TP index, consecutive DP replicas
            assert len({t for _d, t in g}) == 1
    # the GPUs holding EP rank e's experts, one per group of a tp key: expert_dp of them, at one TP
    # index (so the expert-gradient reduction runs inside each TP index's DP group)
    for key in {t for t, _k, _g in groups}:
        for e in range(ep):
            holders = [g[e] for t, _k, g in groups if t == key]
            assert len(holders) == plan.expert_dp and len({t for _d, t in holders}) == 1
            assert [d for d, _t in holders] == [holders[0][0] + i * plan.ep_dp_span for i in range(plan.expert_dp)]


@pytest.mark.parametrize("kwargs,field,text", [
    ({"tp": 2, "dp": 4, "ep": 3, "ep_layout": "folded"}, "plan.ep", "multiple of tp=2"),
    ({"tp": 2, "dp": 4, "ep": 16, "ep_layout": "folded"}, "plan.ep", "dividing tp*dp=8"),
    ({"tp": 2, "dp": 4, "ep": 8}, "plan.ep", "ep_layout='folded'"),
    ({"tp": 2, "dp": 4, "ep": 2, "ep_layout": "fold"}, "plan.ep_layout", "strided, folded"),
])
def test_bad_layouts_are_refused_naming_the_field(kwargs, field, text) -> None:
    with pytest.raises(ConfigError) as err:
        ParallelPlan(**kwargs)
    assert err.value.field == field and text in str(err.value)


def test_ep_1_has_nothing_to_fold() -> None:
    plan = ParallelPlan(tp=4, dp=2, ep=1, ep_layout="folded")
    assert (plan.ep_dp_span, plan.expert_dp) == (1, 2)
    assert ep_group_members(4, 2, 1, "folded") == ep_group_members(4, 2, 1, "strided")
