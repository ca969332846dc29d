"""Back-to-back kernels (moesim.costs.regions): the region cost every profile sample carries once,
in the lowering's segments, expert queues and the engine, with known answers and properties."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from moesim.costs.calibrated import CalibratedCostModel
from moesim.costs.profile import load_profile, profile_from_dict
from moesim.costs.regions import in_stream_ns, kernel_region, sequence, sequence_ns
from moesim.costs.roofline import make_cost_model
from moesim.errors import ConfigError
from moesim.lowering.stage_costs import StageTable
from moesim.schedules import generate
from moesim.schedules.model import actions_of
from moesim.workload.presets import get_model


def test_known_answers() -> None:
    assert in_stream_ns(10_000, 3_000, 2_552) == 7_000
    assert in_stream_ns(4_000, 3_000, 2_552) == 2_552          # never below the floor
    assert in_stream_ns(2_000, 3_000, 2_552) == 2_000          # already below it: unchanged
    assert sequence_ns([10_000, 10_000, 4_000], 3_000, 2_552) == 7_000 + 7_000 + 2_552 + 3_000
    assert sequence_ns([10_000], 3_000, 2_552) == 10_000       # one kernel keeps its time
    assert sequence([10_000, 10_000], 3_000, 2_552) == (17_000, 3_000)
    assert sequence([10_000], 3_000, 2_552) == (10_000, 3_000)
    assert sequence([4_000], 3_000, 2_552) == (4_000, 1_448)
    assert sequence([], 3_000, 2_552) == (0, 0)
    assert sequence([10_000, 5_000], 0, 0) == (15_000, 0)       # no region cost: plain sum


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1e7), max_size=30), st.floats(0, 1e4), st.floats(0, 1e4))
def test_sequence_bounds(times, region, floor) -> None:
    total, saved = sequence(times, region, floor)
    assert total <= sum(times) + 1
    if len(times) >= 2 and region > 0:
        assert total >= sum(times) - (len(times) - 1) * region - 1
    assert 0 <= saved <= total and saved <= region + 1


def test_shipped_h200_profile_carries_the_run9_region_cost() -> None:
    cost = CalibratedCostModel("h200_sxm")
    assert kernel_region(cost) == (2128.0, 2472.0)    # runs 9 and 16 pooled
    assert kernel_region(make_cost_model("H100")) == (0.0, 0.0)     # the roofline has none
    rec = load_profile("h200_sxm").extra["kernel_region"]
    assert [r["run"] for r in rec["runs"]] == [9, 16] and all(r["device"] == "NVIDIA H200" for r in rec["runs"])
    assert len(rec["per_kind"]) == 28


@pytest.mark.parametrize("bad", [[1, 2], {"region_ns": -1, "floor_ns": 0}, {"region_ns": 3000},
                                 {"region_ns": "3000", "floor_ns": 0}, {"region_ns": 1e12, "floor_ns": 0}])
def test_profile_refuses_a_bad_kernel_region(bad) -> None:
    with open(load_profile("h200_sxm").source) as f:
        doc = json.load(f)
    doc["kernel_region"] = bad
    with pytest.raises(ConfigError, match="kernel_region"):
        profile_from_dict(doc, source="test")


class _Flat:
    """Every op 10 us; region cost 3 us, floor 2.5 us."""

    peak_flops = 1e15

    def compute_ns(self, op) -> int:
        return 10_000

    def kernel_region(self) -> tuple[float, float]:
        return 3_000.0, 2_500.0


def test_segment_is_its_kernels_back_to_back() -> None:
    spec = get_model("llama3-8b")
    sched = generate("1f1b", 2, 2)
    with_region = StageTable(spec, sched, _Flat(), tp=1, micro_batch_size=1, sequence_parallel=False)
    flat = _Flat()
    flat.kernel_region = lambda: (0.0, 0.0)
    without = StageTable(spec, sched, flat, tp=1, micro_batch_size=1, sequence_parallel=False)
    for action in [a for step in sched.steps[0][:2] for a in actions_of(step)]:
        a, b = with_region.segments(action), without.segments(action)
        assert len(a) == len(b) == 1
        kernels = b[0].duration_ns // 10_000
        assert kernels > 2
        assert a[0].duration_ns == kernels * 7_000 + 3_000 and a[0].region_ns == 3_000
        assert b[0].region_ns == 0


def test_merge_keeps_the_latest_kernel_region() -> None:
    from moesim.calibrate.merge import merge_profiles   # torch-free
    with open(load_profile("h200_sxm").source) as f:
        doc = json.load(f)
    older = dict(doc, kernel_region={"region_ns": 1.0, "floor_ns": 1.0})
    without = {k: v for k, v in doc.items() if k != "kernel_region"}
    assert merge_profiles([older, doc, without])["kernel_region"] == doc["kernel_region"]
    assert "kernel_region" not in merge_profiles([without])


def test_region_from_chains_known_answer() -> None:
    from moesim.costs.regions import region_from_chains
    rows = [{"kind": "tiny", "state": "s", "n": 1, "time_ns": 4_000}, {"kind": "tiny", "state": "s", "n": 2, "time_ns": 6_500},
            {"kind": "gemm", "state": "s", "n": 1, "time_ns": 10_000}, {"kind": "gemm", "state": "s", "n": 2, "time_ns": 17_000},
            {"kind": "copy", "state": "s", "n": 1, "time_ns": 6_000}, {"kind": "copy", "state": "s", "n": 2, "time_ns": 10_000},
            {"kind": "silu", "state": "s", "n": 1, "time_ns": 6_000}]                      # no n=2: ignored
    rec = region_from_chains(rows)
    assert rec["region_ns"] == 2_500.0          # median of 2*10000-17000 = 3000 and 2*6000-10000 = 2000
    assert rec["floor_ns"] == 2_500.0           # 6500 - 4000
    assert region_from_chains(rows[:2]) is None  # only the floor kind
