"""Host issue per op class (moesim.lowering.host.HostPricing) in both engines: exact answers on
the engine, the issue recurrence as a property, device-to-host syncs, the fallback and its
label, and the reduced engine's host lanes against the full engine."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from fabrics import chain
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.engine import Simulation
from moesim.engine.sim import HOST_STREAM
from moesim.lowering import host as host_mod
from moesim.lowering.host import HostPricing, add_eager_host, host_mode, host_pricing, op_phase
from moesim.ops import Gemm, GroupedGemm, MemoryOp
from moesim.workload.common import CommOp

PROFILE = Path(__file__).resolve().parents[1] / "moesim" / "profiles" / "h200_sxm.json"


class StubHost:
    """A cost model with host figures only: ``host_op_ns`` by (op name, phase), ``sync_ns``."""

    name = "stub"

    def __init__(self, table: dict[tuple[str, str], int], sync_ns: int = 3_000) -> None:
        self.table, self._sync, self.asked = table, sync_ns, []

    def host_op_ns(self, op, phase: str) -> int:
        self.asked.append((op.name, phase))
        return self.table[(op.name, phase)]

    def sync_ns(self, nbytes: float) -> int:
        return self._sync

    def host_overhead_ns(self, op: str) -> int:
        return 20_000

    def launch_overhead_ns(self) -> int:
        return 5_000


def _op(name: str) -> MemoryOp:
    return MemoryOp("elementwise", 1.0, name)


def _chain_sim(tasks: list[tuple[int, list[str]]], pricing: HostPricing) -> Simulation:
    """One GPU, a dependency chain of compute tasks (device ns, names of the ops each issues)."""
    sim = Simulation(chain([100.0]))
    prev = None
    for i, (ns, ops) in enumerate(tasks):
        prev = sim.compute(0, ns, f"t{i}", deps=[prev] if prev else [],
                           args={"ops": tuple(_op(o) for o in ops), "kernels": len(ops), "host_phase": "fwd"})
    add_eager_host(sim, pricing)
    return sim


# -- exact answers on the engine -------------------------------------------------------------
def test_host_bound_chain_is_the_sum_of_host_costs_plus_the_last_device_time() -> None:
    stub = StubHost({("a", "fwd"): 12_000, ("b", "fwd"): 8_000, ("c", "fwd"): 10_000})
    pricing = host_pricing(stub)
    assert pricing.per_op and pricing.source == "stub: host time per op class (chain times: no host_mix rows)"
    # issues end at 20, 50 and 60 us (a+b, c+a+b, c); each task is shorter than the next issue
    res = _chain_sim([(5_000, ["a", "b"]), (4_000, ["c", "a", "b"]), (7_000, ["c"])], pricing).run()
    assert res.makespan_ns == (20_000 + 30_000 + 10_000) + 7_000
    gpu = [(s.start_ns, s.end_ns) for s in res.recorder.spans if s.stream == "compute"]
    assert gpu == [(20_000, 25_000), (50_000, 54_000), (60_000, 67_000)]


def test_a_device_bound_chain_waits_only_for_the_first_issue() -> None:
    pricing = host_pricing(StubHost({("a", "fwd"): 2_000}))
    res = _chain_sim([(10_000, ["a"])] * 3, pricing).run()
    assert res.makespan_ns == 2_000 + 3 * 10_000


def test_a_host_sync_holds_the_host_until_the_copy_is_done() -> None:
    """C (50 us on the GPU) issues in 10 us; the counts copy A (2 us on the GPU, sync 3 us) right
    after; B (10 us) is issued only once the host holds the counts: at 60 + max(2, 3) us."""
    stub = StubHost({("c", "fwd"): 10_000, ("b", "fwd"): 10_000}, sync_ns=3_000)
    sim = Simulation(chain([100.0]))
    c = sim.compute(0, 50_000, "C", args={"ops": (_op("c"),), "kernels": 1})
    a = sim.compute(0, 2_000, "copy", deps=[c], args={"ops": (), "kernels": 0, "host_sync": True, "sync_bytes": 512})
    b = sim.compute(0, 10_000, "B", deps=[a], args={"ops": (_op("b"),), "kernels": 1})
    issued = add_eager_host(sim, host_pricing(stub))
    res = sim.run()
    assert (issued.syncs, issued.host_tasks, issued.per_op_tasks, issued.per_kernel_tasks) == (1, 4, 3, 0)
    assert (a.start_ns, a.end_ns) == (60_000, 62_000)
    assert (b.start_ns, b.end_ns) == (73_000, 83_000) and res.makespan_ns == 83_000
    host = [(s.name, s.start_ns, s.end_ns) for s in res.recorder.spans if s.stream == HOST_STREAM]
    assert host == [("issue C", 0, 10_000), ("issue copy", 10_000, 10_000), ("sync copy", 62_000, 63_000),
                    ("issue B", 63_000, 73_000)]


def test_a_sync_longer_than_its_copy_task_adds_nothing_after_it() -> None:
    stub = StubHost({("b", "fwd"): 1_000}, sync_ns=3_000)
    sim = Simulation(chain([100.0]))
    a = sim.compute(0, 8_000, "copy", args={"host_sync": True, "kernels": 0})
    b = sim.compute(0, 1_000, "B", deps=[a], args={"ops": (_op("b"),)})
    add_eager_host(sim, host_pricing(stub))
    sim.run()
    assert a.end_ns == 8_000 and b.start_ns == 8_000 + 1_000   # the host resumes as the copy ends


class StubAfterSync(StubHost):
    """StubHost whose host issues slower after a read: +5 us over the first 10 us of steady issue,
    +3 us more over the next 30 us, then the steady rate."""

    def host_after_sync_curve(self):
        return ((0.0, 0.0), (10_000.0, 5_000.0), (40_000.0, 8_000.0))


def test_the_issue_after_a_sync_follows_the_measured_curve() -> None:
    """After the counts copy, B1..B5 (10 us steady each) issue in 15, 11, 11, 11 and 10 us: the
    curve's rise over each one's span of steady issue since the read; C before the read is steady."""
    stub = StubAfterSync({("c", "fwd"): 10_000, ("b", "fwd"): 10_000}, sync_ns=3_000)
    pricing = host_pricing(stub)
    assert pricing.after_sync and "8 us slower over its first 40 us" in pricing.sync_source
    sim = Simulation(chain([100.0]))
    c = sim.compute(0, 50_000, "C", args={"ops": (_op("c"),), "kernels": 1})
    prev = sim.compute(0, 2_000, "copy", deps=[c], args={"ops": (), "kernels": 0, "host_sync": True})
    for i in range(5):
        prev = sim.compute(0, 1_000, f"B{i}", deps=[prev], args={"ops": (_op("b"),), "kernels": 1})
    add_eager_host(sim, pricing)
    res = sim.run()
    issue = [s.end_ns - s.start_ns for s in res.recorder.spans if s.stream == HOST_STREAM and s.name.startswith("issue B")]
    assert issue == [15_000, 11_000, 11_000, 11_000, 10_000]
    assert pricing.after_sync_extra(0.0, 0.0) == 0 and pricing.after_sync_extra(40_000.0, 1e6) == 0


def test_the_after_sync_curve_averages_runs_and_never_falls() -> None:
    """Two runs' rows per mark are averaged; an extra that dips at a later mark is held."""
    from moesim.costs.calibrated import CalibratedCostModel
    from moesim.costs.profile import profile_from_dict

    head = {"schema_version": 1, "device": "NVIDIA H100", "gpu_count": 1, "driver": "d", "cuda": "c", "nccl": "n",
            "torch": "t", "date": "2026-12-07T00:00:00Z", "command": "synthetic", "notes": "test"}
    rows = [{"op": "host_after_sync", "calls": k, "steady_ns": s, "time_ns": t, "repeats": 30, "run": r}
            for r, table in ((0, ((1, 40e3, 120e3), (8, 200e3, 400e3), (64, 1e6, 1.1e6))),
                             (1, ((1, 60e3, 100e3), (8, 200e3, 300e3), (64, 1.2e6, 1.3e6))))
            for k, s, t in table]
    model = CalibratedCostModel(profile_from_dict({**head, "samples": rows}, name="synthetic"))
    assert model.host_after_sync_curve() == ((0.0, 0.0), (50e3, 60e3), (200e3, 150e3), (1.1e6, 150e3))
    assert CalibratedCostModel(profile_from_dict({**head, "samples": [{"op": "launch", "variant": "x", "time_ns": 5e3,
                                                                        "repeats": 3}]}, name="s")
                               ).host_after_sync_curve() is None


