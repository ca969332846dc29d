"""The reduced (symmetry + per-phase) run against the full per-GPU engine, and its phase solver."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import ConfigError
from moesim.experiment.faults import Faults
from moesim.experiment.runner import run_scenario
from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario
from moesim.memory import MemoryConfig
from moesim.moe.routing import RoutingConfig
from moesim.scale.phase import PhaseSolver, fluid_phase_ns
from moesim.scale.reduced import ReducedOptions, build_reduced, run_reduced
from moesim.topology.loader import load_topology
from moesim.workload.presets import get_model

EFF = {"nvswitch": 0.8, "ib": 0.9, "pcie": 0.9}
SPEC = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=4)
DP_TAIL = ("reduce_scatter", "all_gather", "optimizer")


@pytest.fixture(scope="module")
def two_nodes():
    topo = load_topology("h800_cluster", nodes=2)
    return topo, PhaseSolver(topo, range(16), EFF)


def _scenario(nodes: int, dp: int, pp: int, ep: int, schedule: str, m: int, **plan) -> Scenario:
    return Scenario(name="t", topology="h800_cluster", nodes=nodes, model=SPEC, schedule=schedule,
                    plan=ParallelPlan(tp=1, dp=dp, pp=pp, ep=ep, num_microbatches=m, **plan),
                    moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=0.5, seed=3)),
                    memory=MemoryConfig(recompute="none"))


def _pipeline_ns(spans) -> int:
    """End of the last span that is not the data-parallel tail (the two runs model DP differently:
    the full run all-reduces, the reduced run does ZeRO-1)."""
    return max(s.end_ns for s in spans if s.category not in DP_TAIL and not s.name.startswith("dp:"))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 0.9))
def test_phase_load_bound_never_beats_the_fluid_engine(two_nodes, seed, sparsity) -> None:
    topo, solver = two_nodes
    rng = np.random.default_rng(seed)
    units = rng.integers(1, 400, (16, 16)) * (rng.random((16, 16)) > sparsity)
    ph = solver.solve(units)
    fluid = fluid_phase_ns(topo, range(16), units * 4096.0, EFF)
    # no schedule of these flows moves the most loaded link's bytes faster than its capacity;
    # the phase time adds the longest route latency (a flow's latency may hide behind others')
    assert ph.transfer_ns_per_unit * 4096 <= fluid + 2
    assert fluid <= 1.25 * ph.duration_ns(4096)     # and max-min sharing stays close to it here


def test_phase_load_bound_is_exact_for_a_dense_all_to_all(two_nodes) -> None:
    topo, solver = two_nodes
    units = np.full((16, 16), 1000)
    ph = solver.solve(units)
    assert ph.bottleneck_kind == "ib"
    # 8 peers on the other node, 1000 units of 4096 B each, over one 50 GB/s NIC at 0.9
    assert ph.nic_tx == ph.nic_rx == 8000
    assert ph.transfer_ns_per_unit == pytest.approx(8000 / 45.0)
    assert abs(ph.duration_ns(4096) - fluid_phase_ns(topo, range(16), units * 4096.0, EFF)) <= 2


@pytest.mark.parametrize("nodes,dp,pp,ep,schedule,m,dispatcher", [
    (2, 8, 2, 8, "1f1b", 8, "alltoall"),        # one EP group per stage, stages on different nodes
    (4, 16, 2, 8, "1f1b", 8, "alltoall"),       # two EP groups per stage (the symmetry reduction)
    (4, 16, 2, 16, "dualpipe", 8, "alltoall"),  # DualPipe with its F&B overlap, EP across nodes
    (4, 16, 2, 16, "dualpipe", 8, "deepep"),    # the same with DeepEP's two-hop dispatch
])
def test_reduced_run_matches_the_full_engine(nodes, dp, pp, ep, schedule, m, dispatcher) -> None:
    scn = _scenario(nodes, dp, pp, ep, schedule, m)
    scn = dataclasses.replace(scn, moe=dataclasses.replace(scn.moe, dispatcher=dispatcher))
    _full, rec = run_scenario(scn, force=True)
    built = build_reduced(scn, ReducedOptions(routing_samples=m))
    red = built["sim"].run().recorder
    full_ns, red_ns = _pipeline_ns(rec.spans), _pipeline_ns(red.spans)
    assert abs(red_ns / full_ns - 1) < 0.05, (full_ns, red_ns)


@pytest.mark.parametrize("tp,dp,ep,schedule,dispatcher,host", [
    (2, 8, 8, "1f1b", "alltoall", "graphs"),    # TP2 inside EP8: each EP group on every other GPU of 2 nodes
    (2, 8, 8, "dualpipe", "deepep", "graphs"),  # with DualPipe's overlap and DeepEP's two hops
    (4, 4, 4, "1f1b", "alltoall", "graphs"),    # TP4: four EP4 groups share the same 2 nodes
    (2, 8, 8, "1f1b", "alltoall", "eager"),     # an eager host thread per lane GPU
])
def test_reduced_run_with_tp_matches_the_full_engine(tp, dp, ep, schedule, dispatcher, host) -> None:
    scn = dataclasses.replace(_scenario(4, dp, 2, ep, schedule, 8), host=host)
    scn = dataclasses.replace(scn, plan=dataclasses.replace(scn.plan, tp=tp),
                              moe=dataclasses.replace(scn.moe, dispatcher=dispatcher))
    _full, rec = run_scenario(scn, force=True)
    built = build_reduced(scn, ReducedOptions(routing_samples=8))
    res = built["sim"].run()
    red = res.recorder
    full_ns, red_ns = _pipeline_ns(rec.spans), _pipeline_ns(red.spans)
    assert abs(red_ns / full_ns - 1) < 0.03, (full_ns, red_ns)
    assert {s.rank for s in red.spans if s.category == "all_reduce"} >= set(range(tp))   # the lane's TP collectives
    if host == "eager":   # the report's path: figures, what was reduced, lane GPUs named by rank
        result = run_reduced(scn, ReducedOptions(routing_samples=8))
        assert result["step_time_ms"] == round(res.makespan_ns / 1e6, 3)
        assert f"with TP{tp}" in result["reductions"][0] and 0 < result["mfu"] < 1


def test_reduced_run_is_deterministic_and_reports_what_it_reduced() -> None:
    scn = _scenario(4, 16, 2, 8, "dualpipe", 8)
    a, b = run_reduced(scn), run_reduced(scn)
    assert a["step_time_ms"] == b["step_time_ms"] > 0
    assert a["moe"] == b["moe"]
    assert len(a["reductions"]) == 4 and "symmetry" in a["reductions"][0]
    assert a["bottlenecks"] and a["bottlenecks"][0].startswith("critical path")
    assert 0 < a["mfu"] < 1


def test_dualpipe_overlap_shortens_the_step() -> None:
    on = run_reduced(_scenario(2, 8, 2, 8, "dualpipe", 4))["step_time_ms"]
    off = run_reduced(_scenario(2, 8, 2, 8, "dualpipe", 4, pair_overlap=False))["step_time_ms"]
    full_on, _ = run_scenario(_scenario(2, 8, 2, 8, "dualpipe", 4), force=True)
    full_off, _ = run_scenario(_scenario(2, 8, 2, 8, "dualpipe", 4, pair_overlap=False), force=True)
    assert on < off and full_on.step_time_ms < full_off.step_time_ms


@pytest.mark.parametrize("change,field", [
    ({"plan": ParallelPlan(tp=16, dp=2, pp=1, ep=2, num_microbatches=8)}, "plan.tp"),
    ({"plan": ParallelPlan(tp=1, dp=4, pp=8, ep=4, num_microbatches=16)}, "plan.dp"),
    ({"nodes": 6, "plan": ParallelPlan(tp=1, dp=24, pp=2, ep=12, num_microbatches=8)}, "plan.ep"),
    ({"plan": ParallelPlan(tp=1, dp=16, pp=4, ep=16, num_microbatches=8)}, "plan"),
    ({"model": "llama3-8b"}, "plan.ep"),
    ({"faults": Faults(slow_gpus={3: 1.3})}, "faults"),
])
def test_reduced_run_refuses_what_it_cannot_reduce(change, field) -> None:
    scn = dataclasses.replace(_scenario(4, 16, 2, 16, "1f1b", 8), **change)
    with pytest.raises(ConfigError) as err:
        build_reduced(scn)
    assert err.value.field == field


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError) as err:
        ReducedOptions(routing_samples=0)
    assert err.value.field == "routing_samples"
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(_scenario(2, 8, 2, 8, "1f1b", 4), overlap_slowdown=0.5)
    assert err.value.field == "scenario.overlap_slowdown"


def test_reduced_experiment_writes_the_same_bytes_twice(tmp_path) -> None:
    from moesim.experiment import Experiment
    from moesim.experiment.runner import run_experiment

    scn = dataclasses.replace(_scenario(2, 8, 2, 8, "dualpipe", 4), engine="reduced")
    exp = Experiment(name="r", scenarios=(scn,))
    for out in ("a", "b"):
        results, _walls = run_experiment(exp, tmp_path / out)
    assert results[0].network_mode.startswith("fluid (reduced")
    for name in ("results.json", "summary.md", "t.trace.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert "reduced engine" in (tmp_path / "a" / "summary.md").read_text()


def test_scenario_engine_is_validated_and_settable() -> None:
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(_scenario(2, 8, 2, 8, "dualpipe", 4), engine="fast")
    assert err.value.field == "scenario.engine"
    scn = _scenario(2, 8, 2, 8, "dualpipe", 4).with_overrides({"engine": "reduced"})
    assert scn.engine == "reduced"


def test_fp8_linear_layers_halve_expert_gemm_time_on_the_roofline() -> None:
    from moesim.costs.roofline import make_cost_model
    from moesim.ops import Gemm
    from moesim.workload import moe as moe_ops

    fp8 = get_model("deepseek-v3")
    bf16 = dataclasses.replace(fp8, gemm_dtype=None)
    cost = make_cost_model("H800")
    assert fp8.linear_dtype == "fp8" and bf16.linear_dtype == "bf16"
    for build in (moe_ops.expert_forward_ops, moe_ops.expert_backward_input_ops, moe_ops.expert_backward_weight_ops):
        g8 = [o for o in build(fp8, 8192) if isinstance(o, Gemm)]
        g16 = [o for o in build(bf16, 8192) if isinstance(o, Gemm)]
        assert {o.dtype for o in g8} == {"fp8"} and {o.dtype for o in g16} == {"bf16"}
        assert sum(map(cost.compute_ns, g8)) < 0.55 * sum(map(cost.compute_ns, g16))
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(fp8, gemm_dtype="fp7")
    assert err.value.field == "gemm_dtype"


def test_a_shared_cache_changes_no_result_and_is_hit() -> None:
    from moesim.scale.cache import ReducedCache

    on = _scenario(2, 8, 2, 8, "dualpipe", 4)
    off = _scenario(2, 8, 2, 8, "dualpipe", 4, pair_overlap=False)
    alone = [run_reduced(s) for s in (on, off)]
    cache = ReducedCache()
    shared = [run_reduced(s, ReducedOptions(), cache) for s in (on, off)]
    for a, b in zip(alone, shared):
        assert (a["step_time_ms"], a["moe"], a["dp"], a["bottlenecks"]) == \
            (b["step_time_ms"], b["moe"], b["dp"], b["bottlenecks"])
    stats = cache.summary()
    assert [stats[k]["hits"] for k in ("routing", "solvers")] == [1, 1]
    assert [stats[k]["misses"] for k in ("routing", "solvers")] == [1, 1]
    assert stats["experts"]["hits"] > 0 and stats["phases"]["misses"] > 0


def test_batched_phase_solves_equal_one_by_one(two_nodes) -> None:
    _topo, solver = two_nodes
    rng = np.random.default_rng(5)
    phases = [rng.integers(0, 300, (16, 16)) * (rng.random((16, 16)) > 0.3) for _ in range(6)]
    assert solver.solve_many(phases) == [solver.solve(p) for p in phases]


def test_no_trace_and_no_plots_write_only_the_results(tmp_path) -> None:
    from moesim.experiment import Experiment
    from moesim.experiment.runner import run_experiment

    exp = Experiment(name="r", scenarios=(dataclasses.replace(_scenario(2, 8, 2, 8, "1f1b", 4), engine="reduced"),))
    run_experiment(exp, tmp_path / "bare", trace=False, plots=False)
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["results.json", "summary.md"]
    run_experiment(exp, tmp_path / "plots", trace=False)
    names = {p.name for p in (tmp_path / "plots").iterdir()}
    assert "t.timeline.png" in names and "t.trace.json" not in names
    run_experiment(exp, tmp_path / "all")
    assert (tmp_path / "all" / "results.json").read_bytes() == (tmp_path / "bare" / "results.json").read_bytes()


def test_overlapped_param_gather_in_the_reduced_run_as_in_the_full_one() -> None:
    """--overlap-param-gather: ZeRO-1's all-gather leaves the end of the step; each chunk's gather
    is issued at the start on comm.dp and the chunk's first forward waits for it, in both engines."""
    from moesim.lowering.overlap import OverlapOptions

    base = dataclasses.replace(_scenario(2, 8, 2, 8, "interleaved", 8, vpp=2),
                               memory=MemoryConfig(recompute="none", zero_stage=1))
    on = dataclasses.replace(base, overlap=OverlapOptions(overlap_grad_reduce=True, overlap_param_gather=True))
    off = dataclasses.replace(base, overlap=OverlapOptions(overlap_grad_reduce=True))
    runs = {}
    for name, scn in (("on", on), ("off", off)):
        red = build_reduced(scn, ReducedOptions(routing_samples=8))["sim"].run()
        _full, rec = run_scenario(scn, force=True)
        runs[name] = (red, rec)
    red_on, full_on = runs["on"][0].recorder, runs["on"][1]
    gathers = [s for s in red_on.spans if s.name.startswith("dp:all_gather.params")]
    assert {s.name for s in gathers} == {"dp:all_gather.params.c0", "dp:all_gather.params.c1"}
    optimizer_end = max(s.end_ns for s in red_on.spans if s.category == "optimizer")
    assert all(s.start_ns < optimizer_end for s in gathers)           # at the start, not after the optimizer
    first_fwd = min(s.start_ns for s in red_on.spans if s.rank == 0 and s.category == "forward"
                    and s.args.get("chunk") == 1 and s.name.startswith("F"))
    assert first_fwd >= min(s.end_ns for s in gathers if s.rank == 0 and s.name.endswith("c1"))
    assert runs["on"][0].makespan_ns < runs["off"][0].makespan_ns     # the exposed gather is gone
    full_ns, red_ns = _pipeline_ns(full_on.spans), _pipeline_ns(red_on.spans)
    assert abs(red_ns / full_ns - 1) < 0.03, (full_ns, red_ns)


