"""Megatron-LM arguments -> Scenario, on Megatron-LM's own example launch scripts
(tests/data/megatron/) and on argument strings; the option table is Megatron's parser's."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from moesim.cli import app
from moesim.errors import ConfigError
from moesim.experiment.scenario_files import build_scenario
from moesim.importers.megatron import option_table, read_megatron_args

DATA = Path(__file__).parent / "data" / "megatron"
MIXTRAL = DATA / "train_mixtral_8x7b_distributed.sh"
LLAMA = DATA / "train_llama3_8b_h100_fp8.sh"
QWEN_ARGS = ("--tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --expert-model-parallel-size 4 "
             "--sequence-parallel --num-layers 4 --hidden-size 2048 --num-attention-heads 32 --group-query-attention "
             "--num-query-groups 4 --kv-channels 128 --ffn-hidden-size 6144 --swiglu --normalization RMSNorm "
             "--untie-embeddings-and-output-weights --vocab-size 151936 --seq-length 4096 --bf16 --num-experts 128 "
             "--moe-router-topk 8 --moe-ffn-hidden-size 768 --moe-grouped-gemm --moe-token-dispatcher-type alltoall "
             "--moe-permute-fusion --micro-batch-size 1 --global-batch-size 64 --recompute-granularity selective "
             "--recompute-modules core_attn moe_act --use-distributed-optimizer --overlap-grad-reduce --lr 1e-4")


def test_option_table_is_megatrons() -> None:
    table = option_table()
    assert len(table) > 800
    assert table["--moe-token-dispatcher-type"]["choices"] == ["allgather", "alltoall", "flex"]
    assert table["--no-gradient-accumulation-fusion"] == {**table["--no-gradient-accumulation-fusion"],
                                                          "dest": "gradient_accumulation_fusion", "kind": "false"}


def test_mixtral_example_script() -> None:
    report = read_megatron_args(MIXTRAL, model="mixtral-8x7b", gpus=32)
    scn = build_scenario(report.scenario)
    assert (scn.plan.tp, scn.plan.pp, scn.plan.ep, scn.plan.dp) == (1, 4, 8, 8)
    assert scn.plan.num_microbatches == 256 // 8 and not scn.plan.sequence_parallel  # tp 1: SP off, as Megatron
    assert (scn.moe.dispatcher, scn.moe.experts, scn.moe.token_movement) == ("alltoall", "grouped", "megatron")
    assert scn.memory.distributed_optimizer and scn.overlap.overlap_param_gather and scn.model.dtype == "bf16"
    assert "--lr" in report.no_cost and "--data-path" in report.no_cost
    assert dict(report.not_modelled).keys() == {"--no-masked-softmax-fusion"}
    assert any("MODEL_ARGS, MOE_ARGS" in n for n in report.notes)


def test_llama_fp8_example_script_reads_its_appended_arrays() -> None:
    """The script sets DTYPE="fp8" and TOKENIZER_ARG defaults to MOCK: its ``if`` branches are decided
    from its own variables, so DTYPE_ARGS+=(--fp8-format hybrid ...) and the mock DATA_ARGS_LIST+=(...)
    are read, and so is the unconditional TRAINING_ARGS+=("${DDP_ARGS[@]}")."""
    report = read_megatron_args(LLAMA, model="llama3-8b", gpus=8)
    scn = build_scenario(report.scenario)
    assert not hasattr(scn.model, "num_experts")
    assert scn.model.gemm_dtype == "fp8" and dict(report.used)["--fp8-format"] == "model.gemm_dtype"
    assert scn.memory.distributed_optimizer and scn.overlap.overlap_grad_reduce and scn.overlap.overlap_param_gather
    assert "--vocab-size" in dict(report.used) and "--mock-data" in report.no_cost and "--data-path" not in \
        dict(report.used) | dict(report.not_modelled) | dict.fromkeys(report.no_cost)
    assert any('[[ "$DTYPE" == "fp8" ]] (true)' in n for n in report.notes)
    assert not any("appended arrays not read" in n for n in report.notes)


def test_model_from_flags() -> None:
    report = read_megatron_args(QWEN_ARGS, gpus=16)
    scn = build_scenario(report.scenario)
    m = scn.model
    assert (m.num_layers, m.hidden, m.num_kv_heads, m.head_dim, m.num_experts, m.top_k, m.expert_ffn_hidden) == \
        (4, 2048, 4, 128, 128, 8, 768)
    assert scn.plan.sequence_parallel and scn.plan.num_microbatches == 64 // 4
    assert scn.memory.recompute_modules == ("core_attn", "moe_act") and scn.moe.token_movement == "fused"
    assert not report.not_modelled
    # expert TP unset is Megatron's tp (validate_args): the memory budget splits each expert over it
    assert scn.memory.expert_tp == 2 and scn.plan.ep_layout == "strided"
    folded = build_scenario(read_megatron_args(QWEN_ARGS + " --expert-tensor-parallel-size 1", gpus=16).scenario)
    assert folded.memory.expert_tp == 1 and folded.plan.ep_layout == "folded"
    assert not m.expert_bias
    biased = build_scenario(read_megatron_args(QWEN_ARGS + " --moe-router-enable-expert-bias", gpus=16).scenario)
    assert biased.model.expert_bias
    assert m.activation_fusion   # Megatron's default bias_swiglu_fusion
    unfused = build_scenario(read_megatron_args(QWEN_ARGS + " --no-bias-swiglu-fusion", gpus=16).scenario)
    assert not unfused.model.activation_fusion
    # Megatron's linear layers carry biases unless --disable-bias-linear (QWEN_ARGS leaves them on)
    assert m.expert_linear_bias
    no_bias = build_scenario(read_megatron_args(QWEN_ARGS + " --disable-bias-linear", gpus=16).scenario)
    assert not no_bias.model.expert_linear_bias
    # RoPE: fused unless --no-rope-fusion (then Megatron-Core's rotate-half expression)
    assert m.rope_impl == "fused"
    assert build_scenario(read_megatron_args(QWEN_ARGS + " --no-rope-fusion", gpus=16).scenario).model.rope_impl == \
        "rotate_half"


def test_unknown_conflicting_and_bad_flags() -> None:
    with pytest.raises(ConfigError, match="--tensor-parallel-size \\(did you mean --tensor-model-parallel-size"):
        read_megatron_args("--tensor-parallel-size 2", model="llama3-8b")
    with pytest.raises(ConfigError, match="--bf16/--fp16"):
        read_megatron_args("--bf16 --fp16", model="llama3-8b")
    with pytest.raises(ConfigError, match="conflicts with --model"):
        read_megatron_args("--num-layers 4", model="llama3-8b")
    with pytest.raises(ConfigError, match="invalid choice"):
        read_megatron_args("--moe-token-dispatcher-type all2all", model="mixtral-8x7b")
    with pytest.raises(ConfigError, match="context parallelism is not modelled"):
        read_megatron_args("--context-parallel-size 2", model="llama3-8b")
    with pytest.raises(ConfigError, match="--vocab-size"):
        read_megatron_args("--num-layers 2 --hidden-size 256 --num-attention-heads 4 --seq-length 128")
    with pytest.raises(ConfigError, match="global-batch-size"):
        read_megatron_args("--global-batch-size 10 --micro-batch-size 4", model="llama3-8b", gpus=8)
    with pytest.raises(ConfigError, match="neither a file nor arguments"):
        read_megatron_args("no_such_file.sh")


def test_unmodelled_flags_are_listed() -> None:
    report = read_megatron_args("--qk-layernorm --enable-cuda-graph --recompute-granularity full "
                                "--recompute-method uniform --recompute-num-layers 2", model="llama3-8b")
    listed = dict(report.not_modelled)
    assert "--enable-cuda-graph" in listed and "--recompute-num-layers" not in listed   # modelled since
    memory = build_scenario(report.scenario).memory
    assert (memory.recompute, memory.recompute_method, memory.recompute_num_layers) == ("full", "uniform", 2)
    assert "--qk-layernorm" not in listed and build_scenario(report.scenario).model.qk_norm   # modelled since
    assert not build_scenario(read_megatron_args("--bf16", model="llama3-8b").scenario).model.qk_norm


def test_layer_freq_expression() -> None:
    report = read_megatron_args(QWEN_ARGS.replace("--num-layers 4", "--num-layers 4 --moe-layer-freq ([0]*1+[1]*3)"),
                                gpus=16)
    assert build_scenario(report.scenario).model.moe_layer_freq == (0, 1, 1, 1)


def test_cli_import_only_and_run(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["run", "--megatron-args", str(MIXTRAL), "--model", "mixtral-8x7b", "--gpus", "32",
                              "--import-only"])
    assert out.exit_code == 0, out.output
    assert "NOT MODELLED: --no-masked-softmax-fusion" in out.output and "plan:" in out.output
    tiny = ("--num-layers 2 --hidden-size 512 --num-attention-heads 8 --seq-length 512 --vocab-size 32000 --swiglu "
            "--bf16 --num-experts 8 --moe-router-topk 2 --moe-grouped-gemm --moe-token-dispatcher-type alltoall "
            "--expert-model-parallel-size 2 --micro-batch-size 1 --global-batch-size 4")
    run = runner.invoke(app, ["run", "--megatron-args", tiny, "--gpus", "2", "--out", str(tmp_path / "r"),
                              "--set", "plan.num_microbatches=1"])
    assert run.exit_code == 0, run.output
    assert (tmp_path / "r" / "scenario.yaml").is_file() and (tmp_path / "r" / "results.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]   # nothing written outside --out
    both = runner.invoke(app, ["run", "experiments/eager_host.py", "--megatron-args", tiny])
    assert both.exit_code == 2 and "describe the run twice" in both.output
    stray = runner.invoke(app, ["run", "experiments/eager_host.py", "--gpus", "8"])
    assert stray.exit_code == 2 and "apply only with --megatron-args or --torchtitan" in stray.output
    nothing = runner.invoke(app, ["run"])
    assert nothing.exit_code == 2 and "FILE: missing" in nothing.output


def test_expert_tensor_parallel_1_folds_ep_over_tp_and_dp() -> None:
    """Qwen3-235B-A22B's ModelZoo layout in small: TP 2, EP 8 with expert TP 1 on 16 GPUs, PP 2
    (dp 4): EP 8 > dp, legal only folded over TP x DP as Megatron-Core does."""
    folded = QWEN_ARGS.replace("--expert-model-parallel-size 4", "--expert-model-parallel-size 8") \
        + " --expert-tensor-parallel-size 1"
    report = read_megatron_args(folded, gpus=16)
    plan = build_scenario(report.scenario).plan
    assert (plan.tp, plan.dp, plan.ep, plan.ep_layout, plan.expert_dp) == (2, 4, 8, "folded", 1)
    assert any("folded over tp x dp" in n for n in report.notes)
    default = read_megatron_args(QWEN_ARGS, gpus=16)   # expert TP = TP (Megatron's default): strided
    assert build_scenario(default.scenario).plan.ep_layout == "strided"
    assert any("expert TP 2" in n for n in default.notes)
    with pytest.raises(ConfigError) as err:   # EP 3 cannot hold whole TP2 groups
        read_megatron_args(folded.replace("--expert-model-parallel-size 8", "--expert-model-parallel-size 3"), gpus=16)
    assert err.value.field == "--expert-model-parallel-size" and "multiple of tp 2" in str(err.value)
    with pytest.raises(ConfigError) as err:   # without folding EP 8 does not fit dp 4
        read_megatron_args(QWEN_ARGS.replace("--expert-model-parallel-size 4", "--expert-model-parallel-size 8"),
                           gpus=16)
    assert "--expert-tensor-parallel-size 1" in str(err.value)


def test_grouped_gemm_with_transformer_engine_is_te_and_local_is_torch() -> None:
    te = build_scenario(read_megatron_args(QWEN_ARGS, gpus=16).scenario)
    local = build_scenario(read_megatron_args(QWEN_ARGS + " --transformer-impl local", gpus=16).scenario)
    assert (te.moe.grouped_gemm, local.moe.grouped_gemm) == ("te", "torch")
