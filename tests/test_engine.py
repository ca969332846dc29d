"""Engine scenarios with exactly known answers, plus deadlock reporting."""
from __future__ import annotations

import pytest

from fabrics import chain, ring, star, two_hosts
from moesim.engine import Simulation
from moesim.errors import ConfigError, DeadlockError


def spans_by_name(result):
    return {s.name: (s.start_ns, s.end_ns) for s in result.recorder.spans}


def flow(sim, src, dst, nbytes, name, stream=None, deps=()):
    return sim.comm([(src, stream or f"c.{name}")], [[(src, dst, nbytes)]], name, category="send", deps=deps)


def test_one_flow_alone_takes_latency_plus_bytes_over_bandwidth():
    sim = Simulation(chain([100.0], lat=500))
    flow(sim, 0, 1, 1_000_000, "a")
    r = sim.run()
    assert spans_by_name(r)["a"] == (0, 10_000 + 500)
    assert r.mode == "fluid"


def test_two_flows_sharing_a_link_get_half_each():
    sim = Simulation(chain([100.0]))
    flow(sim, 0, 1, 1_000_000, "a")
    flow(sim, 0, 1, 1_000_000, "b")
    r = sim.run()
    assert spans_by_name(r) == {"a": (0, 20_000), "b": (0, 20_000)}


def test_disjoint_paths_do_not_interfere():
    sim = Simulation(star(4, bw=100.0))
    flow(sim, 0, 1, 1_000_000, "a")
    flow(sim, 2, 3, 1_000_000, "b")
    r = sim.run()
    assert spans_by_name(r) == {"a": (0, 10_000), "b": (0, 10_000)}


def test_opposite_directions_do_not_interfere():
    sim = Simulation(chain([100.0]))
    flow(sim, 0, 1, 1_000_000, "a")
    flow(sim, 1, 0, 1_000_000, "b")
    assert spans_by_name(sim.run()) == {"a": (0, 10_000), "b": (0, 10_000)}


def test_flow_limited_by_bottleneck_link():
    sim = Simulation(chain([100.0, 10.0]))
    flow(sim, 0, 2, 1_000_000, "a")
    assert spans_by_name(sim.run())["a"] == (0, 100_000)


def test_bottlenecked_flow_leaves_rest_to_other_flow():
    # a: 0->2 limited to 10 by link 1-2; b: 0->1 gets 100-10 = 90 on link 0-1 (max-min)
    sim = Simulation(chain([100.0, 10.0]))
    flow(sim, 0, 2, 100_000, "a")
    flow(sim, 0, 1, 900_000, "b")
    assert spans_by_name(sim.run()) == {"a": (0, 10_000), "b": (0, 10_000)}


def test_flow_joining_mid_transfer_slows_the_first_as_max_min_says():
    # a alone at 1 B/ns for 200 ns (200 B), then both at 0.5: a's 800 B take 1600 ns -> 1800;
    # b has 200 B left at 1800 and runs alone -> 2000.
    sim = Simulation(chain([1.0]))
    flow(sim, 0, 1, 1000, "a")
    gate = sim.compute(0, 200, "gate")
    flow(sim, 0, 1, 1000, "b", deps=[gate])
    assert spans_by_name(sim.run())["a"] == (0, 1800)
    sim = Simulation(chain([1.0]))
    flow(sim, 0, 1, 1000, "a")
    gate = sim.compute(0, 200, "gate")
    flow(sim, 0, 1, 1000, "b", deps=[gate])
    assert spans_by_name(sim.run())["b"] == (200, 2000)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_ring_all_reduce_matches_formula(n):
    size, bw, link_lat, step_lat = 8_000_000, 100.0, 700, 3000
    sim = Simulation(ring(n, bw=bw, lat=link_lat))
    sim.collective("all_reduce", list(range(n)), size, "ar", step_latency_ns=step_lat)
    r = sim.run()
    expected = 2 * (n - 1) * (size / n / bw + link_lat + step_lat)
    assert r.makespan_ns == pytest.approx(expected, abs=2 * (n - 1))
    assert len([s for s in r.recorder.spans if s.name == "ar"]) == n


