"""MFU two ways in every result: model FLOPs and executed FLOPs against the GEMM precision's peak."""
import dataclasses
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

from moesim.costs.devices import get_device
from moesim.experiment.build import resolve_model
from moesim.experiment.experiment import Experiment
from moesim.experiment.report import mfu_rows, summary_markdown
from moesim.workload.layers import model_flops_per_token

ROOT = Path(__file__).resolve().parents[1]


def _result(name: str, mfu: float, tps: float) -> SimpleNamespace:
    return SimpleNamespace(name=name, mfu=mfu, tokens_per_s_per_gpu=tps)


def test_model_and_executed_mfu_against_the_gemm_peak():
    exp = runpy.run_path(str(ROOT / "experiments" / "deepseek_v3_2048.py"))["EXPERIMENT"]
    scn = exp.scenarios[0]
    (row,) = mfu_rows(exp, [_result(scn.name, 0.30, 1500.0)])
    h800 = get_device("H800")
    assert row["gemm_dtype"] == "fp8" and row["peak_tflops"] == pytest.approx(h800.peak_flops["fp8"] / 1e12)
    # Executed: r.mfu is already over the GEMM precision's (fp8) peak, as the results table shows it
    assert row["mfu_executed"] == pytest.approx(0.30)
    spec = resolve_model(scn.model)
    assert row["mfu_model"] == pytest.approx(model_flops_per_token(spec) * 1500.0 / h800.peak_flops["fp8"])
    assert row["note"] == ""   # the training step runs the MTP module its model FLOPs count
    fwd = Experiment(name=exp.name, description=exp.description, scenarios=[dataclasses.replace(scn, mode="forward")])
    (row,) = mfu_rows(fwd, [_result(scn.name, 0.30, 1500.0)])
    assert "MTP" in row["note"]


def test_summary_states_both_mfus_and_the_peak():
    exp = runpy.run_path(str(ROOT / "experiments" / "deepseek_v3_2048.py"))["EXPERIMENT"]
    one = Experiment(name=exp.name, description=exp.description, scenarios=exp.scenarios[:1])
    r = SimpleNamespace(name=exp.scenarios[0].name, schedule="dualpipe", step_time_ms=1.0, tokens_per_s=1.0, mfu=0.3,
                        bubble_fraction=0.0, peak_activation_gib=1.0, memory_gib=1.0, fits=True, bottlenecks=[],
                        moe={}, tokens_per_s_per_gpu=1500.0, cost_model="roofline", network_mode="fluid",
                        cost_sources={}, profile=None)
    text = summary_markdown(one, [r])
    assert "## MFU two ways" in text and "| fp8 |" in text and "H800" in text


def test_a_runs_mfu_is_against_its_gemm_precisions_peak():
    """The results table's MFU and 'MFU two ways' executed figure are one number (an FP8 run's
    MFU against the FP8 peak, not the bf16 one)."""
    from moesim.costs.devices import gemm_peak_ratio

    h800 = get_device("H800")
    assert gemm_peak_ratio("H800", "fp8") == pytest.approx(h800.peak_flops["fp8"] / h800.peak_flops["bf16"])
    assert gemm_peak_ratio("H800", "bf16") == 1.0 and gemm_peak_ratio("no-such-gpu", "fp8") == 1.0
