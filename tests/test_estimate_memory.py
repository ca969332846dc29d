"""The size estimate's memory (peak RSS: baseline + simulation + exports) and the refusal that
compares it with the machine's available memory."""
from __future__ import annotations

import dataclasses

import pytest

from moesim.errors import ConfigError
from moesim.experiment import estimate
from moesim.experiment.estimate import (CONSTANTS, GIB, MemoryConstants, RunEstimate, check_budget, count_run,
                                        estimate_run, exchange_flows, flows_in_flight, group_width, link_samples,
                                        memory_bytes, parts_of)
from moesim.experiment.estimate_fit import fit_memory
from moesim.experiment import MoEOptions, ParallelPlan, Scenario
from moesim.moe.routing import RoutingConfig
from moesim.workload.presets import get_model

UNIT = MemoryConstants(baseline_bytes=100e6, sim_fixed=10e6, sim_per_task=1000.0, sim_per_flow=500.0,
                       sim_per_link_sample=30.0, sim_per_exchange_flow_in_flight=2.0, trace_fixed=1e6,
                       trace_per_task=3000.0, trace_per_flow=700.0, trace_per_link_sample=900.0, plots_fixed=40e6,
                       plots_per_task=100.0, plots_per_flow=10.0, plots_per_link_sample=20.0)


def small_moe(ep: int = 8) -> Scenario:
    spec = dataclasses.replace(get_model("qwen3-30b-a3b"), num_layers=2, seq_len=1024)
    return Scenario(name="moe_small", topology="dgx_h100", nodes=1, model=spec,
                    plan=ParallelPlan(dp=ep, ep=ep, num_microbatches=2),
                    moe=MoEOptions(routing=RoutingConfig(kind="uniform")))


def test_memory_is_baseline_plus_simulation_plus_the_exports_asked_for() -> None:
    counts = dict(tasks=1000, flows=2000, exchange_flows=100, width=8, in_flight=56)
    # link samples: 100 exchange flows x 8 ranks = 800
    sim = 100e6 + 10e6 + 1000 * 1000.0 + 2000 * 500.0 + 800 * 30.0 + 100 * 56 * 2.0   # 112,035,200
    trace = 1e6 + 1000 * 3000.0 + 2000 * 700.0 + 800 * 900.0                         # 6,120,000
    plots = 40e6 + 1000 * 100.0 + 2000 * 10.0 + 800 * 20.0                           # 40,136,000
    assert memory_bytes(UNIT, **counts) == 112_035_200.0 == sim
    assert memory_bytes(UNIT, **counts, trace=True) == 118_155_200.0 == sim + trace
    assert memory_bytes(UNIT, **counts, plots=True) == 152_171_200.0 == sim + plots
    assert memory_bytes(UNIT, **counts, trace=True, plots=True) == 158_291_200.0


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_estimate_run_applies_the_formula_to_its_counts_and_splits_the_exports(backend, monkeypatch) -> None:
    """The numpy network holds a working set per flow in flight and stores every link sample;
    the compiled one neither, and no sample unless a trace or the series is asked for."""
    from moesim.engine.compiled import BACKEND_ENV, compiled_available

    if backend == "compiled" and not compiled_available():
        pytest.skip("moesim.engine._fluidcore not built")
    monkeypatch.setenv(BACKEND_ENV, backend)
    parts = parts_of(small_moe())
    constants = dataclasses.replace(CONSTANTS, memory=UNIT)
    tasks, flows = count_run(parts)
    ex, w, k = exchange_flows(parts), group_width(parts), flows_in_flight(parts)
    assert (w, k, link_samples(parts)) == (8, 56, ex * 8)
    held = k if backend == "numpy" else 0
    est = estimate_run(parts, constants, trace=True, plots=True)
    assert est.memory_bytes == memory_bytes(UNIT, tasks, flows, ex, w, held, trace=True, plots=True)
    assert est.trace_bytes == pytest.approx(1e6 + 3000.0 * tasks + 700.0 * flows + 900.0 * ex * w, rel=1e-12)
    assert est.plots_bytes == pytest.approx(40e6 + 100.0 * tasks + 10.0 * flows + 20.0 * ex * w, rel=1e-12)
    bare = estimate_run(parts, constants)
    assert bare.trace_bytes == bare.plots_bytes == 0.0
    assert bare.memory_bytes == pytest.approx(est.memory_bytes - est.trace_bytes - est.plots_bytes, rel=1e-12)
    integrals_only = estimate_run(parts, constants, link_series=False)
    stored = w if backend == "numpy" else 0
    assert integrals_only.memory_bytes == memory_bytes(UNIT, tasks, flows, ex, stored, held)


def test_fit_memory_recovers_the_constants_of_exact_rows() -> None:
    rows = []
    for tasks, flows, ex, w in [(600, 200, 0, 2), (5000, 2500, 0, 16), (3000, 4000, 3000, 8), (20000, 9000, 0, 8),
                                (9000, 60000, 55000, 16), (40000, 300000, 290000, 32), (1200, 100, 40, 1)]:
        k = w * (w - 1) if ex > 1000 else w
        for trace in (False, True):
            for plots in (False, True):
                rows.append((tasks, flows, ex, w, k, trace, plots,
                             memory_bytes(UNIT, tasks, flows, ex, w, k, trace, plots)))
    fitted = fit_memory(rows, baseline_bytes=100e6)
    for name, value in dataclasses.asdict(UNIT).items():
        assert getattr(fitted, name) == pytest.approx(value, rel=1e-6, abs=1e-3), name


def big(trace_gib: float = 2.0, plots_gib: float = 0.5) -> RunEstimate:
    return RunEstimate(tasks=3_000_000, flows=9_000_000, events=0, memory_bytes=(3.5 + trace_gib + plots_gib) * GIB,
                       wall_s=100.0, trace_bytes=trace_gib * GIB, plots_bytes=plots_gib * GIB)


