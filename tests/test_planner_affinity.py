"""Network affinity: expert traffic laid on the fabric's routes, per hop kind and link."""
from __future__ import annotations

import pytest

from moesim.errors import ConfigError
from moesim.experiment import ParallelPlan
from moesim.ops import DTYPE_BYTES
from moesim.planner.affinity import link_loads, network_affinity, pair_tokens, step_multiplier
from moesim.planner.candidates import Candidate
from moesim.planner.context import PlanContext
from moesim.planner.mapping import ep_group, grid_of
from moesim.planner.presets import get_preset
from moesim.workload.moe import combine_bytes_per_token, dispatch_bytes_per_token

PLAN = ParallelPlan(tp=1, pp=2, dp=8, ep=8, num_microbatches=8)


@pytest.fixture(scope="module")
def mixtral():
    preset = get_preset("mixtral-8x7b-dgx-h100")
    return preset, PlanContext(preset)


def test_ep_inside_a_host_stays_off_the_nics_and_across_does_not(mixtral):
    preset, ctx = mixtral
    report = network_affinity(preset, Candidate(PLAN, "1f1b"), ctx)
    by_order = {r.order: r for r in report.results if r.placement == "contiguous"}
    inside, across = by_order["tp-dp-pp"], by_order["tp-pp-dp"]
    assert inside.hosts == 1 and across.hosts == 2
    assert set(inside.bytes_by_kind) == {"nvswitch"} and inside.cross_host_fraction == 0
    assert across.bytes_by_kind["ib"] > 0 and across.cross_host_fraction == pytest.approx(4 / 7, abs=0.05)
    assert across.a2a_bound_ms > 2 * inside.a2a_bound_ms  # 50 GB/s NICs vs 450 GB/s NVSwitch ports
    assert "order tp-dp-pp" in report.advice and report.best.startswith("EP8 inside one host")


def test_load_balanced_placement_flattens_the_skewed_load(mixtral):
    preset, ctx = mixtral
    report = network_affinity(preset, Candidate(PLAN, "1f1b"), ctx)
    balanced = next(r for r in report.results if r.placement == "load_balanced")
    contiguous = next(r for r in report.results if r.placement == "contiguous" and r.order == balanced.order)
    assert balanced.gpu_load_max_over_mean < contiguous.gpu_load_max_over_mean
    assert balanced.num_redundant == 8


def test_bytes_per_hop_kind_conserve_the_tokens_sent(mixtral):
    """Inside one host every byte crosses NVSwitch once: the kind total is the transfers' sum."""
    preset, ctx = mixtral
    cand = Candidate(PLAN, "1f1b")
    ranks = ep_group(grid_of(PLAN), 8)
    tokens, _ = pair_tokens(ctx, PLAN, "contiguous", 0, ranks)
    spec = ctx.spec
    grad = spec.hidden * DTYPE_BYTES[spec.dtype]
    per_token = dispatch_bytes_per_token(spec) + combine_bytes_per_token(spec) + 2 * grad
    off_diagonal = tokens.sum() - tokens.trace()
    expected = off_diagonal * per_token * step_multiplier(ctx, cand)
    report = network_affinity(preset, cand, ctx)
    inside = next(r for r in report.results if r.order == "tp-dp-pp" and r.placement == "contiguous")
    assert inside.bytes_by_kind["nvswitch"] == pytest.approx(expected, rel=1e-12)
    # 16 MoE layers per stage x 8 microbatches
    assert step_multiplier(ctx, cand) == 16 * 8


def test_ecmp_paths_share_a_transfer_evenly(mixtral):
    _, ctx = mixtral
    src, dst = 0, 9  # other host, other rail: through the spines
    per_link, per_kind = link_loads(ctx, [(src, dst, 1000.0)])
    paths = ctx.topo.num_paths(src, dst)
    assert paths > 1
    assert per_kind["ib"] == 1000.0
    assert sum(per_link.values()) == pytest.approx(1000.0 * len(ctx.topo.route(src, dst).link_ids))


def test_dense_or_ep1_plans_have_no_affinity(mixtral):
    preset, ctx = mixtral
    with pytest.raises(ConfigError) as err:
        network_affinity(preset, Candidate(ParallelPlan(tp=2, pp=1, dp=8, ep=1, num_microbatches=8), "1f1b"), ctx)
    assert err.value.field == "plan.ep"
