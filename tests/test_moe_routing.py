"""MoE routing: config validation, conservation, determinism, skew, drift, gating, capacity."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import ConfigError
from moesim.moe import popularity as pop
from moesim.moe.metrics import max_over_mean, nodes_per_token
from moesim.moe.routing import (
    RoutingConfig,
    apply_capacity,
    expert_capacity,
    expert_nodes,
    generate_counts,
    generate_routing,
    layer_popularity,
)
from moesim.moe.sampling import contiguous_groups, deepseek_gate, sample_topk
from moesim.workload.moe import MoESpec

FAST = settings(max_examples=40, deadline=None)

SPEC = MoESpec(name="tiny-moe", num_layers=4, hidden=64, num_heads=4, num_kv_heads=4, head_dim=16,
               ffn_hidden=128, vocab=128, seq_len=32, num_experts=16, top_k=4, expert_ffn_hidden=32,
               n_groups=4, topk_groups=2, max_nodes_per_token=2)


def zipf(**kw) -> RoutingConfig:
    return RoutingConfig(**{"kind": "zipf", "zipf_s": 0.8, "tokens_per_rank": 64, "seed": 3, **kw})


# -- config validation --------------------------------------------------------------------
@pytest.mark.parametrize("field, kwargs", [
    ("kind", dict(kind="pareto", tokens_per_rank=8)),
    ("gating", dict(gating="expert_choice", tokens_per_rank=8)),
    ("drift", dict(drift="jump", tokens_per_rank=8)),
    ("layer_mode", dict(layer_mode="mixed", tokens_per_rank=8)),
    ("sampler", dict(sampler="approx", tokens_per_rank=8)),
    ("tokens_per_rank", dict(tokens_per_rank=0)),
    ("zipf_s", dict(kind="zipf", zipf_s=-1.0, tokens_per_rank=8)),
    ("dirichlet_alpha", dict(kind="dirichlet", dirichlet_alpha=0.0, tokens_per_rank=8)),
    ("drift_rate", dict(drift="rotate", drift_rate=-1.0, tokens_per_rank=8)),
    ("capacity_factor", dict(capacity_factor=0.0, tokens_per_rank=8)),
    ("seed", dict(seed=-1, tokens_per_rank=8)),
    ("pilot_tokens", dict(pilot_tokens=0, tokens_per_rank=8)),
    ("trace_path", dict(kind="trace")),
    ("tokens_per_rank", dict(kind="trace", trace_path="x.npz", tokens_per_rank=8)),
])
def test_config_validation_names_the_field(field, kwargs):
    with pytest.raises(ConfigError) as err:
        RoutingConfig(**kwargs)
    assert err.value.field == field
    assert "fix" in str(err.value) or err.value.problem


@pytest.mark.parametrize("field, call", [
    ("host_of", lambda: generate_counts(zipf(gating="node_limited"), SPEC, 4, 1, 1, 0)),
    ("host_of", lambda: generate_counts(zipf(), SPEC, 4, 1, 1, 0, host_of=[0, 0])),
    ("ep", lambda: generate_counts(zipf(), SPEC, 0, 1, 1, 0)),
    ("step", lambda: generate_counts(zipf(), SPEC, 4, 1, 1, -1)),
    ("max_nodes_per_token", lambda: generate_counts(zipf(gating="node_limited"), replace(SPEC, max_nodes_per_token=0),
                                                    4, 1, 1, 0, host_of=[0, 0, 1, 1])),
    ("gating", lambda: generate_counts(zipf(gating="group_limited"), replace(SPEC, n_groups=1, topk_groups=1),
                                       4, 1, 1, 0)),
])
def test_call_validation(field, call):
    with pytest.raises(ConfigError) as err:
        call()
    assert err.value.field == field


# -- conservation and shape ---------------------------------------------------------------
@FAST
@given(kind=st.sampled_from(["uniform", "zipf", "dirichlet"]), gating=st.sampled_from(["topk", "group_limited",
       "node_limited"]), ep=st.sampled_from([1, 2, 4]), tokens=st.integers(1, 40), mbs=st.integers(1, 3),
       seed=st.integers(0, 10_000), sampler=st.sampled_from(["exact", "fast"]))
def test_tokens_are_conserved(kind, gating, ep, tokens, mbs, seed, sampler):
    host = [r * 2 // ep for r in range(ep)] if ep > 1 else [0]
    spec = SPEC if ep > 1 or gating != "node_limited" else replace(SPEC, max_nodes_per_token=1)
    cfg = RoutingConfig(kind=kind, tokens_per_rank=tokens, seed=seed, gating=gating, sampler=sampler)
    counts = generate_counts(cfg, spec, ep, 2, mbs, step=5, host_of=host)
    assert counts.shape == (2, mbs, ep, SPEC.num_experts)
    assert (counts >= 0).all()
    assert (counts.sum(axis=-1) == tokens * SPEC.top_k).all()  # every token picks top_k experts
    if sampler == "exact":
        assert counts.max() <= tokens  # a token picks an expert at most once


def test_exact_top_k_rows_are_distinct_and_sized():
    p = pop.zipf_popularity(32, 1.2, np.random.default_rng(0))
    chosen = sample_topk(np.random.default_rng(1), p, 5000, 6)
    assert chosen.shape == (5000, 6)
    ordered = np.sort(chosen, axis=1)
    assert (np.diff(ordered, axis=1) > 0).all() and chosen.min() >= 0 and chosen.max() < 32


# -- determinism --------------------------------------------------------------------------
@FAST
@given(seed=st.integers(0, 2**31), gating=st.sampled_from(["topk", "group_limited"]))
def test_same_seed_same_counts_different_seed_differs(seed, gating):
    cfg = zipf(seed=seed, gating=gating)
    a = generate_counts(cfg, SPEC, 4, 2, 2, step=7)
    b = generate_counts(cfg, SPEC, 4, 2, 2, step=7)
    c = generate_counts(replace(cfg, seed=seed + 1), SPEC, 4, 2, 2, step=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_layer_and_microbatch_do_not_depend_on_what_else_is_requested():
    cfg = zipf(sampler="exact")
    whole = generate_counts(cfg, SPEC, 4, 3, 4, step=2)
    part = generate_counts(cfg, SPEC, 4, 1, 2, step=2, first_layer=1)
    assert np.array_equal(whole[1, :2], part[0])
    assert not np.array_equal(whole[0], whole[1])  # independent layers have their own hot sets


def test_shared_layer_mode_uses_one_popularity():
    cfg = zipf(layer_mode="shared")
    assert np.array_equal(layer_popularity(cfg, 16, 0, 0), layer_popularity(cfg, 16, 5, 0))
    cfg = zipf()
    assert not np.array_equal(layer_popularity(cfg, 16, 0, 0), layer_popularity(cfg, 16, 5, 0))


# -- skew ---------------------------------------------------------------------------------
@FAST
@given(s=st.floats(0.0, 2.0), ds=st.floats(0.05, 1.0), num_experts=st.sampled_from([8, 64, 256]),
       seed=st.integers(0, 1000))
def test_zipf_popularity_max_over_mean_grows_with_s(s, ds, num_experts, seed):
    low = pop.zipf_popularity(num_experts, s, np.random.default_rng(seed))
    high = pop.zipf_popularity(num_experts, s + ds, np.random.default_rng(seed))
    assert np.isclose(low.sum(), 1.0) and np.isclose(high.sum(), 1.0)
    assert max_over_mean(high) > max_over_mean(low)


@settings(max_examples=12, deadline=None)
@given(s=st.floats(0.0, 1.2), seed=st.integers(0, 1000))
def test_realised_load_max_over_mean_grows_with_s(s, seed):
    loads = []
    for exponent in (s, s + 0.4):
        cfg = RoutingConfig(kind="zipf", zipf_s=exponent, tokens_per_rank=4096, seed=seed, sampler="exact")
        loads.append(generate_counts(cfg, SPEC, 2, 1, 1, 0).sum(axis=(0, 1, 2)))
    assert max_over_mean(loads[1]) > max_over_mean(loads[0])


def test_zipf_calibration_matches_reference_table():
    # reference moe_and_hardware.md §5.2: E = 64, k = 8, s = 0.5 -> popularity max/mean 4.38,
    # realised max/mean 3.64 (16,384 tokens)
    p = pop.zipf_popularity(64, 0.5, np.random.default_rng(0))
    assert max_over_mean(p) == pytest.approx(4.38, abs=0.01)
    chosen = sample_topk(np.random.default_rng(1), p, 16384, 8)
    assert max_over_mean(np.bincount(chosen.ravel(), minlength=64)) == pytest.approx(3.64, abs=0.15)


def test_uniform_is_balanced_and_dirichlet_small_alpha_is_skewed():
    uni = generate_counts(RoutingConfig(kind="uniform", tokens_per_rank=8192, sampler="exact"), SPEC, 2, 1, 1, 0)
    dirich = generate_counts(RoutingConfig(kind="dirichlet", dirichlet_alpha=0.1, tokens_per_rank=8192,
                                           sampler="exact"), SPEC, 2, 1, 1, 0)
    assert max_over_mean(uni.sum(axis=(0, 1, 2))) < 1.05
    assert max_over_mean(dirich.sum(axis=(0, 1, 2))) > 2.0


# -- drift --------------------------------------------------------------------------------
def test_rotate_drift_moves_the_hot_expert():
    base = pop.popularity_at("zipf", 16, 1, 0, 0, zipf_s=1.0)
    moved = pop.popularity_at("zipf", 16, 1, 0, 6, zipf_s=1.0, drift="rotate", drift_rate=0.5)
    assert np.array_equal(moved, np.roll(base, 3))
    assert int(np.argmax(moved)) == (int(np.argmax(base)) + 3) % 16


def test_random_walk_is_one_consistent_path():
    p0 = pop.popularity_at("zipf", 32, 2, 1, 0, zipf_s=0.7, drift="random_walk", drift_rate=0.3)
    assert np.array_equal(p0, pop.base_popularity("zipf", 32, 2, 1, zipf_s=0.7))
    p9 = pop.popularity_at("zipf", 32, 2, 1, 9, zipf_s=0.7, drift="random_walk", drift_rate=0.3)
    again = pop.popularity_at("zipf", 32, 2, 1, 9, zipf_s=0.7, drift="random_walk", drift_rate=0.3)
    assert np.array_equal(p9, again) and not np.allclose(p9, p0) and np.isclose(p9.sum(), 1.0)


def test_brownian_increments_have_the_right_variance():
    size = 40_000
    w3 = pop.brownian_at(5, 0, 3, size, 0.5)
    w8 = pop.brownian_at(5, 0, 8, size, 0.5)
    assert np.var(w3) == pytest.approx(3 * 0.25, rel=0.05)
    assert np.var(w8 - w3) == pytest.approx(5 * 0.25, rel=0.05)  # independent increment
    assert abs(np.corrcoef(w3, w8 - w3)[0, 1]) < 0.03


def test_drift_changes_counts_between_steps_only_when_asked():
    still = zipf(sampler="exact")
    pop_a, pop_b = layer_popularity(still, 16, 0, 0), layer_popularity(still, 16, 0, 50)
    assert np.array_equal(pop_a, pop_b)
    moving = zipf(drift="rotate", drift_rate=1.0)
    assert not np.array_equal(layer_popularity(moving, 16, 0, 0), layer_popularity(moving, 16, 0, 50))


# -- gating -------------------------------------------------------------------------------
@FAST
@given(n_groups=st.sampled_from([2, 4, 8]), per_group=st.integers(2, 6), topk_groups=st.integers(1, 8),
       top_k=st.integers(1, 8), s=st.floats(0.0, 1.5), seed=st.integers(0, 10_000))
def test_group_limited_tokens_stay_in_topk_groups(n_groups, per_group, topk_groups, top_k, s, seed):
    topk_groups = min(topk_groups, n_groups)
    top_k = min(top_k, topk_groups * per_group)
    E = n_groups * per_group
    p = pop.zipf_popularity(E, s, np.random.default_rng(seed))
    chosen = sample_topk(np.random.default_rng(seed + 1), p, 300, top_k, contiguous_groups(E, n_groups), topk_groups)
    assert (np.diff(np.sort(chosen, axis=1), axis=1) > 0).all()
    assert nodes_per_token(chosen, contiguous_groups(E, n_groups)).max() <= topk_groups


@FAST
@given(nodes=st.sampled_from([2, 4, 8]), gpus_per_node=st.sampled_from([1, 2]), limit=st.integers(1, 4),
       seed=st.integers(0, 10_000))
def test_node_limited_routing_reaches_at_most_m_nodes(nodes, gpus_per_node, limit, seed):
    ep = nodes * gpus_per_node
    limit = min(limit, nodes)
    spec = replace(SPEC, num_experts=ep * 4, n_groups=1, topk_groups=1, top_k=min(4, limit * 4),
                   max_nodes_per_token=limit)
    host = [f"node{g // gpus_per_node}" for g in range(ep)]
    node_of_expert = expert_nodes(spec.num_experts, host)
    p = layer_popularity(zipf(seed=seed), spec.num_experts, 0, 0)
    chosen = sample_topk(np.random.default_rng(seed), p, 500, spec.top_k, node_of_expert, limit)
    assert nodes_per_token(chosen, node_of_expert).max() <= limit
    counts = generate_counts(zipf(seed=seed, gating="node_limited"), spec, ep, 1, 1, 0, host_of=host)
    assert (counts.sum(axis=-1) == 64 * spec.top_k).all()


def test_group_labels_need_not_be_contiguous():
    p = np.full(6, 1 / 6)
    chosen = sample_topk(np.random.default_rng(0), p, 200, 2, np.array([7, 7, 3, 3, 9, 9]), 1)
    assert (chosen // 2 == chosen[:, :1] // 2).all()  # both picks from one label's pair
    with pytest.raises(ConfigError) as err:
        sample_topk(np.random.default_rng(0), p, 10, 2, np.array([0, 1]), 1)
    assert err.value.field == "group_of"


def test_deepseek_gate_by_hand():
    scores = np.array([[0.9, 0.1, 0.8, 0.7, 0.2, 0.3, 0.6, 0.5],
                       [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]])
    # 4 groups of 2, keep 2 groups, top_k 4 -> group score = sum of top-2 (4 // 2)
    # token 0: group sums 1.0, 1.5, 0.5, 1.1 -> groups 1 and 3 -> experts 2, 3, 6, 7
    # token 1: sums 0.3, 0.7, 1.1, 1.5 -> groups 3 and 2 -> experts 7, 6, 5, 4
    got = deepseek_gate(scores, top_k=4, n_groups=4, topk_groups=2)
    assert got.tolist() == [[2, 3, 6, 7], [7, 6, 5, 4]]
    biased = deepseek_gate(scores, top_k=2, n_groups=4, topk_groups=2, bias=np.array([0, 0, 0, 0, 1, 1, 0, 0]))
    assert biased[0].tolist() == [5, 4]  # width 2 // 2 = 1: the bias lifts group 2 (max 1.3)


def test_group_limited_sampler_matches_the_gate_on_gumbel_scores():
    E, tokens = 16, 20_000
    p = pop.zipf_popularity(E, 1.0, np.random.default_rng(4))
    rng = np.random.default_rng(5)
    ref = deepseek_gate(np.log(p)[None, :] + rng.gumbel(size=(tokens, E)), top_k=4, n_groups=4, topk_groups=2)
    ours = sample_topk(rng, p, tokens, 4, contiguous_groups(E, 4), 2)
    freq_ref = np.bincount(ref.ravel(), minlength=E) / tokens
    freq_ours = np.bincount(ours.ravel(), minlength=E) / tokens
    sigma = np.sqrt(freq_ref * (1 - freq_ref) / tokens)
    assert (np.abs(freq_ref - freq_ours) <= 5 * np.sqrt(2) * sigma + 1e-3).all()


def test_node_limited_generate_uses_the_placement_nodes():
    from moesim.moe.layout import Placement

    host = [0, 0, 1, 1]
    # experts interleaved over nodes: even experts on node 0, odd on node 1
    placement = Placement(16, 4, ((0, 2, 4, 6), (8, 10, 12, 14), (1, 3, 5, 7), (9, 11, 13, 15)))
    nodes = expert_nodes(16, host, placement)
    assert nodes.tolist() == [0, 1] * 8
    p = layer_popularity(zipf(), 16, 0, 0)
    chosen = sample_topk(np.random.default_rng(0), p, 400, 2, nodes, 1)
    assert ((chosen % 2)[:, 0] == (chosen % 2)[:, 1]).all()  # both experts on one node


# -- capacity -----------------------------------------------------------------------------
def test_capacity_by_hand():
    counts = np.array([[5, 1, 0, 2], [0, 3, 3, 2]])
    # tokens_per_rank 4, top_k 2, 4 experts -> 2 per expert on average; factor 1.25 -> capacity 3
    assert int(expert_capacity(4 * 2 / 4, 1.25)) == 3
    kept, dropped = apply_capacity(counts, 1.25, 2.0)
    assert kept.tolist() == [[3, 1, 0, 2], [0, 3, 3, 2]]
    assert dropped.tolist() == [2, 0, 0, 0]
    same, none = apply_capacity(counts, None, 2.0)
    assert np.array_equal(same, counts) and not none.any()


@FAST
@given(counts=st.lists(st.lists(st.integers(0, 50), min_size=4, max_size=4), min_size=1, max_size=5),
       factor=st.floats(0.1, 4.0), avg=st.floats(0.0, 30.0))
def test_kept_plus_dropped_equals_routed(counts, factor, avg):
    routed = np.array(counts)
    kept, dropped = apply_capacity(routed, factor, avg)
    assert (kept <= routed).all() and (kept >= 0).all()
    assert np.array_equal(kept.sum(axis=0) + dropped, routed.sum(axis=0))
    assert kept.max() <= max(int(expert_capacity(avg, factor)), 0)


def test_generate_routing_reports_dropped_tokens():
    cfg = zipf(zipf_s=1.5, capacity_factor=1.0, tokens_per_rank=256)
    batch = generate_routing(cfg, SPEC, 4, 2, 2, 0)
    assert batch.sampler == "exact"
    assert batch.dropped_tokens > 0
    assert np.array_equal(batch.kept.sum(axis=2) + batch.dropped_per_expert, batch.routed.sum(axis=2))
    assert np.array_equal(generate_counts(cfg, SPEC, 4, 2, 2, 0), batch.kept)
    assert batch.kept.max() <= expert_capacity(256 * SPEC.top_k / SPEC.num_experts, 1.0)


def test_auto_sampler_switches_to_fast_for_big_calls():
    from moesim.moe.routing import EXACT_TOKEN_LIMIT

    small = generate_routing(zipf(tokens_per_rank=16), SPEC, 4, 1, 1, 0)
    big = generate_routing(zipf(tokens_per_rank=EXACT_TOKEN_LIMIT // 4 + 1), SPEC, 4, 1, 1, 0)
    assert (small.sampler, big.sampler) == ("exact", "fast")
    assert (big.routed.sum(axis=-1) == (EXACT_TOKEN_LIMIT // 4 + 1) * SPEC.top_k).all()


def test_a_scenarios_tokens_per_rank_is_kept_or_refused_never_replaced():
    TINY = SPEC
    """A RoutingConfig without tokens_per_rank takes the model's; a different value is refused
    (it was silently replaced while results echoed it)."""
    from moesim.experiment.build import build_scenario
    from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario

    def scn(tokens):
        return Scenario("t", "dgx_h100", TINY, plan=ParallelPlan(dp=2, ep=2, num_microbatches=2), gpus_per_node=2,
                        cost_model="roofline", moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=1.0,
                                                                                     tokens_per_rank=tokens)))
    built = build_scenario(scn(None))
    own = built.tokens_per_step // (2 * 2)   # tokens per rank and microbatch
    assert build_scenario(scn(own)).tokens_per_step == built.tokens_per_step
    with pytest.raises(ConfigError) as err:
        build_scenario(scn(own + 1))
    assert err.value.field == "moe.routing.tokens_per_rank"
    with pytest.raises(ConfigError, match="tokens_per_rank"):
        generate_counts(RoutingConfig(kind="zipf"), TINY, 2, 1, 1, 0)
