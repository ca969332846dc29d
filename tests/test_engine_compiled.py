"""The compiled fluid network (moesim.engine._fluidcore) against the numpy one.

The same mechanism in C: a simulation ends every flow within 1 ns of the numpy network solving
every flow in flight at every instant, moves the same bytes, records the same utilisation
samples (values to rounding) and solves no more often; rates after a solve are the max-min
rates of the flows in flight; bad paths are refused; the backend switch names its variable.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fabrics import chain, ring, run_gated_round_trips, star, two_hosts
from moesim.engine import Simulation
from moesim.engine.compiled import BACKEND_ENV, CompiledFluidNetwork, compiled_available, fluid_network
from moesim.engine.maxmin import maxmin_rates
from moesim.engine.network import FluidNetwork
from moesim.errors import ConfigError

pytestmark = pytest.mark.skipif(not compiled_available(), reason="moesim.engine._fluidcore not built")


@pytest.fixture(autouse=True)
def _compiled_default(monkeypatch):
    """Simulations built here run the compiled network whatever MOESIM_FLUID says outside."""
    monkeypatch.delenv(BACKEND_ENV, raising=False)
SETTINGS = settings(max_examples=80, deadline=None)
flow_st = st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(1, 3_000_000), st.integers(0, 40_000))
FABRICS = {"star": lambda: star(8, bw=50.0), "chain": lambda: chain([10.0, 30.0, 20.0, 10.0, 40.0, 25.0, 15.0]),
           "ring": lambda: ring(8, bw=20.0), "two_hosts": lambda: two_hosts(4)}


def run(topo, flows, compiled: bool, relabel_after: int = 64):
    sim = Simulation(topo)
    sink = sim.recorder.add_link_samples
    sim.net = (CompiledFluidNetwork(sim.env, sim.capacity, sink, relabel_after) if compiled
               else FluidNetwork(sim.env, sim.capacity, sink, incremental=False))
    return run_gated_round_trips(sim, flows)


@SETTINGS
@given(st.lists(flow_st, min_size=1, max_size=24), st.sampled_from(sorted(FABRICS)), st.sampled_from([1, 3, 64]))
def test_compiled_network_ends_every_flow_as_the_from_scratch_numpy_solve(flows, fabric, relabel_after):
    """Labels recomputed exactly after every end (1), now and then (3), or never here (64)."""
    topo = FABRICS[fabric]()
    ends, res = run(topo, flows, compiled=True, relabel_after=relabel_after)
    ref_ends, ref = run(topo, flows, compiled=False)
    assert all(abs(a - b) <= 1 for a, b in zip(ends, ref_ends))
    assert res.bytes_moved == ref.bytes_moved
    assert res.num_rate_solves <= ref.num_rate_solves
    if ends == ref_ends:
        a = [(c.track, c.t_ns) for c in res.recorder.counters]
        assert a == [(c.track, c.t_ns) for c in ref.recorder.counters]
        assert np.allclose([c.value for c in res.recorder.counters], [c.value for c in ref.recorder.counters],
                           rtol=1e-9, atol=1e-12)


@SETTINGS
@given(st.lists(st.lists(st.integers(0, 11), min_size=1, max_size=4, unique=True), min_size=1, max_size=40),
       st.lists(st.floats(0.5, 100.0), min_size=12, max_size=12), st.sampled_from([1, 64]))
def test_rates_are_the_max_min_rates_of_the_flows_in_flight(paths, caps, relabel_after):
    """Flows started at once, then some ended: after each step the rates are those of a fresh
    max-min solve of the flows left (the kept slower flows included)."""
    from moesim.engine._fluidcore import Core

    cap = np.array(caps)
    core = Core(cap, None, None, relabel_after)
    slots = [core.add(p, 1e6 * (i + 1), 0) for i, p in enumerate(paths)]

    def check(alive):
        inc_flow = np.repeat(np.arange(len(alive)), [len(paths[i]) for i in alive])
        inc_link = np.array([l for i in alive for l in paths[i]], dtype=np.int64)
        want = maxmin_rates(inc_flow, inc_link, len(alive), cap)
        got = dict(core.rates())
        assert np.allclose([got[slots[i]] for i in alive], want, rtol=1e-9, atol=0)
    # end flows by stepping at the earliest finish, one instant after another
    alive = list(range(len(paths)))
    _, nxt, _ = core.step(0, False)
    check(alive)
    while core.alive:
        now = int(np.ceil(nxt))
        ended, nxt, _ = core.step(now, True)
        gone = {slots.index(s) for s in ended}
        assert gone, "a step at the earliest finish ends a flow"
        alive = [i for i in alive if i not in gone]
        if alive:  # what the flows left get from scratch (rates do not depend on the bytes left)
            check(alive)


def test_independent_transfers_are_solved_apart():
    sim = Simulation(star(4, bw=10.0))
    assert isinstance(sim.net, CompiledFluidNetwork)
    a = sim.comm([(0, "a")], [[(0, 1, 1_000)] * 70], "a", category="send")
    b = sim.comm([(2, "b")], [[(2, 3, 5_000)] * 70], "b", category="send")
    r = sim.run()
    assert (a.end_ns, b.end_ns) == (7_000, 35_000)
    assert r.num_rate_solves == 1


def test_a_path_past_the_limit_or_an_unknown_link_is_refused():
    from moesim.engine._fluidcore import Core

    core = Core(np.ones(4))
    with pytest.raises(ValueError, match="link id 7"):
        core.add((0, 7), 10.0, 0)
    with pytest.raises(ValueError, match="64 links"):
        core.add(tuple([0] * 64), 10.0, 0)
    assert core.add((0, 1), 10.0, 0) == 0 and core.alive == 1   # a refused flow took no slot
    _, finish, _ = core.step(0, False)
    assert finish == 10.0 and core.step(10, True)[0] == [0] and core.alive == 0


def test_the_backend_switch(monkeypatch):
    import simpy

    env = simpy.Environment()
    monkeypatch.setenv(BACKEND_ENV, "numpy")
    assert isinstance(fluid_network(env, [1.0]), FluidNetwork)
    monkeypatch.setenv(BACKEND_ENV, "compiled")
    assert isinstance(fluid_network(env, [1.0]), CompiledFluidNetwork)
    monkeypatch.setenv(BACKEND_ENV, "fortran")
    with pytest.raises(ConfigError, match=BACKEND_ENV):
        fluid_network(env, [1.0])


def _flows_sim(topo, flows, link_series: bool):
    sim = Simulation(topo, link_series=link_series)
    for i, (src, dst, nbytes, delay) in enumerate(flows):
        deps = [sim.compute(src, delay, f"gate{i}", stream=f"gate{i}")] if delay else []
        sim.comm([(src, f"f{i}")], [[(src, dst, nbytes), (dst, (src + 3) % 8, nbytes // 3 + 1)]], f"f{i}",
                 category="send", deps=deps)
    return sim.run()


@SETTINGS
@given(st.lists(flow_st, min_size=1, max_size=20), st.sampled_from(sorted(FABRICS)), st.integers(0, 5))
def test_integrals_kept_without_samples_equal_the_integrals_of_the_samples(flows, fabric, past_end):
    """link_series=False stores no sample; each link's (integral, time above 0, peak) is what
    step_integral gives from the samples of the same run, bit for bit, for a horizon at or past
    the end; one before a link's last change is refused."""
    from moesim.analysis.timeline import LINK_PREFIX, counter_steps, link_integrals, step_integral

    topo = FABRICS[fabric]()
    with_samples = _flows_sim(topo, flows, True)
    without = _flows_sim(topo, flows, False)
    assert without.makespan_ns == with_samples.makespan_ns
    assert without.recorder.num_link_samples == 0 and with_samples.recorder.num_link_samples > 0
    horizon = with_samples.makespan_ns + past_end * 997
    steps = counter_steps(with_samples.recorder)
    want = {t: step_integral(s, horizon) for t, s in steps.items() if t.startswith(LINK_PREFIX)}
    assert link_integrals(without.recorder, horizon) == want
    last = max(t for s in steps.values() for t, _ in s)
    if last > 0:
        with pytest.raises(ValueError, match="before link"):
            link_integrals(without.recorder, last - 1)