def test_a_refused_run_says_what_it_needs_against_what_the_machine_has(monkeypatch) -> None:
    monkeypatch.setattr(estimate, "available_memory_bytes", lambda: (4.0 * GIB, "available (test)"))
    with pytest.raises(ConfigError) as err:
        check_budget(big())
    assert str(err.value) == (
        "scenario: too large to simulate here: needs ~6.0 GiB of memory (simulation 3.5 GiB + trace 2.0 GiB + plots "
        "0.50 GiB; ~3,000,000 tasks, ~9,000,000 flows) but this machine has 4.0 GiB available (test) (fix: lower it "
        "with --no-trace / --no-plots (a trace and plots take 2.5 GiB), fewer microbatches (plan.num_microbatches), "
        "the reduced engine for an expert-parallel run with tp=1 (--set engine=reduced; docs/scale.md), "
        "network='analytical', fewer layers or fewer GPUs, or pass --force to run anyway)")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(estimate, "available_memory_bytes", lambda: (3.0 * GIB, "available (test)"))
    with pytest.raises(ConfigError) as err:
        check_budget(big(0.0, 0.0))
    assert "needs ~3.5 GiB of memory (simulation 3.5 GiB; " in str(err.value) and "--no-trace" not in str(err.value)
    assert "this machine has 3.0 GiB available (test)" in str(err.value)
    check_budget(big(0.0, 0.0), max_memory_bytes=4.0 * GIB)   # an explicit limit wins over the machine's
    check_budget(big(), force=True)
    monkeypatch.setattr(estimate, "available_memory_bytes", lambda: (64.0 * GIB, "available (test)"))
    check_budget(big())


def test_available_memory_reads_meminfo_or_falls_back_to_the_fixed_limit(monkeypatch) -> None:
    import builtins
    import os

    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path) == "/proc/meminfo":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "sysconf", lambda name: 4096 if name == "SC_PAGE_SIZE" else 1000)
    assert estimate.available_memory_bytes() == (4_096_000.0, "available (free physical pages)")

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", no_sysconf)
    assert estimate.available_memory_bytes() == (8.0 * GIB, "the fixed limit (available memory unknown here)")


def test_meminfo_figure_is_memavailable_plus_this_process(monkeypatch, tmp_path) -> None:
    import builtins
    import os

    files = {"/proc/meminfo": "MemTotal:  1000 kB\nMemAvailable:  2048 kB\n", "/proc/self/statm": "900 25 3 1 0 7 0\n"}
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path) in files:
            (tmp_path / "f").write_text(files[str(path)])
            return real_open(tmp_path / "f", *args, **kwargs)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "sysconf", lambda name: 4096)
    assert estimate.available_memory_bytes() == (2048 * 1024 + 25 * 4096.0, "available (MemAvailable + this process)")


def test_the_run_budget_counts_the_exports_it_will_write(monkeypatch, tmp_path) -> None:
    from moesim.experiment.experiment import Experiment
    from moesim.experiment.runner import run_experiment

    scn = small_moe()
    with_exports = estimate_run(scn, trace=True, plots=True)
    bare = estimate_run(scn)
    limit = (bare.memory_bytes + with_exports.memory_bytes) / 2   # the simulation fits, the exports do not
    monkeypatch.setattr(estimate, "available_memory_bytes", lambda: (limit, "available (test)"))
    with pytest.raises(ConfigError, match="--no-trace / --no-plots"):
        run_experiment(Experiment(name="e", scenarios=(scn,)), tmp_path / "a")
    results, _ = run_experiment(Experiment(name="e", scenarios=(scn,)), tmp_path / "b", trace=False, plots=False)
    assert results[0].num_tasks > 0


def test_moesim_run_refuses_in_one_line_and_runs_without_the_exports(monkeypatch, tmp_path) -> None:
    import textwrap

    from typer.testing import CliRunner

    from moesim.cli import app

    exp_file = tmp_path / "exp.py"
    exp_file.write_text(textwrap.dedent("""
        from moesim.experiment import Experiment, ParallelPlan, Scenario
        from moesim.workload.transformer import TransformerSpec
        TINY = TransformerSpec(name="tiny", num_layers=4, hidden=512, num_heads=8, num_kv_heads=8, head_dim=64,
                               ffn_hidden=2048, vocab=32000, seq_len=512)
        SCENARIO = Scenario(name="only", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=2, pp=4, num_microbatches=4))
        EXPERIMENT = Experiment(name="cli", scenarios=(SCENARIO,))
    """))
    scn = Scenario(name="only", topology="dgx_h100", plan=ParallelPlan(tp=2, pp=4, num_microbatches=4),
                   model=dataclasses.replace(get_model("llama3-8b"), name="tiny", num_layers=4, hidden=512, num_heads=8,
                                             num_kv_heads=8, head_dim=64, ffn_hidden=2048, vocab=32000, seq_len=512))
    bare, full = estimate_run(scn), estimate_run(scn, trace=True, plots=True)
    limit = (bare.memory_bytes + full.memory_bytes) / 2
    monkeypatch.setattr(estimate, "available_memory_bytes", lambda: (limit, "available (test)"))
    runner = CliRunner()
    refused = runner.invoke(app, ["run", str(exp_file), "--out", str(tmp_path / "a")])
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: scenario: too large to simulate here: needs ~"), lines
    assert f"this machine has {limit / GIB:.2f} GiB available (test)" in lines[0] and "--no-trace" in lines[0]
    ok = runner.invoke(app, ["run", str(exp_file), "--out", str(tmp_path / "b"), "--no-trace", "--no-plots"])
    assert ok.exit_code == 0, ok.output
