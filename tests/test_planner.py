"""The planner: presets, candidate rules, estimate shortcuts, breakdown bytes, search, CLI errors."""
from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from moesim.errors import ConfigError
from moesim.experiment import ParallelPlan
from moesim.memory import MemoryConfig
from moesim.planner import traffic
from moesim.planner.breakdown import parallelism_breakdown
from moesim.planner.candidates import Candidate, check_candidate, enumerate_candidates
from moesim.planner.context import PlanContext
from moesim.planner.costing import Shard
from moesim.planner.plan import plan_scenario
from moesim.planner.presets import PRESETS, ScenarioPreset, get_preset
from moesim.schedules import dry_run, generate
from moesim.workload.moe import MoESpec
from moesim.workload.transformer import TransformerSpec

HIDDEN, SEQ = 256, 256


@pytest.fixture(scope="module")
def tiny_fabric(tmp_path_factory) -> str:
    """One DGX H100 cut to 4 GPUs (a YAML extending the shipped file)."""
    path = tmp_path_factory.mktemp("fabric") / "tiny4.yaml"
    path.write_text("extends: dgx_h100\nname: tiny4\ngpus_per_node: 4\n")
    return str(path)


def tiny_moe(layers: int = 2) -> MoESpec:
    return MoESpec(name="tiny-moe", num_layers=layers, hidden=HIDDEN, num_heads=4, num_kv_heads=4, head_dim=64,
                   ffn_hidden=512, vocab=1024, seq_len=SEQ, num_experts=4, top_k=2, expert_ffn_hidden=256)


def tiny_preset(fabric: str, **changes) -> ScenarioPreset:
    base = dict(name="tiny", description="tiny MoE on 4 H100", model=tiny_moe(), topology=fabric,
                plan=ParallelPlan(dp=4, ep=4, num_microbatches=2), global_batch=8, seq_len=SEQ, routing=None)
    return ScenarioPreset(**{**base, **changes})


# -- presets ----------------------------------------------------------------------------------------
def test_unknown_preset_lists_every_valid_name():
    with pytest.raises(ConfigError) as err:
        get_preset("gpt5-on-a-toaster")
    assert err.value.field == "scenario"
    for name in PRESETS:
        assert name in str(err.value)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_consistent(name):
    p = PRESETS[name]
    assert p.plan.world_size == p.num_gpus
    assert p.plan.dp * p.plan.micro_batch_size * p.plan.num_microbatches == p.global_batch
    assert p.spec.seq_len == p.seq_len
    check_candidate(p, Candidate(p.plan, p.schedule, p.placement, p.num_redundant))


def test_lab_presets_keep_the_lab_shapes():
    gpt = PRESETS["gpt-oss-120b-gb200-ib"]
    assert (gpt.spec.num_layers, gpt.spec.hidden, gpt.spec.num_experts, gpt.num_gpus) == (96, 10240, 256, 576)
    assert PRESETS["gpt-oss-120b-gb200-ethernet"].topo.gpu_kind == "GB200"
    assert {l.kind for l in PRESETS["gpt-oss-120b-gb200-ethernet"].topo.links} >= {"ethernet"}
    ds = PRESETS["deepseek-v3-h800"]
    assert (ds.num_gpus, ds.plan.pp, ds.plan.ep, ds.plan.tp, ds.schedule) == (2048, 16, 64, 1, "dualpipe")


def test_preset_rejects_a_plan_that_does_not_make_the_global_batch(tiny_fabric):
    with pytest.raises(ConfigError) as err:
        tiny_preset(tiny_fabric, global_batch=12)
    assert "global batch 12" in str(err.value)


# -- candidate rules ----------------------------------------------------------------------------------
def test_enumeration_obeys_every_rule(tiny_fabric):
    preset = tiny_preset(tiny_fabric)
    cands, rejected = enumerate_candidates(preset)
    assert cands and rejected
    for c in cands:
        p = c.plan
        assert p.world_size == 4 and p.tp <= 4 and HIDDEN // 64 % p.tp == 0
        if p.ep_layout == "folded":   # EP over whole TP groups: a multiple of tp dividing tp x dp
            assert p.tp > 1 and p.ep % p.tp == 0 and (p.tp * p.dp) % p.ep == 0 and 4 % p.ep == 0
        else:
            assert p.dp % p.ep == 0 and 4 % p.ep == 0
        assert p.dp * p.micro_batch_size * p.num_microbatches == 8
        check_candidate(preset, c)
    assert any(r.field == "plan.pp" for r in rejected)  # interleaved needs more stages than 2 layers give
    assert any(c.plan.ep_layout == "folded" and c.plan.ep > c.plan.dp for c in cands)   # EP past DP, folded