def test_all_gather_and_reduce_scatter_take_half_an_all_reduce():
    n, size = 4, 4_000_000
    times = {}
    for op in ("all_reduce", "all_gather", "reduce_scatter"):
        sim = Simulation(star(n, bw=100.0))
        sim.collective(op, list(range(n)), size, op)
        times[op] = sim.run().makespan_ns
    assert times["all_gather"] == times["reduce_scatter"] == times["all_reduce"] // 2 == 3 * 10_000


def test_all_to_all_on_a_switch_is_limited_by_each_gpu_port():
    # each GPU sends 3 x 1 MB out of its 100 GB/s port and receives 3 x 1 MB: 30 us
    sim = Simulation(star(4, bw=100.0))
    sim.collective("all_to_all", [0, 1, 2, 3], 4_000_000, "a2a")
    assert sim.run().makespan_ns == 30_000


def test_all_to_all_v_hot_receiver_takes_longest():
    m = [[0, 1e6, 0], [0, 0, 0], [0, 3e6, 0]]
    sim = Simulation(star(3, bw=100.0))
    sim.collective("all_to_all_v", [0, 1, 2], m, "a2av")
    # gpu1's downlink carries 4 MB shared max-min: 1 MB flow finishes at 20 us, 3 MB at 40 us
    assert sim.run().makespan_ns == 40_000


def test_hierarchical_all_reduce_crosses_nic_with_local_share_only():
    sim = Simulation(two_hosts(4, nvl_bw=400.0, nic_bw=50.0))
    sim.collective("all_reduce", list(range(8)), 8_000_000, "ar", algorithm="hierarchical")
    r = sim.run()
    # intra RS: 3 steps of 2 MB at 400 -> 15 us; inter: 4 rings of 2 ranks, 2 steps of 1 MB, the
    # 4 flows per direction share one 50 GB/s NIC path -> 2 * 80 us; intra AG 15 us.
    assert r.makespan_ns == 15_000 + 160_000 + 15_000


def test_send_recv_occupies_both_streams_and_draws_an_arrow():
    sim = Simulation(chain([100.0]))
    sim.send(0, 1, 1_000_000, "act")
    r = sim.run()
    tracks = sorted((s.rank, s.stream) for s in r.recorder.spans)
    assert tracks == [(0, "comm.send"), (1, "comm.recv")]
    assert len(r.recorder.arrows) == 1


def test_stream_runs_in_order_and_streams_run_concurrently():
    sim = Simulation(star(2))
    sim.compute(0, 100, "a")
    sim.compute(0, 50, "b")
    sim.compute(0, 70, "c", stream="comm")
    d = sim.compute(1, 10, "d")
    sim.compute(1, 10, "e", deps=[sim.tasks[1]])
    r = sim.run()
    assert spans_by_name(r) == {"a": (0, 100), "b": (100, 150), "c": (0, 70), "d": (0, 10), "e": (150, 160)}
    assert d.end_ns == 10


def test_overlap_slowdown_stretches_compute_during_comm():
    sim = Simulation(chain([1.0]), overlap_slowdown=1.5)
    flow(sim, 0, 1, 1000, "x", stream="comm")
    gate = sim.compute(0, 10, "gate")
    sim.compute(0, 100, "k", deps=[gate])
    sim.compute(1, 100, "other_gpu")
    r = sim.run()
    assert spans_by_name(r)["gate"] == (0, 15) and spans_by_name(r)["k"] == (15, 165)
    assert spans_by_name(r)["other_gpu"] == (0, 100)


def test_analytical_mode_ignores_contention_and_says_so():
    sim = Simulation(chain([100.0]), mode="analytical")
    flow(sim, 0, 1, 1_000_000, "a")
    flow(sim, 0, 1, 1_000_000, "b")
    r = sim.run()
    assert spans_by_name(r) == {"a": (0, 10_000), "b": (0, 10_000)}
    assert r.mode == "analytical" and r.recorder.meta["mode"] == "analytical"


def test_link_efficiency_scales_capacity():
    sim = Simulation(chain([100.0]), link_efficiency={"nvlink": 0.5})
    flow(sim, 0, 1, 1_000_000, "a")
    assert sim.run().makespan_ns == 20_000


