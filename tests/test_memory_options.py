"""Megatron's memory options by their own names: recompute modules, FP8 activation caching,
precision-aware optimizer, pipeline split accounting, MTP; options a framework rejects
together; and the published layouts fitting where they ran."""
from __future__ import annotations

import dataclasses
import json

import pytest

from moesim.costs.devices import GIB
from moesim.errors import ConfigError
from moesim.experiment.scenario import ParallelPlan
from moesim.memory import MemoryConfig, memory_budget
from moesim.memory.activations import fp8_bytes, kept_tensors
from moesim.memory.budget import make_schedule
from moesim.memory.layout import split_layers
from moesim.memory.published import PUBLISHED_LAYOUTS, published_budget
from moesim.workload import MoESpec, get_model

TINY_MOE = MoESpec(name="tiny-moe", num_layers=2, hidden=64, num_heads=4, num_kv_heads=4, head_dim=16,
                   ffn_hidden=128, vocab=256, seq_len=32, num_experts=8, top_k=2, expert_ffn_hidden=32)


def _names(cfg: MemoryConfig, spec=TINY_MOE, layer: int = 0) -> dict[str, float]:
    return {k.name: k.bytes for k in kept_tensors(spec, layer, 1, 1, False, cfg)}


def test_each_recompute_module_frees_its_tensors() -> None:
    base = _names(MemoryConfig())
    assert _names(MemoryConfig(recompute="selective")).keys() == base.keys() - {"attn.lse"}  # core_attn default
    moe_act = _names(MemoryConfig(recompute="selective", recompute_modules=("moe_act",)))
    assert base.keys() - moe_act.keys() == {"moe.fc2_in"}
    assert base["moe.fc2_in"] == 2 * 32 * 2 * 32  # bf16 x routed pairs (T * k) x expert width
    norm = _names(MemoryConfig(recompute="selective", recompute_modules=("layernorm",)))
    assert base.keys() - norm.keys() == {"attn.norm_out", "mlp.norm_out"}
    moe = _names(MemoryConfig(recompute="selective", recompute_modules=("moe",)))
    assert not any(name.startswith("moe.") for name in moe)
    dense = get_model("llama3-8b")
    mlp = _names(MemoryConfig(recompute="selective", recompute_modules=("mlp",)), dense)
    assert _names(MemoryConfig(), dense).keys() - mlp.keys() == {"mlp.fc1_out", "mlp.fc2_in"}


def test_an_unfused_swiglu_also_keeps_silu_of_the_gate_until_its_module_is_recomputed() -> None:
    eager = dataclasses.replace(TINY_MOE, activation_fusion=False)
    base, unfused = _names(MemoryConfig()), _names(MemoryConfig(), eager)
    assert unfused.keys() - base.keys() == {"moe.silu_out"}
    assert unfused["moe.silu_out"] == unfused["moe.fc2_in"] == 2 * 32 * 2 * 32   # one more [pairs, F] in bf16
    dense = get_model("llama3-8b")
    assert _names(MemoryConfig(), dataclasses.replace(dense, activation_fusion=False))["mlp.silu_out"] == \
        2 * 8192 * 14336   # the preset's 8,192-token sequence
    moe_act = _names(MemoryConfig(recompute="selective", recompute_modules=("moe_act",)), eager)
    assert unfused.keys() - moe_act.keys() == {"moe.fc2_in", "moe.silu_out"}
    # the routed experts as they run: Megatron-Core's grouped MLP fuses the SwiGLU whatever the flag
    assert "moe.silu_out" not in _names(MemoryConfig(expert_activation_fusion=True), eager)
    assert "moe.silu_out" in _names(MemoryConfig(expert_activation_fusion=False))