_SCHEDULES = ("1f1b", "zb-h1", "interleaved", "dualpipe", "zb-v", "dualpipev")


def _valid(name: str, pp: int, m: int) -> bool:
    try:
        generate(name, pp, m, 2 if name == "interleaved" else None)
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("name", _SCHEDULES)
def test_probe_microbatches_have_the_same_validity(name):
    for pp in (2, 4):
        for m in range(1, 13 * pp):
            probe = Candidate(ParallelPlan(pp=pp, num_microbatches=m), name).probe_microbatches()
            assert _valid(name, pp, m) == _valid(name, pp, probe), (name, pp, m, probe)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(("1f1b", "zb-h1", "dualpipe", "interleaved")), pp=st.sampled_from((2, 4)),
       extra=st.integers(1, 12), tf=st.floats(1, 20), tb=st.floats(1, 30), tw=st.floats(0, 20),
       comm=st.floats(0, 5))
def test_two_point_extrapolation_equals_the_full_dry_run(name, pp, extra, tf, tb, tw, comm):
    """The estimate dry-runs long schedules at their short counts and extrapolates linearly."""
    cand = Candidate(ParallelPlan(pp=pp, num_microbatches=4 * pp + 2 * pp * extra), name)
    lo, hi = cand.short_microbatches()
    full = dry_run(cand.schedule_obj(), tf, tb, tw, comm=comm, t_fb=tf + tb)
    a = dry_run(cand.schedule_obj(lo), tf, tb, tw, comm=comm, t_fb=tf + tb)
    b = dry_run(cand.schedule_obj(hi), tf, tb, tw, comm=comm, t_fb=tf + tb)
    m = cand.plan.num_microbatches
    assert a.makespan + (b.makespan - a.makespan) * (m - lo) / (hi - lo) == pytest.approx(full.makespan, rel=1e-9)


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(("1f1b", "zb-h1", "interleaved")), pp=st.sampled_from((2, 4, 8, 16)),
       per_rank=st.sampled_from((2, 3, 4, 8)), tf=st.floats(1, 10), tb=st.floats(1, 25), tw=st.floats(0, 10),
       comm_share=st.floats(0, 0.2))
def test_quick_makespan_stays_near_the_dry_run(name, pp, per_rank, tf, tb, tw, comm_share):
    """The closed forms the screen uses for deep looped pipelines (the dry run decides later), in
    the regime of real layouts: a pipeline send costs well under a pass (here up to 20%)."""
    from moesim.planner.estimate import quick_makespan

    comm = comm_share * min(tf, tb)
    vpp = 2 if name == "interleaved" else 1
    plan = ParallelPlan(pp=pp, vpp=vpp, num_microbatches=pp * per_rank)
    tw = tw if name == "zb-h1" else 0.0
    exact = dry_run(generate(name, pp, pp * per_rank, vpp if vpp > 1 else None), tf, tb, tw, comm=comm).makespan
    assert quick_makespan(name, plan, tf, tb, tw, comm) == pytest.approx(exact, rel=0.2)


@pytest.mark.parametrize("schedule,pp,vpp,m", [("1f1b", 4, 1, 40), ("zb-h1", 4, 1, 36), ("interleaved", 4, 2, 40),
                                               ("dualpipe", 4, 1, 40)])
def test_memory_at_the_short_count_equals_the_full_budget(tiny_fabric, schedule, pp, vpp, m):
    preset = tiny_preset(tiny_fabric, model=tiny_moe(8), plan=ParallelPlan(pp=4, num_microbatches=m),
                         global_batch=m)
    ctx = PlanContext(preset)
    cand = Candidate(ParallelPlan(pp=pp, vpp=vpp, num_microbatches=m), schedule)
    full = ctx.budget_with(cand, preset.memory)
    assert cand.short_microbatches() is not None
    assert ctx.budget(cand).total_bytes == pytest.approx(full.total_bytes, rel=1e-12)
    assert ctx.static_lower_bound(cand) <= full.total_bytes


