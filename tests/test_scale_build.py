"""The reduced run's build shortcuts give the very numbers of the straightforward code.

Each shortcut (issue 16: the reduced engine's build) is checked against a plain reference on
random inputs, with exact equality: the DeepEP two-hop matrix built in one ``np.add.at`` in
source order equals the loop over sources; the distinct-token count per target equals the
``np.unique`` count; a placement strategy listed as load-free places the same experts whatever
the loads, so the routing source skips the statistics step's draw for it.
"""
from __future__ import annotations

import numpy as np
import pytest

from moesim.moe.deepep import _per_target, two_hop_units
from moesim.moe.placement import LOAD_FREE, PLACEMENTS, PlacementInputs, make_placement


def _two_hop_loop(pairs, per_gpu, per_node, host_of) -> np.ndarray:
    """The two-hop matrix source by source (the definition, as it was first written)."""
    hosts = np.unique(np.asarray(host_of), return_inverse=True)[1].reshape(-1)
    n = len(hosts)
    local = np.zeros(n, dtype=np.int64)
    members: dict[int, list[int]] = {}
    for g, h in enumerate(hosts):
        local[g] = len(members.setdefault(int(h), []))
        members[int(h)].append(g)
    gpu_units = np.asarray(pairs, dtype=float) / np.asarray(per_gpu, dtype=float)[None, :]
    units = np.zeros((n, n))
    for i in range(n):
        for node, gpus in members.items():
            if node == hosts[i]:
                units[i, gpus] += gpu_units[i, gpus]
                continue
            into = float(np.asarray(pairs)[i, gpus].sum())
            if into <= 0:
                continue
            peer = gpus[min(local[i], len(gpus) - 1)]
            units[i, peer] += into / per_node[node]
            for j in gpus:
                if j != peer:
                    units[peer, j] += gpu_units[i, j]
    np.fill_diagonal(units, 0.0)
    return units


@pytest.mark.parametrize("seed", range(40))
def test_two_hop_units_equal_the_loop_over_sources(seed) -> None:
    rng = np.random.default_rng(seed)
    per, nodes = int(rng.choice([2, 4, 8])), int(rng.integers(1, 9))
    hosts = list(np.repeat(rng.permutation(50)[:nodes], per))
    if seed % 3 == 0:
        rng.shuffle(hosts)   # a node's GPUs need not be consecutive
    pairs = rng.integers(0, 5000, (per * nodes, per * nodes)) * (rng.random((per * nodes,) * 2) > 0.3)
    if seed % 4 == 0:
        pairs = pairs * rng.random(pairs.shape)   # fractional units: summed row by row as the loop does
    per_gpu, per_node = 1 + 3 * rng.random(per * nodes), 1 + 3 * rng.random(nodes)
    got, want = two_hop_units(pairs, per_gpu, per_node, hosts), _two_hop_loop(pairs, per_gpu, per_node, hosts)
    assert np.array_equal(got, want)
    assert got.sum() > 0 or nodes * per == 1 or not pairs.any()


@pytest.mark.parametrize("seed", range(10))
def test_per_target_counts_distinct_tokens(seed) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 65))
    target = rng.integers(0, size, (int(rng.integers(1, 3000)), int(rng.integers(1, 9))))
    rows = np.repeat(np.arange(target.shape[0]), target.shape[1])
    hits = np.bincount(np.unique(rows * size + target.ravel()) % size, minlength=size).astype(float)
    pairs = np.bincount(target.ravel(), minlength=size).astype(float)
    assert np.array_equal(_per_target(target, size), np.where(hits > 0, pairs / np.maximum(hits, 1.0), 1.0))


@pytest.mark.parametrize("name", sorted(LOAD_FREE))
def test_load_free_placements_ignore_the_loads(name) -> None:
    assert name in PLACEMENTS
    rng = np.random.default_rng(3)
    base = dict(num_experts=64, num_gpus=16, host_of=tuple(np.repeat(np.arange(2), 8)), seed=5)
    traffic = rng.integers(0, 1000, (16, 64)).astype(float)
    without = make_placement(name, PlacementInputs(**base))
    with_loads = make_placement(name, PlacementInputs(**base, traffic=traffic, expert_load=traffic.sum(axis=0)))
    assert without.slots == with_loads.slots


