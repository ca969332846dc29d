"""The GPU memory probe's CPU smoke mode against moesim's memory model (moesim.validate.memory)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lab import memory_probe as mp  # noqa: E402
from moesim.validate.memory import compare, config_of, predict, report_lines  # noqa: E402

SMOKE = Path(__file__).resolve().parents[1] / "data" / "validation" / "memory" / "cpu_smoke.json"


@pytest.mark.parametrize("case", ["none", "mlp", "layernorm", "full"])
def test_dense_layer_saved_bytes_match_the_model(case: str) -> None:
    shape = mp.CPU_SHAPES[0]
    row = mp.run_case(shape, case, "cpu", torch.bfloat16)
    assert row["finite"]
    predicted = predict(asdict(shape), case)
    assert abs(predicted - row["saved_bytes"]) <= 0.10 * row["saved_bytes"]


def test_moe_recompute_moe_keeps_only_the_block_input() -> None:
    shape = mp.CPU_SHAPES[1]
    none = mp.run_case(shape, "none", "cpu", torch.bfloat16)["saved_bytes"]
    moe = mp.run_case(shape, "moe", "cpu", torch.bfloat16)["saved_bytes"]
    assert moe < none / 2
    assert abs(predict(asdict(shape), "moe") - moe) <= 0.10 * moe


def test_stored_smoke_run_compares_within_target() -> None:
    probe = json.loads(SMOKE.read_text())
    cases = compare(probe)
    assert len(cases) == len(mp.DENSE_CASES) + len(mp.MOE_CASES) + len(mp.MLA_CASES)
    assert all(c.within_target for c in cases), report_lines(cases, probe["provenance"])


def test_case_names_map_to_megatron_options() -> None:
    cfg = config_of("layernorm+moe_act", moe=True)
    assert cfg.recompute == "selective" and cfg.active_recompute_modules == ("layernorm", "moe_act")
    assert config_of("full", moe=False).recompute == "full" and config_of("none", moe=True).probs_on_expert_output


def test_mla_up_proj_frees_the_up_projected_heads_as_predicted() -> None:
    shape = mp.CPU_SHAPES[2]
    none = mp.run_case(shape, "none", "cpu", torch.bfloat16)["saved_bytes"]
    up = mp.run_case(shape, "mla_up_proj", "cpu", torch.bfloat16)["saved_bytes"]
    assert up < none
    assert predict(asdict(shape), "none") - predict(asdict(shape), "mla_up_proj") == pytest.approx(none - up, rel=0.10)


def test_repeated_kv_fallback_is_predicted_with_as_many_kv_heads() -> None:
    shape = mp.CPU_SHAPES[0]
    row = mp.run_case(shape, "none", "cpu", torch.bfloat16, repeat_kv=True)
    (case,) = compare({"shapes": [asdict(shape)], "results": [row]})
    assert row["kv_repeated"] and case.within_target
    assert case.predicted_bytes > predict(asdict(shape), "none")  # K and V at 4 heads instead of 2
