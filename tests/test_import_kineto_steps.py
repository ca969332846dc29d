"""`moesim trace compare` divides by the ProfilerStep steps and counts only their kernels: a kernel
launched outside every step (warm-up, evaluation, an unannotated iteration) is in neither table and
is named in a note. The trace is written by hand in Chrome trace format."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moesim.cli import app
from moesim.importers.compare import compare
from moesim.importers.kineto import load_kineto

GEMM = "nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT"
ADD = "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16> >(int, T2, T3)"


def _trace(steps: int, step_kernels: list[tuple[str, float]], outside: list[tuple[str, float]]) -> dict:
    """``steps`` ProfilerStep#N annotations of 100 us each, launching ``step_kernels`` (name, us) in each,
    then ``outside`` launched after the last step."""
    events: list[dict] = []
    corr = 0

    def launch(at_us: float, name: str, dur_us: float) -> None:
        nonlocal corr
        corr += 1
        events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
                       "ts": at_us, "dur": 1.0, "args": {"correlation": corr, "External id": corr}})
        events.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7, "ts": at_us + 2.0, "dur": dur_us,
                       "args": {"device": 0, "stream": 7, "correlation": corr, "External id": corr}})

    for i in range(steps):
        events.append({"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{i}", "pid": 1, "tid": 1,
                       "ts": 100.0 * i, "dur": 100.0})
        for j, (name, dur) in enumerate(step_kernels):
            launch(100.0 * i + 5.0 + 10.0 * j, name, dur)
    for j, (name, dur) in enumerate(outside):
        launch(100.0 * steps + 20.0 + 10.0 * j, name, dur)
    return {"traceEvents": events, "deviceProperties": [{"name": "NVIDIA H100 80GB HBM3"}]}


def _sim(path: Path, gemm_us: float, add_us: float) -> Path:
    """A minimal moesim trace: one compute span per class on one GPU, one microbatch."""
    doc = {"metadata": {"producer": "moesim", "scenario": "hand", "cost_model": "hand"},
           "traceEvents": [{"ph": "M", "name": "thread_name", "pid": 0, "tid": 0, "args": {"name": "gpu0 compute"}},
                           {"ph": "X", "pid": 0, "tid": 0, "cat": "compute", "name": "gemm", "ts": 0, "dur": gemm_us,
                            "args": {"op_ns": {"GEMM": 1.0}, "microbatch": 0}},
                           {"ph": "X", "pid": 0, "tid": 0, "cat": "compute", "name": "add", "ts": gemm_us,
                            "dur": add_us, "args": {"op_ns": {"memory: add": 1.0}, "microbatch": 0}}]}
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("steps", [1, 2])
def test_per_class_counts_only_the_kernels_of_the_steps(tmp_path: Path, steps: int) -> None:
    real = tmp_path / "real.json"
    real.write_text(json.dumps(_trace(steps, [(GEMM, 30.0), (ADD, 10.0)],
                                      [(GEMM, 200.0), ("my_eval_kernel", 50.0)])))
    trace = load_kineto(real)
    assert trace.step_source == "ProfilerStep annotations" and len(trace.steps) == steps
    assert len(trace.events) == 2 * steps + 2 and len(trace.stepped_events) == 2 * steps
    assert trace.notes == (f"2 of {2 * steps + 2} GPU events (0.250 ms of GPU time) were launched outside every "
                           "ProfilerStep: in no step (trace compare leaves them out of both its tables)",)
    result = compare(real, _sim(tmp_path / "sim.trace.json", 33.0, 9.0))
    measured = {r.name: r.measured_ns for r in result.rows}
    assert measured == {"GEMM": 30_000.0, "elementwise": 10_000.0}    # was 130 us / 35 us with 2 steps
    assert result.real_steps_ns == (40_000.0,) * steps
    assert sum(measured.values()) == pytest.approx(sum(result.real_steps_ns) / steps)
    assert result.unclassified == ()                                   # my_eval_kernel ran outside the steps
    doc = result.to_dict()
    assert (doc["real_events_in_steps"], doc["real_events"]) == (2 * steps, 2 * steps + 2)
    out = CliRunner().invoke(app, ["trace", "compare", str(real), str(tmp_path / "sim.trace.json")])
    assert out.exit_code == 0, out.output
    assert "launched outside every ProfilerStep" in out.output


def test_every_kernel_inside_adds_no_note(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text(json.dumps(_trace(2, [(GEMM, 30.0), (ADD, 10.0)], [])))
    trace = load_kineto(real)
    assert trace.notes == () and trace.stepped_events == trace.events
    result = compare(real, _sim(tmp_path / "sim.trace.json", 33.0, 9.0))
    assert {r.name: r.measured_ns for r in result.rows} == {"GEMM": 30_000.0, "elementwise": 10_000.0}
