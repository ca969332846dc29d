"""A checkpoint's storage dtype (config.json torch_dtype, v5's dtype) is not the training precision:
the spec trains in bf16 and the field is listed as what it is."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from moesim.cli import app
from moesim.workload.hf_config import read_hf_config

HF_DATA = Path(__file__).resolve().parent / "data" / "hf_configs"


def _olmoe(tmp_path: Path, **fields: object) -> Path:
    raw = {**json.loads((HF_DATA / "olmoe.json").read_text()), **fields}
    path = tmp_path / "olmoe_storage.json"
    path.write_text(json.dumps(raw))
    return path


def test_storage_dtype_is_not_the_training_precision(tmp_path: Path) -> None:
    raw = json.loads(_olmoe(tmp_path, torch_dtype="float32").read_text())
    imp = read_hf_config(raw)
    assert imp.spec.dtype == "bf16"
    assert dict(imp.used)["torch_dtype"].startswith("(checkpoint storage dtype 'float32', not the training precision")
    v5 = {**{k: v for k, v in raw.items() if k != "torch_dtype"}, "dtype": "float16"}
    assert read_hf_config(v5).spec.dtype == "bf16" and "'float16'" in dict(read_hf_config(v5).used)["dtype"]
    odd = read_hf_config({**v5, "dtype": "float8_e4m3fn"})   # any storage dtype: it sets nothing
    assert odd.spec.dtype == "bf16"
    given = read_hf_config(raw, dtype="fp16")
    assert given.spec.dtype == "fp16" and "trains in fp16 (given)" in dict(given.used)["torch_dtype"]


def test_fp32_checkpoint_runs_and_counts_in_bf16(tmp_path: Path) -> None:
    path = _olmoe(tmp_path, torch_dtype="float32")
    runner = CliRunner()
    out = runner.invoke(app, ["layer", "--model", str(path), "--block", "moe", "--tokens", "2048", "--gpu", "H100"])
    assert out.exit_code == 0, out.output
    assert "tensor-core peak" not in out.output and "GPU time per op class" in out.output
    memory = runner.invoke(app, ["memory", "show", "--model", str(path)])
    assert memory.exit_code == 0, memory.output
    assert "params bf16" in memory.output
    shown = runner.invoke(app, ["model", "from-hf", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "training precision bf16 (config.json torch_dtype is the checkpoint's storage dtype" in shown.output