# -- breakdown bytes, by hand -------------------------------------------------------------------------
def test_ep_bytes_per_step_by_hand(tiny_fabric):
    """EP4, 2 MoE layers, 2 microbatches of 256 tokens, top-2, bf16 hidden 256: each token copy
    leaving the GPU carries 512 B dispatch + 512 B combine forward and 2 x 512 B of gradients
    backward; 3/4 of the 256*2 copies leave: 2 * 2 * 384 * 2048 = 3,145,728 B."""
    preset = tiny_preset(tiny_fabric)
    b = parallelism_breakdown(preset, simulate_it=False)
    ep = next(t for t in b.traffic if t.dim == "ep")
    assert ep.bytes_per_gpu == 3_145_728
    assert ep.bytes_by_kind == {"nvswitch": 3_145_728}


def test_pp_bytes_per_step_by_hand(tiny_fabric):
    """PP2 with 1F1B and 4 microbatches: each stage sends 4 tensors of 256 tokens x 256 x 2 B."""
    preset = tiny_preset(tiny_fabric, plan=ParallelPlan(pp=2, dp=2, ep=2, num_microbatches=4))
    b = parallelism_breakdown(preset, simulate_it=False)
    pp = next(t for t in b.traffic if t.dim == "pp")
    assert pp.bytes_per_gpu == 4 * SEQ * HIDDEN * 2


def test_dp_bytes_per_step_by_hand(tiny_fabric):
    """DP4 = EP4, one stage: the dense gradients (all parameters but the routed experts, fp32)
    go round a ring of 4 (each GPU sends 2*3/4 of them); the expert-DP group is 1: nothing."""
    preset = tiny_preset(tiny_fabric)
    spec = preset.spec
    dense = spec.total_params - spec.num_moe_layers * spec.num_experts * spec.expert_params
    b = parallelism_breakdown(preset, simulate_it=False)
    dp = next(t for t in b.traffic if t.dim == "dp")
    assert dp.bytes_per_gpu == pytest.approx(dense * 4 * 1.5, rel=1e-12)


def test_tp_bytes_of_a_dense_layer_by_hand():
    """Megatron TP2 with sequence parallelism, S = T*h*2 bytes: forward, attention and MLP each
    all-gather and reduce-scatter the activation (4 halves of an all-reduce = 2S); backward adds
    the re-gather of each block's input for the weight gradients (6 halves = 3S)."""
    from moesim.costs.roofline import make_cost_model
    from moesim.planner.costing import LayerCosts

    spec = TransformerSpec(name="dense", num_layers=2, hidden=HIDDEN, num_heads=4, num_kv_heads=4, head_dim=64,
                           ffn_hidden=512, vocab=1024, seq_len=SEQ)
    costs = LayerCosts(spec, make_cost_model("H100"))
    shard = Shard(tp=2, mbs=1, sp=True, ep=1)
    assert costs.layer("F", False, shard).tp_bytes == 2 * SEQ * HIDDEN * 2
    assert costs.layer("B", False, shard).tp_bytes == 3 * SEQ * HIDDEN * 2
    assert costs.layer("W", False, shard).tp_bytes == 0
    assert traffic.ring_factor(2) == 1.0 and traffic.ring_factor(4) == 1.5


# -- errors ------------------------------------------------------------------------------------------
def test_impossible_world_size_names_the_field(tiny_fabric):
    preset = tiny_preset(tiny_fabric)
    with pytest.raises(ConfigError) as err:
        parallelism_breakdown(preset, Candidate(ParallelPlan(tp=1, dp=8, ep=8, num_microbatches=1), "1f1b"),
                              simulate_it=False)
    assert err.value.field == "plan" and "8 GPUs" in str(err.value) and "has 4" in str(err.value)


def test_no_layout_fits_says_by_how_much(tiny_fabric):
    preset = tiny_preset(tiny_fabric, memory=MemoryConfig(framework_reserve_bytes=80 * 2**30))
    with pytest.raises(ConfigError) as err:
        plan_scenario(preset, max_candidates=1)
    assert err.value.field == "memory"
    closest = min(PlanContext(preset).budget(c).total_bytes for c in enumerate_candidates(preset)[0])
    assert f"over by {(closest - 80 * 2**30) / 2**30:.1f} GiB" in str(err.value)