def test_deadlock_lists_stuck_tasks_and_what_they_wait_on():
    sim = Simulation(star(2))
    a = sim.compute(0, 10, "A")
    b = sim.compute(1, 10, "B")
    sim.add_dep(a, b)
    sim.add_dep(b, a)
    with pytest.raises(DeadlockError) as err:
        sim.run()
    msg = str(err.value)
    assert "gpu0/compute: 'A' waits on 'B'" in msg and "gpu1/compute: 'B' waits on 'A'" in msg


def test_rendezvous_deadlock_names_the_peer():
    sim = Simulation(star(2))
    x = sim.compute(1, 10, "X", stream="comm")
    c = sim.collective("all_reduce", [0, 1], 1000, "AR")
    sim.add_dep(x, c)
    with pytest.raises(DeadlockError, match=r"'AR' waits for its peers to reach it: gpu1/comm \(busy with 'X'\)"):
        sim.run()


@pytest.mark.parametrize("bad", [
    dict(mode="quantum"),
    dict(overlap_slowdown=0.5),
    dict(link_efficiency={"nvlink": 1.5}),
])
def test_bad_simulation_config_is_a_clear_error(bad):
    with pytest.raises(ConfigError):
        Simulation(star(2), **bad)


def test_bad_task_input_is_a_clear_error():
    sim = Simulation(star(2))
    with pytest.raises(ConfigError, match="rank 5 out of range"):
        sim.compute(5, 10, "x")
    with pytest.raises(ConfigError, match="negative duration"):
        sim.compute(0, -1, "x")
    with pytest.raises(ConfigError, match="unknown collective"):
        sim.collective("all_shuffle", [0, 1], 10, "x")
    with pytest.raises(ConfigError, match="duplicate ranks"):
        sim.collective("all_reduce", [0, 0], 10, "x")


def test_same_inputs_same_spans():
    def once():
        sim = Simulation(two_hosts(2))
        sim.collective("all_to_all", [0, 1, 2, 3], 3e6, "a2a")
        sim.collective("all_reduce", [0, 1, 2, 3], 5e6, "ar", algorithm="hierarchical")
        r = sim.run()
        return [(s.name, s.rank, s.start_ns, s.end_ns) for s in r.recorder.spans], r.recorder.counters
    assert once() == once()


# -- region cost: a task queued behind another on its stream saves region_ns -----------------------
def test_region_cost_is_saved_only_behind_another_task():
    sim = Simulation(chain([100.0], lat=0))
    a = sim.compute(0, 10_000, "a", region_ns=3_000)           # idle stream: pays all 10 us
    b = sim.compute(0, 10_000, "b", region_ns=3_000)           # queued behind a: 7 us
    c = sim.compute(1, 5_000, "c")                             # another GPU
    d = sim.compute(0, 10_000, "d", region_ns=3_000, deps=[c])  # ready at 5 us, starts behind b: 7 us
    gap = sim.compute(1, 30_000, "gap", deps=[c])
    e = sim.compute(0, 10_000, "e", region_ns=3_000, deps=[gap])  # the stream idles until 35 us: 10 us
    res = sim.run()
    got = spans_by_name(res)
    assert got["a"] == (0, 10_000) and got["b"] == (10_000, 17_000) and got["d"] == (17_000, 24_000)
    assert got["e"] == (35_000, 45_000)
    assert all(t.duration_ns == 10_000 for t in (a, b, d, e))  # the task keeps its nominal duration


def test_region_cost_zero_changes_nothing_and_bad_values_are_refused():
    times = []
    for region in (0, 2_000):
        sim = Simulation(chain([100.0]))
        for k in range(4):
            sim.compute(0, 5_000, f"k{k}", region_ns=region)
        times.append(sim.run().makespan_ns)
    assert times == [20_000, 20_000 - 3 * 2_000]
    sim = Simulation(chain([100.0]))
    with pytest.raises(ConfigError, match="region_ns"):
        sim.compute(0, 1_000, "x", region_ns=2_000)
    with pytest.raises(ConfigError, match="region_ns"):
        sim.compute(0, 1_000, "x", region_ns=-1)


