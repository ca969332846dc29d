"""Megatron-LM importer: a --model preset gives the architecture only, arguments that disagree with
it are errors, and Megatron's own rules (recompute, FFN width, attention backend, FSDP, GPT-OSS's
windows / sinks / GLU, launch-script arrays and arithmetic, sizes of 0) as arguments.py has them."""
from __future__ import annotations

from pathlib import Path

import pytest

from moesim.errors import ConfigError
from moesim.experiment.scenario_files import build_scenario
from moesim.importers.common import preset_architecture
from moesim.importers.megatron import read_megatron_args
from moesim.workload.presets import get_model

DSV3_BF16 = ("--bf16 --tensor-model-parallel-size 2 --pipeline-model-parallel-size 8 "
             "--num-virtual-stages-per-pipeline-rank 4 --expert-model-parallel-size 64 --sequence-parallel "
             "--micro-batch-size 1 --global-batch-size 16384 --seq-length 4096")
TINY = "--num-layers 2 --hidden-size 512 --num-attention-heads 8 --seq-length 512 --vocab-size 32000 --bf16"
# examples/gptoss/02_train.sh of NVIDIA/Megatron-LM d98e8a6: its MODEL_ARGS array, verbatim
GPT_OSS_MODEL_ARGS = """
MODEL_ARGS=(
    --no-masked-softmax-fusion
    --transformer-impl transformer_engine
    --disable-bias-linear
    --untie-embeddings-and-output-weights
    --no-rope-fusion
    --normalization RMSNorm
    --num-layers ${NUM_LAYERS}
    --hidden-size 512
    --ffn-hidden-size 2048
    --num-attention-heads 64
    --group-query-attention
    --num-query-groups 8
    --seq-length ${SEQ_LENGTH}
    --max-position-embeddings ${MAX_POSITION_EMBEDDINGS}
    --use-mcore-models
    --rotary-percent 1.0
    --rope-type rope
    --position-embedding-type rope
    --rotary-base 10000
    --no-bias-gelu-fusion
    --export-force-local-attention
    --no-bias-dropout-fusion
    --quick-geglu
    --glu-linear-offset 1.0
    --softmax-type learnable
    --window-attn-skip-freq 2
    --activation-func-clamp-value 7.0
    --window-size 127,0
    --enable-gpt-oss
)
"""
# examples/post_training/modelopt/conf/openai/gpt-oss-120b.sh's MODEL_ARGS (architecture part)
GPT_OSS_120B = ("--bf16 --untie-embeddings-and-output-weights --normalization RMSNorm --num-layers 36 "
                "--hidden-size 2880 --ffn-hidden-size 2880 --num-attention-heads 64 --group-query-attention "
                "--num-query-groups 8 --kv-channels 64 --num-experts 128 --moe-ffn-hidden-size 2880 --moe-router-topk 4 "
                "--moe-router-score-function softmax --seq-length 4096 --export-force-local-attention "
                "--padded-vocab-size 201088 --quick-geglu --glu-linear-offset 1.0 --softmax-type learnable "
                "--window-attn-skip-freq 2 --enable-gpt-oss --activation-func-clamp-value 7.0 --window-size 127,0 "
                "--micro-batch-size 1")


# 1 ------------------------------------------------------------------------------------------------
def test_deepseek_preset_gives_architecture_not_its_fp8_or_node_limit() -> None:
    report = read_megatron_args(DSV3_BF16, model="deepseek-v3", gpus=1024)
    m = build_scenario(report.scenario).model
    assert (m.gemm_dtype, m.dispatch_dtype, m.max_nodes_per_token) == (None, "bf16", 0)
    assert (m.num_experts, m.top_k, m.kv_lora_rank, m.first_k_dense, m.dtype) == (256, 8, 512, 3, "bf16")
    # Megatron routes without group limits, trains no MTP and no expert bias unless the arguments ask
    assert (m.n_groups, m.topk_groups, m.num_nextn_predict_layers, m.expert_bias) == (1, 1, 0, False)
    notes = " ".join(report.notes)
    assert "gemm_dtype=fp8, dispatch_dtype=fp8, max_nodes_per_token=4 are not taken" in notes
    assert "n_groups=1 (the preset has 8)" in notes and "num_nextn_predict_layers=0 (the preset has 1)" in notes
    asked = read_megatron_args(DSV3_BF16 + " --fp8-format e4m3 --moe-router-num-groups 8 --moe-router-group-topk 4 "
                               "--mtp-num-layers 1 --moe-router-enable-expert-bias", model="deepseek-v3", gpus=1024)
    m = build_scenario(asked.scenario).model
    assert (m.gemm_dtype, m.dispatch_dtype, m.n_groups, m.topk_groups, m.num_nextn_predict_layers, m.expert_bias) == \
        ("fp8", "bf16", 8, 4, 1, True)


