"""Block simulation (``moesim layer``), forward-only runs, optional optimizer and gradient sync,
and PyTorch-style gradient accumulation: known answers on the roofline cost model (no kernel
region, so a segment costs exactly the sum of its ops)."""
from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from moesim.cli import app
from moesim.errors import ConfigError
from moesim.experiment.block import block_ops, block_scenario, simulate_block
from moesim.experiment.build import build_scenario
from moesim.experiment.runner import run_scenario
from moesim.experiment.scenario import ParallelPlan, Scenario
from moesim.lowering.grad_accumulation import accumulation_ops, stage_tensors
from moesim.ops import Attention, Gemm, MemoryOp
from moesim.workload import layers as wl
from moesim.workload.common import compute_only
from moesim.workload.presets import get_model

TOKENS = 2048


def llama_block(**kw) -> Scenario:
    kw = {"tokens": TOKENS, "host": "graphs", "cost_model": "roofline", **kw}
    return block_scenario("llama3-8b", **kw)


def spans(rec, category: str) -> list:
    return [s for s in rec.spans if s.category == category]


def small_spec(layers: int = 4):
    return dataclasses.replace(get_model("llama3-8b"), num_layers=layers, seq_len=1024, hidden=1024, num_heads=8,
                               num_kv_heads=8, ffn_hidden=2048, vocab=4096)


# -- forward only --------------------------------------------------------------------------------
def test_forward_block_is_the_sum_of_its_forward_ops():
    scn = llama_block(passes="fwd", iterations=3)
    built = build_scenario(scn)
    spec = built.table.spec
    ops = compute_only(wl.forward_program(spec, 0, scn.plan.micro_batch_size))
    one = sum(built.cost_model.compute_ns(op) for op in ops)
    res = simulate_block(scn)
    assert res.step_time_ns == 3 * one
    assert res.time_per_iteration_ns == one
    assert not [s for s in res.recorder.spans if s.category != "forward"]


def test_forward_block_keeps_no_head_or_embedding():
    ops = block_ops(llama_block(passes="fwd"))
    names = {op.name for op in ops}
    assert not any(n.startswith(("embed", "head")) for n in names)
    assert any(isinstance(op, Attention) for op in ops)


@pytest.mark.parametrize("schedule,pp,vpp", [("1f1b", 2, 1), ("gpipe", 4, 1), ("interleaved", 2, 2),
                                            ("zb-h1", 2, 1), ("dualpipe", 2, 1)])
def test_forward_mode_pipelines_run_only_forwards(schedule, pp, vpp):
    m = 4
    scn = Scenario("fwd", "dgx_h100", small_spec(), plan=ParallelPlan(pp=pp, dp=1, vpp=vpp, num_microbatches=m),
                   schedule=schedule, cost_model="roofline", gpus_per_node=pp, mode="forward")
    res, rec = run_scenario(scn)   # a deadlock would raise
    cats = {s.category for s in rec.spans if s.stream == "compute"}
    assert cats == {"forward"}
    actions = {(s.args["stage"], s.args["microbatch"], s.args["path"]) for s in rec.spans if s.stream == "compute"}
    stages = pp * vpp if schedule != "dualpipe" else pp
    assert len(actions) == stages * m
    assert not [s for s in rec.spans if s.stream == "comm.dp"]


def test_set_mode_forward_from_the_command_line_form():
    scn = Scenario("a", "dgx_h100", "llama3-8b").with_overrides({"mode": "forward", "optimizer": "false",
                                                                   "grad_accumulation": "add"})
    assert (scn.mode, scn.optimizer, scn.grad_accumulation) == ("forward", False, "add")


# -- iterations and gradient accumulation --------------------------------------------------------
def test_three_iterations_are_three_times_one_plus_two_rounds_of_adds():
    one = simulate_block(llama_block(iterations=1))
    three = simulate_block(llama_block(iterations=3))
    adds = spans(three.recorder, "grad_accum")
    assert len(adds) == 2
    add_ns = adds[0].end_ns - adds[0].start_ns
    assert three.step_time_ns == 3 * one.step_time_ns + 2 * add_ns
    fused = simulate_block(llama_block(iterations=3).with_overrides({"grad_accumulation": "fused"}))
    assert fused.step_time_ns == 3 * one.step_time_ns
    assert not spans(fused.recorder, "grad_accum")


def test_kept_grads_add_after_every_backward_including_the_first():
    fresh = simulate_block(llama_block(iterations=3))
    kept = simulate_block(llama_block(iterations=3).with_overrides({"grad_accumulation": "add_every"}))
    adds = spans(kept.recorder, "grad_accum")
    assert sorted(s.args["microbatch"] for s in adds) == [0, 1, 2]
    add_ns = adds[0].end_ns - adds[0].start_ns
    assert kept.step_time_ns == fresh.step_time_ns + add_ns


