"""`moesim calibrate from-trace` on the real H100 traces: every kernel named by its profile class,
the classes the H100 profile lacks listed, rows fitted where shapes were recorded."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moesim.calibrate.from_trace import fragment, from_trace, profile_keys
from moesim.cli import app
from moesim.costs.profile import resolve_profile_path
from moesim.errors import ConfigError

DATA = Path(__file__).parent / "data" / "kineto"
LLAMA = DATA / "llama3_8b.dense.s2048.fwd_bwd.json.gz"
QWEN = DATA / "qwen3_30b_a3b.torchtitan.grouped.scatter_add.t4096.uniform.fwd_bwd.json.gz"


@pytest.mark.parametrize("path", [LLAMA, QWEN])
def test_real_traces_against_the_h100_profile(path: Path) -> None:
    result = from_trace(path)
    assert result.profile_path.endswith("h100_sxm.json")
    have = profile_keys(json.loads(Path(result.profile_path).read_text()))
    assert all(c.in_profile == (c.key in have) for c in result.classes)
    kernels = sum(c.kernels for c in result.classes) + sum(k for _, k, _ in result.unmapped)
    assert kernels == len(result.trace.events)  # every GPU event is in a class or listed as unmapped
    assert result.missing and not result.fitted_rows  # these traces recorded no shapes
    assert all("record_shapes=True" in c.why_not for c in result.missing)


def test_shapes_give_fitted_rows_that_merge(tmp_path: Path) -> None:
    """The real Llama trace with input shapes added to its aten::neg / aten::sub calls (what
    record_shapes=True writes: [2048, 32, 64] bf16 halves of the rotary q/k)."""
    doc = json.loads(gzip.decompress(LLAMA.read_bytes()))
    for e in doc["traceEvents"]:
        if e.get("cat") == "cpu_op" and e.get("name") in ("aten::neg", "aten::sub"):
            e["args"]["Input Dims"] = [[1, 2048, 32, 64]] + ([[1, 2048, 32, 64]] if e["name"] == "aten::sub" else [])
            e["args"]["Input type"] = ["c10::BFloat16"] * len(e["args"]["Input Dims"])
    path = tmp_path / "shaped.json"
    path.write_text(json.dumps(doc))
    result = from_trace(path, "h100_sxm")
    fitted = {(r["kind"], r["variant"]) for r in result.fitted_rows}
    assert fitted == {("elementwise", "neg"), ("elementwise", "sub")}
    neg = next(r for r in result.fitted_rows if r["variant"] == "neg")
    assert neg["nbytes"] == 2 * 2048 * 32 * 64 * 2 and neg["time_ns"] > 0
    frag = tmp_path / "frag.json"
    frag.write_text(json.dumps(fragment(result)))
    from moesim.calibrate.merge import main as merge

    merged = tmp_path / "merged.json"
    assert merge([str(merged), str(resolve_profile_path("h100_sxm")), str(frag)]) == 0
    keys = profile_keys(json.loads(merged.read_text()))
    assert ("memory", "elementwise", "neg") in keys


def test_wrong_profile_and_cli(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is of 'NVIDIA H200"):
        from_trace(LLAMA, "h200_sxm")
    out = CliRunner().invoke(app, ["calibrate", "from-trace", str(QWEN), "-o", str(tmp_path / "f.json")])
    assert out.exit_code == 0, out.output
    assert "missing from the profile:" in out.output and "permute/index_put" in out.output
    assert json.loads((tmp_path / "f.json").read_text())["samples"] == []


def test_a_real_trace_with_shapes_fits_the_missing_classes() -> None:
    """An H100 trace taken with record_shapes=True (layer_workloads --profile-trace): every class
    the profile lacks is fitted from the trace or says why not; fitted rows carry positive times."""
    result = from_trace(DATA / "shapes.qwen3_30b_a3b.torchtitan.grouped.t4096.fwd_bwd.json.gz", "h100_sxm")
    fitted = {(r["kind"], r["variant"]) for r in result.fitted_rows}
    assert ("permute", "index_put") in fitted and ("softmax", "softmax_backward") in fitted
    assert all(r["time_ns"] > 0 and r["nbytes"] > 0 for r in result.fitted_rows)
    assert all(c.why_not for c in result.missing if not c.rows)