# -- the search ---------------------------------------------------------------------------------------
def test_chosen_plan_is_the_fastest_of_every_simulated_candidate(tiny_fabric):
    preset = tiny_preset(tiny_fabric)
    report = plan_scenario(preset, top=1000, max_candidates=1000)
    ctx = PlanContext(preset)
    fitting = [c for c in enumerate_candidates(preset)[0] if ctx.budget(c).fits]
    assert report.counts["simulated"] == len(fitting) == len(report.runners_up) + 1
    assert all(x.source == "simulated" and x.step_ms >= report.chosen.step_ms for x in report.runners_up)
    assert report.chosen.step_ms == report.chosen.simulated.result.step_time_ms


def test_every_printed_plan_is_valid_and_fits(tiny_fabric):
    preset = tiny_preset(tiny_fabric)
    report = plan_scenario(preset, top=5, max_candidates=3)
    ctx = PlanContext(preset)
    labels = {c.label: c for c in enumerate_candidates(preset)[0]}
    shown = [report.chosen.cand] + [labels[x.label] for x in report.runners_up]
    for cand in shown:
        check_candidate(preset, cand)
        assert ctx.budget(cand).fits
        assert cand.plan.dp * cand.plan.micro_batch_size * cand.plan.num_microbatches == preset.global_batch
    assert report.breakdown.fits and report.breakdown.label == report.chosen.cand.label


def test_the_estimate_tracks_the_simulation_on_the_tiny_case(tiny_fabric):
    """Not a calibration: the coarse model must at least order clearly different layouts."""
    report = plan_scenario(tiny_preset(tiny_fabric), top=1000, max_candidates=1000)
    worst = max(report.runners_up, key=lambda x: x.step_ms)
    assert report.chosen.estimate.step_ms < worst.step_ms * 10  # same units (ms)
    by_label = {x.label: x.step_ms for x in report.runners_up}
    assert by_label["TP4 PP1 DP1 EP1 mbs1 m8 1f1b"] > report.chosen.step_ms * 4


# -- CLI ---------------------------------------------------------------------------------------------
def _cli():
    import typer

    from moesim.planner.cli import bench_app, plan

    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("plan")(plan)
    app.add_typer(bench_app, name="bench")
    return app


@pytest.mark.parametrize("args,needle", [
    (["plan", "--scenario", "nope"], "qwen3-30b-a3b-dgx-h200"),
    (["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--nodes", "0"], "--nodes"),
    (["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--breakdown", "--tp", "3"], "tp*pp = 3 does not divide"),
    (["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--breakdown", "--tp", "1", "--pp", "1", "--dp", "4"],
     "4 GPUs but"),
    (["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--network", "wires"], "--network"),
    (["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--breakdown", "--tp", "2", "--ep", "3", "--ep-layout",
      "folded"], "plan.ep: ep=3 with ep_layout='folded' must be a multiple of tp=2"),
    (["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--breakdown", "--ep-layout", "fold"], "plan.ep_layout"),
    (["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--breakdown", "--no-simulate", "--mbs", "0"], "--mbs: must be >= 1"),
    (["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--breakdown", "--no-simulate", "--pp", "0"], "--pp: must be >= 1"),
    # the search takes no layout: options for one layout without --breakdown are refused, not ignored
    (["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--schedule", "gpipe", "--ep", "2"],
     "--ep, --schedule: describe one layout"),
])
def test_cli_bad_input_exits_2_naming_the_field(args, needle):
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 2, result.output
    assert needle in result.output.replace("\n", "") and "Traceback" not in result.output


def test_cli_breakdown_prints_bytes_bandwidth_and_where_experts_live():
    result = CliRunner().invoke(_cli(), ["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--breakdown", "--no-simulate"])
    assert result.exit_code == 0, result.output
    for needle in ("experts per GPU per MoE layer: 16", "all-to-all", "needed GB/s", "where experts should live"):
        assert needle in result.output


def test_cli_breakdown_keeps_the_largest_ep_dividing_a_new_dp_and_says_so():
    result = CliRunner().invoke(_cli(), ["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--breakdown", "--pp", "2",
                                         "--no-simulate"])
    assert result.exit_code == 0, result.output
    out = result.output.replace("\n", " ")
    assert "preset's EP8 does not divide DP4: EP4" in out and "TP1 PP2 DP4 EP4" in out