def test_grad_adds_follow_every_backward_after_the_first():
    res = simulate_block(llama_block(iterations=4))
    adds = spans(res.recorder, "grad_accum")
    assert sorted(s.args["microbatch"] for s in adds) == [1, 2, 3]
    backward_ends = {s.args["microbatch"]: s.end_ns for s in res.recorder.spans if s.category == "backward"}
    for s in adds:
        assert s.start_ns == backward_ends[s.args["microbatch"]]   # right behind its backward, on the GPU


def test_grad_add_bytes_are_three_times_the_parameters_in_the_grad_dtype():
    scn = llama_block(iterations=2)
    built = build_scenario(scn)
    spec = built.table.spec
    tensors = stage_tensors(built.table, 0)
    assert sum(tensors) == spec.dense_layer_params
    wgrads = [op for op in wl.backward_weight_ops(spec, 0, scn.plan.micro_batch_size) if isinstance(op, Gemm)]
    assert len(tensors) == len(wgrads) + 2   # one per weight matrix, one per norm scale
    ops = accumulation_ops(built.table, 0, scn.plan.grad_dtype_bytes)
    assert scn.plan.grad_dtype_bytes == 2   # eager PyTorch: .grad in the bf16 parameter dtype
    assert sum(op.bytes for op in ops) == 3 * 2 * spec.dense_layer_params
    assert all(isinstance(op, MemoryOp) and op.kind == "elementwise" and op.variant == "add" for op in ops)
    add = spans(simulate_block(scn).recorder, "grad_accum")[0]
    assert add.end_ns - add.start_ns == sum(built.cost_model.compute_ns(op) for op in ops)
    assert add.args["kernels"] == len(ops)


def test_moe_block_gradient_tensors_cover_its_parameters():
    scn = block_scenario("qwen3-30b-a3b", layer="moe_block", tokens=TOKENS, host="graphs", cost_model="roofline",
                         iterations=2)
    built = build_scenario(scn)
    spec = built.table.spec
    grouped = stage_tensors(built.table, 0)
    loop = stage_tensors(built.table, 0, per_expert=True)
    params = built.table.layer_params(0)
    assert sum(grouped) == pytest.approx(params) and sum(loop) == pytest.approx(params)
    assert len(loop) - len(grouped) == 3 * (spec.num_experts - 1)   # gate, up, down per expert instead of one each
    assert not any(isinstance(op, Attention) for op in block_ops(scn))


# -- op classes and provenance -------------------------------------------------------------------
def test_op_classes_split_exactly_the_gpu_busy_time():
    scn = block_scenario("qwen3-30b-a3b", layer="moe_block", tokens=TOKENS, host="graphs", cost_model="roofline",
                         iterations=2)
    res = simulate_block(scn)
    compute = sum(s.end_ns - s.start_ns for s in res.recorder.spans if s.stream == "compute")
    classes = {c.name: c.time_ns for c in res.op_classes}
    gpu = sum(v for k, v in classes.items() if not k.startswith(("comm:", "host")))
    assert gpu * res.iterations == pytest.approx(compute, rel=1e-9)
    assert "grouped GEMM" in classes and "GEMM" in classes   # experts, router
    assert {c.provenance for c in res.op_classes if not c.name.startswith("comm:")} == {"roofline"}


def test_provenance_says_measured_or_roofline_fallback():
    from moesim.experiment.block import op_provenance
    from moesim.experiment.build import resolve_cost_model

    calibrated = resolve_cost_model("calibrated", "H200")
    assert op_provenance(calibrated, Gemm(4096, 4096, 4096)) == "measured"
    fp8_attention = Attention(batch=1, heads=32, kv_heads=8, seq_q=4096, seq_kv=4096, head_dim=128, dtype="fp8")
    assert op_provenance(calibrated, fp8_attention) == "roofline fallback"   # the profile has bf16 attention only
    assert op_provenance(resolve_cost_model("roofline", "H200"), Gemm(4096, 4096, 4096)) == "roofline"


# -- optimizer and gradient sync -----------------------------------------------------------------
def test_optimizer_false_removes_the_optimizer_step():
    base = Scenario("t", "dgx_h100", small_spec(2), plan=ParallelPlan(num_microbatches=2), cost_model="roofline",
                    gpus_per_node=1)
    with_opt, rec = run_scenario(base)
    without, rec_no = run_scenario(base.with_overrides({"optimizer": "false"}))
    opt = spans(rec, "optimizer")
    assert len(opt) == 1 and not spans(rec_no, "optimizer")
    assert rec.end_ns - rec_no.end_ns == opt[0].end_ns - opt[0].start_ns


