"""Balance and locality metrics: exact small answers and properties."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.moe import metrics
from moesim.moe.dispatch import split_to_gpus
from moesim.moe.layout import Placement

FAST = settings(max_examples=50, deadline=None)


def test_balance_numbers_by_hand():
    loads = np.array([1.0, 1.0, 2.0, 4.0])
    assert metrics.max_over_mean(loads) == 2.0
    assert metrics.balancedness(loads) == 0.5
    assert metrics.coefficient_of_variation(loads) == pytest.approx(np.sqrt(1.5) / 2)
    # Gini of (1, 1, 2, 4): sum_i (2i - n - 1) x_i / (n * total) = (-3 - 1 + 2 + 12) / 32
    assert metrics.gini(loads) == pytest.approx(10 / 32)
    assert metrics.gini(np.ones(5)) == 0.0 and metrics.max_over_mean(np.zeros(3)) == 1.0
    stats = metrics.load_stats(loads)
    assert (stats.max, stats.mean, stats.max_over_mean) == (4.0, 2.0, 2.0)


def test_balancedness_over_layers_is_vllms_ratio_of_sums():
    loads = np.array([[1.0, 3.0], [2.0, 2.0]])  # means 2, 2; maxes 3, 2
    assert metrics.balancedness(loads) == pytest.approx(4 / 5)


@FAST
@given(st.lists(st.floats(0.0, 100.0), min_size=1, max_size=30))
def test_balance_bounds(values):
    v = np.array(values)
    assert metrics.max_over_mean(v) >= 1.0 - 1e-12
    assert 0.0 <= metrics.balancedness(v) <= 1.0 + 1e-12
    assert 0.0 <= metrics.gini(v) < 1.0


def test_expert_and_gpu_loads():
    counts = np.array([[3, 0, 1, 2], [1, 2, 0, 0]])
    assert metrics.expert_load(counts).tolist() == [4, 2, 1, 2]
    placement = Placement(4, 2, ((0, 1), (2, 3, 0)))  # expert 0 replicated on both GPUs
    assert metrics.placement_gpu_load([4, 2, 1, 2], placement).tolist() == [4.0, 5.0]
    assert metrics.gpu_load(counts, placement).tolist() == [4, 5]


def test_cross_node_traffic_by_hand():
    # 4 GPUs on 2 nodes; src_gpu[src, dst] token-expert pairs
    src_gpu = np.array([[5, 1, 2, 0], [0, 0, 0, 3], [1, 0, 4, 0], [0, 0, 0, 0]])
    host = ["a", "a", "b", "b"]
    assert metrics.cross_node_tokens(src_gpu, host) == 2 + 3 + 1
    assert metrics.fraction_leaving_node(src_gpu, host) == pytest.approx(6 / 16)
    assert metrics.cross_node_bytes(src_gpu, host, 7408, 14336) == 6 * (7408 + 14336)


def test_nodes_per_token_and_coactivation():
    assignments = np.array([[0, 1], [0, 2], [3, 1]])
    expert_node = np.array([0, 0, 1, 1])
    assert metrics.nodes_per_token(assignments, expert_node).tolist() == [1, 2, 2]
    co = metrics.coactivation(assignments, 4)
    assert co[0, 1] == co[1, 0] == 1 and co[1, 3] == 1 and co[0, 3] == 0 and np.trace(co) == 0
    assert co.sum() == 2 * 3


def test_locality_of_a_split_with_nearest_policy():
    placement = Placement(2, 4, ((0,), (1,), (0,), (1,)))  # each expert on both nodes
    host = [0, 0, 1, 1]
    counts = np.array([[4, 4], [4, 4], [4, 4], [4, 4]])
    near = split_to_gpus(counts, placement, "nearest", host)
    spread = split_to_gpus(counts, placement, "proportional", host)
    assert metrics.fraction_leaving_node(near.src_gpu, host) == 0.0
    assert metrics.fraction_leaving_node(spread.src_gpu, host) == 0.5
