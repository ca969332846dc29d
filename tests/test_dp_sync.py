"""The full engine's data-parallel sync: routed-expert gradients over their expert-data-parallel
group only, ZeRO-1 as reduce-scatter, sharded optimizer step and parameter all-gather."""
from __future__ import annotations

import dataclasses

import pytest

from moesim.experiment import ParallelPlan, Scenario
from moesim.experiment.build import build_scenario
from moesim.memory.config import MemoryConfig
from moesim.workload.presets import get_model

SPEC = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=2)


def _run(dp: int, ep: int, zero: int = 0):
    scn = Scenario(name="s", schedule="1f1b", topology="dgx_h100", model=SPEC,
                   plan=ParallelPlan(dp=dp, ep=ep, pp=1, num_microbatches=2), memory=MemoryConfig(zero_stage=zero))
    built = build_scenario(scn)
    res = built.sim.run()
    return built, res


def _dp_tasks(built, prefix: str):
    return [t for t in built.sim.tasks if t.name.startswith(prefix)]


def _bytes(task) -> float:
    return sum(nbytes for phase in task.phases for _s, _d, nbytes in phase)


def test_expert_gradients_reduce_over_their_replicas_only() -> None:
    one_group, _ = _run(dp=8, ep=8)            # every DP GPU in one EP group: experts have no replica
    assert _dp_tasks(one_group, "dp:grad") and not _dp_tasks(one_group, "dp:expert_grad")
    two_groups, _ = _run(dp=8, ep=4)           # two EP groups: each expert on 2 GPUs, one group per EP rank
    experts = _dp_tasks(two_groups, "dp:expert_grad")
    assert len(experts) == 4 and all(len(t.streams) == 2 for t in experts)
    dense = _dp_tasks(two_groups, "dp:grad")[0]
    assert len(dense.streams) == 8
    # the dense all-reduce carries every gradient but the routed experts'
    dense_one = _dp_tasks(one_group, "dp:grad")[0]
    assert _bytes(dense) == pytest.approx(_bytes(dense_one), rel=1e-9)   # same dense bytes in both layouts


def test_zero1_reduce_scatters_shards_the_optimizer_and_gathers() -> None:
    plain, res_plain = _run(dp=8, ep=4, zero=0)
    zero, res_zero = _run(dp=8, ep=4, zero=1)
    assert {t.category for t in _dp_tasks(zero, "dp:")} == {"reduce_scatter", "all_gather"}
    assert {t.category for t in _dp_tasks(plain, "dp:")} == {"all_reduce"}
    names = {t.name for t in _dp_tasks(zero, "dp:")}
    assert {"dp:params", "dp:expert_params"} <= names and not {"dp:params"} & {t.name for t in _dp_tasks(plain, "dp:")}
    opt_plain = [t.duration_ns for t in plain.sim.tasks if t.name == "optimizer"]
    opt_zero = [t.duration_ns for t in zero.sim.tasks if t.name == "optimizer"]
    assert len(opt_plain) == len(opt_zero) == 8
    assert max(opt_zero) < max(opt_plain) / 2          # dense / 8 and experts / 2 of the parameters


def test_dp_gradient_collectives_queue_in_the_order_chunks_finish_their_backward():
    """Interleaved 1F1B finishes its last chunk's backward first (the backward walks the virtual
    stages down): its gradient all-reduce is issued first, as Megatron's overlapped grad reduce
    does, instead of waiting on the comm stream behind chunk 0, which finishes last."""
    from moesim.lowering.pipeline import _ready_order
    from moesim.schedules import generate

    assert [_ready_order(generate("interleaved", 4, 8, num_chunks=4), p) for p in range(4)] == [[3, 2, 1, 0]] * 4
    assert _ready_order(generate("1f1b", 4, 8), 0) == [0]
    scn = Scenario(name="il", model=dataclasses.replace(get_model("llama3-8b"), num_layers=8, seq_len=1024),
                   topology="hgx_h100_pcie", schedule="interleaved",
                   plan=ParallelPlan(dp=2, pp=4, vpp=2, num_microbatches=8))
    rec = build_scenario(scn).sim.run().recorder
    grads = sorted((s for s in rec.spans if s.rank == 0 and s.name.startswith("dp:grad")), key=lambda s: s.start_ns)
    assert [s.name for s in grads] == ["dp:grad.c1", "dp:grad.c0"]
    last_backward_c1 = max(s.end_ns for s in rec.spans if s.rank == 0 and s.stream == "compute"
                           and s.args.get("chunk") == 1 and s.category != "optimizer")
    assert grads[0].start_ns >= last_backward_c1