def test_without_a_sync_the_host_runs_ahead() -> None:
    stub = StubHost({("c", "fwd"): 10_000, ("b", "fwd"): 10_000})
    sim = Simulation(chain([100.0]))
    c = sim.compute(0, 50_000, "C", args={"ops": (_op("c"),)})
    b = sim.compute(0, 10_000, "B", deps=[c], args={"ops": (_op("b"),)})
    add_eager_host(sim, host_pricing(stub))
    assert sim.run().makespan_ns == 70_000 and b.start_ns == 60_000


def test_a_folded_tp_collective_issues_each_call_it_stands_for() -> None:
    sim = Simulation(chain([100.0]))
    coll = sim.collective("all_reduce", [0, 1], 1e3, "tp", args={"calls": 3})
    add_eager_host(sim, HostPricing.flat(1_000, lambda category: 7_000.0))
    sim.run()
    assert coll.start_ns == 21_000


# -- segments carry their host time ----------------------------------------------------------
def test_a_segment_carries_the_host_time_of_its_ops_each_in_its_own_phase() -> None:
    from moesim.lowering.stage_costs import program_work
    from moesim.costs.roofline import make_cost_model
    stub = StubHost({("x", "fwd"): 11_000, ("x.dgrad", "bwd"): 5_000, ("n.bwd", "bwd"): 3_000,
                     ("g", "bwd"): 7_000})
    program = [Gemm(64, 64, 64, name="x"), CommOp("all_reduce", 1e6, "tp.ar", "tp"),
               Gemm(64, 64, 64, name="x.dgrad"), MemoryOp("norm", 1e3, "n.bwd"),
               GroupedGemm((3, 0, 5), 64, 64, layout="dgrad", name="g")]
    w = program_work(make_cost_model("H100"), program, (0.0, 0.0), host_pricing(stub))
    # a recomputed forward (x) inside a backward list is issued as a forward
    assert w.host_ns == 11_000 + 5_000 + 3_000 + 7_000 and w.kernels == 4 and w.tp_calls == 1
    assert stub.asked == [("x", "fwd"), ("x.dgrad", "bwd"), ("n.bwd", "bwd"), ("g", "bwd")]
    flat = program_work(make_cost_model("H100"), program, (0.0, 0.0), HostPricing.flat(1_000))
    assert flat.host_ns == 0   # not priced per op: the per-kernel figure applies at issue


