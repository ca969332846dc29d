"""What-if injection: slow GPUs, degraded and failed links, slow NICs, jitter."""
from __future__ import annotations

import pytest

from fabrics import chain
from moesim.engine import Simulation
from moesim.errors import ConfigError
from moesim.experiment import ParallelPlan, Scenario
from moesim.experiment.faults import Faults, apply_to_topology
from moesim.experiment.runner import run_scenario
from moesim.topology.loader import load_topology
from moesim.workload.transformer import TransformerSpec


def test_slow_gpu_stretches_only_its_compute():
    sim = Simulation(chain([1.0]), compute_scale={1: 1.5})
    a = sim.compute(0, 1000, "a")
    b = sim.compute(1, 1000, "b")
    sim.run()
    assert (a.end_ns, b.end_ns) == (1000, 1500)


def test_degraded_link_slows_a_flow_exactly():
    topo = apply_to_topology(load_topology("h200x2_nvlink"), Faults(degraded_links=(("n0.gpu0", "n0.gpu1", 0.5),)))
    sim = Simulation(topo)
    sim.send(0, 1, 450_000, "x")
    # 450 GB/s halved -> 225 B/ns; 450 kB -> 2000 ns plus the link latency
    assert sim.run().makespan_ns == 2000 + topo.route(0, 1).latency_ns


def test_failed_spine_link_is_routed_around():
    topo = load_topology("dgx_h100", nodes=2)
    assert topo.num_paths(0, 9) == 4
    cut = apply_to_topology(topo, Faults(failed_links=(("leaf0", "spine0"),)))
    assert cut.num_paths(0, 9) == 3
    assert all("spine0" not in (cut.links[i].src, cut.links[i].dst) for k in range(3) for i in cut.route(0, 9, k).link_ids)


def test_failure_that_disconnects_gpus_is_a_clear_error():
    with pytest.raises(ConfigError, match="disconnects n0.gpu0 from.*no other path"):
        apply_to_topology(load_topology("h200x2_nvlink"), Faults(failed_links=(("n0.gpu0", "n0.gpu1"),)))
    with pytest.raises(ConfigError, match="no link between"):
        apply_to_topology(load_topology("h200x2_nvlink"), Faults(failed_links=(("n0.gpu0", "spine9"),)))


def test_slow_nic_scales_the_nic_links_of_that_gpu_only():
    topo = load_topology("dgx_h100", nodes=2)
    slow = apply_to_topology(topo, Faults(slow_nics={0: 0.25}))
    assert slow.route(0, 8).bottleneck_gbps == pytest.approx(topo.route(0, 8).bottleneck_gbps * 0.25)
    assert slow.route(1, 9).bottleneck_gbps == topo.route(1, 9).bottleneck_gbps


def test_jitter_is_seeded_and_bounded():
    def once(seed):
        sim = Simulation(chain([100.0]), jitter_ns=5000, seed=seed)
        for i in range(5):
            sim.comm([(0, f"s{i}")], [[(0, 1, 1000)]], f"f{i}", category="send")
        span = sim.run().makespan_ns
        return [t.end_ns for t in sim.tasks], span
    ends, span = once(1)
    assert ends == once(1)[0] and ends != once(2)[0]
    assert 50 <= span <= 5 * 10 + 5000 + 50


@pytest.mark.parametrize("bad", [dict(slow_gpus={0: 0.5}), dict(slow_nics={0: 0.0}),
                                 dict(degraded_links=(("a", "b", 2.0),)), dict(jitter_ns=-1)])
def test_bad_faults_are_clear_errors(bad):
    with pytest.raises(ConfigError, match="faults."):
        Faults(**bad)


def test_straggler_on_the_critical_stage_slows_the_whole_data_parallel_group():
    spec = TransformerSpec(name="t", num_layers=4, hidden=1024, num_heads=8, num_kv_heads=8, head_dim=128,
                           ffn_hidden=4096, vocab=32000, seq_len=1024)
    plan = ParallelPlan(dp=4, pp=2, num_microbatches=8, order="dp-pp-tp")
    healthy, _ = run_scenario(Scenario(name="h", topology="dgx_h100", model=spec, plan=plan))
    slow, rec = run_scenario(Scenario(name="s", topology="dgx_h100", model=spec, plan=plan,
                                      faults=Faults(slow_gpus={5: 1.5})))
    assert slow.step_time_ms > healthy.step_time_ms * 1.2
    # every GPU of the step finishes no earlier than the straggler's gradients are reduced
    end_of = {r: max(s.end_ns for s in rec.spans if s.rank == r) for r in range(8)}
    assert min(end_of.values()) > healthy.step_time_ms * 1e6
    with pytest.raises(ConfigError, match="faults.slow_gpus"):
        run_scenario(Scenario(name="x", topology="dgx_h100", model=spec, plan=plan, faults=Faults(slow_gpus={99: 2.0})))
