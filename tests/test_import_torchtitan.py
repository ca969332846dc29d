"""torchtitan training TOMLs -> Scenario, on torchtitan's own configs (tests/data/torchtitan/,
from pytorch/torchtitan 238fa99, the last commit with TOML configs)."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from moesim.cli import app
from moesim.errors import ConfigError
from moesim.experiment.scenario_files import build_scenario
from moesim.importers.torchtitan import known_keys, read_torchtitan
from moesim.workload.hf_config import shipped_config
from moesim.workload.presets import MODELS

DATA = Path(__file__).parent / "data" / "torchtitan"


def test_llama3_8b() -> None:
    report = read_torchtitan(DATA / "llama3_8b.toml", gpus=64)
    scn = build_scenario(report.scenario)
    assert (scn.plan.dp, scn.plan.tp, scn.plan.pp, scn.plan.micro_batch_size) == (64, 1, 1, 1)
    assert scn.model.seq_len == 8192 and scn.memory.recompute == "selective" and scn.memory.zero_stage == 3
    assert scn.host == "eager" and not hasattr(scn.model, "num_experts")
    assert "[compile] enable" in dict(report.not_modelled) and "[optimizer] lr" in report.no_cost


def test_deepseek_v3_671b_is_the_hf_config_in_bf16() -> None:
    report = read_torchtitan(DATA / "deepseek_v3_671b.toml", gpus=64)
    scn = build_scenario(report.scenario)
    hf = shipped_config("deepseek-v3", seq_len=4096).spec
    assert scn.model == hf.__class__(**{**{f: getattr(hf, f) for f in hf.__dataclass_fields__}, "seq_len": 4096,
                                        "activation_fusion": False,    # torchtitan: F.silu(w1 x) * w3 x
                                        "rope_impl": "complex",        # and view_as_complex RoPE
                                        "num_nextn_predict_layers": 0})  # torchtitan's model has no MTP
    assert scn.model.gemm_dtype is None and scn.model.dispatch_dtype == "bf16"
    assert scn.moe.token_movement == "torchtitan" and scn.moe.experts == "grouped"
    assert scn.plan.micro_batch_size == 4 and scn.overlap.tp_comm_overlap is False
    assert scn.model.expert_bias and any("load_balance_coeff" in n for n in report.notes)
    qwen = build_scenario(read_torchtitan(DATA / "qwen3_moe_debug.toml", gpus=8, model="qwen3-30b-a3b").scenario)
    assert qwen.model.expert_bias and not MODELS["qwen3-30b-a3b"].expert_bias   # torchtitan's default, not HF's


def test_pipeline_and_batch(tmp_path: Path) -> None:
    text = (DATA / "llama3_8b.toml").read_text().replace(
        "pipeline_parallel_degree = 1", 'pipeline_parallel_degree = 4\npipeline_parallel_schedule = "Interleaved1F1B"\n'
        "pipeline_parallel_microbatch_size = 1").replace("local_batch_size = 1", "local_batch_size = 8\n"
                                                         "global_batch_size = 64")
    path = tmp_path / "pp.toml"
    path.write_text(text)
    report = read_torchtitan(path, gpus=16)
    scn = build_scenario(report.scenario)
    assert (scn.plan.pp, scn.plan.dp, scn.plan.vpp, scn.schedule) == (4, 4, 2, "interleaved")
    assert scn.plan.num_microbatches == 8 * (64 // (8 * 4))
    assert any("2 stages per pipeline rank" in n for n in report.notes)
    staged = tmp_path / "staged.toml"
    for per_stage, vpp in ((3, 3), (2, None)):  # (32 layers + 1 + 1) / 3 -> 12 stages, 3 per rank; / 2 -> 17: refused
        staged.write_text(text.replace("pipeline_parallel_microbatch_size = 1", "pipeline_parallel_microbatch_size = 1\n"
                                       f"pipeline_parallel_layers_per_stage = {per_stage}"))
        if vpp is None:
            with pytest.raises(ConfigError, match="17 is not divisible by pipeline_parallel_degree"):
                read_torchtitan(staged, gpus=16)
        else:
            assert build_scenario(read_torchtitan(staged, gpus=16).scenario).plan.vpp == vpp



def test_unknown_flavor_section_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="deepseek_v3 16B has no moesim model"):
        read_torchtitan(DATA / "deepseek_v3_16b.toml")
    scn = build_scenario(read_torchtitan(DATA / "qwen3_moe_debug.toml", model="qwen3-30b-a3b", gpus=8).scenario)
    assert scn.model.num_experts == 128
    bad = tmp_path / "bad.toml"
    bad.write_text((DATA / "llama3_8b.toml").read_text() + "\n[parallelizm]\ntp = 2\n")
    with pytest.raises(ConfigError, match="parallelizm"):
        read_torchtitan(bad)
    bad.write_text((DATA / "llama3_8b.toml").read_text().replace("tensor_parallel_degree", "tensor_parallel"))
    with pytest.raises(ConfigError, match="tensor_parallel. is not a field"):
        read_torchtitan(bad)
    bad.write_text((DATA / "llama3_8b.toml").read_text().replace("context_parallel_degree = 1",
                                                                 "context_parallel_degree = 2"))
    with pytest.raises(ConfigError, match="context parallelism"):
        read_torchtitan(bad, gpus=64)
    assert "parallelism" in known_keys()["sections"]


def test_cli_torchtitan_import_only() -> None:
    out = CliRunner().invoke(app, ["run", "--torchtitan", str(DATA / "deepseek_v3_671b.toml"), "--gpus", "64",
                                   "--import-only"])
    assert out.exit_code == 0, out.output
    assert "torchtitan:" in out.output and "spec: MoESpec" in out.output


def test_expert_tp_1_with_tp_folds_ep_over_the_tp_groups(tmp_path: Path) -> None:
    """torchtitan's [partial dp + all tp -> ep] (expert_tensor_parallel_degree 1, its default): EP 8
    over TP 2 x dp_shard 4 on 8 GPUs is legal there, and folded here; etp = tp keeps EP inside dp."""
    text = (DATA / "deepseek_v3_16b.toml").read_text().replace("\ntensor_parallel_degree = 1",
                                                               "\ntensor_parallel_degree = 2")
    path = tmp_path / "tp2.toml"
    path.write_text(text)
    report = read_torchtitan(path, gpus=8, model="qwen3-30b-a3b")
    plan = build_scenario(report.scenario).plan
    assert (plan.tp, plan.dp, plan.ep, plan.ep_layout, plan.expert_dp) == (2, 4, 8, "folded", 1)
    assert any("spans the TP groups" in n for n in report.notes)
    path.write_text(text.replace("expert_tensor_parallel_degree = 1", "expert_tensor_parallel_degree = 2"))
    with pytest.raises(ConfigError, match="does not divide data parallelism 4"):   # strided: EP 8 > dp 4
        read_torchtitan(path, gpus=8, model="qwen3-30b-a3b")
    path.write_text(text.replace("expert_tensor_parallel_degree = 1", "expert_tensor_parallel_degree = 3"))
    with pytest.raises(ConfigError) as err:
        read_torchtitan(path, gpus=8, model="qwen3-30b-a3b")
    assert err.value.field == "[parallelism] expert_tensor_parallel_degree"
    path.write_text(text.replace("expert_parallel_degree = 8", "expert_parallel_degree = 3"))
    with pytest.raises(ConfigError, match="multiple of tensor_parallel_degree 2"):
        read_torchtitan(path, gpus=8, model="qwen3-30b-a3b")