def test_every_backward_op_of_the_presets_is_named_as_one() -> None:
    """op_phase reads the phase from the op's own form: forward programs hold no backward-named
    op and backward programs no forward-named one (else the host would price the wrong phase)."""
    from moesim.workload import layers as wl
    from moesim.workload import transformer as tf
    from moesim.workload.presets import get_model
    for name in ("llama3-8b", "qwen3-30b-a3b", "deepseek-v3"):
        spec = get_model(name)
        for layer in (0, spec.num_layers - 1):
            ops = lambda prog: [x for x in prog if not isinstance(x, CommOp)]
            assert {op_phase(x) for x in ops(wl.forward_program(spec, layer, 1, 2, True, 2))} == {"fwd"}
            back = wl.backward_input_program(spec, layer, 1, 2, True, 2) + list(wl.backward_weight_ops(spec, layer, 1, 2, True, 2))
            assert {op_phase(x) for x in ops(back)} == {"bwd"}
        assert {op_phase(x) for x in tf.embedding_backward_program(spec, 1, 2, True) if not isinstance(x, CommOp)} == {"bwd"}


# -- the issue recurrence ----------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(tasks=st.lists(st.tuples(st.integers(0, 40_000), st.lists(st.sampled_from("abcd"), max_size=4)),
                      min_size=1, max_size=10),
       costs=st.tuples(*[st.integers(0, 20_000)] * 4))
def test_a_chain_follows_the_issue_recurrence(tasks, costs) -> None:
    """start_k = max(end_(k-1), issued_k), issued_k = the host cost of every op up to task k."""
    stub = StubHost({(o, "fwd"): c for o, c in zip("abcd", costs)})
    res = _chain_sim(tasks, host_pricing(stub)).run()
    gpu = sorted((s.start_ns, s.end_ns) for s in res.recorder.spans if s.stream == "compute")
    end = issued = 0
    for (ns, ops), (start, stop) in zip(tasks, gpu):
        issued += sum(costs["abcd".index(o)] for o in ops)
        assert start == max(end, issued)
        end = start + ns
        assert stop == end
    assert res.makespan_ns == max(end, issued)


