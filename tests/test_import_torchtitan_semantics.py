"""torchtitan TOML import: what each setting does in torchtitan 0.2.0 (job_config.py,
distributed/, components/quantization/) and what moesim simulates for it: HSDP, pipeline
schedules, activation checkpointing, dtypes, FP8 converters, MTP and expert TP."""
from __future__ import annotations

from pathlib import Path

import pytest

from moesim.errors import ConfigError
from moesim.experiment.build import scenario_budget
from moesim.experiment.scenario_files import build_scenario
from moesim.importers.torchtitan import read_torchtitan
from moesim.lowering.resolve import make_schedule

DATA = Path(__file__).parent / "data" / "torchtitan"
LLAMA = '[model]\nname = "llama3"\nflavor = "8B"\n'
QWEN = '[model]\nname = "qwen3"\nflavor = "30B-A3B"\n'


def _toml(tmp_path: Path, model: str = LLAMA, training: str = "", par: str = "", rest: str = "",
          local: int = 1, seq: int = 2048) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(f"{model}{rest}\n[training]\nlocal_batch_size = {local}\nseq_len = {seq}\n{training}"
                    f"[parallelism]\ndata_parallel_shard_degree = -1\n{par}")
    return path


def _run(path: Path, gpus: int = 8, **kw):
    report = read_torchtitan(path, gpus=gpus, **kw)
    scn = build_scenario(report.scenario)
    return report, scn, scenario_budget(scn, scn.model, "H100")


def _refused(path: Path, field: str, match: str, gpus: int = 8) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        read_torchtitan(path, gpus=gpus)
    assert err.value.field == field


# 1. HSDP ----------------------------------------------------------------------------------------
def test_hsdp_is_refused_naming_the_replicate_degree_and_ddp_is_unsharded(tmp_path: Path) -> None:
    for rep, shard in ((2, 4), (4, 2), (2, -1)):
        path = _toml(tmp_path, par=f"data_parallel_replicate_degree = {rep}\n")
        path.write_text(path.read_text().replace("data_parallel_shard_degree = -1",
                                                 f"data_parallel_shard_degree = {shard}"))
        _refused(path, "[parallelism] data_parallel_replicate_degree", "is HSDP.*no smaller shard group")
    _, fsdp, fsdp_budget = _run(_toml(tmp_path))
    _, ddp, ddp_budget = _run(_toml(tmp_path, par="data_parallel_replicate_degree = 8\n"))
    assert (fsdp.plan.dp, fsdp.memory.zero_stage) == (8, 3) and (ddp.plan.dp, ddp.memory.zero_stage) == (8, 0)
    for part in ("optimizer_states", "gradients", "weights_dense"):   # DDP: nothing sharded over the 8 GPUs
        assert ddp_budget.parts[part] == pytest.approx(8 * fsdp_budget.parts[part])
    # torchtitan: "DDP has not supported > 1D parallelism"
    path = _toml(tmp_path, par="data_parallel_replicate_degree = 4\ntensor_parallel_degree = 2\n")
    _refused(path, "[parallelism] data_parallel_replicate_degree", "DDP")


# 2. pipeline schedules --------------------------------------------------------------------------
@pytest.mark.parametrize("name, schedule, vpp", [("ZBVZeroBubble", "zb-v", 1), ("DualPipeV", "dualpipev", 1),
                                                 ("zbvzerobubble", "zb-v", 1), ("Interleaved1F1B", "interleaved", 2),
                                                 ("1F1B", "1f1b", 1), ("GPipe", "gpipe", 1)])
def test_schedules_map_with_their_stages(tmp_path: Path, name: str, schedule: str, vpp: int) -> None:
    path = _toml(tmp_path, QWEN, local=8, seq=4096, par="pipeline_parallel_degree = 2\nexpert_parallel_degree = 4\n"
                 f'pipeline_parallel_schedule = "{name}"\n')
    _, scn, budget = _run(path)
    assert (scn.schedule, scn.plan.vpp, scn.plan.pp, scn.plan.num_microbatches) == (schedule, vpp, 2, 8)
    chunks = 1 if schedule in ("1f1b", "gpipe") else 2   # torchtitan: 2 stages per rank for multi-stage schedules
    assert make_schedule(scn).num_chunks == chunks and budget.sharding.num_stages == 2 * chunks


