"""Framework overlap switches (moesim.lowering.overlap): exact answers on small scenarios.

Each test lowers a schedule whose costs are chosen so the exposed communication with the switch
off and on follows from the schedule by hand, and checks the simulated step against it.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from fabrics import star
from moesim.engine import Simulation
from moesim.errors import ConfigError
from moesim.lowering.moe_costs import Exchange
from moesim.lowering.moe_exchange import ep_stream
from moesim.lowering.overlap import OverlapOptions, check_overlap, combined_1f1b
from moesim.lowering.pipeline import Grid, LoweringOptions, StageWork, lower_pipeline
from moesim.schedules import dry_run, generate, validate
from moesim.schedules.model import Action, Overlap, actions_of

S_F, S_B, C = 30_000, 50_000, 20_000   # ns: a compute segment of F, of BW; one all-to-all


@dataclass
class MoEFakeTable:
    """Every action: compute, one exchange (an all-to-all of C ns), compute."""

    def segments(self, action):
        s = S_F if action.kind == "F" else S_B
        return (StageWork(s, 0.0), Exchange(0, "F" if action.kind == "F" else "B", StageWork(0, 0.0)),
                StageWork(s, 0.0))

    def send_bytes(self, action):
        return 0.0

    def grad_bytes(self, rank, chunk):
        return 0.0

    def optimizer_ns(self, rank):
        return 0


class FixedExchange:
    """An all-to-all of exactly C ns on the phase's EP stream of every GPU."""

    def lower(self, sim, seg, action, ctx, p, grid, ready):
        for key in ready:
            d, t = key
            g = grid.gpu(t, d, p)
            ready[key] = [sim.compute(g, C, f"a2a.{ctx['name']}", category="all_to_all",
                                      stream=ep_stream(seg.phase), deps=ready[key])]


def _moe_makespan(schedule) -> int:
    sim = Simulation(star(1))
    lower_pipeline(sim, schedule, Grid(1, 1, 1, (0,)), MoEFakeTable(), LoweringOptions(), FixedExchange())
    return sim.run().makespan_ns


@pytest.mark.parametrize("m", [2, 3, 6])
def test_ep_overlap_hides_two_all_to_alls_per_combined_pair(m: int) -> None:
    """pp=1, m microbatches. Off: every all-to-all exposed, m (2 S_F + 2 S_B + 2 C). On (F0,
    F1&B0, ..., B(m-1)): inside a pair each all-to-all (C <= S_F, S_B) runs under the other
    half's compute, so only the lone F0's and B(m-1)'s are exposed: 2 (m - 1) C less."""
    sched = generate("1f1b", 1, m)
    off = _moe_makespan(sched)
    on = _moe_makespan(combined_1f1b(sched))
    assert off == m * (2 * S_F + 2 * S_B + 2 * C)
    assert on == off - 2 * (m - 1) * C


def test_combined_1f1b_without_pipelining_is_megatrons_order() -> None:
    row = combined_1f1b(generate("1f1b", 1, 3)).steps[0]
    assert [str(s) for s in row] == ["0F0", "0F1&0BW0", "0F2&0BW1", "0BW2"]


@pytest.mark.parametrize("p,m,v", [(2, 4, 2), (4, 8, 2), (4, 8, 3), (2, 6, 2)])
def test_combined_interleaved_pairs_every_steady_state_step_and_never_deadlocks(p: int, m: int, v: int) -> None:
    sched = generate("interleaved", p, m, v)
    combined = combined_1f1b(sched)
    validate(combined)
    dry_run(combined, t_f=1.0, t_b=2.0, t_w=0.0)   # raises if a rank waits forever
    for before, after in zip(sched.steps, combined.steps):
        for kind in ("F", "BW"):   # each kind keeps its order; only how they interleave changes
            assert [a for a in before if a.kind == kind] == [a for s in after for a in actions_of(s) if a.kind == kind]
        leading = next(i for i, a in enumerate(before) if a.kind != "F")   # 1F1B's warm-up + 1: Megatron's combined warm-up
        assert all(isinstance(s, Action) and s.kind == "F" for s in after[:leading])
        assert sum(isinstance(s, Overlap) for s in after) == m * v - leading


def test_plain_1f1b_with_pipeline_is_refused_as_megatron_refuses_it() -> None:
    with pytest.raises(ConfigError, match="split backwards"):
        combined_1f1b(generate("zb-h1", 2, 4))
    with pytest.raises(ConfigError, match="virtual"):
        check_overlap(OverlapOptions(overlap_moe_expert_parallel_comm=True), schedule="1f1b", pp=2, vpp=1, ep=8,
                      recompute="none", zero=True, dp_overlap=True, dispatcher="alltoall")


