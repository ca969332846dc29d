"""Run 9's kernel probe as model inputs: the event-region cost of chained kernels and the
clock-bound share of memory kernels (lab.legacy_validate.kernel_probe; torch-free)."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.legacy_validate.clocks import load_clock_model
from lab.legacy_validate.context import build_context
from lab.legacy_validate.kernel_probe import (ChainOverhead, MemoryClockShare, chain_overhead, clock_bound_share,
                                          load_kernel_probe, memory_clock_share, running_median)
from moesim.validate.measurements import load_measurements
from lab.legacy_validate.single import predict_single


def _chain(kind: str, state: str, slope_ns: float, region_ns: float) -> list[dict]:
    return [{"probe": "chain", "kind": kind, "state": state, "n": n, "time_ns": n * slope_ns + region_ns}
            for n in (1, 2, 4, 8, 16)]


def test_chain_overhead_is_the_median_intercept_and_the_floor_the_tiny_slope() -> None:
    samples = _chain("tiny", "boost", 2000.0, 1500.0) + _chain("a", "boost", 10_000.0, 2000.0) \
        + _chain("b", "boost", 5000.0, 3000.0) + _chain("c", "profile", 7000.0, 4000.0)
    c = chain_overhead(samples, "test")
    assert c is not None
    assert c.region_ns == pytest.approx(3000.0)
    assert c.floor_ns == pytest.approx(2000.0)
    assert {k for k, _, _ in c.per_kind} == {"a", "b", "c"}


def test_chain_overhead_needs_chains() -> None:
    assert chain_overhead([{"probe": "memory"}], "test") is None


def test_region_total_keeps_a_single_kernel_and_charges_the_region_once() -> None:
    c = ChainOverhead(region_ns=3000.0, floor_ns=2000.0, per_kind=(), source="test")
    assert c.region_total_ns([12_000.0]) == 12_000.0
    assert c.region_total_ns([12_000.0, 20_000.0, 6000.0]) == pytest.approx(38_000.0 - 2 * 3000.0)
    # a kernel alone at 4 us cannot run faster than the floor inside a chain
    assert c.in_stream_ns(4000.0) == 2000.0
    assert c.in_stream_ns(1500.0) == 1500.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(100.0, 1e6), min_size=2, max_size=12), st.floats(0.0, 5000.0), st.floats(0.0, 3000.0))
def test_region_total_never_exceeds_the_sum_alone_and_stays_positive(alone, region, floor) -> None:
    c = ChainOverhead(region, floor, (), "test")
    total = c.region_total_ns(alone)
    assert total <= sum(alone) + region
    assert total >= min(floor, min(alone)) * len(alone)
    assert total >= sum(alone) - (len(alone) - 1) * region - 1e-6


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 50_000.0), st.floats(1e3, 5e7), st.floats(1800.0, 2000.0), st.floats(1300.0, 1600.0))
def test_clock_bound_share_recovers_a_time_of_the_form_a_plus_b_over_f(a, b, f_boost, f_profile) -> None:
    t_boost, t_profile = a + b / f_boost, a + b / f_profile
    phi = clock_bound_share(t_boost, f_boost, t_profile, f_profile)
    assert phi == pytest.approx((b / f_profile) / t_profile, abs=1e-9)


def test_clock_bound_share_refuses_unresolvable_pairs() -> None:
    assert clock_bound_share(10.0, 1980.0, 10.5, 1900.0) is None   # clocks 4% apart
    assert clock_bound_share(11.0, 1980.0, 10.0, 1500.0) == 0.0     # faster when slower: clamped


def test_running_median_and_share_interpolation() -> None:
    pts = ((1 << 20, 0.0), (1 << 22, 0.6), (1 << 24, 0.0), (1 << 26, 0.4))
    assert running_median(pts) == ((1 << 20, 0.3), (1 << 22, 0.0), (1 << 24, 0.4), (1 << 26, 0.2))
    m = MemoryClockShare((("rmsnorm", "cold", ((1 << 20, 0.2), (1 << 24, 0.4))),), 1500.0, "test")
    assert m.share("rmsnorm", 1 << 22) == pytest.approx(0.3)          # halfway in log2(bytes)
    assert m.share("rmsnorm", 1 << 10) == 0.2 and m.share("rmsnorm", 1 << 30) == 0.4
    assert m.share("rmsnorm", 1 << 22, "warm") == pytest.approx(0.3)  # no warm curve: the cold one
    assert m.share("softmax", 1 << 22) == 0.0                         # not measured: clock-independent


def test_memory_clock_share_from_pairs() -> None:
    def s(state: str, t: float, f: float) -> dict:
        return {"probe": "memory", "variant": "silu", "cache": "cold", "state": state, "nbytes": 1 << 22,
                "time_ns": t, "clock": {"sm_mhz": f}}
    m = memory_clock_share([s("boost", 9000.0, 2000.0), s("profile", 10_000.0, 1500.0)], "test")
    assert m is not None and m.ref_mhz == 1500.0
    assert m.share("silu", 1 << 22) == pytest.approx(0.1 / 0.25)


def test_shipped_probe_gives_a_region_cost_and_memory_shares() -> None:
    loaded = load_kernel_probe()
    assert loaded is not None
    c, m = chain_overhead(*loaded), memory_clock_share(*loaded)
    assert c is not None and 1000.0 < c.region_ns < 5000.0 and 1000.0 < c.floor_ns < 4000.0
    assert m is not None and 1400.0 < m.ref_mhz < 1600.0
    assert 0.2 < m.share("rmsnorm", 30e6) < 0.5 and m.share("copy", 100e6) < 0.15


def test_boost_rule_scales_a_kernel_without_flops_only_with_a_share() -> None:
    clock = load_clock_model(716e3)
    assert clock.scale_ns(10_000.0, 0.0, "boost") == 10_000.0
    assert clock.scale_ns(10_000.0, 0.0, "boost", 0.5) == pytest.approx(10_000.0 * (1 - 0.5 * (1 - clock.sustained_over_burst)))


@pytest.fixture(scope="module")
def ctx():
    return build_context()


def test_memory_kernel_at_the_reference_clock_is_the_profile_time(ctx) -> None:
    profile = ctx.memory("x", "norm", "rmsnorm", 30e6).duration_ns
    assert ctx.memory("x", "norm", "rmsnorm", 30e6, state=ctx.memory_clock.ref_mhz).duration_ns == profile
    faster = ctx.memory("x", "norm", "rmsnorm", 30e6, state=1980.0).duration_ns
    phi = ctx.memory_clock.share("rmsnorm", 30e6)
    assert faster == pytest.approx(profile * (1 - phi + phi * ctx.memory_clock.ref_mhz / 1980.0), abs=1)


def test_swiglu_is_its_kernels_in_stream_plus_one_region(ctx) -> None:
    case = next(c for c in load_measurements().cases if c.case_id == "swiglu_t50_h7168_f2048#r8")
    p = predict_single(ctx, case)
    parts = {k: v for k, v in p.components.items() if k != "event_region"}
    assert len(parts) == 5 and p.components["event_region"] == round(ctx.chain.region_ns)
    assert p.predicted_ns == pytest.approx(sum(parts.values()) + ctx.chain.region_ns, abs=1)
    assert not math.isnan(p.error)