@pytest.mark.parametrize("tp,dp,ep,schedule,dispatcher", [
    (2, 8, 16, "1f1b", "alltoall"),    # folded EP16 over TP2 x DP8: one group of 2 whole nodes per stage
    (2, 8, 8, "1f1b", "alltoall"),     # folded EP8: two one-node groups per stage, expert-DP 2
    (4, 4, 16, "dualpipe", "deepep"),  # TP4 inside EP16 with DualPipe's overlap and DeepEP's two hops
])
def test_reduced_run_with_folded_ep_matches_the_full_engine(tp, dp, ep, schedule, dispatcher) -> None:
    scn = _scenario(4, dp, 2, 1, schedule, 8)
    scn = dataclasses.replace(scn, plan=ParallelPlan(tp=tp, dp=dp, pp=2, ep=ep, num_microbatches=8, ep_layout="folded"),
                              moe=dataclasses.replace(scn.moe, dispatcher=dispatcher))
    _full, rec = run_scenario(scn, force=True)
    red = build_reduced(scn, ReducedOptions(routing_samples=8))["sim"].run().recorder
    full_ns, red_ns = _pipeline_ns(rec.spans), _pipeline_ns(red.spans)
    assert abs(red_ns / full_ns - 1) < 0.03, (full_ns, red_ns)
    # the full run's EP groups are consecutive GPUs of the stage (whole TP groups): EP rank r % ep
    # computes GPU r's experts, every group routing alike; one node of 8 holds a whole EP8 group
    tokens = _full.moe["gpu_tokens"]
    assert all(tokens[str(r)] == tokens[str(r % ep)] for r in range(tp * dp))
    assert (_full.moe["cross_node_fraction"] == 0.0) == (ep == 8)
