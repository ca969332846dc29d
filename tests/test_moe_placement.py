"""Expert placement: the Placement value, every strategy, EPLB's verified example, guarantees."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from moesim.errors import ConfigError
from moesim.moe.eplb import balanced_packing, rebalance_experts, replicate_experts
from moesim.moe.layout import Placement
from moesim.moe.metrics import cross_node_tokens, max_over_mean, placement_gpu_load
from moesim.moe.placement import PLACEMENTS, PlacementInputs, make_placement, max_gpu_load
from moesim.moe.dispatch import split_to_gpus

FAST = settings(max_examples=40, deadline=None)

EPLB_WEIGHT = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                        [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]])
EPLB_PHY2LOG = [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]


# -- the Placement value ------------------------------------------------------------------
def test_placement_helpers():
    p = Placement(4, 3, ((0, 1), (2, 0), (3, 0)))
    assert p.replicas(0) == (0, 1, 2) and p.replicas(3) == (2,)
    assert p.slots_per_gpu == (2, 2, 2) and p.num_slots == 6 and p.num_redundant == 2
    assert p.replica_counts.tolist() == [3, 1, 1, 1]
    assert p.memory_bytes(1e6).tolist() == [2e6, 2e6, 2e6]
    assert p.home_nodes(np.array([0, 1, 1])).tolist() == [1, 0, 1, 1]
    assert Placement.from_phy2log([1, 0, 3, 2], 4, 2).slots == ((1, 0), (3, 2))
    assert "gpu 1: 2 0" in p.describe()


@pytest.mark.parametrize("slots, field", [
    (((0, 1), (2,)), "slots"),          # expert 3 has no slot
    (((0, 1), (2, 4)), "slots"),        # expert id 4 out of range
    (((0, 1, 2, 3),), "slots"),         # one tuple for two GPUs
])
def test_placement_validation(slots, field):
    with pytest.raises(ConfigError) as err:
        Placement(4, 2, slots)
    assert err.value.field == field


# -- simple strategies --------------------------------------------------------------------
def test_contiguous_round_robin_hash_exact():
    inp = PlacementInputs(num_experts=8, num_gpus=4, seed=7)
    assert make_placement("contiguous", inp).slots == ((0, 1), (2, 3), (4, 5), (6, 7))
    assert make_placement("round_robin", inp).slots == ((0, 4), (1, 5), (2, 6), (3, 7))
    hashed = make_placement("hash", inp)
    assert hashed.slots_per_gpu == (2, 2, 2, 2) and sorted(hashed.slot_expert.tolist()) == list(range(8))
    assert hashed == make_placement("hash", inp)
    others = {make_placement("hash", PlacementInputs(num_experts=8, num_gpus=4, seed=s)).slots for s in range(8)}
    assert len(others) > 1
    uneven = make_placement("hash", PlacementInputs(num_experts=10, num_gpus=4))
    assert sorted(uneven.slots_per_gpu) == [2, 2, 3, 3]


@pytest.mark.parametrize("name, kwargs, field", [
    ("contiguous", dict(num_experts=10, num_gpus=4), "num_experts"),
    ("contiguous", dict(num_experts=8, num_gpus=4, num_redundant=4), "num_redundant"),
    ("round_robin", dict(num_experts=2, num_gpus=4), "num_gpus"),
    ("eplb", dict(num_experts=8, num_gpus=4, num_redundant=2, expert_load=np.ones(8)), "num_redundant"),
    ("eplb", dict(num_experts=8, num_gpus=4), "expert_load"),
    ("eplb", dict(num_experts=8, num_gpus=4, num_groups=3, expert_load=np.ones(8)), "num_groups"),
    ("eplb", dict(num_experts=8, num_gpus=3, num_redundant=1, host_of=(0, 0, 1), expert_load=np.ones(8)),
     "host_of"),
    ("topology_aware", dict(num_experts=8, num_gpus=4, num_redundant=4, host_of=(0, 0, 1, 1)), "num_redundant"),
    ("load_balanced", dict(num_experts=8, num_gpus=4, num_redundant=4, max_slots_per_gpu=2,
                           expert_load=np.ones(8)), "num_redundant"),
    ("contiguous", dict(num_experts=8, num_gpus=4, max_slots_per_gpu=1), "max_slots_per_gpu"),
    ("contiguous", dict(num_experts=8, num_gpus=4, traffic=np.ones((3, 8))), "traffic"),
    ("topology_aware", dict(num_experts=4, num_gpus=2, coactivation=np.triu(np.ones((4, 4)))), "coactivation"),
])
def test_strategy_validation_names_the_field(name, kwargs, field):
    with pytest.raises(ConfigError) as err:
        make_placement(name, PlacementInputs(**kwargs))
    assert err.value.field == field


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        make_placement("nearest_neighbour", PlacementInputs(num_experts=4, num_gpus=2))
    assert err.value.field == "placement"
    assert all(name in str(err.value) for name in PLACEMENTS)


# -- EPLB ---------------------------------------------------------------------------------
def test_eplb_reproduces_the_readme_example():
    phy2log, log2phy, logcnt = rebalance_experts(EPLB_WEIGHT, 16, 4, 2, 8)
    assert phy2log.tolist() == EPLB_PHY2LOG
    assert (logcnt.sum(axis=1) == 16).all()
    for layer in range(2):
        for e in range(12):
            slots = [s for s in log2phy[layer, e] if s >= 0]
            assert len(slots) == logcnt[layer, e] and all(phy2log[layer, s] == e for s in slots)


def test_eplb_strategy_matches_the_example_and_its_balance():
    for layer, expected_ratio in ((0, 1.208), (1, 1.242)):
        inp = PlacementInputs(num_experts=12, num_gpus=8, host_of=(0,) * 4 + (1,) * 4,
                              expert_load=EPLB_WEIGHT[layer], num_redundant=4, num_groups=4)
        placement = make_placement("eplb", inp)
        assert placement.slot_expert.tolist() == EPLB_PHY2LOG[layer]
        ratio = max_over_mean(placement_gpu_load(EPLB_WEIGHT[layer], placement))
        assert ratio == pytest.approx(expected_ratio, abs=5e-4)
        assert max_gpu_load(make_placement("load_balanced", inp), EPLB_WEIGHT[layer]) <= \
            max_gpu_load(placement, EPLB_WEIGHT[layer])


def test_eplb_building_blocks_by_hand():
    pack, rank = balanced_packing(np.array([5.0, 4.0, 3.0, 3.0]), 2)
    # 5 -> pack 0, 4 -> pack 1, 3 -> pack 1 (4 < 5), 3 -> pack 0
    assert pack.tolist() == [0, 1, 1, 0] and rank.tolist() == [0, 0, 1, 1]
    phy2log, rank, count = replicate_experts(np.array([10.0, 3.0, 6.0]), 5)
    # 10 -> 2 replicas (5 each), then max(5, 3, 6) = expert 2
    assert phy2log.tolist() == [0, 1, 2, 0, 2] and count.tolist() == [2, 1, 2] and rank.tolist() == [0, 0, 0, 1, 1]


def test_eplb_global_policy_when_groups_do_not_divide_nodes():
    load = np.array([9.0, 1, 1, 1, 1, 1, 1, 1])
    inp = PlacementInputs(num_experts=8, num_gpus=4, host_of=(0, 0, 1, 1), expert_load=load, num_redundant=4,
                          num_groups=1)
    placement = make_placement("eplb", inp)
    assert placement.replica_counts[0] >= 2 and placement.slots_per_gpu == (3, 3, 3, 3)


# -- guarantees over random inputs --------------------------------------------------------
@st.composite
def cluster(draw):
    gpus = draw(st.sampled_from([1, 2, 4, 8]))
    nodes = draw(st.sampled_from([n for n in (1, 2, 4) if gpus % n == 0]))
    experts = gpus * draw(st.integers(1, 4))
    groups = draw(st.sampled_from([g for g in range(1, experts + 1) if experts % g == 0]))
    redundant = gpus * draw(st.integers(0, 2))
    load = np.array(draw(st.lists(st.integers(0, 60), min_size=experts, max_size=experts)), dtype=float)
    host = tuple(f"n{g // (gpus // nodes)}" for g in range(gpus))
    return experts, gpus, host, groups, redundant, load


@FAST
@given(cluster(), st.integers(0, 100))
def test_every_expert_has_a_slot_in_every_placement(c, seed):
    experts, gpus, host, groups, redundant, load = c
    traffic = np.outer(np.ones(gpus), load)
    for name in PLACEMENTS:
        uses_replicas = name in ("eplb", "load_balanced")
        inp = PlacementInputs(num_experts=experts, num_gpus=gpus, host_of=host, expert_load=load, traffic=traffic,
                              num_groups=groups, num_redundant=redundant if uses_replicas else 0, seed=seed)
        placement = make_placement(name, inp)
        assert (placement.replica_counts >= 1).all()
        assert placement.num_slots == experts + (redundant if uses_replicas else 0)
        if uses_replicas:
            assert len(set(placement.slots_per_gpu)) == 1  # equal memory on every GPU


@settings(max_examples=150, deadline=None)
@given(cluster())
def test_load_balanced_never_busier_than_contiguous(c):
    experts, gpus, host, groups, redundant, load = c
    assume(load.sum() > 0)
    base = make_placement("contiguous", PlacementInputs(num_experts=experts, num_gpus=gpus))
    balanced = make_placement("load_balanced", PlacementInputs(
        num_experts=experts, num_gpus=gpus, host_of=host, expert_load=load, num_groups=groups,
        num_redundant=redundant))
    assert max_gpu_load(balanced, load) <= max_gpu_load(base, load) + 1e-9


def test_load_balanced_fixes_a_hot_expert_with_replicas():
    load = np.array([400.0] + [10.0] * 15)
    counts = np.tile(load / 4, (4, 1)).astype(int)
    base = make_placement("contiguous", PlacementInputs(num_experts=16, num_gpus=4))
    balanced = make_placement("load_balanced", PlacementInputs(num_experts=16, num_gpus=4, expert_load=load,
                                                               num_redundant=4))
    assert max_over_mean(split_to_gpus(counts, base).gpu_load) > 3.0
    # EPLB's greedy replication gives expert 0 five replicas of 80 tokens; with 5 slots per GPU one
    # GPU must hold two of them: (2 * 80 + 3 * 10) / (550 / 4) = 190 / 137.5
    assert balanced.replica_counts[0] == 5
    assert max_over_mean(placement_gpu_load(load, balanced)) == pytest.approx(190 / 137.5)
    assert max_over_mean(split_to_gpus(counts, balanced).gpu_load) < 1.45


# -- topology-aware -----------------------------------------------------------------------
def test_topology_aware_keeps_node_specific_traffic_local():
    # 2 nodes x 2 GPUs, 8 experts. Sources on node "a" only use experts 1, 3, 5, 7; node "b" the rest.
    host = ("a", "a", "b", "b")
    traffic = np.zeros((4, 8))
    traffic[:2, 1::2] = 10
    traffic[2:, 0::2] = 10
    inp = PlacementInputs(num_experts=8, num_gpus=4, host_of=host, traffic=traffic)
    placement = make_placement("topology_aware", inp)
    src_gpu = split_to_gpus(traffic.astype(int), placement).src_gpu
    assert cross_node_tokens(src_gpu, host) == 0
    base = split_to_gpus(traffic.astype(int), make_placement("contiguous", inp)).src_gpu
    assert cross_node_tokens(base, host) == 80
    assert set(placement.slots[0] + placement.slots[1]) == {1, 3, 5, 7}


def test_topology_aware_recovers_coactivated_groups():
    # experts 0,2,4,6 are always chosen together, and 1,3,5,7 too: one group per node is best
    co = np.zeros((8, 8))
    for group in ((0, 2, 4, 6), (1, 3, 5, 7)):
        for i in group:
            for j in group:
                co[i, j] = 0 if i == j else 5
    inp = PlacementInputs(num_experts=8, num_gpus=4, host_of=(0, 0, 1, 1), coactivation=co)
    placement = make_placement("topology_aware", inp)
    assert {frozenset(placement.slots[0] + placement.slots[1]), frozenset(placement.slots[2] + placement.slots[3])} \
        == {frozenset((0, 2, 4, 6)), frozenset((1, 3, 5, 7))}


@FAST
@given(nodes=st.sampled_from([2, 4]), per_node=st.sampled_from([1, 2]), per_gpu=st.integers(1, 3),
       seed=st.integers(0, 10_000))
def test_topology_aware_never_more_cross_node_than_contiguous(nodes, per_node, per_gpu, seed):
    gpus, rng = nodes * per_node, np.random.default_rng(seed)
    experts = gpus * per_gpu
    host = tuple(g // per_node for g in range(gpus))
    traffic = rng.integers(0, 20, size=(gpus, experts)) * (rng.random((gpus, experts)) < 0.5)
    inp = PlacementInputs(num_experts=experts, num_gpus=gpus, host_of=host, traffic=traffic)
    smart, base = make_placement("topology_aware", inp), make_placement("contiguous", inp)
    cross = [cross_node_tokens(split_to_gpus(traffic, p).src_gpu, host) for p in (smart, base)]
    assert cross[0] <= cross[1]
    node_load = [np.bincount(np.array(host), weights=placement_gpu_load(traffic.sum(0), p)) for p in (smart, base)]
    fair = traffic.sum() / nodes
    assert node_load[0].max() <= max(1.1 * fair, node_load[1].max()) + 1e-6
