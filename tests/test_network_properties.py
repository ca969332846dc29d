"""Hypothesis properties of the fluid network: conservation, capacity, monotonicity, order."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from fabrics import chain, star
from moesim.engine import Simulation
from moesim.engine.maxmin import maxmin_rates

SETTINGS = settings(max_examples=60, deadline=None)

flow_st = st.tuples(
    st.integers(0, 5),                 # src
    st.integers(0, 5),                 # dst
    st.integers(1, 2_000_000),         # bytes
    st.integers(0, 50_000),            # start delay (ns)
)


def run_flows(topo, flows, order=None):
    sim = Simulation(topo)
    order = order if order is not None else list(range(len(flows)))
    tasks = {}
    for i in order:
        src, dst, nbytes, delay = flows[i]
        deps = [sim.compute(src, delay, f"gate{i}", stream=f"gate{i}")] if delay else []
        tasks[i] = sim.comm([(src, f"f{i}")], [[(src, dst, nbytes)]], f"f{i}", category="send", deps=deps)
    r = sim.run()
    return {i: t.end_ns for i, t in tasks.items()}, r, sim


@SETTINGS
@given(st.lists(flow_st, min_size=1, max_size=12))
def test_bytes_conserved_and_no_link_over_capacity(flows):
    flows = [(s % 6, d % 6, b, t) for s, d, b, t in flows]
    _, r, sim = run_flows(star(6, bw=50.0), flows)
    assert sim.net.bytes_delivered == sum(b for _, _, b, _ in flows)
    assert all(c.value <= 1.0 + 1e-9 for c in r.recorder.counters)
    assert sim.net.active_flows == 0


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 1_000_000), st.integers(0, 30_000)), min_size=1, max_size=8),
       st.integers(1, 1_000_000), st.integers(0, 30_000))
def test_adding_a_flow_never_speeds_up_another_on_a_shared_link(base, extra_bytes, extra_delay):
    flows = [(0, 1, b, t) for b, t in base]
    before, _, _ = run_flows(chain([10.0]), flows)
    after, _, _ = run_flows(chain([10.0]), flows + [(0, 1, extra_bytes, extra_delay)])
    assert all(after[i] >= before[i] for i in before)


def test_max_min_is_not_monotone_on_general_fabrics():
    """Documented property of max-min fairness, not a bug: a flow added on another link can
    slow a competitor and so free capacity. A and B share link 0-1; B and C share link 1-2."""
    inc_flow, inc_link = np.array([0, 1, 1, 2]), np.array([0, 0, 1, 1])
    before = maxmin_rates(inc_flow, inc_link, 3, np.array([10.0, 10.0]))
    after = maxmin_rates(np.append(inc_flow, 3), np.append(inc_link, 1), 4, np.array([10.0, 10.0]))
    assert before[0] == 5.0 and after[0] > before[0]


@SETTINGS
@given(st.lists(flow_st, min_size=2, max_size=10), st.randoms(use_true_random=False))
def test_completion_times_do_not_depend_on_submission_order(flows, rnd):
    flows = [(s % 6, d % 6, b, 0) for s, d, b, _ in flows]
    order = list(range(len(flows)))
    rnd.shuffle(order)
    a, _, _ = run_flows(star(6, bw=50.0), flows)
    b, _, _ = run_flows(star(6, bw=50.0), flows, order)
    assert a == b


@SETTINGS
@given(st.lists(st.lists(st.integers(0, 7), min_size=1, max_size=4, unique=True), min_size=1, max_size=10),
       st.lists(st.floats(0.5, 100.0), min_size=8, max_size=8))
def test_maxmin_rates_are_feasible_and_each_flow_has_a_saturated_bottleneck(paths, caps):
    cap = np.array(caps)
    inc_flow = np.repeat(np.arange(len(paths)), [len(p) for p in paths])
    inc_link = np.array([l for p in paths for l in p])
    rates = maxmin_rates(inc_flow, inc_link, len(paths), cap)
    load = np.bincount(inc_link, weights=rates[inc_flow], minlength=8)
    assert np.all(load <= cap * (1 + 1e-9))
    for f, p in enumerate(paths):
        # max-min: every flow crosses a saturated link where it has the largest rate
        assert any(abs(load[l] - cap[l]) <= 1e-6 * cap[l] and
                   rates[f] >= max(rates[g] for g, q in enumerate(paths) if l in q) - 1e-9 for l in p)
