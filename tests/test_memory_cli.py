"""The ``moesim memory`` sub-app: table and verdict on good input, exit 1 on a failed invariant
with ``--validate``, exit 2 with the field named and no traceback on bad input."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from moesim.memory.cli import app

runner = CliRunner()


def _flat(output: str) -> str:
    return " ".join(output.split())


def test_show_prints_parts_ranks_and_verdict() -> None:
    result = runner.invoke(app, ["show", "--model", "llama3-8b", "--tp", "2", "--dp", "4", "--pp", "4",
                                 "--microbatches", "8", "--zero", "1", "--gpu", "H100"])
    assert result.exit_code == 0, result.output
    out = _flat(result.output)
    assert "llama3-8b on H100 (training, 1f1b)" in out
    for part in ("weights_dense", "gradients", "optimizer_states", "activations", "framework_reserve", "margin"):
        assert part in out
    assert "fits:" in out and "of 80.00 GiB" in out
    assert "warning" not in out


def test_show_over_budget_says_by_how_much() -> None:
    result = runner.invoke(app, ["show", "--model", "llama3-70b", "--gpu", "H100"])
    assert result.exit_code == 0, result.output
    assert "over by" in result.output


def test_inference_moe_shows_kv_cache_and_experts() -> None:
    result = runner.invoke(app, ["show", "--model", "deepseek-v3", "--inference", "--batch", "8", "--context", "8192",
                                 "--tp", "8", "--dp", "4", "--ep", "32", "--param-dtype", "fp8", "--gpu", "H200"])
    assert result.exit_code == 0, result.output
    out = _flat(result.output)
    assert "kv_cache" in out and "weights_experts" in out and "(inference)" in out
    assert "routed experts per GPU per MoE layer: 8" in out


def test_json_output_parses() -> None:
    result = runner.invoke(app, ["show", "--model", "mixtral-8x7b", "--ep", "8", "--dp", "8", "--zero", "1",
                                 "--recompute", "full", "--seq-len", "2048", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["model"] == "mixtral-8x7b" and data["sharding"]["expert_dp"] == 1
    assert data["total_bytes"] == pytest.approx(sum(data["parts"].values()))


def test_validate_passes_on_a_clean_plan() -> None:
    result = runner.invoke(app, ["show", "--model", "llama3-8b", "--pp", "4", "--validate"])
    assert result.exit_code == 0, result.output
    assert "all invariants hold" in result.output


def test_validate_fails_with_reasons_and_exit_1() -> None:
    result = runner.invoke(app, ["show", "--model", "mixtral-8x7b", "--ep", "3", "--dp", "3", "--pp", "3",
                                 "--microbatches", "6", "--validate"])
    assert result.exit_code == 1, result.output
    out = _flat(result.output)
    assert "experts_divisible: ep = 3 does not divide num_experts = 8" in out
    assert "layers_divisible: 32 layers do not split evenly over 3" in out
    assert "Traceback" not in result.output


def test_failed_invariants_are_warnings_without_validate() -> None:
    result = runner.invoke(app, ["show", "--model", "llama3-8b", "--pp", "3", "--microbatches", "6"])
    assert result.exit_code == 0, result.output
    assert "warning: 1 invariant(s) failed" in result.output


@pytest.mark.parametrize("args, message", [
    (["--model", "gpt5"], "model: unknown name 'gpt5'"),
    (["--model", "llama3-8b", "--gpu", "V100"], "device: unknown name 'V100'"),
    (["--model", "llama3-8b", "--tp", "0"], "plan.tp: must be an integer >= 1"),
    (["--model", "llama3-8b", "--recompute", "most"], "recompute: unknown value 'most'"),
    (["--model", "llama3-8b", "--zero", "5"], "zero_stage: unknown value 5"),
    (["--model", "llama3-8b", "--schedule", "pipedream"], "schedule: unknown name 'pipedream'"),
    (["--model", "llama3-8b", "--pp", "2", "--vpp", "2"], "plan.vpp"),
    (["--model", "llama3-8b", "--seq-len", "0"], "--seq-len: must be an integer >= 1"),
    (["--model", "llama3-8b", "--reserve-gib", "-1"], "--reserve-gib: must be >= 0"),
    (["--model", "llama3-8b", "--inference", "--kv-dtype", "int2"], "kv_cache_dtype: unknown dtype 'int2'"),
])
def test_bad_input_exits_2_naming_the_field(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["show", *args])
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