def test_preset_architecture_resets_run_fields_only() -> None:
    notes: list[str] = []
    fields = preset_architecture(get_model("deepseek-v3"), "deepseek-v3", "the TOML", notes)
    assert (fields["gemm_dtype"], fields["dispatch_dtype"], fields["max_nodes_per_token"]) == (None, "bf16", 0)
    assert (fields["spec"], fields["n_groups"], fields["num_experts"]) == ("MoESpec", 8, 256)
    assert len(notes) == 1 and "the TOML" in notes[0]
    quiet: list[str] = []
    preset_architecture(get_model("llama3-8b"), "llama3-8b", "the TOML", quiet)
    assert quiet == []


# 2 ------------------------------------------------------------------------------------------------
def test_architecture_flags_disagreeing_with_model_name_both() -> None:
    with pytest.raises(ConfigError) as err:
        read_megatron_args("--num-experts 8 --moe-router-topk 2 --moe-ffn-hidden-size 14336 --bf16 --seq-length 4096",
                           model="llama3-8b")
    assert err.value.field == "--num-experts" and "--model llama3-8b" in str(err.value) and "MoE" in str(err.value)
    with pytest.raises(ConfigError, match="--num-experts: 0 conflicts with --model mixtral-8x7b"):
        read_megatron_args("--num-experts 0", model="mixtral-8x7b")
    for flags, field in (("--window-size 127,0", "--window-size"), ("--softmax-type learnable", "--softmax-type"),
                         ("--quick-geglu", "--quick-geglu"), ("--multi-latent-attention", "--multi-latent-attention"),
                         ("--num-query-groups 8", "--num-query-groups")):
        with pytest.raises(ConfigError) as err:
            read_megatron_args(flags, model="gpt3-175b" if flags == "--quick-geglu" else "llama3-8b")
        assert err.value.field.startswith(field) and "--model" in str(err.value), flags
    with pytest.raises(ConfigError, match="--moe-router-topk: 4 conflicts with --model mixtral-8x7b"):
        read_megatron_args("--moe-router-topk 4", model="mixtral-8x7b")
    with pytest.raises(ConfigError, match=r"--moe-layer-freq: 1 \(61 MoE layers\) conflicts with --model deepseek-v3"):
        read_megatron_args("--moe-layer-freq 1", model="deepseek-v3")   # the preset's first 3 layers are dense
    ok = read_megatron_args("--moe-layer-freq ([0]*3+[1]*58) --moe-shared-expert-intermediate-size 2048",
                            model="deepseek-v3")
    assert {"--moe-layer-freq", "--moe-shared-expert-intermediate-size"} <= set(dict(ok.used))


def test_moe_flags_on_a_dense_model_are_listed_without_effect() -> None:
    report = read_megatron_args("--moe-router-topk 2 --moe-ffn-hidden-size 14336 --bf16", model="llama3-8b")
    assert build_scenario(report.scenario).model.__class__.__name__ == "TransformerSpec"
    assert {"--moe-router-topk", "--moe-ffn-hidden-size"} <= set(report.no_cost)
    assert not {"--moe-router-topk", "--moe-ffn-hidden-size"} & set(dict(report.used))
    assert any("Megatron reads none of --moe-router-topk, --moe-ffn-hidden-size" in n for n in report.notes)
    flags_only = read_megatron_args(TINY + " --moe-router-topk 2")
    assert "--moe-router-topk" in flags_only.no_cost and "moe" not in flags_only.scenario
    with pytest.raises(ConfigError, match="--expert-model-parallel-size: 2 on a dense model"):
        read_megatron_args(TINY + " --expert-model-parallel-size 2", gpus=2)


# 3 ------------------------------------------------------------------------------------------------
def test_recompute_activations_is_selective() -> None:
    report = read_megatron_args("--recompute-activations --bf16", model="llama3-8b")
    assert build_scenario(report.scenario).memory.recompute == "selective"
    assert dict(report.used)["--recompute-activations"].startswith("memory.recompute")
    over = read_megatron_args("--recompute-activations --recompute-granularity full", model="llama3-8b")
    assert over.scenario["memory"]["recompute"] == "selective"   # validate_args overrides, said in the notes
    assert any("overriding --recompute-granularity full" in n for n in over.notes)
    with pytest.raises(ConfigError, match="--recompute-activations makes it selective"):
        read_megatron_args("--recompute-activations --recompute-granularity full --recompute-method uniform",
                           model="llama3-8b")