@pytest.mark.parametrize("mode", ["fluid", "analytical"])
def test_a_phase_ends_when_its_last_flow_has_arrived(mode):
    """One event per phase (transfer_many): it fires at the latest end plus latency of the
    phase's flows, a zero-byte flow (its latency only) included. Chain gpu0-gpu1-gpu2, 10 GB/s
    and 100 ns a link: 1,000 B over one link arrive at 100 + 100 ns, nothing over two links at
    200 ns, 2,000 B over the other link at 200 + 100 ns; the other phase, on links of its own,
    ends with its zero-byte flow at 200 ns."""
    sim = Simulation(chain([10.0, 10.0], lat=100), mode=mode)
    phase = sim.comm([(0, "c")], [[(0, 1, 1000), (0, 2, 0), (1, 2, 2000)]], "p", category="send")
    short = sim.comm([(2, "d")], [[(2, 1, 1000), (2, 0, 0)]], "q", category="send")
    sim.run()
    assert (phase.end_ns, short.end_ns) == (300, 200)


def test_link_integrals_from_the_arrays_equal_those_of_the_counter_samples_steps():
    """analysis.timeline.link_integrals reads the recorder's link sample arrays (no sample objects)
    and gives step_integral of counter_steps for every link track (sorted by time, the last sample
    of an instant winning), bit for bit, on a recorder with repeated instants."""
    import numpy as np

    from moesim.analysis.timeline import LINK_PREFIX, counter_steps, link_integrals, step_integral
    from moesim.engine.recorder import Recorder

    rec = Recorder()
    rec.link_tracks = [f"{LINK_PREFIX}a->b", f"{LINK_PREFIX}b->c", f"{LINK_PREFIX}c->d"]
    rng = np.random.default_rng(5)
    for t in sorted(rng.integers(0, 50, size=40).tolist()):   # repeated instants
        ids = rng.choice(3, size=rng.integers(1, 4), replace=False)
        rec.add_link_samples(int(t), ids, rng.random(ids.size) * (rng.random(ids.size) > 0.2))
    rec.add_counter("other", 3, 1.0)
    want = {k: v for k, v in counter_steps(rec).items() if k.startswith(LINK_PREFIX)}
    assert len(want) == 3
    # at horizons inside, at the end of and past the samples (zero values included: time with value > 0)
    for horizon in (0, 23, 49, 80):
        assert link_integrals(rec, horizon) == {k: step_integral(v, horizon) for k, v in want.items()}
    rec.add_counter(f"{LINK_PREFIX}a->b", 7, 0.5)   # a link sample added one by one: the general path
    assert link_integrals(rec, 10) is None


def test_hierarchical_reduce_scatter_and_all_gather_cross_nic_with_local_share_only():
    """The lowering asks for hierarchical DP reduce-scatters and all-gathers (ZeRO-1): rings
    inside each host over NVSwitch, then one ring per local index across hosts."""
    sim = Simulation(two_hosts(4, nvl_bw=400.0, nic_bw=50.0))
    sim.collective("reduce_scatter", list(range(8)), 8_000_000, "rs", algorithm="hierarchical")
    r = sim.run()
    # intra RS: 3 steps of 2 MB at 400 -> 15 us; inter: 4 rings of 2 ranks, one step of 1 MB, the
    # 4 flows per direction share one 50 GB/s NIC path -> 80 us
    assert r.makespan_ns == 15_000 + 80_000
    sim = Simulation(two_hosts(4, nvl_bw=400.0, nic_bw=50.0))
    sim.collective("all_gather", list(range(8)), 8_000_000, "ag", algorithm="hierarchical")
    assert sim.run().makespan_ns == 80_000 + 15_000
    flat = Simulation(two_hosts(4, nvl_bw=400.0, nic_bw=50.0))
    flat.collective("reduce_scatter", list(range(8)), 8_000_000, "rs")
    # flat ring: 7 steps of 1 MB, each limited by the ring's two NIC crossings at 50 GB/s
    assert flat.run().makespan_ns == 7 * 20_000


def test_hierarchical_builders_fall_back_to_a_flat_ring_on_one_host_or_uneven_hosts():
    from moesim.engine import collectives as coll

    def host(r):
        return 0 if r < 3 else 1
    for ranks in ([0, 1, 2], [0, 1, 2, 3]):
        hosts = host if len(ranks) == 4 else (lambda r: 0)
        assert coll.hierarchical_reduce_scatter(ranks, 1e6, hosts) == coll.ring_reduce_scatter(ranks, 1e6)
        assert coll.hierarchical_all_gather(ranks, 1e6, hosts) == coll.ring_all_gather(ranks, 1e6)
