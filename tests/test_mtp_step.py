"""DeepSeek-V3's MTP modules run in a simulated training step: one more decoder layer (with its own
expert exchange), projection and head on the last pipeline stage, in both engines."""
from __future__ import annotations

import dataclasses

import pytest

from moesim.errors import ConfigError
from moesim.experiment.runner import run_scenario
from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario
from moesim.memory import MemoryConfig
from moesim.moe.routing import RoutingConfig
from moesim.scale.reduced import ReducedOptions, build_reduced
from moesim.workload.presets import get_model

BASE = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=4)
MTP = dataclasses.replace(BASE, num_nextn_predict_layers=1)


def _scenario(spec, mode: str = "train", schedule: str = "1f1b") -> Scenario:
    return Scenario(name="t", topology="h800_cluster", nodes=2, model=spec, schedule=schedule, mode=mode,
                    plan=ParallelPlan(tp=1, dp=8, pp=2, ep=8, num_microbatches=4),
                    moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=0.5, seed=3)),
                    memory=MemoryConfig(recompute="none"))


def _layers_of(rec, rank_filter=None) -> set[int]:
    return {int(s.name.split(".L")[1].split(".")[0]) for s in rec.spans
            if ".L" in s.name and s.category == "all_to_all" and (rank_filter is None or rank_filter(s.rank))}


def test_the_mtp_layer_runs_its_exchange_on_the_last_stage_only() -> None:
    _res, rec = run_scenario(_scenario(MTP), force=True)
    assert _layers_of(rec) == {0, 1, 2, 3, 4}                  # layer 4: the MTP module's decoder layer
    assert _layers_of(rec, lambda r: r < 8) == {0, 1}          # pipeline rank 0 holds layers 0-1
    assert _layers_of(rec, lambda r: r >= 8) == {2, 3, 4}


def test_mtp_costs_the_last_stage_a_layer_a_projection_and_a_head() -> None:
    base, rec0 = run_scenario(_scenario(BASE), force=True)
    mtp, rec1 = run_scenario(_scenario(MTP), force=True)

    def busy(rec, ranks):
        return sum(s.end_ns - s.start_ns for s in rec.spans if s.rank in ranks and s.stream == "compute")
    first, last = range(8), range(8, 16)
    assert busy(rec1, first) == busy(rec0, first)
    # 2 layers + head -> 3 layers + 2 heads + projection: more than one layer's work, less than double
    added = busy(rec1, last) - busy(rec0, last)
    assert busy(rec0, first) / 2 < added < busy(rec0, last)
    assert mtp.step_time_ms > base.step_time_ms


def test_forward_only_runs_have_no_mtp() -> None:
    _res, rec = run_scenario(_scenario(MTP, mode="forward"), force=True)
    assert _layers_of(rec) == {0, 1, 2, 3}


@pytest.mark.parametrize("schedule", ["1f1b", "dualpipe"])
def test_reduced_engine_runs_the_mtp_layer_as_the_full_one(schedule) -> None:
    scn = _scenario(MTP, schedule=schedule)
    _full, rec = run_scenario(scn, force=True)
    red = build_reduced(scn, ReducedOptions(routing_samples=4))["sim"].run().recorder
    assert 4 in _layers_of(red)
    # end of the pipeline, the data-parallel tail left out (the engines model it differently: test_scale)
    full_ns, red_ns = (max(s.end_ns for s in r.spans if not s.name.startswith("dp:")
                           and s.category not in ("reduce_scatter", "all_gather", "optimizer")) for r in (rec, red))
    assert abs(red_ns / full_ns - 1) < 0.03, (full_ns, red_ns)


def test_layer_kinds_beyond_the_model_are_refused() -> None:
    assert MTP.kind_of_layer(4) == 3 and MTP.is_moe_layer(4)
    with pytest.raises(ConfigError) as e:
        MTP.is_moe_layer(5)
    assert e.value.field == "layer"


def test_the_step_splits_layers_as_the_memory_budget_does() -> None:
    """Megatron's account_for_*_in_pipeline_split: the simulated stages hold the layers the memory
    budget counts (embedding and loss + MTP as slots), down to a last stage of MTP and loss alone."""
    from moesim.experiment.build import build_scenario
    from moesim.lowering.resolve import make_schedule
    from moesim.memory.layout import layout_from_schedule

    spec = dataclasses.replace(MTP, num_layers=5)          # 5 layers + embedding + loss + MTP = 8 slots
    memory = MemoryConfig(recompute="none", account_for_embedding_in_pipeline_split=True,
                          account_for_loss_in_pipeline_split=True)
    scn = dataclasses.replace(_scenario(spec), memory=memory,
                              plan=dataclasses.replace(_scenario(spec).plan, pp=2))
    slots = memory.split_slots(spec)
    assert slots == (1, 2)
    want = layout_from_schedule(make_schedule(scn), spec.num_layers, *slots).stage_layers
    assert want == (range(0, 3), range(3, 5))
    built = build_scenario(scn, force=True)
    assert built.table.layout.stage_layers == want
    res, rec = run_scenario(scn, force=True)
    assert _layers_of(rec, lambda r: r >= 8) == {3, 4, 5} and res.step_time_ms > 0