# 4 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, ffn", [("--swiglu", 10880), ("", 16384), ("--quick-geglu", 16384)])
def test_default_ffn_width_is_megatrons(extra: str, ffn: int) -> None:
    flags = "--num-layers 2 --hidden-size 4096 --num-attention-heads 32 --seq-length 512 --vocab-size 32000 " + extra
    m = build_scenario(read_megatron_args(flags).scenario).model
    assert m.ffn_hidden == ffn and m.activation == ("gelu" if not extra else "swiglu")


# 5 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend, flash", [("unfused", False), ("local", False), ("fused", True), ("flash", True),
                                            ("auto", True)])
def test_attention_backend_sets_flash_attention(backend: str, flash: bool) -> None:
    spec = " --spec local" if backend == "local" else ""   # Megatron asserts --spec local for it
    report = read_megatron_args(f"--attention-backend {backend} --bf16{spec}", model="llama3-8b")
    assert build_scenario(report.scenario).memory.flash_attention is flash
    assert dict(report.used)["--attention-backend"].startswith("memory.flash_attention")


def test_fsdp_flags_set_the_zero_stage() -> None:
    fsdp = "--use-megatron-fsdp --ckpt-format fsdp_dtensor --bf16"
    mem = build_scenario(read_megatron_args(fsdp, model="llama3-8b", gpus=8).scenario).memory
    assert (mem.zero_stage, mem.distributed_optimizer) == (3, True)   # optim_grads_params: Megatron's default
    for strategy, stage in (("no_shard", 0), ("optim", 1), ("optim_grads", 2), ("optim_grads_params", 3)):
        r = read_megatron_args(f"{fsdp} --data-parallel-sharding-strategy {strategy}", model="llama3-8b", gpus=8)
        assert r.scenario["memory"]["zero_stage"] == stage
        assert dict(r.used)["--data-parallel-sharding-strategy"].startswith("memory.zero_stage")
    with pytest.raises(ConfigError, match="--ckpt-format fsdp_dtensor"):
        read_megatron_args("--use-megatron-fsdp", model="llama3-8b", gpus=8)
    torch2 = "--use-torch-fsdp2 --no-gradient-accumulation-fusion --untie-embeddings-and-output-weights --bf16"
    assert build_scenario(read_megatron_args(torch2, model="llama3-8b", gpus=8).scenario).memory.zero_stage == 3
    kept = read_megatron_args(torch2 + " --torch-fsdp2-no-reshard-after-forward", model="llama3-8b", gpus=8)
    assert kept.scenario["memory"]["zero_stage"] == 2
    with pytest.raises(ConfigError, match="--use-torch-fsdp2.*--no-gradient-accumulation-fusion"):
        read_megatron_args("--use-torch-fsdp2 --untie-embeddings-and-output-weights", model="llama3-8b", gpus=8)
    with pytest.raises(ConfigError, match="--use-torch-fsdp2.*--pipeline-model-parallel-size"):
        read_megatron_args(torch2 + " --pipeline-model-parallel-size 2", model="llama3-8b", gpus=8)
    alone = read_megatron_args("--data-parallel-sharding-strategy optim_grads_params", model="llama3-8b", gpus=8)
    assert "zero_stage" not in alone.scenario["memory"] and "--data-parallel-sharding-strategy" in alone.no_cost


# 6 ------------------------------------------------------------------------------------------------
def test_gpt_oss_example_maps_windows_sinks_and_glu(tmp_path: Path) -> None:
    script = tmp_path / "02_train.sh"
    script.write_text("NUM_LAYERS=12\nSEQ_LENGTH=8192\nMAX_POSITION_EMBEDDINGS=8192\n" + GPT_OSS_MODEL_ARGS
                      + "OTHER=(--vocab-size 128256 --micro-batch-size 1 --num-experts 4 --moe-router-topk 2)\n"
                        "python -m torch.distributed.run pretrain_gpt.py ${MODEL_ARGS[@]} ${OTHER[@]}\n")
    report = read_megatron_args(script, gpus=1)
    m = build_scenario(report.scenario).model
    assert (m.sliding_window, m.attention_sinks, m.activation, m.activation_fusion) == (128, True, "swiglu", False)
    assert m.layer_types == ("sliding_attention", "full_attention") * 6   # 1-indexed odd layers windowed
    assert (m.ffn_hidden, m.head_dim, m.num_kv_heads) == (2048, 8, 8)
    listed = dict(report.not_modelled)
    assert "ModelOpt" in listed["--export-force-local-attention"] and "ModelOpt" in listed["--enable-gpt-oss"]
    assert {"--window-size", "--window-attn-skip-freq", "--softmax-type", "--quick-geglu"} <= set(dict(report.used))


