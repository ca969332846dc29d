"""The incremental max-min network gives what a from-scratch solve gives (hypothesis properties).

Three levels: the kernel solved per connected component equals one solve of the whole graph
bit for bit; re-solving after flows end, with the flows slower than every ended one kept, equals
a fresh solve; and a whole simulation with the incremental network ends every flow within 1 ns
of the same simulation solving every flow in flight at every instant.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from fabrics import chain, ring, run_gated_round_trips, star, two_hosts
from moesim.engine import Simulation
from moesim.engine.maxmin import link_components, maxmin_rates, solve_compact
from moesim.engine.network import FluidNetwork

SETTINGS = settings(max_examples=60, deadline=None)

paths_st = st.lists(st.lists(st.integers(0, 11), min_size=1, max_size=4, unique=True), min_size=1, max_size=14)
caps_st = st.lists(st.floats(0.5, 100.0), min_size=12, max_size=12)


def incidence(paths: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    inc_flow = np.repeat(np.arange(len(paths)), [len(p) for p in paths])
    return inc_flow, np.array([l for p in paths for l in p], dtype=np.int64)


@SETTINGS
@given(paths_st, caps_st)
def test_each_component_alone_gives_the_whole_solve_bit_for_bit(paths, caps):
    cap = np.array(caps)
    inc_flow, inc_link = incidence(paths)
    whole = solve_compact(inc_flow, inc_link, len(paths), cap)
    comp = link_components(inc_flow, inc_link, cap.size)
    flow_comp = np.array([comp[p[0]] for p in paths])
    assert all(comp[l] == flow_comp[f] for f, p in enumerate(paths) for l in p)
    for c in np.unique(flow_comp):
        members = np.flatnonzero(flow_comp == c)
        sub_f, sub_l = incidence([paths[m] for m in members])
        assert np.array_equal(solve_compact(sub_f, sub_l, members.size, cap), whole[members])


@SETTINGS
@given(paths_st, caps_st, st.data())
def test_resolving_only_flows_faster_than_the_ended_ones_equals_a_fresh_solve(paths, caps, data):
    cap = np.array(caps)
    inc_flow, inc_link = incidence(paths)
    before = maxmin_rates(inc_flow, inc_link, len(paths), cap)
    ended = data.draw(st.sets(st.integers(0, len(paths) - 1), min_size=1, max_size=len(paths)))
    left = [f for f in range(len(paths)) if f not in ended]
    fresh = maxmin_rates(*incidence([paths[f] for f in left]), len(left), cap)
    floor = min(before[f] for f in ended)
    kept = [i for i, f in enumerate(left) if before[f] < floor * (1 - 1e-9)]
    remaining = cap.copy()
    for i in kept:
        remaining[paths[left[i]]] -= before[left[i]]
    free = [i for i in range(len(left)) if i not in kept]
    rates = np.empty(len(left))
    rates[kept] = before[[left[i] for i in kept]]
    if free:
        rates[free] = maxmin_rates(*incidence([paths[left[i]] for i in free]), len(free), remaining)
    assert np.allclose(rates, fresh, rtol=1e-9, atol=0)


flow_st = st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(1, 3_000_000), st.integers(0, 40_000))


def run(topo, flows, incremental: bool, small_flows: int = 0):
    sim = Simulation(topo)
    sim.net = FluidNetwork(sim.env, sim.capacity, sim.recorder.add_link_samples, incremental=incremental,
                           small_flows=small_flows)
    return run_gated_round_trips(sim, flows)


@SETTINGS
@given(st.lists(flow_st, min_size=1, max_size=16), st.sampled_from(["star", "chain", "ring", "two_hosts"]),
       st.sampled_from([0, 3, 64]))
def test_incremental_network_ends_every_flow_as_the_from_scratch_solve(flows, fabric, small_flows):
    topo = {"star": lambda: star(8, bw=50.0), "chain": lambda: chain([10.0, 30.0, 20.0, 10.0, 40.0, 25.0, 15.0]),
            "ring": lambda: ring(8, bw=20.0), "two_hosts": lambda: two_hosts(4)}[fabric]()
    inc_ends, inc = run(topo, flows, incremental=True, small_flows=small_flows)
    ref_ends, ref = run(topo, flows, incremental=False)
    assert all(abs(a - b) <= 1 for a, b in zip(inc_ends, ref_ends))
    assert inc.bytes_moved == ref.bytes_moved
    assert inc.num_rate_solves <= ref.num_rate_solves
    if inc_ends == ref_ends:  # utilisation: the same samples (values to rounding)
        a = [(c.track, c.t_ns) for c in inc.recorder.counters]
        assert a == [(c.track, c.t_ns) for c in ref.recorder.counters]
        assert np.allclose([c.value for c in inc.recorder.counters], [c.value for c in ref.recorder.counters],
                           rtol=1e-9, atol=1e-12)


def test_independent_transfers_are_solved_apart():
    """Two groups of flows on disjoint links: the first group's end solves nothing (the second
    group's rates cannot change). 70 flows a group, above the size where every solve takes all."""
    sim = Simulation(star(4, bw=10.0))
    a = sim.comm([(0, "a")], [[(0, 1, 1_000)] * 70], "a", category="send")
    b = sim.comm([(2, "b")], [[(2, 3, 5_000)] * 70], "b", category="send")
    r = sim.run()
    assert (a.end_ns, b.end_ns) == (7_000, 35_000)
    assert r.num_rate_solves == 1  # one solve at t=0 for both groups, none when a group ends