def test_schedules_without_equivalent_or_constraints_are_refused(tmp_path: Path) -> None:
    par = "pipeline_parallel_degree = 2\nexpert_parallel_degree = 4\n"
    path = _toml(tmp_path, QWEN, local=8, par=par + 'pipeline_parallel_schedule = "InterleavedZeroBubble"\n')
    _refused(path, "[parallelism] pipeline_parallel_schedule", "no moesim schedule")
    path = _toml(tmp_path, QWEN, local=2, par=par + 'pipeline_parallel_schedule = "DualPipeV"\n')   # 2 < 2 x pp
    _refused(path, "[training] local_batch_size", "dualpipev needs num_microbatches >= 2")
    # (48 layers + 2) / 7 -> 8 stages: 4 per rank, but a V holds exactly 2
    path = _toml(tmp_path, QWEN, local=8, par=par + 'pipeline_parallel_schedule = "ZBVZeroBubble"\n'
                 "pipeline_parallel_layers_per_stage = 7\n")
    _refused(path, "[parallelism] pipeline_parallel_layers_per_stage", "exactly 2 per rank")
    path.write_text(path.read_text().replace("layers_per_stage = 7", "layers_per_stage = 13"))   # 4 stages: ok
    assert build_scenario(read_torchtitan(path, gpus=8).scenario).schedule == "zb-v"


# 3. activation checkpointing --------------------------------------------------------------------
def test_activation_checkpoint_modes(tmp_path: Path) -> None:
    def ac(text: str, model: str = LLAMA):
        return _run(_toml(tmp_path, model, rest=f"[activation_checkpoint]\n{text}"))

    report, default, every2_b = ac("")   # torchtitan 0.2.0: mode selective, selective_ac_option "2"
    m = default.memory
    assert (m.recompute, m.recompute_method, m.recompute_num_layers) == ("full", "every", 2)
    assert any("every 2-th layer" in n for n in report.notes)
    assert ac('selective_ac_option = "3"')[1].memory.recompute_num_layers == 3
    _, none, none_b = ac('mode = "none"')
    _, full, full_b = ac('mode = "full"')
    # every 2nd layer recomputed: between no recompute and full
    assert full_b.parts["activations"] < every2_b.parts["activations"] < none_b.parts["activations"]
    for option in ("1", "0"):   # _apply_layer_sac: every layer when N is 1 or 0
        assert ac(f'selective_ac_option = "{option}"')[2].parts["activations"] == full_b.parts["activations"]
    report, op, op_b = ac('selective_ac_option = "op"')
    assert (op.memory.recompute, op.memory.recompute_modules) == ("selective", ("mlp",))
    assert any("selective_ac_option 'op'" in n for n in report.notes)
    # llama3-8B: torchtitan's op SAC keeps ~38% of a layer's activations; moesim's mlp set ~32%
    ratio = op_b.parts["activations"] / none_b.parts["activations"]
    assert full_b.parts["activations"] < op_b.parts["activations"] and 0.3 < ratio < 0.45
    assert ac('selective_ac_option = "op"', QWEN)[1].memory.recompute_modules == ("layernorm", "moe")
    ds = build_scenario(read_torchtitan(DATA / "deepseek_v3_671b.toml", gpus=64).scenario)
    assert ds.memory.recompute_modules == ("layernorm", "mlp", "moe")   # 3 dense layers, 58 MoE
    path = _toml(tmp_path, rest='[activation_checkpoint]\nmode = "memory_budget"\n')
    _refused(path, "[activation_checkpoint] mode", "memory_budget")
    path = _toml(tmp_path, rest='[activation_checkpoint]\nselective_ac_option = "-1"\n')
    _refused(path, "[activation_checkpoint] selective_ac_option", "neither 'op'")


# 4. dtypes --------------------------------------------------------------------------------------
def test_dtype_float32_stores_fp32_and_computes_bf16(tmp_path: Path) -> None:
    report, fp32, b32 = _run(_toml(tmp_path, training='dtype = "float32"\n'))   # torchtitan's default
    assert fp32.model.dtype == "bf16" and (fp32.memory.param_dtype, fp32.memory.grad_dtype) == ("fp32", "fp32")
    assert fp32.memory.optimizer_bytes_per_param == 8   # Adam in fp32, no master copy beside fp32 params
    assert b32.parts["optimizer_states"] == pytest.approx(2 * b32.parts["gradients"])
    assert b32.parts["gradients"] == pytest.approx(b32.parts["weights_dense"] + b32.parts["weights_embedding"])
    assert any("dtype float32" in n for n in report.notes)
    _, bf16, b16 = _run(_toml(tmp_path, training='dtype = "bfloat16"\n'))
    assert (bf16.model.dtype, bf16.memory.param_dtype, bf16.memory.grad_dtype) == ("bf16", "bf16", "bf16")
    assert not bf16.memory.master_weights and bf16.memory.optimizer_bytes_per_param == 4
    for part in ("weights_dense", "gradients", "optimizer_states"):
        assert b16.parts[part] == pytest.approx(b32.parts[part] / 2)
    path = _toml(tmp_path, training='mixed_precision_param = "float32"\n')
    _refused(path, "[training] mixed_precision_param", "float32 GEMMs")
    # TP without FSDP: torchtitan turns mixed precision off, so float32 params mean fp32 GEMMs
    path = _toml(tmp_path, par="tensor_parallel_degree = 2\n")
    path.write_text(path.read_text().replace("data_parallel_shard_degree = -1", "data_parallel_shard_degree = 1"))
    _refused(path, "[training] dtype", "float32 GEMMs", gpus=2)
    path = _toml(tmp_path, training='dtype = "float16"\n')
    _refused(path, "[training] dtype", "unknown dtype")