def test_grad_sync_false_removes_the_dp_reduction():
    base = Scenario("t", "dgx_h100", small_spec(2), plan=ParallelPlan(dp=2, num_microbatches=2),
                    cost_model="roofline", gpus_per_node=2)
    _, rec = run_scenario(base)
    _, rec_no = run_scenario(base.with_overrides({"grad_sync": "false"}))
    assert [s for s in rec.spans if s.stream == "comm.dp"]
    assert not [s for s in rec_no.spans if s.stream == "comm.dp"]
    assert len(spans(rec_no, "optimizer")) == 2


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,field", [({"mode": "inference"}, "scenario.mode"),
                                             ({"grad_accumulation": "sum"}, "scenario.grad_accumulation"),
                                             ({"optimizer": 3}, "scenario.optimizer"),
                                             ({"gpus_per_node": 0}, "scenario.gpus_per_node")])
def test_bad_step_options_name_their_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(Scenario("a", "dgx_h100", "llama3-8b"), **overrides)
    assert err.value.field == field


def test_reduced_engine_runs_forward_only_steps():
    spec = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=4)
    scn = Scenario("r", "h800_cluster", spec, nodes=2, plan=ParallelPlan(dp=8, pp=2, ep=8, num_microbatches=4),
                   engine="reduced", mode="forward")
    _, rec = run_scenario(scn)
    assert {s.category for s in rec.spans if s.stream == "compute"} <= {"forward", "expert"}
    assert not [s for s in rec.spans if s.stream == "comm.dp" or s.category == "optimizer"]


def test_reduced_engine_refuses_what_it_does_not_lower():
    with pytest.raises(ConfigError, match="reduced engine"):
        Scenario("a", "dgx_h100", "qwen3-30b-a3b", engine="reduced", optimizer=False)


@pytest.mark.parametrize("kw,field", [({"layer": "mlp"}, "layer"), ({"passes": "bwd"}, "passes"),
                                      ({"host": "ahead-of-time"}, "host"), ({"seq_len": 3000}, "seq_len"),
                                      ({"tokens": 0}, "tokens"), ({"ranks": 12}, "ranks"),
                                      ({"gpu": "no-such-gpu"}, "gpu"), ({"layer": "moe_block"}, "layer")])
def test_block_scenario_bad_input(kw, field):
    with pytest.raises(ConfigError) as err:
        llama_block(**kw)
    assert err.value.field == field


# -- the command ---------------------------------------------------------------------------------
runner = CliRunner()