@pytest.mark.parametrize("kwargs,match", [
    (dict(delay_wgrad_compute=True), "overlap_moe_expert_parallel_comm"),
    (dict(overlap_moe_expert_parallel_comm=True, moe_shared_expert_overlap=True), "exclusive"),
    (dict(tp_comm_overlap="yes"), "true or false"),
    (dict(deepep_num_sms=0), "whole number"),
])
def test_switches_megatron_rejects_together_are_refused_naming_both(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        OverlapOptions(**kwargs)


@pytest.mark.parametrize("kwargs,plan,match", [
    (dict(overlap_moe_expert_parallel_comm=True), dict(ep=1), "expert parallelism"),
    (dict(overlap_moe_expert_parallel_comm=True), dict(recompute="full"), "full"),
    (dict(overlap_moe_expert_parallel_comm=True), dict(schedule="dualpipe"), "DualPipe"),
    (dict(overlap_param_gather=True), dict(zero=False), "distributed optimizer"),
    (dict(overlap_param_gather=True, overlap_grad_reduce=False), {}, "overlap_grad_reduce"),
    (dict(deepep_num_sms=20), {}, "deepep"),
])
def test_combinations_a_framework_refuses(kwargs, plan, match) -> None:
    where = dict(schedule="1f1b", pp=1, vpp=1, ep=8, recompute="none", zero=True, dp_overlap=True,
                 dispatcher="alltoall") | plan
    with pytest.raises(ConfigError, match=match):
        check_overlap(OverlapOptions(**kwargs), **where)


@dataclass
class TPFakeTable:
    """One segment per action: G ns of GEMM and R ns of other kernels, carrying TP traffic."""

    gemm_ns: int
    rest_ns: int
    tp_bytes: float

    def segments(self, action):
        return (StageWork(self.gemm_ns + self.rest_ns, 0.0, self.tp_bytes, 1,
                          op_ns=(("GEMM", self.gemm_ns), ("attention", self.rest_ns))),)

    def send_bytes(self, action):
        return 0.0

    def grad_bytes(self, rank, chunk):
        return 0.0

    def optimizer_ns(self, rank):
        return 0


def _tp_makespan(table, overlap: bool, m: int) -> int:
    sim = Simulation(star(2, bw=100.0))
    lower_pipeline(sim, generate("1f1b", 1, m), Grid(2, 1, 1, (0, 1)), table,
                   LoweringOptions(tp_overlap=overlap, optimizer=False))
    return sim.run().makespan_ns


@pytest.mark.parametrize("gemm_ns", [10_000, 40_000, 400_000])
def test_tp_comm_overlap_hides_the_tp_collective_behind_the_segments_gemms(gemm_ns: int) -> None:
    """Off, each of the 2m segments is compute then its TP all-reduce (T ns, 4 MB over a 100 GB/s
    star: 2 x 2 MB ring steps); on, the all-reduce starts after the non-GEMM kernels and runs
    beside the GEMMs: each segment's exposed TP time drops by min(T, GEMM time)."""
    m, rest = 3, 5_000
    table = TPFakeTable(gemm_ns, rest, 4e6)
    off, on = _tp_makespan(table, False, m), _tp_makespan(table, True, m)
    tp_ns = (off - 2 * m * (gemm_ns + rest)) // (2 * m)
    assert off == 2 * m * (gemm_ns + rest + tp_ns)
    assert on == off - 2 * m * min(tp_ns, gemm_ns)


@dataclass
class DPFakeTable:
    """A 1F1B step with gradients: F and BW of fixed length, ZeRO-1 sync of 64 MB per chunk."""

    def work(self, action):
        return StageWork(100_000 if action.kind == "F" else 200_000, 0.0)

    def send_bytes(self, action):
        return 0.0

    def grad_bytes(self, rank, chunk):
        return 64e6

    def optimizer_ns(self, rank, dense_shards=1, expert_shards=1):
        return 10_000


def test_overlap_param_gather_moves_the_all_gather_before_the_first_forward() -> None:
    """pp=1: the gather the step ended with (behind the optimizer) now starts the step and the
    first forward waits for it; the step lasts exactly as long (nothing can hide it without a
    second chunk), the optimizer is the last task, and the first forward starts when it ends."""
    def run(overlap: bool):
        sim = Simulation(star(2, bw=100.0))
        lower_pipeline(sim, generate("1f1b", 1, 2), Grid(1, 2, 1, (0, 1)), DPFakeTable(),
                       LoweringOptions(zero=True, param_gather_overlap=overlap))
        result = sim.run()
        spans = [s for s in result.recorder.spans if s.rank == 0]
        return result.makespan_ns, spans
    off, off_spans = run(False)
    on, on_spans = run(True)
    gather_off = next(s for s in off_spans if s.name == "dp:params")
    gather_on = next(s for s in on_spans if s.name.startswith("dp:params"))
    first_f = min((s for s in on_spans if s.stream == "compute"), key=lambda s: s.start_ns)
    assert on == off
    assert gather_on.start_ns == 0 and first_f.start_ns == gather_on.end_ns
    assert gather_on.end_ns - gather_on.start_ns == gather_off.end_ns - gather_off.start_ns
    assert max(s.end_ns for s in on_spans) == max(s.end_ns for s in on_spans if s.name == "optimizer")


def _moe_scenario(engine: str, overlap: OverlapOptions, **kw):
    import dataclasses as dc

    from moesim.experiment import MoEOptions, ParallelPlan, Scenario
    from moesim.workload.presets import get_model

    model = dc.replace(get_model("qwen3-30b-a3b"), num_layers=2)
    return Scenario(name=engine, topology="dgx_h100", nodes=1, model=model, engine=engine, overlap=overlap,
                    plan=ParallelPlan(tp=1, dp=8, pp=1, ep=8, num_microbatches=3), schedule="1f1b",
                    moe=MoEOptions(token_movement="megatron"), **kw)


@pytest.mark.parametrize("overlap", [
    OverlapOptions(overlap_moe_expert_parallel_comm=True, delay_wgrad_compute=True),
    OverlapOptions(overlap_moe_expert_parallel_comm=True),   # expert weight gradients before the dispatch backward
    OverlapOptions(deepep_num_sms=20),
])
def test_both_engines_read_the_switches(overlap: OverlapOptions) -> None:
    """The full and the reduced engine lower the same switches: with each, both shorten or lengthen
    the step the same way against the step without (EP overlap: shorter; DeepEP's SMs: no effect
    without DeepEP, refused)."""
    from moesim.experiment.runner import run_scenario

    if overlap.deepep_num_sms is not None:
        with pytest.raises(ConfigError, match="deepep"):
            run_scenario(_moe_scenario("reduced", overlap), force=True)
        return
    steps = {}
    for engine in ("full", "reduced"):
        off, _ = run_scenario(_moe_scenario(engine, OverlapOptions()), force=True)
        on, _ = run_scenario(_moe_scenario(engine, overlap), force=True)
        assert on.step_time_ms < off.step_time_ms
        steps[engine] = (off.step_time_ms, on.step_time_ms)
    gain_full = steps["full"][0] - steps["full"][1]
    gain_reduced = steps["reduced"][0] - steps["reduced"][1]
    assert gain_reduced == pytest.approx(gain_full, rel=0.25)


def test_deepep_sms_set_the_compute_slowdown_in_both_engines() -> None:
    from moesim.experiment import MoEOptions
    from moesim.experiment.build import build_scenario
    from moesim.scale.reduced import build_reduced

    scn = _moe_scenario("full", OverlapOptions(deepep_num_sms=20))
    scn = type(scn)(**{**scn.__dict__, "moe": MoEOptions(dispatcher="deepep", token_movement="megatron")})
    assert build_scenario(scn, force=True).sim.overlap_slowdown == pytest.approx(132 / 112)
    assert build_reduced(scn)["slowdown"] == pytest.approx(132 / 112)


def test_switches_are_settable_by_their_names_from_the_command_line() -> None:
    scn = _moe_scenario("full", OverlapOptions()).with_overrides({
        "overlap.overlap_moe_expert_parallel_comm": "true", "overlap.delay_wgrad_compute": "true",
        "overlap.overlap_grad_reduce": "false", "overlap.moe_shared_expert_overlap": "false",
        "overlap.deepep_num_sms": "24"})
    assert scn.overlap == OverlapOptions(overlap_moe_expert_parallel_comm=True, delay_wgrad_compute=True,
                                         overlap_grad_reduce=False, moe_shared_expert_overlap=False, deepep_num_sms=24)


@pytest.mark.parametrize("kind", ["F", "BW"])
def test_shared_expert_and_wgrad_placement_moves_work_without_changing_it(kind: str) -> None:
    """``moe_shared_expert_overlap=False`` moves the shared experts from the exchange (during the
    dispatch) into the compute before it; no ``delay_wgrad_compute`` moves the experts' weight
    gradients into the backward exchange (before the dispatch backward). The work is the same ns."""
    import dataclasses as dc

    from moesim.costs.roofline import make_cost_model
    from moesim.lowering.moe_costs import MoEStageTable
    from moesim.workload.presets import get_model

    # layers 0-2 dense, 3 MoE with a shared expert (no MTP module: one exchange per pass)
    spec = dc.replace(get_model("deepseek-v3"), num_layers=4, num_nextn_predict_layers=0)

    def split(**kw):
        table = MoEStageTable(spec, generate("1f1b", 1, 2), make_cost_model("H100"), tp=1, ep=8,
                              micro_batch_size=1, sequence_parallel=False, **kw)
        segs = table.segments(Action(kind, 0, 0))
        exchanges = [s for s in segs if isinstance(s, Exchange)]
        return (sum(s.duration_ns for s in segs if isinstance(s, StageWork)),
                sum(x.shared.duration_ns for x in exchanges), [(x.phase, x.wgrad) for x in exchanges])
    during, before = split(shared_overlap=True), split(shared_overlap=False)
    assert during[1] > 0 and before[1] == 0 and before[0] == during[0] + during[1]
    fused = split(fused_wgrad=True)
    assert fused[0] + fused[1] == during[0] + during[1]
    assert fused[2] == ([("F", False)] if kind == "F" else [("B", True)])
    assert during[2] == ([("F", False)] if kind == "F" else [("B", False), ("W", False)])
