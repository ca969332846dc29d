"""Splitting a routing sample over expert replicas: exact answers and conservation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import ConfigError
from moesim.moe.dispatch import SPLIT_POLICIES, split_to_gpus
from moesim.moe.layout import Placement

REPLICATED = Placement(3, 4, ((0, 1), (0, 2), (1,), (0, 2)))  # expert 0 on GPUs 0, 1, 3
HOST = ("a", "a", "b", "b")


def test_proportional_split_by_hand():
    counts = np.array([[7, 2, 1], [0, 0, 5], [1, 1, 1], [0, 0, 0]])
    split = split_to_gpus(counts, REPLICATED, "proportional")
    # source 0, expert 0: 7 over 3 replicas -> 2 each + 1 leftover to replica (0 + 0) % 3 = 0 -> GPU 0
    dense = split.dense()
    assert dense[0, :, 0].tolist() == [3, 2, 0, 2]
    # source 2, expert 0: 1 token, the leftover rotates to replica (2 + 0) % 3 = 2 -> GPU 3
    assert dense[2, :, 0].tolist() == [0, 0, 0, 1]
    assert split.gpu_expert.sum(axis=0).tolist() == counts.sum(axis=0).tolist()
    assert np.array_equal(split.src_gpu, dense.sum(axis=2))
    assert np.array_equal(split.gpu_load, dense.sum(axis=(0, 2)))


def test_round_robin_sends_each_source_to_one_replica():
    counts = np.array([[6, 0, 0], [6, 0, 0], [6, 0, 0], [6, 0, 0]])
    dense = split_to_gpus(counts, REPLICATED, "round_robin").dense()
    # source r -> replica r % 3 of expert 0: GPUs 0, 1, 3, 0
    assert [int(np.flatnonzero(dense[r, :, 0])[0]) for r in range(4)] == [0, 1, 3, 0]
    assert (dense[:, :, 0].sum(axis=1) == 6).all()


def test_nearest_prefers_own_gpu_then_node():
    counts = np.full((4, 3), 4)
    dense = split_to_gpus(counts, REPLICATED, "nearest", HOST).dense()
    assert dense[0, :, 0].tolist() == [4, 0, 0, 0]  # own GPU holds expert 0
    assert dense[2, :, 0].tolist() == [0, 0, 0, 4]  # GPU 3 is on the same node
    assert dense[2, :, 1].tolist() == [0, 0, 4, 0]
    assert dense[1, :, 1].tolist() == [4, 0, 0, 0]  # expert 1: GPU 0 (same node) over GPU 2
    assert dense[2, :, 2].tolist() == [0, 0, 0, 4]
    assert dense[0, :, 2].tolist() == [0, 4, 0, 0]


@settings(max_examples=80, deadline=None)
@given(policy=st.sampled_from(SPLIT_POLICIES), gpus=st.integers(1, 6), experts=st.integers(1, 6),
       extra=st.integers(0, 8), data=st.data())
def test_split_conserves_tokens_per_source_and_expert(policy, gpus, experts, extra, data):
    home = data.draw(st.lists(st.integers(0, gpus - 1), min_size=experts, max_size=experts))
    more = data.draw(st.lists(st.tuples(st.integers(0, gpus - 1), st.integers(0, experts - 1)),
                              min_size=extra, max_size=extra))
    slots = [[] for _ in range(gpus)]
    for e, g in enumerate(home):
        slots[g].append(e)
    for g, e in more:
        slots[g].append(e)
    placement = Placement(experts, gpus, tuple(tuple(s) for s in slots))
    counts = np.array(data.draw(st.lists(st.lists(st.integers(0, 30), min_size=experts, max_size=experts),
                                         min_size=gpus, max_size=gpus)))
    host = tuple(g // 2 for g in range(gpus))
    split = split_to_gpus(counts, placement, policy, host)
    dense = split.dense()
    assert (split.src_slot >= 0).all()
    assert np.array_equal(dense.sum(axis=1), counts)  # every (source, expert) total kept
    assert np.array_equal(split.src_gpu.sum(axis=1), counts.sum(axis=1))
    assert np.array_equal(split.gpu_expert.sum(axis=0), counts.sum(axis=0))
    on_gpu = np.zeros((gpus, experts), dtype=bool)
    on_gpu[placement.slot_gpu, placement.slot_expert] = True
    assert (split.gpu_expert[~on_gpu] == 0).all()  # tokens only where a replica lives


def test_split_validation():
    with pytest.raises(ConfigError) as err:
        split_to_gpus(np.zeros((4, 3)), REPLICATED, "random")
    assert err.value.field == "policy" and "nearest" in str(err.value)
    with pytest.raises(ConfigError) as err:
        split_to_gpus(np.zeros((4, 2)), REPLICATED)
    assert err.value.field == "counts"
    with pytest.raises(ConfigError) as err:
        split_to_gpus(np.zeros((4, 3)), REPLICATED, "nearest", ("a", "b"))
    assert err.value.field == "host_of"