# -- modes, fallback and labels -----------------------------------------------------------------
def _profile_model(host_rows: bool, sync_rows: bool = True, call_ns: float = 20_000.0):
    from moesim.costs.calibrated import CalibratedCostModel
    from moesim.costs.profile import profile_from_dict
    doc = json.loads(PROFILE.read_text())
    rows = [s for s in doc["samples"] if s["op"] not in ("host_op", "host_mix", "sync")]
    calls = ("linear", "grouped_mm", "sdpa", "rms_norm", "silu", "mul", "add", "softmax", "sigmoid", "topk",
             "argsort", "histc", "index_select", "index_add", "scatter_add", "gather", "cast", "view", "zeros",
             "cumsum", "rope", "cat")
    if host_rows:
        rows += [{"op": "host_op", "call": c, "phase": ph, "time_ns": call_ns * (1.5 if ph == "bwd" else 1.0),
                  "repeats": 3} for c in calls for ph in ("fwd", "bwd", "plain")]
    if sync_rows:
        rows += [{"op": "sync", "nbytes": n, "variant": "queued", "time_ns": t, "repeats": 3}
                 for n, t in ((64, 14_000.0), (4096, 16_000.0))]
    return CalibratedCostModel(profile_from_dict(dict(doc, samples=rows)))


def test_a_profile_without_host_op_rows_falls_back_per_counted_kernel_and_says_so() -> None:
    model = _profile_model(host_rows=False, sync_rows=False)
    p = host_pricing(model)
    assert not p.per_op and p.kernel_ns == model.eager_host_ns() > 0
    assert "fallback: no host_op rows" in p.source and "no sync rows" in p.sync_source
    measured = host_pricing(_profile_model(host_rows=True))
    assert measured.per_op and measured.source.endswith("host time per op class (chain times: no host_mix rows)")
    assert "measured device-to-host copy" in measured.sync_source


def test_the_override_and_a_model_without_host_figures_are_labelled() -> None:
    from moesim.costs.roofline import make_cost_model
    over = host_pricing(_profile_model(host_rows=True), override_ns=40_000.0)
    assert not over.per_op and over.kernel_ns == 40_000.0 and over.source.startswith("scenario.host_launch_us")
    roof = host_pricing(make_cost_model("H100"))
    assert "(no host figure for this cost model)" in roof.source


def test_host_mode_names_and_the_older_name() -> None:
    assert [host_mode(x) for x in ("graphs", "eager", "ahead", "lazy", None)] == ["graphs", "eager", "graphs", None, None]


# -- scenarios, both engines ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def dense():
    from moesim.experiment import ParallelPlan, Scenario
    from moesim.workload.presets import get_model
    return Scenario(name="dense", schedule="1f1b", topology="dgx_h100",
                    model=dataclasses.replace(get_model("llama3-8b"), seq_len=256, num_layers=4),
                    plan=ParallelPlan(tp=2, pp=4, num_microbatches=4))


def test_graphs_mode_ignores_the_host_and_ahead_means_graphs(dense) -> None:
    from moesim.experiment.runner import run_scenario
    assert dataclasses.replace(dense, host="ahead").host == "graphs" == dense.with_overrides({"host": "ahead"}).host
    base, rec = run_scenario(dense)
    slow, _ = run_scenario(dataclasses.replace(dense, host="ahead", host_launch_us=5_000.0))
    assert base.step_time_ms == slow.step_time_ms and not any(s.stream == HOST_STREAM for s in rec.spans)
    assert base.host_issue["mode"] == slow.host_issue["mode"] == "graphs"
    assert slow.host_issue["ratio"] > base.host_issue["ratio"]   # the check still prices the override


def _ep_scenario(experts: str, host: str = "eager"):
    from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario
    from moesim.memory import MemoryConfig
    from moesim.moe.routing import RoutingConfig
    from moesim.workload.presets import get_model
    return Scenario(name="ep", topology="h800_cluster", nodes=2, schedule="1f1b", host=host,
                    model=dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=4),
                    plan=ParallelPlan(tp=1, dp=8, pp=2, ep=8, num_microbatches=4),
                    moe=MoEOptions(routing=RoutingConfig(kind="zipf", zipf_s=0.5, seed=3),
                                   experts=experts),
                    memory=MemoryConfig(recompute="none"))