def test_a_load_free_placement_draws_only_the_simulated_step(monkeypatch) -> None:
    import dataclasses

    import moesim.moe.routing as routing_mod
    from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario
    from moesim.memory import MemoryConfig
    from moesim.moe.routing import RoutingConfig
    from moesim.scale.reduced import build_reduced
    from moesim.workload.presets import get_model

    steps: list[int] = []
    real = routing_mod.generate_routing

    def counted(config, spec, ep, num_layers, num_microbatches, step, *args, **kwargs):
        steps.append(step)
        return real(config, spec, ep, num_layers, num_microbatches, step, *args, **kwargs)

    monkeypatch.setattr(routing_mod, "generate_routing", counted)
    spec = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=2)
    for placement, draws in (("contiguous", [1]), ("load_balanced", [0, 1])):
        steps.clear()
        scn = Scenario(name="x", topology="h800_cluster", nodes=2, model=spec, schedule="1f1b",
                       memory=MemoryConfig(recompute="none"),
                       plan=ParallelPlan(tp=1, dp=8, pp=2, ep=8, num_microbatches=2),
                       moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=0.5, seed=3), placement=placement))
        build_reduced(scn)
        assert steps == draws


@pytest.mark.parametrize("columns", [1, 2, 3, 7, 8, 11])
def test_column_helpers_equal_numpy(columns) -> None:
    from moesim.moe.sampling import _any_equal, _cumsum_columns, _sum_columns

    rng = np.random.default_rng(columns)
    x = rng.standard_exponential((5000, columns)) / rng.random((5000, columns))
    x[::7, 0] = np.inf
    assert np.array_equal(_cumsum_columns(x), np.cumsum(x, axis=1))
    assert np.array_equal(_sum_columns(np.log(x)), np.log(x).sum(axis=1))
    picks = rng.integers(0, 20, (5000, columns))
    values = rng.integers(0, 20, 5000)
    assert np.array_equal(_any_equal(picks, values), (picks == values[:, None]).any(axis=1))
    assert _any_equal(picks, values).any() and not _any_equal(picks, values).all()


def test_cache_interns_keys_and_shares_topologies() -> None:
    import dataclasses

    from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario
    from moesim.memory import MemoryConfig
    from moesim.moe.routing import RoutingConfig
    from moesim.scale.cache import ReducedCache
    from moesim.scale.reduced import build_reduced
    from moesim.workload.presets import get_model

    cache = ReducedCache()
    spec = get_model("qwen3-30b-a3b")
    assert cache.intern(("a", spec)) == cache.intern(("a", dataclasses.replace(spec))) == 0
    assert cache.intern(("b", spec)) == 1
    scn = Scenario(name="x", topology="h800_cluster", nodes=2, model=dataclasses.replace(spec, num_layers=2),
                   schedule="1f1b", memory=MemoryConfig(recompute="none"),
                   plan=ParallelPlan(tp=1, dp=8, pp=2, ep=8, num_microbatches=2),
                   moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=0.5, seed=3)))
    first = build_reduced(scn, cache=cache)
    second = build_reduced(dataclasses.replace(scn, schedule="gpipe"), cache=cache)
    assert second["sim"].topology is first["sim"].topology   # the lanes' fabric, loaded once
    stats = cache.summary()["topologies"]
    # one node (the probe, and the EP group of 8 GPUs) and the lanes' 4 nodes, loaded once each
    assert stats["misses"] == 2 and stats["hits"] == 4


def test_trace_args_fast_path_equals_the_general_walk() -> None:
    import json
    import math

    from moesim.trace.perfetto import _jsonable, _jsonable_args

    rng = np.random.default_rng(0)
    choices = [1, 2.5, "x", None, True, math.inf, (1, 2), {"GEMM": 3, "memory: copy": 4.5}, {"a": math.nan},
               {1: 2}, np.int64(3), [1, {"b": 2}]]
    for _ in range(300):
        args = {f"k{i}": choices[int(rng.integers(len(choices)))] for i in range(int(rng.integers(0, 6)))}
        got, want = _jsonable_args(args), _jsonable(dict(args))
        assert json.dumps(got) == json.dumps(want)   # same keys, order and values
        assert got is not args