def test_gpt_oss_120b_flags_agree_with_its_preset() -> None:
    own = build_scenario(read_megatron_args(GPT_OSS_120B, gpus=8).scenario).model
    preset = read_megatron_args(GPT_OSS_120B, model="gpt-oss-120b", gpus=8)
    m = build_scenario(preset.scenario).model
    for field in ("sliding_window", "layer_types", "attention_sinks", "activation", "num_experts", "top_k", "vocab"):
        assert getattr(own, field) == getattr(m, field) == getattr(get_model("gpt-oss-120b"), field), field
    with pytest.raises(ConfigError) as err:
        read_megatron_args(GPT_OSS_120B.replace("--window-size 127,0", "--window-size 255,0"), model="gpt-oss-120b")
    assert err.value.field == "--window-size/--window-attn-skip-freq" and "gpt-oss-120b" in str(err.value)
    everywhere = build_scenario(read_megatron_args(TINY + " --window-size 4095,0").scenario).model
    assert (everywhere.sliding_window, everywhere.layer_types) == (4096, ())
    with pytest.raises(ConfigError, match="--window-attn-skip-freq: without --window-size"):
        read_megatron_args(TINY + " --window-attn-skip-freq 2")
    with pytest.raises(ConfigError, match="--window-size"):
        read_megatron_args(TINY + " --window-size 127,5")


# 7 ------------------------------------------------------------------------------------------------
def test_launch_script_array_appends_and_arithmetic(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text(
        "GPUS=8\nTP=$((GPUS/4))\nPP=$(( (GPUS / TP) / 2 ))\n"
        f"PRETRAIN_ARGS=({TINY} --micro-batch-size 1)\n"
        "PRETRAIN_ARGS=(\"${PRETRAIN_ARGS[@]}\" --global-batch-size 16 --recompute-activations)\n"
        "PRETRAIN_ARGS+=(--tensor-model-parallel-size $TP --pipeline-model-parallel-size $PP)\n"
        "if [ -n \"$FROM_THE_ENVIRONMENT\" ]; then\n    PRETRAIN_ARGS+=(--fp8-format hybrid)\nfi\n"
        "torchrun --nproc_per_node $GPUS pretrain_gpt.py \"${PRETRAIN_ARGS[@]}\"\n")
    report = read_megatron_args(script, gpus=8)
    scn = build_scenario(report.scenario)
    assert (scn.plan.tp, scn.plan.pp, scn.plan.dp, scn.plan.num_microbatches) == (2, 2, 2, 8)
    assert (scn.model.num_layers, scn.model.hidden, scn.memory.recompute, scn.model.gemm_dtype) == \
        (2, 512, "selective", None)
    assert any("not read: PRETRAIN_ARGS" in n for n in report.notes)   # the undecidable append, said
    assert read_megatron_args("--tensor-model-parallel-size $((4*2))", model="llama3-8b",
                              gpus=8).scenario["plan"]["tp"] == 8


def test_unevaluable_shell_values_name_the_flag() -> None:
    with pytest.raises(ConfigError) as err:
        read_megatron_args("--tensor-model-parallel-size $((FOO*2))", model="llama3-8b")
    assert err.value.field == "--tensor-model-parallel-size" and "FOO" in str(err.value) and "literal" in str(err.value)
    with pytest.raises(ConfigError) as err:
        read_megatron_args("X=$((FOO*2))\nA=(--micro-batch-size $X)\ntorchrun pretrain_gpt.py ${A[@]}",
                           model="llama3-8b")
    assert err.value.field == "--micro-batch-size" and "X = '$((FOO*2))'" in str(err.value) and "FOO" in str(err.value)


# 8 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--micro-batch-size", "--kv-channels", "--moe-ffn-hidden-size",
                                  "--ffn-hidden-size", "--global-batch-size", "--num-layers-per-virtual-pipeline-stage"])
def test_zero_sizes_are_errors_naming_the_flag(flag: str) -> None:
    with pytest.raises(ConfigError) as err:
        read_megatron_args(TINY + f" --num-experts 8 {flag} 0")
    assert err.value.field == flag and "got 0" in str(err.value)