@pytest.fixture
def per_op_host(monkeypatch):
    """The H200 profile with host_op and sync rows (a slow host: 150 us per call) stands in wherever
    a run looks for host figures."""
    model = _profile_model(host_rows=True, call_ns=150_000.0)
    monkeypatch.setattr(host_mod, "_h200", lambda: model)
    return model


@pytest.mark.parametrize("experts", ["grouped", "loop"])
def test_the_reduced_engine_issues_as_the_full_one(per_op_host, experts) -> None:
    """A 16-GPU EP8 x PP2 MoE step on eager hosts priced per op class: the reduced engine's host
    lanes give the full engine's step within 3% and the same host check."""
    from moesim.experiment.runner import run_scenario
    scn = _ep_scenario(experts)
    graphs, _ = run_scenario(dataclasses.replace(scn, host="graphs"), force=True)
    full, _ = run_scenario(scn, force=True)
    red, rec = run_scenario(dataclasses.replace(scn, engine="reduced"))
    assert full.step_time_ms > 1.02 * graphs.step_time_ms   # the host matters here
    assert abs(red.step_time_ms / full.step_time_ms - 1) < 0.03, (full.step_time_ms, red.step_time_ms)
    assert red.host_issue["pricing"] == full.host_issue["pricing"] == "per op class"
    # EP8: torchtitan reads its split sizes on the host each MoE forward (the loop its counts too)
    assert set(full.host_issue["issued"]) == {"op", "kernel", "call", "sync"}
    assert full.host_issue["issued"]["kernel"] == 16   # the optimizer steps: no ops stated, per counted kernel
    assert red.host_issue["mode"] == "eager" and red.host_issue["launch_source"] == full.host_issue["launch_source"]
    assert abs(red.host_issue["host_busy_ms"] / full.host_issue["host_busy_ms"] - 1) < 0.03
    syncs = [s for s in rec.spans if s.stream == HOST_STREAM and s.name.startswith("sync ")]
    lanes, layers, microbatches = 2, 2, 4   # each lane's host: its stage's MoE layers, each microbatch
    assert len(syncs) == lanes * layers * microbatches * (2 if experts == "loop" else 1)


def test_the_host_check_works_in_the_reduced_engine_in_graphs_mode(per_op_host) -> None:
    from moesim.experiment.runner import run_scenario
    scn = _ep_scenario("grouped", host="graphs")
    full, _ = run_scenario(scn, force=True)
    red, _ = run_scenario(dataclasses.replace(scn, engine="reduced"))
    assert red.host_issue["mode"] == "graphs" and "host_busy_ms" not in red.host_issue
    assert red.host_issue["issue_ms"] == pytest.approx(full.host_issue["issue_ms"], rel=0.03)


def test_forward_only_runs_issue_their_ops_without_autograd():
    """A forward-only run (torch.no_grad) prices each forward op at its 'plain' host time, a
    training forward at its 'fwd' (autograd recording) time."""
    from moesim.lowering.host import host_pricing
    from moesim.lowering.resolve import resolve_cost_model
    from moesim.ops import Gemm

    cost = resolve_cost_model("auto", "H100")
    op = Gemm(256, 256, 256)
    recording, no_grad = host_pricing(cost), host_pricing(cost, autograd=False)
    assert recording.ops_ns([op], None) == cost.host_op_ns(op, "fwd")
    assert no_grad.ops_ns([op], None) == cost.host_op_ns(op, "plain") < recording.ops_ns([op], None)
    assert no_grad.ops_ns([op], "bwd") == cost.host_op_ns(op, "bwd")


# -- the mixed-program factor (host_mix rows) ----------------------------------------------------
def test_mix_factor_is_the_mixed_chain_over_its_classes_own_chains_of_the_same_run() -> None:
    from moesim.costs.host_classes import HostClassTable, mix_factors

    rows = [{"call": "linear", "phase": "plain", "time_ns": 10_000.0, "run": 1},
            {"call": "silu", "phase": "plain", "time_ns": 6_000.0, "run": 1},
            {"call": "linear", "phase": "plain", "time_ns": 40_000.0, "run": 0},   # another run: not compared
            {"call": "silu", "phase": "plain", "time_ns": 20_000.0, "run": 0}]
    mix = [{"op": "host_mix", "phase": "plain", "classes": ["linear", "silu"], "time_ns": 16_000.0, "run": 1}]
    assert mix_factors(rows, mix) == pytest.approx({"plain": 2.0})   # 16 us / mean(10, 6) us
    table = HostClassTable.from_rows(rows[:2], [], mix)
    op = Gemm(m=64, n=64, k=64)
    assert table.op_ns(op, "plain", 1.0)[0] == pytest.approx(20_000.0)          # chain 10 us x 2
    assert table.op_ns(op, "plain", 1.0, mixed=False)[0] == pytest.approx(10_000.0)  # a loop body's repeat
    assert table.op_ns(op, "fwd", 5.0) == (5.0, ["linear/fwd"])   # unmeasured: the fallback, no factor