# 5. FP8 converters ------------------------------------------------------------------------------
def test_fp8_converters_dense_and_experts_apart(tmp_path: Path) -> None:
    experts = '[quantize.grouped_mm.float8]\nfqns = ["experts"]\n'

    def conv(names: str, model: str = LLAMA, quantize: str = "") -> Path:
        return _toml(tmp_path, model + f"converters = {names}\n", rest=quantize, par="expert_parallel_degree = 8\n"
                     if model == QWEN else "")

    _, dense, _ = _run(conv('["quantize.linear.float8"]'))
    assert dense.model.gemm_dtype == "fp8" and dense.memory.fp8_linear_inputs is False
    report, dense, _ = _run(conv('["quantize.grouped_mm.float8"]', quantize=experts))   # no MoE: nothing converted
    assert dense.model.gemm_dtype is None and any("converts nothing" in n for n in report.notes)
    _refused(conv('["quantize.linear.float8"]', QWEN), "[model] converters", "leaves the routed experts")
    _refused(conv('["quantize.grouped_mm.float8"]', QWEN, experts), "[model] converters",
             "leaves the dense linears")
    both = '["quantize.linear.float8", "quantize.grouped_mm.float8"]'
    _refused(conv(both, QWEN), "[model] converters", "leaves the routed experts")   # fqns empty: experts stay bf16
    report, moe, _ = _run(conv(both, QWEN, experts))
    assert moe.model.gemm_dtype == "fp8" and moe.memory.fp8_linear_inputs is False
    assert ("[quantize] grouped_mm", "model.gemm_dtype (float8.fqns: the MoE modules in FP8)") in report.used
    _refused(conv('["float8"]'), "[model] converters", "not a torchtitan converter")
    path = conv(both, QWEN, experts)
    path.write_text(path.read_text().replace("expert_parallel_degree = 8", "expert_parallel_degree = 4\n"
                                             "pipeline_parallel_degree = 2"))
    _refused(path, "[model] converters", "does not yet support pipeline parallelism")


# 6. MTP -----------------------------------------------------------------------------------------
def test_deepseek_v3_has_no_mtp(tmp_path: Path) -> None:
    report, scn, budget = _run(DATA / "deepseek_v3_671b.toml", gpus=64)
    assert scn.model.num_nextn_predict_layers == 0 and any("no MTP" in n for n in report.notes)
    assert not any("MTP module" in n for n in budget.notes)


# 7. expert TP -----------------------------------------------------------------------------------
def test_expert_tp_follows_torchtitan(tmp_path: Path) -> None:
    path = _toml(tmp_path, QWEN, par="expert_parallel_degree = 8\nexpert_tensor_parallel_degree = 2\n")
    _refused(path, "[parallelism] expert_tensor_parallel_degree", "ETP=TP or ETP=1")   # tp 1: etp must be 1
    _, plain, plain_b = _run(_toml(tmp_path, QWEN))
    report, inert, inert_b = _run(_toml(tmp_path, QWEN, par="expert_tensor_parallel_degree = 2\n"))
    assert inert.memory.expert_tp == 1 and inert_b.total_bytes == plain_b.total_bytes   # ep 1: no effect
    assert any("no effect with expert_parallel_degree 1" in n for n in report.notes)
    report, dense, _ = _run(_toml(tmp_path, par="expert_tensor_parallel_degree = 2\n"))
    assert dense.memory.expert_tp == 1 and any("no effect on a dense model" in n for n in report.notes)
    # ep 1 with tp 2: torchtitan gives the experts TensorParallel over the TP mesh
    _, tp2, _ = _run(_toml(tmp_path, QWEN, par="tensor_parallel_degree = 2\n"))
    assert tp2.memory.expert_tp == 2
    report, etp, _ = _run(_toml(tmp_path, QWEN, par="tensor_parallel_degree = 2\nexpert_parallel_degree = 4\n"
                                "expert_tensor_parallel_degree = 2\n"))
    assert (etp.memory.expert_tp, etp.plan.ep_layout) == (2, "strided") and any("= tp" in n for n in report.notes)
