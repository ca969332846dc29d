"""Megatron's ``--recompute-modules moe_act`` and ``shared_experts`` re-run inside the expert exchange's
backward; ``moe`` (the whole block, dispatch included) stays counted in memory only, and says so."""
from __future__ import annotations

import dataclasses

import pytest

from moesim.costs.roofline import make_cost_model
from moesim.lowering.moe_costs import Exchange, MoEStageTable
from moesim.ops import MemoryOp
from moesim.schedules import Action, generate
from moesim.workload import moe_exec
from moesim.workload.presets import get_model

SPEC = dataclasses.replace(get_model("deepseek-v3"), num_layers=4, num_nextn_predict_layers=0)  # layer 3: MoE
COUNTS = (300, 0, 120, 77)


def _table(modules, experts: str = "grouped") -> MoEStageTable:
    return MoEStageTable(SPEC, generate("1f1b", 1, 2), make_cost_model("H100"), tp=1, ep=8, micro_batch_size=1,
                         sequence_parallel=False, recompute="selective", recompute_modules=modules, experts=experts)


@pytest.mark.parametrize("experts", ["grouped", "loop"])
def test_moe_act_re_runs_the_forward_activation_first_in_each_backward_chain(experts) -> None:
    plain, again = _table(("core_attn",), experts), _table(("core_attn", "moe_act"), experts)
    for phase in ("B", "BW"):
        base = [op for t in plain.expert_tasks(phase, COUNTS) for op in t.ops]
        more = [op for t in again.expert_tasks(phase, COUNTS) for op in t.ops]
        extra = [op for op in more if op.name.endswith(".recompute")]
        assert [op for op in more if not op.name.endswith(".recompute")] == base
        if experts == "grouped":
            fwd = moe_exec.grouped_ops(SPEC, COUNTS, "F", plain.token_movement)
        else:
            fwd = [op for n in COUNTS if n for op in moe_exec.loop_chain_ops(SPEC, n, "F", plain.token_movement)]
        fwd_act = [op for op in fwd if isinstance(op, MemoryOp)]   # the activation kernels (silu, mul)
        assert sorted(op.bytes for op in extra) == sorted(op.bytes for op in fwd_act)
    assert plain.expert_tasks("F", COUNTS) == again.expert_tasks("F", COUNTS)   # the forward is unchanged
    assert again.gpu_expert_ns("B", COUNTS)[0] > plain.gpu_expert_ns("B", COUNTS)[0]


def test_moe_act_chain_puts_the_recompute_before_the_first_dgrad() -> None:
    ops = moe_exec.grouped_ops(SPEC, COUNTS, "B", "megatron", recompute_act=True)
    first_gemm = next(i for i, op in enumerate(ops) if not isinstance(op, MemoryOp))
    assert all(op.name.endswith(".recompute") for op in ops[:first_gemm]) and first_gemm >= 1


def test_shared_experts_recompute_adds_their_forward_to_the_backward_exchange() -> None:
    def shared_ns(modules) -> int:
        segs = _table(modules).segments(Action("B", 0, 0))
        return sum(s.shared.duration_ns for s in segs if isinstance(s, Exchange))
    base, again = shared_ns(("core_attn",)), shared_ns(("core_attn", "shared_experts"))
    fwd = sum(s.shared.duration_ns for s in _table(("core_attn",)).segments(Action("F", 0, 0)) if isinstance(s, Exchange))
    assert again == pytest.approx(base + fwd, abs=2)


def test_only_the_whole_block_recompute_is_named_unsimulated() -> None:
    assert _table(("moe_act", "shared_experts")).unsimulated_recompute == ()
    assert _table(("moe", "moe_act")).unsimulated_recompute == ("moe",)