def test_a_class_measured_at_several_expert_counts_grows_within_each_run() -> None:
    """The level is the smallest count's time over every run; the growth is each run's own
    difference, averaged; linear between counts, along the last segment past the largest, the
    smallest count's time below it."""
    from moesim.costs.host_classes import HostClassTable, expert_growth

    def row(e, ns, run):
        return {"call": "megatron_moe_layer", "phase": "fwd", "time_ns": ns, "run": run,
                "probe": {"num_experts": e, "hidden": 512}}
    rows = [row(8, 600_000.0, 0), row(8, 800_000.0, 1), row(32, 900_000.0, 1), row(128, 1_200_000.0, 1),
            row(8, 700_000.0, 2), row(32, 900_000.0, 2)]
    assert expert_growth(rows) == ((8, 0.0), (32, 150_000.0), (128, 400_000.0))   # run 1: +100k, run 2: +200k
    table = HostClassTable.from_rows(rows, [])
    level = (600_000.0 * 800_000.0 * 700_000.0) ** (1 / 3)   # log-mean at 8 experts
    assert table.call_ns("megatron_moe_layer", "fwd") == pytest.approx(level)
    assert table.call_ns("megatron_moe_layer", "fwd", 8) == pytest.approx(level)
    assert table.call_ns("megatron_moe_layer", "fwd", 2) == pytest.approx(level)
    assert table.call_ns("megatron_moe_layer", "fwd", 20) == pytest.approx(level + 75_000.0)
    assert table.call_ns("megatron_moe_layer", "fwd", 80) == pytest.approx(level + 275_000.0)
    assert table.call_ns("megatron_moe_layer", "fwd", 256) == pytest.approx(level + 400_000.0 + 128 * 250_000.0 / 96)
    falling = HostClassTable.from_rows([row(8, 600_000.0, 0), row(32, 700_000.0, 0), row(128, 650_000.0, 0)], [])
    assert falling.call_ns("megatron_moe_layer", "fwd", 512) == pytest.approx(650_000.0)   # held flat past 128
    one = HostClassTable.from_rows([row(8, 600_000.0, 0)], [])   # one count: the same at any count
    assert one.call_ns("megatron_moe_layer", "fwd", 128) == pytest.approx(600_000.0)


def test_a_loop_tasks_ops_are_priced_without_the_mix_factor() -> None:
    class Model:
        def host_op_ns(self, op, phase, mixed=True):
            return 300 if mixed else 100

    pricing = HostPricing(Model(), True, 1.0, "test")
    ops = (Gemm(m=8, n=8, k=8), Gemm(m=8, n=8, k=8))
    assert pricing.compute_ns({"ops": ops, "host_phase": "fwd"}, "expert") == (600, True)
    assert pricing.compute_ns({"ops": ops, "host_phase": "fwd", "expert": 3}, "expert") == (200, True)