def test_cli_breakdown_of_a_folded_layout_puts_whole_tp_groups_in_the_ep_group():
    result = CliRunner().invoke(_cli(), ["plan", "--scenario", "qwen3-30b-a3b-dgx-h200", "--breakdown", "--tp", "2",
                                         "--ep", "8", "--ep-layout", "folded", "--no-simulate"])
    assert result.exit_code == 0, result.output
    for needle in ("TP2 PP1 DP4 EP8 folded", "EP8: ranks [0, 1, 2, 3, 4, 5, 6, 7]", "experts per GPU per MoE layer: 16"):
        assert needle in result.output


def _ep_preset(tp: int = 1) -> ScenarioPreset:
    import dataclasses

    spec = dataclasses.replace(get_preset("qwen3-30b-a3b-dgx-h200").spec, num_layers=4)
    plan = ParallelPlan(tp=tp, dp=16 // tp, pp=2, ep=16 // tp, num_microbatches=8)
    return ScenarioPreset(name="ep-h800", description="test", model=spec, topology="h800_cluster", nodes=4,
                          plan=plan, global_batch=plan.dp * 8, seq_len=spec.seq_len, schedule="dualpipe",
                          memory=MemoryConfig(recompute="none"))


def test_a_candidate_too_big_for_the_engine_runs_full_size_on_the_reduced_engine() -> None:
    import dataclasses

    from moesim.experiment.runner import run_scenario
    from moesim.planner.simulate import REDUCED_NETWORK, simulate

    preset = _ep_preset()
    cand = Candidate(preset.plan, "dualpipe")
    sim = simulate(PlanContext(preset), cand, max_tasks=100)
    assert sim.network == REDUCED_NETWORK and sim.reduced == "" and not sim.scaled
    direct, _ = run_scenario(dataclasses.replace(preset.scenario(), engine="reduced"))
    assert sim.step_ms == direct.step_time_ms > 0
    # tp=2 inside the EP groups: the reduced engine takes it too (one TP group per lane)
    wide = _ep_preset(tp=2)
    tp2 = simulate(PlanContext(wide), Candidate(wide.plan, "dualpipe"), max_tasks=2_000)
    assert tp2.network == REDUCED_NETWORK and not tp2.scaled
    assert tp2.step_ms == run_scenario(dataclasses.replace(wide.scenario(), engine="reduced"))[0].step_time_ms > 0


# -- progress ------------------------------------------------------------------------------------------
def test_the_search_reports_each_shape_and_each_simulation(tiny_fabric):
    steps = []
    report = plan_scenario(tiny_preset(tiny_fabric), top=2, max_candidates=2, progress=steps.append)
    screening = [s for s in steps if s.description.startswith("estimating ")]
    simulating = [s for s in steps if s.description.startswith("simulating ")]
    assert [s.done for s in screening] == list(range(len(screening))) and len(screening) >= 2
    assert {s.total for s in screening} == {len(screening)}
    assert [(s.done, s.total) for s in simulating] == [(0, 2), (1, 2)]
    assert f"simulating {report.chosen.cand.label}" in {s.description for s in simulating}
    assert (steps[-1].done, steps[-1].total) == (2, 2) == (report.counts["simulated"], 2)
    assert report.chosen.cand == plan_scenario(tiny_preset(tiny_fabric), top=2, max_candidates=2).chosen.cand


def test_the_cli_progress_bar_names_the_layout_and_the_count(monkeypatch):
    import io

    from rich.console import Console

    from moesim.planner import cli
    from moesim.planner.plan import SearchStep

    buf = io.StringIO()
    monkeypatch.setattr(cli, "Console", lambda **kw: Console(file=buf, force_terminal=True, width=150))
    with cli._search_progress() as show:
        show(SearchStep("simulating TP2 PP1 DP2 EP2 mbs1 m4 1f1b", 1, 3))
    assert "simulating TP2 PP1 DP2 EP2 mbs1 m4 1f1b" in buf.getvalue() and "1/3" in buf.getvalue()


def test_the_cli_draws_nothing_when_stderr_is_not_a_terminal(monkeypatch):
    import io

    from rich.console import Console

    from moesim.planner import cli
    from moesim.planner.plan import SearchStep

    buf = io.StringIO()
    monkeypatch.setattr(cli, "Console", lambda **kw: Console(file=buf, force_terminal=False))
    with cli._search_progress() as show:
        show(SearchStep("simulating TP2 PP1 DP2 EP2 mbs1 m4 1f1b", 1, 3))
    assert buf.getvalue() == ""


def test_proxy_and_padded_shapes_keep_per_layer_attention_kinds() -> None:
    """A model whose layers alternate window and full attention (GPT-OSS) keeps that alternation
    when the planner pads its 36 layers to a stage multiple or shrinks it to a proxy."""
    from moesim.planner.shapes import padded_to_stages, with_layers
    from moesim.workload.presets import get_model

    spec = get_model("gpt-oss-120b")
    proxy = with_layers(spec, 8)
    assert proxy.layer_types == ("sliding_attention", "full_attention") * 4
    padded, note = padded_to_stages(spec, 5)
    assert padded.num_layers == 40 and len(padded.layer_types) == 40 and "40" in note
    assert padded.layer_types.count("sliding_attention") == 20


def test_plan_model_override_reads_a_hugging_face_config(tmp_path) -> None:
    """``moesim plan --model`` takes a config.json as every ``--model`` does: the preset's model is
    the imported spec (same shapes as the shipped preset of that file); a missing path names --model."""
    from moesim.planner.cli import _preset
    from moesim.workload.hf_config import CONFIG_DIR

    cfg = tmp_path / "config.json"
    cfg.write_text((CONFIG_DIR / "qwen3-30b-a3b.json").read_text())
    by_path = _preset("qwen3-30b-a3b-dgx-h200", None, None, str(cfg)).spec
    by_name = _preset("qwen3-30b-a3b-dgx-h200", None, None, "qwen3-30b-a3b").spec
    assert (by_path.hidden, by_path.num_experts, by_path.top_k, by_path.num_layers, by_path.seq_len) == \
        (by_name.hidden, by_name.num_experts, by_name.top_k, by_name.num_layers, by_name.seq_len)
    with pytest.raises(ConfigError) as e:
        _preset("qwen3-30b-a3b-dgx-h200", None, None, str(tmp_path / "missing.json"))
    assert e.value.field == "--model"


@given(st.lists(st.sampled_from([(1, 8, 64, "strided"), (2, 4, 64, "folded"), (2, 4, 64, "strided"), (1, 4, 32, "strided")]),
                min_size=1, max_size=12), st.integers(1, 6))
def test_shortlist_takes_each_meshs_best_first(meshes, n) -> None:
    """The simulated shortlist: the estimate's best, then the best of each other parallel mesh in
    estimate order, then the next best; always in estimate order and never longer than asked."""
    from types import SimpleNamespace

    from moesim.planner.plan import _shortlist

    fitting = [SimpleNamespace(cand=SimpleNamespace(plan=SimpleNamespace(tp=tp, pp=pp, ep=ep, ep_layout=lay)))
               for tp, pp, ep, lay in meshes]
    got = _shortlist(fitting, n)
    assert len(got) == min(n, len(fitting)) and got[0] is fitting[0]
    positions = [next(i for i, f in enumerate(fitting) if f is g) for g in got]
    assert positions == sorted(positions)
    distinct = list(dict.fromkeys(meshes))
    covered = {meshes[i] for i in positions}
    assert len(covered) == min(n, len(distinct))
    for mesh in covered:   # each mesh's first (best) candidate is the one taken
        assert meshes.index(mesh) in positions


def test_a_model_whose_experts_the_presets_ep_does_not_divide_is_still_planned() -> None:
    """--model Qwen1.5-MoE (60 experts) on a preset written for EP8: the preset's own layout no
    longer applies (no 'default' to compare), and the search picks an EP dividing 60."""
    from pathlib import Path

    from moesim.workload.hf_config import load_hf_config
    spec = load_hf_config(Path(__file__).parent / "data" / "hf_configs" / "qwen15moe.json", seq_len=4096).spec
    preset = get_preset("mixtral-8x7b-dgx-h100").with_overrides(model=spec)
    report = plan_scenario(preset, max_candidates=1, top=1)
    assert report.default is None
    assert 60 % report.chosen.cand.plan.ep == 0