def test_layer_command_prints_classes_and_writes_a_trace(tmp_path):
    result = runner.invoke(app, ["layer", "--model", "llama3-8b", "--tokens", str(TOKENS), "--cost-model",
                                 "roofline", "--host", "graphs", "--iterations", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for text in ("GEMM", "attention", "memory: elementwise/add", "roofline", "critical path", "time per iteration"):
        assert text in result.output
    traces = list(tmp_path.glob("*.trace.json"))
    assert len(traces) == 1 and json.loads(traces[0].read_text())["traceEvents"]
    summary = json.loads((tmp_path / "block.json").read_text())
    assert summary["iterations"] == 2 and summary["op_classes"]


def test_layer_command_moe_block_with_routing_on_two_gpus():
    result = runner.invoke(app, ["layer", "--model", "qwen3-30b-a3b", "--block", "moe", "--tokens", "1024",
                                 "--gpus", "2", "--routing", "zipf:1.2", "--pass", "fwd", "--cost-model", "roofline"])
    assert result.exit_code == 0, result.output
    assert "comm: all_to_all" in result.output


@pytest.mark.parametrize("args,text", [(["--pass", "backward"], "passes"), (["--block", "mlp"], "--block"),
                                       (["--routing", "zipf:x"], "--routing"), (["--experts", "loop"], "--experts"),
                                       (["--set", "mode"], "--set")])
def test_layer_command_bad_input_is_one_line(args, text):
    result = runner.invoke(app, ["layer", "--model", "llama3-8b", "--tokens", "1024", *args])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0]


def test_layer_command_reads_a_hugging_face_config(tmp_path):
    """``--model PATH``: the config.json read by the HF importer gives the same block as the preset
    built from the same shipped file; a path that does not exist is one line naming --model."""
    from moesim.experiment.block_cli import layer_scenario
    from moesim.workload.hf_config import CONFIG_DIR

    cfg = tmp_path / "qwen3" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text((CONFIG_DIR / "qwen3-30b-a3b.json").read_text())
    flags = dict(block="moe", tokens=1024, passes="fwd", gpus=1, gpu="H100", host="eager", iterations=1,
                 seq_len=None, experts="", routing="balanced", cost_model="roofline", sets=())
    spec = layer_scenario(model=str(cfg.parent), **flags).model
    preset = layer_scenario(model="qwen3-30b-a3b", **flags).model
    assert (spec.hidden, spec.num_experts, spec.top_k, spec.expert_ffn_hidden) == \
        (preset.hidden, preset.num_experts, preset.top_k, preset.expert_ffn_hidden)
    result = runner.invoke(app, ["layer", "--model", str(cfg), "--block", "moe", "--tokens", "1024", "--pass",
                                 "fwd", "--cost-model", "roofline"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["layer", "--model", str(tmp_path / "missing.json"), "--tokens", "1024"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "--model" in lines[0]


def test_an_expert_parallel_group_of_one_issues_no_all_to_all():
    """One GPU: torchtitan and Megatron call no all-to-all, so the eager host issues nothing for
    the dispatch and combine; two GPUs call it on each rank."""
    from moesim.engine.sim import HOST_STREAM

    def issue_ns(ranks: int) -> dict[str, int]:
        scn = block_scenario("qwen3-30b-a3b", layer="moe_block", tokens=TOKENS, passes="fwd", host="eager",
                             ranks=ranks)
        rec = simulate_block(scn).recorder
        out: dict[str, int] = {}
        for s in rec.spans:
            if s.stream == HOST_STREAM and s.name.startswith(("issue dispatch", "issue combine")):
                out[s.name] = out.get(s.name, 0) + s.end_ns - s.start_ns
        return out

    assert sum(issue_ns(1).values()) == 0
    two = issue_ns(2)
    assert two and all(ns > 0 for ns in two.values())


@pytest.mark.parametrize("experts,movement,fp8", [("grouped", "torchtitan", False), ("grouped", "megatron", True),
                                                 ("padded", "torchtitan", True), ("grouped", "fused", False)])
def test_a_gpus_expert_time_without_task_objects_equals_the_tasks(experts, movement, fp8):
    """gpu_expert_ns prices grouped / padded kernels without building ExpertTasks: the same time,
    region and FLOPs as pricing expert_tasks' tasks one by one, FP8 quantize kernels included."""
    import random

    from moesim.experiment.scenario import MoEOptions
    from moesim.moe.routing import RoutingConfig

    moe = MoEOptions(routing=RoutingConfig(kind="uniform"), experts=experts, token_movement=movement,
                     capacity_factor=2.0 if experts == "padded" else None)
    spec = "qwen3-30b-a3b"
    scn = block_scenario(spec, layer="moe_block", tokens=TOKENS, host="graphs", cost_model="calibrated", ranks=2,
                         gpu="H100", moe=moe)
    if fp8:
        import dataclasses as dc
        scn = dc.replace(scn, model=dc.replace(scn.model, gemm_dtype="fp8"))
    table = build_scenario(scn).table
    rng = random.Random(3)
    for phase in ("F", "B", "W", "BW"):
        for _ in range(5):
            counts = tuple(rng.choice([0, rng.randint(1, 64)]) for _ in range(table.spec.num_experts // 2))
            tasks = table.expert_tasks(phase, counts)
            times = [table.task_ns(t) for t in tasks]
            want = (times[0][0] + sum(ns - r for ns, r in times[1:]), times[0][1], sum(t.flops for t in tasks))
            assert table.gpu_expert_ns(phase, counts) == want
            assert not fp8 or phase == "W" or any(len(t.ops) > 1 for t in tasks)   # quantize kernels ride along


def test_a_block_of_a_model_whose_layers_differ_takes_one_layers_attention_kind():
    """GPT-OSS alternates 128-token windows (layer 0) and full attention (layer 1): one block takes
    the kind of the layer asked for; a layer the model lacks is a clear error."""
    window, full = (block_scenario("gpt-oss-120b", tokens=4096, gpu="H100", layer_index=i).model for i in (0, 1))
    assert (window.layer_types, full.layer_types) == (("sliding_attention",), ("full_attention",))
    assert window.num_layers == full.num_layers == 1
    with pytest.raises(ConfigError, match="layer_index"):
        block_scenario("gpt-oss-120b", tokens=4096, layer_index=36)
    result = CliRunner().invoke(app, ["layer", "--model", "gpt-oss-120b", "--block", "moe", "--tokens", "1024",
                                      "--pass", "fwd", "--gpu", "H100", "--layer-index", "1"])
    assert result.exit_code == 0, result.output