def test_a_torchtitan_loop_body_is_priced_by_its_measured_class_in_both_passes() -> None:
    """A loop body's tasks share the measured ``expert_loop_body`` time of their pass (the
    per-op classes miss its ``w[e]`` views): one forward chain costs the class's time; an
    expert's backward tasks (B chain, W chain, select share) sum to the class's backward. A
    Megatron loop names its own class (``megatron_expert_mlp``)."""
    from moesim.costs.calibrated import CalibratedCostModel
    from moesim.costs.profile import load_profile
    from moesim.lowering.host import expert_task_args
    from moesim.workload.moe import MoESpec
    from moesim.workload.moe_exec import expert_tasks

    spec = MoESpec(name="tiny-moe", num_layers=1, hidden=512, num_heads=8, num_kv_heads=8, head_dim=64,
                   ffn_hidden=1024, vocab=32000, seq_len=512, num_experts=3, top_k=2, expert_ffn_hidden=256)
    model = CalibratedCostModel(load_profile("h100_sxm"))
    pricing = host_pricing(model)

    def host_ns(task, phase: str) -> int:
        return pricing.compute_ns({"ops": task.ops, "host_phase": phase, **expert_task_args(task)}, "expert")[0]

    forward = [t for t in expert_tasks(spec, [64, 0, 32], "F", "loop", "torchtitan") if t.expert is not None]
    assert [t.expert for t in forward] == [0, 2]
    for task in forward:
        assert host_ns(task, "fwd") == round(model.host_call_ns("expert_loop_body", "fwd"))
        assert host_ns(task, "fwd") != pricing.ops_ns(task.ops, "fwd", repeated=True)
    backward = expert_tasks(spec, [64, 0, 32], "BW", "loop", "torchtitan")
    for expert in (0, 2):
        mine = [t for t in backward if t.expert == expert]
        assert {t.name.split(".", 1)[-1] for t in mine} == {f"expert{expert}", "wgrad", "select_bwd"}
        assert sum(host_ns(t, "bwd") for t in mine) == pytest.approx(model.host_call_ns("expert_loop_body", "bwd"), abs=3)
    empty = [t for t in backward if t.expert == 1]
    assert empty and all(not t.body for t in empty)   # no tokens: not the measured body, per op
    megatron = [t for t in expert_tasks(spec, [64, 32], "F", "loop", "megatron") if t.expert is not None]
    assert all(t.body == t.ops and t.body_class == "megatron_expert_mlp" for t in megatron)


def test_megatron_loop_prices_every_expert_module_call_by_its_class_empty_ones_too() -> None:
    """Megatron's SequentialMLP calls every local expert's module: an expert with tokens costs the
    measured ``megatron_expert_mlp`` call (its tasks' shares sum to it, forward and backward), an
    expert without tokens the whole call, launching only its weight gradients' zero fills in the
    backward; without the class's rows, the per-op sum (and nothing for an empty expert)."""
    from moesim.lowering.host import expert_task_args
    from moesim.workload.moe import MoESpec
    from moesim.workload.moe_exec import empty_wgrad_ops, expert_tasks

    class Model:
        def __init__(self, calls):
            self.calls = calls

        def host_op_ns(self, op, phase, mixed=True):
            return 1_000

        def host_call_ns(self, call, phase):
            return self.calls.get((call, phase))

    spec = MoESpec(name="tiny-moe", num_layers=1, hidden=512, num_heads=8, num_kv_heads=8, head_dim=64,
                   ffn_hidden=1024, vocab=32000, seq_len=512, num_experts=3, top_k=2, expert_ffn_hidden=256)
    measured = HostPricing(Model({("megatron_expert_mlp", "fwd"): 200_000.0, ("megatron_expert_mlp", "bwd"): 350_000.0}),
                           True, 1.0, "test")
    unmeasured = HostPricing(Model({}), True, 1.0, "test")

    def host_ns(pricing, task, phase: str) -> int:
        return pricing.compute_ns({"ops": task.ops, "host_phase": phase, **expert_task_args(task)}, "expert")[0]

    forward = [t for t in expert_tasks(spec, [64, 0, 32], "F", "loop", "megatron") if t.expert is not None]
    assert [(t.expert, len(t.ops) > 0) for t in forward] == [(0, True), (1, False), (2, True)]
    assert [host_ns(measured, t, "fwd") for t in forward] == [200_000] * 3
    assert [host_ns(unmeasured, t, "fwd") for t in forward] == [3_000, 0, 3_000]   # fc1, swiglu, fc2
    backward = expert_tasks(spec, [64, 0, 32], "BW", "loop", "megatron")
    for expert in (0, 1, 2):
        assert sum(host_ns(measured, t, "bwd") for t in backward if t.expert == expert) == pytest.approx(350_000, abs=2)
    empty = [t for t in backward if t.expert == 1]
    assert len(empty) == 1 and empty[0].ops == tuple(empty_wgrad_ops(spec, "megatron"))
    deferred = [t for t in expert_tasks(spec, [64, 0, 32], "W", "loop", "megatron") if t.expert == 1]
    assert host_ns(measured, deferred[0], "bwd") == 2_000   # W of a split backward: its fills, per op