@SETTINGS
@given(st.lists(flow_st, min_size=2, max_size=16), st.sampled_from(["star", "two_hosts"]))
def test_every_flow_in_flight_has_one_label_on_all_its_links(flows, fabric):
    """The invariant the incremental solve rests on, checked after every solve."""
    topo = star(8, bw=50.0) if fabric == "star" else two_hosts(4)
    sim = Simulation(topo)
    net = sim.net = FluidNetwork(sim.env, sim.capacity, small_flows=0)
    solve = net._solve

    def checked(*args):
        solve(*args)
        alive = np.flatnonzero(net._alive[:net._size])
        for row in net._links[alive]:
            assert len(set(net._label[row[row < net._pad]].tolist())) == 1
    net._solve = checked
    for i, (src, dst, nbytes, delay) in enumerate(flows):
        deps = [sim.compute(src, delay, f"gate{i}", stream=f"gate{i}")] if delay else []
        sim.comm([(src, f"f{i}")], [[(src, dst, nbytes), (dst, (src + 1) % 8, nbytes // 3 + 1)]], f"f{i}",
                 category="send", deps=deps)
    sim.run()


@SETTINGS
@given(paths_st, caps_st)
def test_padded_kernel_gives_the_compact_kernel_rates_bit_for_bit(paths, caps):
    from moesim.engine.maxmin import solve_padded

    cap = np.array(caps)
    width = max(len(p) for p in paths)
    padded = np.array([p + [cap.size] * (width - len(p)) for p in paths], dtype=np.int64)
    assert np.array_equal(solve_padded(padded, cap), solve_compact(*incidence(paths), len(paths), cap))


@SETTINGS
@given(st.lists(flow_st, min_size=1, max_size=16), st.sampled_from(["star", "two_hosts"]))
def test_solving_on_the_links_in_use_ends_flows_as_solving_on_every_link(flows, fabric):
    """Above ``_COMPACT_LINKS`` links a solve works on the links its flows use; forced on a small
    fabric, every flow ends exactly when it does with solves over every link."""
    import moesim.engine.network as network

    topo = star(8, bw=50.0) if fabric == "star" else two_hosts(4)
    kept = network._COMPACT_LINKS
    try:
        network._COMPACT_LINKS = 0
        compact_ends, _ = run(topo, flows, incremental=True, small_flows=0)
    finally:
        network._COMPACT_LINKS = kept
    ends, _ = run(topo, flows, incremental=True, small_flows=0)
    assert compact_ends == ends


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 11), min_size=1, max_size=4, unique=True), min_size=65, max_size=120),
       caps_st)
def test_padded_kernel_on_many_flows_gives_the_compact_kernel_rates_bit_for_bit(paths, caps):
    """Above 64 flows the padded kernel reduces transposed copies; the rates stay the same."""
    from moesim.engine.maxmin import solve_padded

    cap = np.array(caps)
    width = max(len(p) for p in paths)
    padded = np.array([p + [cap.size] * (width - len(p)) for p in paths], dtype=np.int64)
    assert np.array_equal(solve_padded(padded, cap), solve_compact(*incidence(paths), len(paths), cap))
