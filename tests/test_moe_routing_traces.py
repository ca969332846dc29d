"""Routing traces: the two npz layouts, microbatch splitting, cyclic replay, validation."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import ConfigError
from moesim.moe.routing import RoutingConfig, generate_counts, generate_routing
from moesim.moe.traces import load_trace, split_evenly, write_assignments_trace, write_counts_trace
from moesim.workload.moe import MoESpec

SPEC = MoESpec(name="tiny-moe", num_layers=2, hidden=64, num_heads=4, num_kv_heads=4, head_dim=16,
               ffn_hidden=128, vocab=128, seq_len=32, num_experts=4, top_k=2, expert_ffn_hidden=32)


def trace_cfg(path, **kw) -> RoutingConfig:
    return RoutingConfig(kind="trace", trace_path=str(path), **kw)


def test_counts_trace_replays_exactly_and_cycles(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 9, size=(3, 2, 2, 4))  # steps, layers, ranks, experts
    path = tmp_path / "counts.npz"
    write_counts_trace(path, counts)
    for step in (0, 2, 4):  # step 4 wraps to recorded step 1
        got = generate_counts(trace_cfg(path), SPEC, 2, 2, 1, step)
        assert np.array_equal(got[:, 0], counts[step % 3])
    split = generate_counts(trace_cfg(path), SPEC, 2, 2, 3, 1)
    assert np.array_equal(split.sum(axis=1), counts[1])  # microbatches add back up


def test_counts_trace_with_microbatches(tmp_path):
    counts = np.arange(2 * 1 * 3 * 2 * 4).reshape(2, 1, 3, 2, 4)
    path = tmp_path / "mb.npz"
    write_counts_trace(path, counts)
    assert np.array_equal(generate_counts(trace_cfg(path), SPEC, 2, 1, 3, 1)[0], counts[1, 0])
    with pytest.raises(ConfigError) as err:
        generate_counts(trace_cfg(path), SPEC, 2, 1, 2, 0)
    assert err.value.field == "num_microbatches"


def test_assignments_trace_counts_tokens(tmp_path):
    # one step, one layer, 4 tokens: rank 0 sends tokens 0,1; rank 1 sends tokens 2,3
    assignments = np.array([[[[0, 1], [1, 2], [3, 0], [3, 2]]]])
    path = tmp_path / "assign.npz"
    write_assignments_trace(path, assignments, src_rank=[0, 0, 1, 1], num_experts=4)
    got = generate_counts(trace_cfg(path), replace(SPEC, num_layers=1), 2, 1, 1, 0)
    assert got[0, 0].tolist() == [[1, 2, 1, 0], [1, 0, 1, 2]]
    per_mb = generate_counts(trace_cfg(path), replace(SPEC, num_layers=1), 2, 1, 2, 0)[0]
    assert per_mb[0].tolist() == [[1, 1, 0, 0], [1, 0, 0, 1]]  # first token of each rank
    assert per_mb[1].tolist() == [[0, 1, 1, 0], [0, 0, 1, 1]]
    trace = load_trace(path)
    assert (trace.num_steps, trace.num_layers, trace.num_ranks, trace.num_experts, trace.top_k) == (1, 1, 2, 4, 2)


def test_assignments_trace_with_explicit_microbatch(tmp_path):
    assignments = np.array([[[[0, 1], [1, 2], [3, 0]]]])
    path = tmp_path / "assign_mb.npz"
    write_assignments_trace(path, assignments, src_rank=[0, 1, 0], num_experts=4, num_ranks=2, microbatch=[1, 0, 1])
    got = generate_counts(trace_cfg(path), replace(SPEC, num_layers=1), 2, 1, 2, 0)[0]
    assert got[0].tolist() == [[0, 0, 0, 0], [0, 1, 1, 0]]
    assert got[1].tolist() == [[2, 1, 0, 1], [0, 0, 0, 0]]


def test_trace_capacity_uses_each_ranks_tokens(tmp_path):
    counts = np.array([[[[2, 2, 0, 0], [1, 1, 1, 1]]]])  # rank 0: 2 tokens x top-2; rank 1: 2 tokens
    path = tmp_path / "cap.npz"
    write_counts_trace(path, counts)
    batch = generate_routing(trace_cfg(path, capacity_factor=1.0), replace(SPEC, num_layers=1), 2, 1, 1, 0)
    assert batch.sampler == "trace"
    assert batch.kept[0, 0].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]  # capacity ceil(2*2/4) = 1
    assert batch.dropped_per_expert[0, 0].tolist() == [1, 1, 0, 0]


@pytest.mark.parametrize("field, arrays", [
    ("trace", dict(other=np.zeros(3))),
    ("counts", dict(counts=np.zeros((2, 2, 2)))),
    ("counts", dict(counts=np.zeros((1, 1, 2, 4), dtype=float))),
    ("counts", dict(counts=-np.ones((1, 1, 2, 4), dtype=int))),
    ("src_rank", dict(assignments=np.zeros((1, 1, 2, 2), dtype=int), num_experts=4)),
    ("num_experts", dict(assignments=np.zeros((1, 1, 2, 2), dtype=int), src_rank=np.zeros(2, dtype=int))),
    ("assignments", dict(assignments=np.array([[[[0, 0], [1, 2]]]]), src_rank=np.zeros(2, dtype=int),
                         num_experts=4)),
    ("assignments", dict(assignments=np.array([[[[0, 9], [1, 2]]]]), src_rank=np.zeros(2, dtype=int),
                         num_experts=4)),
    ("format_version", dict(counts=np.zeros((1, 1, 2, 4), dtype=int), format_version=7)),
])
def test_bad_trace_files_name_the_field(tmp_path, field, arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ConfigError) as err:
        load_trace(path)
    assert err.value.field == field and str(path) in str(err.value)


def test_trace_must_match_the_run(tmp_path):
    path = tmp_path / "c.npz"
    write_counts_trace(path, np.ones((1, 2, 2, 4), dtype=int))
    for field, call in (("ep", lambda: generate_counts(trace_cfg(path), SPEC, 4, 2, 1, 0)),
                        ("num_experts", lambda: generate_counts(trace_cfg(path), replace(SPEC, num_experts=8), 2, 2,
                                                                1, 0)),
                        ("num_layers", lambda: generate_counts(trace_cfg(path), SPEC, 2, 3, 1, 0)),
                        ("trace_path", lambda: generate_counts(trace_cfg(tmp_path / "missing.npz"), SPEC, 2, 2, 1, 0))):
        with pytest.raises(ConfigError) as err:
            call()
        assert err.value.field == field


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=6, max_size=6), parts=st.integers(1, 7))
def test_split_evenly_conserves_and_stays_even(counts, parts):
    c = np.array(counts).reshape(2, 3)
    split = split_evenly(c, parts)
    assert split.shape == (parts, 2, 3)
    assert np.array_equal(split.sum(axis=0), c)
    assert (split.max(axis=0) - split.min(axis=0) <= 1).all()


def test_a_trace_whose_totals_are_not_the_models_tokens_is_refused(tmp_path):
    """A counts trace recorded at another batch size would make the step route other tokens than
    the model's: refused, naming the field, never simulated silently."""
    from moesim.experiment.build import build_scenario
    from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario
    from moesim.workload.moe import MoESpec

    spec = MoESpec(name="tiny-moe", num_layers=2, hidden=512, num_heads=8, num_kv_heads=8, head_dim=64,
                   ffn_hidden=1024, vocab=32000, seq_len=512, num_experts=8, top_k=2, expert_ffn_hidden=256)
    path = tmp_path / "small.npz"
    counts = np.full((1, 2, 2, 8), 1, dtype=np.int64)  # 8 pairs per rank; the model routes 512 x 2
    np.savez(path, counts=counts, num_experts=np.int64(8))
    scn = Scenario("t", "dgx_h100", spec, plan=ParallelPlan(dp=2, ep=2, num_microbatches=2), cost_model="roofline",
                   gpus_per_node=2,
                   moe=MoEOptions(routing=RoutingConfig(kind="trace", trace_path=str(path))))
    with pytest.raises(ConfigError) as err:
        build_scenario(scn)
    assert err.value.field == "moe.routing.trace_path" and "tokens x top_k = 1024" in str(err.value)
