"""Properties of memory budgets over random small valid configurations: the parts always sum
to the total, no part is negative, the worst rank is the budget, and the invariants hold."""
from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesim.experiment.scenario import ParallelPlan
from moesim.memory import MemoryConfig, memory_budget, validate_budget
from moesim.workload import MoESpec, TransformerSpec

DENSE = TransformerSpec(name="dense8", num_layers=8, hidden=64, num_heads=4, num_kv_heads=2, head_dim=16,
                        ffn_hidden=128, vocab=300, seq_len=32)
MOE = MoESpec(name="moe8", num_layers=8, hidden=64, num_heads=4, num_kv_heads=4, head_dim=16, ffn_hidden=128,
              vocab=300, seq_len=32, num_experts=8, top_k=2, expert_ffn_hidden=32, num_shared_experts=1,
              first_k_dense=1)
SCHEDULES_BY_PP = {1: ["gpipe", "1f1b", "zb-h1"],
                   2: ["gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "dualpipe", "dualpipev"],
                   4: ["gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "dualpipe", "dualpipev"]}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple:
    spec = draw(st.sampled_from([DENSE, MOE]))
    pp = draw(st.sampled_from([1, 2, 4]))
    schedule = draw(st.sampled_from(SCHEDULES_BY_PP[pp]))
    tp, dp = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2, 4]))
    plan = ParallelPlan(tp=tp, dp=dp, pp=pp, vpp=2 if schedule == "interleaved" else 1,
                        micro_batch_size=draw(st.integers(1, 2)), num_microbatches=4 * pp)
    ep = draw(st.sampled_from([e for e in (1, 2, 4, 8) if (tp * dp) % e == 0]))
    config = MemoryConfig(
        recompute=draw(st.sampled_from(["none", "selective", "full"])), zero_stage=draw(st.integers(0, 3)),
        optimizer=draw(st.sampled_from(["adam", "sgd"])), ep=ep, num_redundant_experts=draw(st.integers(0, 2)),
        framework_reserve_bytes=draw(st.sampled_from([0, 2**30])), flash_attention=draw(st.booleans()),
        inference=draw(st.booleans()), batch=draw(st.integers(1, 4)), context_len=draw(st.integers(0, 64)))
    return spec, plan, schedule, config


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_parts_sum_to_total_and_are_non_negative(case: tuple) -> None:
    spec, plan, schedule, config = case
    budget = memory_budget(spec, plan, schedule, config, "H100")
    assert abs(sum(budget.parts.values()) - budget.total_bytes) <= 1e-9 * budget.total_bytes + 1
    assert all(v >= 0 for r in budget.per_rank for v in r.parts.values())
    assert budget.total_bytes == max(r.total_bytes for r in budget.per_rank)
    assert len(budget.per_rank) == plan.pp
    assert budget.fits == (budget.margin_bytes >= 0)
    assert validate_budget(budget) == []


@settings(max_examples=40, deadline=None)
@given(scenarios(), st.integers(2, 4))
def test_more_data_parallelism_never_adds_memory(case: tuple, factor: int) -> None:
    spec, plan, schedule, config = case
    base = memory_budget(spec, plan, schedule, config)
    wider = memory_budget(spec, dataclasses.replace(plan, dp=plan.dp * factor), schedule, config)
    for before, after in zip(base.per_rank, wider.per_rank):
        assert all(after.parts[k] <= before.parts[k] * (1 + 1e-12) for k in before.parts)
    assert wider.total_bytes <= base.total_bytes * (1 + 1e-12)
    if config.inference:
        return
    if config.effective_zero_stage >= 1:
        assert wider.per_rank[0].parts["optimizer_states"] < base.per_rank[0].parts["optimizer_states"]