def test_a_scenario_without_link_samples_reports_the_same_utilisation():
    import dataclasses

    from moesim.analysis.utilization import utilization
    from moesim.experiment import MoEOptions, ParallelPlan, Scenario
    from moesim.experiment.runner import run_scenario
    from moesim.moe.routing import RoutingConfig

    from moesim.workload.presets import get_model

    spec = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=2, seq_len=1024)
    scn = Scenario(name="moe_ep8", topology="dgx_h100", nodes=2, model=spec,
                   plan=ParallelPlan(dp=16, ep=16, num_microbatches=2),
                   moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=1.0)))
    a, rec_a = run_scenario(scn, force=True)
    b, rec_b = run_scenario(scn, force=True, link_series=False)
    assert rec_b.num_link_samples == 0 < rec_a.num_link_samples
    assert utilization(rec_a) == utilization(rec_b)
    assert a.step_time_ms == b.step_time_ms and a.analysis == b.analysis


def test_a_route_past_the_compiled_limit_is_a_clear_error():
    import simpy

    from moesim.engine.compiled import MAX_PATH_LINKS

    net = CompiledFluidNetwork(simpy.Environment(), [10.0] * (MAX_PATH_LINKS + 1))
    with pytest.raises(ConfigError, match="MOESIM_FLUID=numpy"):
        net.transfer(tuple(range(MAX_PATH_LINKS + 1)), 100.0, 0)


def test_a_trace_of_a_run_without_link_samples_is_refused():
    from moesim.trace.perfetto import to_chrome_trace

    result = _flows_sim(star(8, bw=50.0), [(0, 1, 10_000, 0)], link_series=False)
    with pytest.raises(ValueError, match="link_series=True"):
        to_chrome_trace(result.recorder)
    assert to_chrome_trace(_flows_sim(star(8, bw=50.0), [(0, 1, 10_000, 0)], link_series=True).recorder)
