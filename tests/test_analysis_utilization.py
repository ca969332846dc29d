"""Utilisation and bubbles: exact numbers on a hand-built recorder, invariants on random ones."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.analysis import bubbles, utilization
from moesim.analysis.timeline import gaps, merge_intervals, overlap_ns, union_length_ns
from moesim.engine.recorder import Recorder, Span
from moesim.errors import ConfigError
from moesim.trace.synthetic import synthetic_recorder


def hand_recorder() -> Recorder:
    rec = Recorder(meta={"num_ranks": 3, "links": {"link:a->b": {"kind": "ib", "bandwidth_gbps": 50.0},
                                                   "link:c->d": {"kind": "nvlink", "bandwidth_gbps": 450.0}}})
    for task, (rank, stream, start, end, stage) in enumerate([
            (0, "compute", 0, 100, 0), (0, "compute", 150, 250, 0), (0, "comm", 50, 120, None),
            (1, "compute", 100, 400, 1)]):
        args = {} if stage is None else {"stage": stage}
        rec.add_span(Span(task, rank, 0, stream, f"t{task}", "forward", start, end, args))
    for t_ns, value in ((0, 0.5), (100, 1.0), (300, 0.0), (500, 1.0)):
        rec.add_counter("link:a->b", t_ns, value)
    rec.add_counter("bytes_in_flight", 0, 1e9)
    return rec


def test_stream_busy_fractions() -> None:
    util = utilization(hand_recorder())
    assert util.makespan_ns == 400
    assert [(u.resource, u.busy_ns) for u in util.streams] == [
        ("gpu0 compute", 200), ("gpu0 comm", 70), ("gpu1 compute", 300)]
    assert util.stream(0, "compute").fraction == 0.5
    assert util.stream(0, "comm").fraction == 70 / 400
    assert util.stream(1, "compute").fraction == 0.75
    with pytest.raises(KeyError):
        util.stream(2, "compute")


def test_link_mean_is_time_weighted_over_the_step() -> None:
    util = utilization(hand_recorder())
    links = {u.track: u for u in util.links}
    assert set(links) == {"link:a->b", "link:c->d"}  # non-link counters are not links
    ab = links["link:a->b"]
    assert (ab.mean_utilization, ab.busy_fraction, ab.peak_utilization) == (250 / 400, 0.75, 1.0)
    assert ab.label == "a->b (ib)"
    assert (links["link:c->d"].mean_utilization, links["link:c->d"].label) == (0.0, "c->d (nvlink)")
    assert [u.track for u in util.busiest_links(1)] == ["link:a->b"]


def test_bubbles_per_rank_stage_and_total() -> None:
    bub = bubbles(hand_recorder())
    g0, g1, g2 = bub.rank(0), bub.rank(1), bub.rank(2)
    assert (g0.busy_ns, g0.idle_ns) == (200, 200)
    assert (g0.leading_idle_ns, g0.trailing_idle_ns, g0.interior_idle_ns) == (0, 150, 50)
    assert (g0.idle_fraction, g0.idle_vs_ideal) == (0.5, 1.0)
    assert (g0.overlapped_idle_ns, g0.gpu_idle_ns, g0.gpu_idle_fraction) == (20, 180, 0.45)  # comm covers 100..120
    assert (g1.overlapped_idle_ns, g1.gpu_idle_ns, g2.gpu_idle_ns) == (0, 100, 400)
    assert (g1.busy_ns, g1.idle_ns, g1.leading_idle_ns, g1.trailing_idle_ns) == (300, 100, 100, 0)
    assert (g1.idle_fraction, g1.idle_vs_ideal) == (0.25, 100 / 300)
    assert (g2.busy_ns, g2.idle_ns, g2.idle_fraction, g2.idle_vs_ideal) == (0, 400, 1.0, None)
    assert (bub.total_idle_ns, bub.idle_fraction, bub.idle_vs_ideal) == (700, 700 / 1200, 700 / 500)
    assert bub.gpu_idle_fraction == pytest.approx((0.45 + 0.25 + 1.0) / 3)
    assert [(s.stage, s.ranks, s.busy_ns, s.idle_fraction, s.gpu_idle_fraction) for s in bub.stages] == [
        (0, (0,), 200, 0.5, 0.45), (1, (1,), 300, 0.25, 0.25)]


def test_busy_streams_can_count_blocking_communication() -> None:
    bub = bubbles(hand_recorder(), busy_streams=("compute", "comm"))
    assert (bub.rank(0).busy_ns, bub.rank(0).interior_idle_ns, bub.rank(0).trailing_idle_ns) == (220, 30, 150)
    assert bub.rank(0).overlapped_idle_ns == 0
    assert [s.busy_ns for s in bub.stages] == [200, 300]  # the comm span carries no stage
    with pytest.raises(ConfigError, match="busy_streams"):
        bubbles(hand_recorder(), busy_streams="compute")  # type: ignore[arg-type]


def test_to_dict_is_keyed_by_names() -> None:
    util, bub = utilization(hand_recorder()), bubbles(hand_recorder())
    assert util.to_dict()["streams"]["gpu1 compute"] == {"busy_ns": 300, "fraction": 0.75}
    assert util.to_dict()["links"]["link:a->b"]["mean_utilization"] == 0.625
    assert bub.to_dict()["ranks"]["gpu2"]["idle_ns"] == 400
    assert bub.to_dict()["stages"]["1"] == {"ranks": [1], "busy_ns": 300, "idle_fraction": 0.25,
                                            "gpu_idle_fraction": 0.25}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), num_ranks=st.integers(1, 5), num_tasks=st.integers(0, 50))
def test_busy_plus_idle_is_the_step(seed: int, num_ranks: int, num_tasks: int) -> None:
    rec = synthetic_recorder(seed, num_ranks, num_tasks)
    util, bub = utilization(rec), bubbles(rec)
    assert all(0.0 <= u.fraction <= 1.0 for u in util.streams)
    assert all(0.0 <= u.mean_utilization <= u.busy_fraction <= 1.0 for u in util.links)
    for b in bub.ranks:
        assert b.busy_ns + b.idle_ns == bub.makespan_ns
        assert b.leading_idle_ns + b.trailing_idle_ns + b.interior_idle_ns == b.idle_ns
        assert min(b.leading_idle_ns, b.trailing_idle_ns, b.interior_idle_ns) >= 0
        assert 0 <= b.overlapped_idle_ns <= b.idle_ns and b.gpu_idle_ns == b.idle_ns - b.overlapped_idle_ns
    assert [b.rank for b in bub.ranks] == list(range(num_ranks))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20)), max_size=8),
       st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20)), max_size=8))
def test_interval_helpers_match_a_unit_grid(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    a_iv, b_iv = [(s, s + d) for s, d in a], [(s, s + d) for s, d in b]
    cells_a = {t for s, e in a_iv for t in range(s, e)}
    cells_b = {t for s, e in b_iv for t in range(s, e)}
    ma, mb = merge_intervals(a_iv), merge_intervals(b_iv)
    assert union_length_ns(a_iv) == len(cells_a)
    assert overlap_ns(ma, mb) == len(cells_a & cells_b)
    assert sum(e - s for s, e in gaps(ma, 80)) == 80 - len(cells_a)
