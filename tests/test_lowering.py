"""The pipeline lowering against the schedule dry run, and exact small scenarios."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings, strategies as st

from fabrics import chain, star
from moesim.engine import Simulation
from moesim.lowering.pipeline import Grid, LoweringOptions, StageWork, lower_pipeline
from moesim.schedules import dry_run, generate


@dataclass
class FakeTable:
    """Uniform per-action costs, fixed send size, no optimizer, optional TP traffic."""

    t_f: int
    t_b: int
    t_w: int
    nbytes: float = 0.0
    tp_bytes: float = 0.0
    opt_ns: int = 0

    def work(self, action):
        d = {"F": self.t_f, "B": self.t_b, "W": self.t_w, "BW": self.t_b + self.t_w}[action.kind]
        return StageWork(d, 0.0, self.tp_bytes if action.kind != "W" else 0.0, 1)

    def send_bytes(self, action):
        return self.nbytes

    def grad_bytes(self, rank, chunk):
        return 1e6

    def optimizer_ns(self, rank):
        return self.opt_ns


def lowered_makespan(schedule, table, topo, tp=1, dp=1, opts=LoweringOptions()):
    pp = schedule.num_ranks
    grid = Grid(tp, dp, pp, tuple(range(tp * dp * pp)))
    sim = Simulation(topo)
    lower_pipeline(sim, schedule, grid, table, opts)
    return sim.run()


def valid_cases():
    return st.sampled_from([
        ("gpipe", 4, 6, None), ("1f1b", 4, 8, None), ("1f1b", 3, 2, None), ("interleaved", 4, 8, 2),
        ("interleaved", 2, 4, 3), ("zb-h1", 4, 8, None), ("zb-h2", 4, 8, None), ("zb-v", 4, 8, None),
        ("dualpipe", 4, 8, None), ("dualpipev", 4, 8, None), ("dualpipe", 6, 12, None),
    ])


@settings(max_examples=40, deadline=None)
@given(valid_cases(), st.integers(1, 50), st.integers(1, 50), st.integers(1, 50))
def test_engine_replay_matches_dependency_dry_run_without_comm(case, t_f, t_b, t_w):
    name, p, m, v = case
    sched = generate(name, p, m, v)
    res = lowered_makespan(sched, FakeTable(t_f, t_b, t_w), star(p))
    assert res.makespan_ns == dry_run(sched, t_f, t_b, t_w).makespan


def test_1f1b_with_transfers_matches_dry_run_with_comm():
    # 1 MB at 100 GB/s = 10 us per hop; p=2 means one send in flight per direction at a time
    sched = generate("1f1b", 2, 4)
    res = lowered_makespan(sched, FakeTable(100_000, 150_000, 50_000, nbytes=1e6), chain([100.0]))
    assert res.makespan_ns == dry_run(sched, 100_000, 150_000, 50_000, comm=10_000).makespan


def test_gpipe_makespan_formula_on_the_engine():
    p, m, tf, tb = 4, 6, 1000, 2000
    res = lowered_makespan(generate("gpipe", p, m), FakeTable(tf, tb, 0), star(p))
    assert res.makespan_ns == (m + p - 1) * (tf + tb)


def test_blocking_tp_collective_adds_to_every_action():
    # tp=2 on a 100 GB/s star: all-reduce of 2 MB = 2 steps x 1 MB / 100 = 20 us after each F and BW
    sched = generate("1f1b", 1, 3)
    res = lowered_makespan(sched, FakeTable(10_000, 20_000, 0, tp_bytes=2e6), star(2), tp=2)
    assert res.makespan_ns == 3 * (10_000 + 20_000 + 20_000 + 20_000)


def test_dp_gradient_sync_overlaps_backward_or_waits():
    sched = generate("1f1b", 1, 2)
    table = FakeTable(10_000, 10_000, 0, opt_ns=1_000)
    over = lowered_makespan(sched, table, star(2), dp=2, opts=LoweringOptions(dp_overlap=True))
    # grads 1 MB all-reduced over 2 GPUs at 100 GB/s: 2 steps x 0.5 MB = 10 us after the last BW
    assert over.makespan_ns == 4 * 10_000 + 10_000 + 1_000
    names = {s.name for s in over.recorder.spans}
    assert "dp:grad.c0" in names and "optimizer" in names


def test_blocking_p2p_delays_the_sender():
    sched = generate("gpipe", 2, 2)
    table = FakeTable(100_000, 100_000, 0, nbytes=1e6)
    free = lowered_makespan(sched, table, chain([10.0]), opts=LoweringOptions(p2p_overlap=True)).makespan_ns
    blocking = lowered_makespan(sched, table, chain([10.0]), opts=LoweringOptions(p2p_overlap=False)).makespan_ns
    assert blocking > free


@pytest.mark.parametrize("name, p, m, v", [("gpipe", 4, 6, None), ("1f1b", 4, 8, None), ("interleaved", 4, 8, 2),
                                           ("zb-h1", 4, 8, None), ("zb-v", 4, 8, None), ("dualpipe", 4, 8, None),
                                           ("dualpipev", 4, 8, None)])
def test_blocking_sends_never_deadlock_and_never_beat_overlapped(name, p, m, v):
    sched = generate(name, p, m, v)
    table = FakeTable(10_000, 12_000, 6_000, nbytes=1e6)
    free = lowered_makespan(sched, table, star(p), opts=LoweringOptions(p2p_overlap=True)).makespan_ns
    blocking = lowered_makespan(sched, table, star(p), opts=LoweringOptions(p2p_overlap=False)).makespan_ns
    assert blocking >= free
