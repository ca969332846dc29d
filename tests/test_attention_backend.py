"""SDPA held to FlashAttention-2 (``model.attention_backend = "flash"``): its own kernel rows."""
from __future__ import annotations

import dataclasses

import pytest

from moesim.costs.calibrated import CalibratedCostModel
from moesim.costs.profile import profile_from_dict
from moesim.errors import ConfigError
from moesim.ops import Attention
from moesim.workload import transformer as tf
from moesim.workload.presets import get_model

HEADER = {"schema_version": 1, "device": "NVIDIA H100", "gpu_count": 1, "driver": "d", "cuda": "c", "nccl": "n",
          "torch": "t", "date": "2026-01-01T00:00:00Z", "command": "synthetic", "notes": "test"}


def _core(spec) -> Attention:
    return next(op for op in tf.attention_forward_program(spec, 1) if isinstance(op, Attention))


def _rows(call: str, scale: float) -> list[dict]:
    rows = []
    for seq in (1024, 2048, 4096):
        for direction in ("fwd", "bwd"):
            row = {"op": "attention", "dtype": "bf16", "direction": direction, "causal": True, "batch": 1,
                   "heads": 32, "seq": seq, "head_dim": 128, "repeats": 5,
                   "time_ns": scale * seq * seq / 64 * (2.5 if direction == "bwd" else 1.0)}
            rows.append({**row, "kv_heads": 8, "call": call} if call else {**row, "kv_heads": 32})
    return rows


def test_backend_names_the_kernel_call() -> None:
    base = get_model("llama3-8b")
    assert _core(dataclasses.replace(base, attention_enable_gqa=True)).call == "enable_gqa"
    assert _core(dataclasses.replace(base, attention_enable_gqa=True, attention_backend="flash")).call == "enable_gqa_flash"
    assert _core(dataclasses.replace(base, attention_backend="flash")).call == "flash"
    assert _core(base).call == ""


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        dataclasses.replace(get_model("llama3-8b"), attention_backend="cudnn")
    assert e.value.field == "attention_backend" and "flash" in str(e.value)


def test_flash_rows_price_the_flash_call_and_default_rows_stay() -> None:
    samples = _rows("", 1.0) + _rows("enable_gqa", 1.0) + _rows("enable_gqa_flash", 2.0)
    model = CalibratedCostModel(profile_from_dict({**HEADER, "samples": samples}, name="synthetic"))
    for backward in (False, True):
        gqa = Attention(1, 32, 8, 2048, 2048, 128, backward=backward, call="enable_gqa")
        flash = dataclasses.replace(gqa, call="enable_gqa_flash")
        assert model.compute_ns(gqa) == pytest.approx(2048 * 2048 / 64 * (2.5 if backward else 1.0), rel=1e-6)
        assert model.compute_ns(flash) == pytest.approx(2 * model.compute_ns(gqa), rel=1e-6)
    assert not model.fallback_ops


def test_unmeasured_flash_call_is_a_labelled_stand_in() -> None:
    model = CalibratedCostModel(profile_from_dict({**HEADER, "samples": _rows("", 1.0)}, name="synthetic"))
    t = model.compute_ns(Attention(1, 32, 8, 2048, 2048, 128, call="enable_gqa_flash"))
    assert t > 0
    assert any("enable_gqa_flash" in label and "not measured" in label for label in model.fallback_ops)
