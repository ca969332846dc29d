"""Kineto (torch.profiler) trace import and `moesim trace compare`, on real H100 traces of a
Llama-3-8B dense layer and a Qwen3-30B-A3B torchtitan MoE block (tests/data/kineto/)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moesim.cli import app
from moesim.errors import ConfigError
from moesim.importers.compare import compare, load_sim_trace, sim_class
from moesim.importers.kineto import CLASSES, class_times_ns, classify, load_kineto

DATA = Path(__file__).parent / "data" / "kineto"
LLAMA = DATA / "llama3_8b.dense.s2048.fwd_bwd.json.gz"
QWEN = DATA / "qwen3_30b_a3b.torchtitan.grouped.scatter_add.t4096.uniform.fwd_bwd.json.gz"


def _doc(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


@pytest.fixture(scope="module")
def sim_traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same two blocks simulated (moesim layer's scenario, 2 iterations, .grad kept as the harness does)."""
    from moesim.experiment.block import simulate_block
    from moesim.experiment.block_cli import layer_scenario, write_outputs

    out = {}
    for key, flags in (("llama", dict(model="llama3-8b", block="decoder", tokens=2048, seq_len=2048, routing="balanced")),
                       ("qwen", dict(model="qwen3-30b-a3b", block="moe", tokens=4096, seq_len=None, routing="uniform"))):
        scn = layer_scenario(passes="fwd_bwd", gpus=1, gpu="H100", host="eager", iterations=2, experts="",
                             cost_model="auto", sets=["grad_accumulation=add_every"], **flags)
        out[key] = write_outputs(simulate_block(scn), tmp_path_factory.mktemp(key))[0]
    return out


@pytest.mark.parametrize("path", [LLAMA, QWEN])
def test_real_trace_classified_and_split(path: Path) -> None:
    trace = load_kineto(path)
    assert trace.device_name.startswith("NVIDIA H100")
    assert len(trace.steps) == 2 and "repeating" in trace.step_source
    assert sum(len(s) for s in trace.steps) == len(trace.events)
    times = class_times_ns(trace.events)
    assert set(times) <= set(CLASSES) and "unclassified" not in times
    assert sum(times.values()) == sum(e.dur_ns for e in trace.events)
    assert all(e.aten_op for e in trace.events if e.category == "kernel")


def test_expected_classes_present() -> None:
    llama = class_times_ns(load_kineto(LLAMA).events)
    qwen = class_times_ns(load_kineto(QWEN).events)
    assert {"GEMM", "attention", "norm", "elementwise"} <= set(llama) and "grouped GEMM" not in llama
    assert {"grouped GEMM", "permute & router", "elementwise"} <= set(qwen) and "attention" not in qwen
    grouped = {e.aten_op for e in load_kineto(QWEN).events if e.op_class == "grouped GEMM"}
    assert grouped == {"aten::_grouped_mm"}


def test_profiler_step_annotations_split_steps(tmp_path: Path) -> None:
    doc = _doc(LLAMA)
    launches = list(e for e in doc["traceEvents"] if e.get("cat") == "cuda_runtime" and e.get("ph") == "X"
                      and (e.get("args") or {}).get("correlation") is not None)
    kernels = {(e["args"] or {}).get("correlation") for e in doc["traceEvents"] if e.get("cat") == "kernel"}
    mine = sorted((e for e in launches if e["args"]["correlation"] in kernels), key=lambda e: e["ts"])
    half = len(mine) // 2
    for i, part in enumerate((mine[:half], mine[half:])):
        doc["traceEvents"].append({"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{i}", "pid": 1, "tid": 1,
                                   "ts": part[0]["ts"] - 0.001, "dur": part[-1]["ts"] - part[0]["ts"] + 0.002})
    path = tmp_path / "stepped.json"
    path.write_text(json.dumps(doc))
    trace = load_kineto(path)
    assert trace.step_source == "ProfilerStep annotations" and len(trace.steps) == 2


def test_truncated_trace_refused_or_salvaged(tmp_path: Path) -> None:
    text = gzip.decompress(LLAMA.read_bytes())
    cut = tmp_path / "cut.json"
    cut.write_bytes(text[: len(text) * 2 // 3])
    with pytest.raises(ConfigError, match="truncated"):
        load_kineto(cut)
    salvaged = load_kineto(cut, salvage=True)
    assert 0 < len(salvaged.events) < len(load_kineto(LLAMA).events)
    assert "truncated at byte" in salvaged.notes[0]
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(ConfigError, match="cannot read"):
        load_kineto(tmp_path / "bad.json.gz")


def test_classify_names() -> None:
    assert classify("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)") == "nccl: all_gather"
    assert classify("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t") == "nccl: send_recv"
    assert classify("sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n_tilesize128x128x128") == "GEMM fp8"
    assert classify("Memcpy DtoH (Device -> Pinned)", "gpu_memcpy") == "memcpy"
    assert classify("my_custom_kernel_v2") == "unclassified"
    assert sim_class("memory: permute/scatter_add") == "permute & router" and sim_class("comm: all_to_all") == \
        "nccl: all_to_all"


@pytest.mark.parametrize("key,path", [("llama", LLAMA), ("qwen", QWEN)])
def test_compare_real_with_simulated(sim_traces: dict[str, Path], key: str, path: Path) -> None:
    result = compare(path, sim_traces[key])
    real = load_kineto(path)
    assert len(result.real_steps_ns) == 2 and len(result.sim_steps_ns) == 2
    assert sum(r.measured_ns for r in result.rows) == pytest.approx(sum(e.dur_ns for e in real.events) / 2)
    sim = load_sim_trace(sim_traces[key])
    assert sum(r.simulated_ns for r in result.rows) == pytest.approx(sum(sim.per_step.values()), abs=1.0)
    assert result.biggest_misses[0].miss_ns != 0
    runner = CliRunner()
    out = runner.invoke(app, ["trace", "compare", str(path), str(sim_traces[key])])
    assert out.exit_code == 0, out.output
    assert "biggest misses" in out.output and "unclassified kernels: none" in out.output


def test_compare_refuses_swapped_files(sim_traces: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="moesim simulated trace"):
        compare(sim_traces["llama"], sim_traces["llama"])
    with pytest.raises(ConfigError, match="not written by moesim"):
        load_sim_trace(LLAMA)
    with pytest.raises(ConfigError, match="does not exist"):
        load_sim_trace(DATA / "missing.trace.json")


def test_unclassified_kernels_are_reported_with_their_share(sim_traces: dict[str, Path], tmp_path: Path) -> None:
    doc = _doc(QWEN)
    renamed = 0
    for e in doc["traceEvents"]:
        if e.get("cat") == "kernel" and "gatherTopK" in e["name"]:
            e["name"] = "my_custom_router_kernel"
            renamed += 1
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(doc))
    result = compare(path, sim_traces["qwen"])
    (name, ns, share), = result.unclassified
    assert renamed and name == "my_custom_router_kernel" and 0 < share < 0.05
    assert any(r.name == "unclassified" and r.measured_ns == ns / 2 for r in result.rows)
