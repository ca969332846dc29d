"""--recompute-modules change the simulated compute, not only the memory count."""
from __future__ import annotations

import dataclasses

from moesim.costs.roofline import make_cost_model
from moesim.experiment import ParallelPlan, Scenario
from moesim.experiment.runner import run_scenario
from moesim.lowering.moe_costs import MoEStageTable
from moesim.lowering.stage_costs import StageTable
from moesim.memory import MemoryConfig
from moesim.schedules import generate
from moesim.workload.presets import get_model


def _names(items) -> list[str]:
    return [i.name for i in items]


def test_dense_layer_re_runs_what_its_modules_name() -> None:
    spec = dataclasses.replace(get_model("llama3-8b"), num_layers=2, seq_len=1024)
    sched = generate("1f1b", 1, 2)
    cost = make_cost_model("H100")

    def table(modules):
        return StageTable(spec, sched, cost, tp=1, micro_batch_size=1, sequence_parallel=False,
                          recompute="selective", recompute_modules=modules)
    assert _names(table(None)._recomputed(0)) == ["attn.core"]            # Megatron's selective default
    assert _names(table(("core_attn",))._recomputed(0)) == ["attn.core"]
    assert _names(table(("layernorm", "mlp"))._recomputed(0)) == [
        "attn.norm", "mlp.norm", "mlp.fc1", "mlp.swiglu", "mlp.down"]


def test_moe_layer_re_runs_its_attention_modules_and_names_the_rest() -> None:
    spec = dataclasses.replace(get_model("deepseek-v3"), num_layers=4, seq_len=1024)
    sched = generate("1f1b", 1, 2)
    table = MoEStageTable(spec, sched, make_cost_model("H100"), tp=1, ep=1, micro_batch_size=1,
                          sequence_parallel=False, recompute="selective",
                          recompute_modules=("layernorm", "mla_up_proj", "moe_act"))
    moe_layer = next(i for i in range(spec.num_layers) if spec.is_moe_layer(i))
    assert _names(table._recomputed(moe_layer)) == ["attn.norm", "attn.q_up", "attn.kv_up", "attn.rope.q", "attn.rope.k",
                                                      "moe.norm"]
    assert table.unsimulated_recompute == ()   # moe_act re-runs in the expert exchange (test_moe_recompute)
    whole = MoEStageTable(spec, sched, make_cost_model("H100"), tp=1, ep=1, micro_batch_size=1,
                          sequence_parallel=False, recompute="selective", recompute_modules=("moe",))
    assert whole.unsimulated_recompute == ("moe",)


def test_recomputing_the_mlp_lengthens_the_step_by_its_forward() -> None:
    model = dataclasses.replace(get_model("llama3-8b"), num_layers=2, seq_len=1024)
    base = Scenario(name="a", topology="dgx_h100", model=model, cost_model="roofline",
                    plan=ParallelPlan(tp=8, dp=1, pp=1, num_microbatches=2),
                    memory=MemoryConfig(recompute="selective"))
    with_mlp = dataclasses.replace(base, memory=MemoryConfig(recompute="selective", recompute_modules=("core_attn", "mlp")))
    t0, _ = run_scenario(base)
    t1, _ = run_scenario(with_mlp)
    assert t1.step_time_ms > t0.step_time_ms