def test_a_scenarios_memory_keeps_silu_of_the_gate_only_where_its_experts_run_eager() -> None:
    from moesim.experiment import MoEOptions, Scenario
    from moesim.experiment.build import scenario_budget

    eager = dataclasses.replace(TINY_MOE, activation_fusion=False)
    plan = ParallelPlan(tp=1, dp=1, pp=1, ep=1, micro_batch_size=1, num_microbatches=1)

    def silu_out(**moe) -> float:
        scn = Scenario(name="s", topology="dgx_h100", model="llama3-8b", plan=plan, moe=MoEOptions(**moe))
        return scenario_budget(scn, eager, "H100").parts["activations"]

    grouped = silu_out(token_movement="megatron", experts="grouped")
    loop = silu_out(token_movement="megatron", experts="loop")
    plain = silu_out(token_movement="megatron", experts="grouped", framework_modules=False)
    assert loop - grouped == plain - grouped == pytest.approx(2 * 2 * 32 * 2 * 32)   # two layers' [pairs, F]


def test_qk_norm_keeps_the_query_and_key_heads_before_their_norms() -> None:
    qwen = get_model("qwen3-30b-a3b")            # Qwen3: q_norm / k_norm
    kept = _names(MemoryConfig(), qwen)
    assert kept["attn.qk_norm_in"] == 2 * 4096 * (32 + 4) * 128
    assert "attn.qk_norm_in" not in _names(MemoryConfig(), dataclasses.replace(qwen, qk_norm=False))


def test_mla_up_proj_frees_the_up_projected_heads() -> None:
    v3 = get_model("deepseek-v3")
    base = _names(MemoryConfig(fp8_linear_inputs=False), v3, 10)
    up = _names(MemoryConfig(fp8_linear_inputs=False, recompute="selective", recompute_modules=("mla_up_proj",)), v3, 10)
    assert base.keys() - up.keys() == {"attn.qkv"}
    assert base["attn.qkv"] == 2 * 4096 * 128 * (2 * 192 + 128)  # Q and K of 128 + 64, V of 128, bf16


def test_fp8_caching_keeps_linear_inputs_at_one_byte_plus_scales() -> None:
    v3 = get_model("deepseek-v3")
    bf16 = _names(MemoryConfig(fp8_linear_inputs=False), v3, 10)
    fp8 = _names(MemoryConfig(), v3, 10)  # the model's GEMMs run in FP8: cached in FP8 by default
    assert fp8["moe.expert_in"] == fp8_bytes(4096 * 8 * 7168) == bf16["moe.expert_in"] / 2 * (1 + 4 / 128)
    assert fp8["moe.fc1_out"] == bf16["moe.fc1_out"]  # SwiGLU inputs stay bf16 ...
    swiglu = _names(MemoryConfig(fp8_swiglu_inputs=True), v3, 10)
    assert swiglu["moe.fc1_out"] == fp8_bytes(4096 * 8 * 2 * 2048)  # ... unless cached as DeepSeek does


def test_torchtitan_keeps_expert_outputs_for_the_score_gradient() -> None:
    titan = _names(MemoryConfig(probs_on_expert_output=True))
    assert titan["moe.expert_out"] == 4 * 32 * 2 * 64 and "moe.expert_out" not in _names(MemoryConfig())


def test_precision_aware_optimizer_bytes_and_its_requirements() -> None:
    cfg = MemoryConfig(distributed_optimizer=True, precision_aware_optimizer=True, exp_avg_dtype="bf16",
                       exp_avg_sq_dtype="bf16")
    assert cfg.optimizer_bytes_per_param == 4 + 2 + 2
    with pytest.raises(ConfigError, match="distributed"):
        MemoryConfig(precision_aware_optimizer=True)
    with pytest.raises(ConfigError, match="precision_aware_optimizer"):
        MemoryConfig(distributed_optimizer=True, exp_avg_dtype="bf16")


def test_rejected_combinations_name_both_options() -> None:
    with pytest.raises(ConfigError, match=r"recompute_modules.*recompute='selective'.*'full'"):
        MemoryConfig(recompute="full", recompute_modules=("moe_act",))
    with pytest.raises(ConfigError, match="'attention'"):
        MemoryConfig(recompute="selective", recompute_modules=("attention",))
    with pytest.raises(ConfigError, match=r"mla_up_proj.*llama3-8b"):
        memory_budget(get_model("llama3-8b"), ParallelPlan(), "1f1b",
                      MemoryConfig(recompute="selective", recompute_modules=("mla_up_proj",)))
    with pytest.raises(ConfigError, match=r"vpp=4.*'dualpipe'"):
        make_schedule("dualpipe", ParallelPlan(pp=4, vpp=4, num_microbatches=8))


def test_pipeline_split_counts_embedding_and_loss_slots() -> None:
    # Megatron layout "Et|(tt|)*30mL": 61 layers + embedding + MTP + loss = 64 slots over 32 stages.
    stages = split_layers(61, 32, leading=1, trailing=2)
    assert len(stages[0]) == 1 and len(stages[-1]) == 0 and all(len(s) == 2 for s in stages[1:-1])
    assert sum(len(s) for s in stages) == 61
    with pytest.raises(ConfigError):
        split_layers(1, 4, leading=3)  # 4 slots, one per stage: the first cannot hold 3 embeddings


def test_mtp_module_lives_on_the_last_stage() -> None:
    v3 = get_model("deepseek-v3")
    plan = ParallelPlan(tp=1, dp=64, pp=4, num_microbatches=8)
    cfg = MemoryConfig(ep=64, zero_stage=1)
    with_mtp = memory_budget(v3, plan, "1f1b", cfg, "H800")
    without = memory_budget(dataclasses.replace(v3, num_nextn_predict_layers=0), plan, "1f1b", cfg, "H800")
    last, first = with_mtp.per_rank[-1], with_mtp.per_rank[0]
    assert last.parts["weights_experts"] > without.per_rank[-1].parts["weights_experts"]
    assert first.parts == without.per_rank[0].parts


@pytest.mark.parametrize("name", sorted(PUBLISHED_LAYOUTS))
def test_published_layouts_fit_where_they_ran(name: str) -> None:
    budget = published_budget(name)
    print(f"\n{name}: {budget.verdict()}")
    assert budget.fits
    assert budget.total_bytes > 40 * GIB  # not an empty budget: tens of GiB of state and activations


def test_cli_takes_megatron_options_and_published_layouts() -> None:
    from typer.testing import CliRunner

    from moesim.memory.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["show", "--published", "deepseek-v3-2048-h800", "--validate"])
    assert ok.exit_code == 0, ok.output
    flat = " ".join(ok.output.split())
    assert "layernorm mla_up_proj moe_act" in flat and "fits:" in flat and "all invariants hold" in flat
    args = ["show", "--model", "qwen3-235b-a22b", "--tp", "2", "--pp", "8", "--vpp", "4", "--dp", "16", "--ep", "32",
            "--schedule", "interleaved", "-m", "128", "--recompute", "selective", "--recompute-modules",
            "moe_act,layernorm", "--distributed-optimizer", "--account-for-edges", "--json"]
    mine = json.loads(runner.invoke(app, args).output)
    assert mine["total_bytes"] == published_budget("qwen3-235b-256-h100").total_bytes
    bad = runner.invoke(app, ["show", "--model", "llama3-8b", "--recompute", "full", "--recompute-modules", "mlp"])
    assert bad.exit_code == 2 and "recompute='selective'" in " ".join(bad.output.split())


def test_recompute_modules_from_a_scenario_file_list() -> None:
    cfg = MemoryConfig(recompute="selective", recompute_modules=["moe_act", "layernorm"])  # type: ignore[arg-type]
    assert cfg.recompute_modules == ("moe_act", "layernorm")


def test_dualpipe_keeps_pp_plus_one_chunks_as_the_report_counts() -> None:
    # DeepSeek-V3 Table 2: DualPipe keeps PP + 1 microbatch-chunks of activations on every device.
    from moesim.memory import parts as P
    from moesim.memory.published import PUBLISHED_LAYOUTS

    p = PUBLISHED_LAYOUTS["deepseek-v3-2048-h800"]
    budget = published_budget(p.name)
    assert all(r.peak_inflight == 17 for r in budget.per_rank)
    v3 = get_model("deepseek-v3")
    rank1 = budget.per_rank[1]  # holds two middle stages of 4 MoE layers each
    chunk = sum(P.layer_activation_bytes(v3, i, 1, 1, False, p.memory) for i in range(7, 11))
    assert rank1.parts["activations"] + rank1.parts["router_state"] == pytest.approx(17 * chunk, rel=1e-9)
