"""Unit tests of the validation pieces: clock model, loader, host thread, eager collective loop,
recorded pipeline orders and their per-kernel table, MoE layer shapes, reports."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from moesim.errors import ConfigError
from moesim.ops import Attention
from moesim.schedules import generate
from lab.legacy_validate import build_context, load_measurements
from lab.legacy_validate.clocks import ClockModel, load_clock_model, window_flop_rate
from lab.legacy_validate.collectives import sized_step_latency_ns, host_interval_ns, predict_collective
from moesim.validate.measurements import Measurement
from lab.legacy_validate.moe import predict_moe, shape_of
from lab.legacy_validate.pipeline import MLPStageTable, predict_pipeline, schedule_from_orders
from lab.legacy_validate.prediction import Prediction
from lab.legacy_validate.report import error_bars, summarize


@pytest.fixture(scope="module")
def ctx():
    return build_context()


@pytest.fixture(scope="module")
def cases():
    return {c.case_id: c for c in load_measurements().cases}


def _case(kind: str, desc: dict, measured_ns: float = 1e6, repeats: int = 3, thermal: str = "as_found") -> Measurement:
    return Measurement("synthetic", kind, {**desc, "thermal": thermal}, measured_ns, measured_ns, measured_ns,
                       repeats, 0, {})


# -- clock model -----------------------------------------------------------------------------
def test_power_probe_gives_burst_ratio_and_window(ctx) -> None:
    clock = ctx.clock
    assert clock.burst_tflops == pytest.approx(789.7, abs=0.1)
    assert clock.sustained_tflops == pytest.approx(661.4, abs=0.1)
    assert clock.burst_window_ns == 85_000_000  # first throttled chunk 85 ms after the burst started


def test_only_the_compute_bound_share_speeds_up_at_boost() -> None:
    clock = ClockModel(800.0, 640.0, 85_000_000, 1000.0, "test")
    assert clock.scale_ns(1000.0, 1e6, "boost") == pytest.approx(800.0)      # fully compute bound
    assert clock.scale_ns(1000.0, 5e5, "boost") == pytest.approx(900.0)      # half of it
    assert clock.scale_ns(1000.0, 0.0, "boost") == 1000.0                    # memory bound
    assert clock.scale_ns(1000.0, 1e6, "sustained") == 1000.0
    with pytest.raises(ConfigError, match="clock state"):
        clock.scale_ns(1.0, 1.0, "turbo")


def test_a_given_clock_bound_share_replaces_the_tensor_core_share() -> None:
    clock = ClockModel(800.0, 640.0, 85_000_000, 1000.0, "test")
    assert clock.scale_ns(1000.0, 5e5, "boost", clock_bound_share=1.0) == pytest.approx(800.0)
    assert clock.scale_ns(1000.0, 5e5, "boost", clock_bound_share=0.25) == pytest.approx(950.0)
    assert clock.scale_ns(1000.0, 5e5, "sustained", clock_bound_share=1.0) == 1000.0


def test_attention_at_boost_runs_at_the_burst_ratio(ctx) -> None:
    """Flash attention is clock-bound but for its memory time (q, k, v, o through HBM)."""
    op = Attention(2, 40, 40, 6144, 6144, 64)
    boost, sustained = ctx.attention("a", op, "boost"), ctx.attention("a", op, "sustained")
    memory_share = op.bytes / ctx.cost.measured_hbm_gbps() / sustained.duration_ns
    assert 0.02 < memory_share < 0.1
    expected = 1.0 - (1.0 - memory_share) * (1.0 - ctx.clock.sustained_over_burst)
    assert boost.duration_ns / sustained.duration_ns == pytest.approx(expected, rel=1e-4)


def test_window_rate_known_answers() -> None:
    one = [(0.0, 10.0, 100.0)]                        # 10 FLOP/ns while busy
    assert window_flop_rate(one, 10.0, 100, 50.0) == pytest.approx(10.0)      # back to back
    assert window_flop_rate(one, 20.0, 100, 50.0) == pytest.approx(6.0)       # best window: 3 of 5 periods busy
    assert window_flop_rate(one, 10.0, 2, 50.0) == pytest.approx(200.0 / 50)  # run shorter than the window
    assert window_flop_rate([], 10.0, 5, 50.0) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(1, 50), st.floats(0, 1e4)), min_size=1, max_size=6),
       st.integers(1, 20), st.floats(1, 2000))
def test_window_rate_is_bounded_by_peak_and_total(spans, reps, window) -> None:
    busy, t = [], 0.0
    for gap, dur, flops in spans:  # non-overlapping kernels, as on one stream
        busy.append((t + gap, t + gap + dur, flops))
        t += gap + dur
    rate = window_flop_rate(busy, t, reps, window)
    peak = max(f / (e - s) for s, e, f in busy)
    total = reps * sum(f for _, _, f in busy)
    assert rate <= peak * (1 + 1e-9) + 1e-9
    assert rate <= total / window * (1 + 1e-9) + 1e-9
    covering = max(1, math.ceil(reps * t / window))  # that many windows cover the run: one holds >= 1/k of it
    assert rate >= total / covering / window * (1 - 1e-9) - 1e-9


def test_state_rules() -> None:
    clock = ClockModel(800.0, 640.0, 100, 1000.0, "test")
    gemm = [[(0.0, 10.0, 10.0 * 700e3)]]                      # 700 FLOP/ns > the 640 cap
    light = [[(0.0, 10.0, 10.0 * 600e3)]]
    assert clock.state_for("hot", light, 10.0, 1) == "sustained"   # pre-heated on purpose
    assert clock.state_for("as_found", gemm, 10.0, 5) == "boost"   # 50 ns of work in a 100 ns window
    assert clock.state_for("as_found", gemm, 10.0, 50) == "sustained"
    assert clock.state_for("as_found", light, 10.0, 50) == "boost"


def test_bad_power_probe_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "probe.json"
    p.write_text(json.dumps({"chunks": [{"phase": "sustained", "t_s": 0.0, "tflops": 600.0}]}))
    with pytest.raises(ConfigError, match="burst"):
        load_clock_model(1.0, p)
    with pytest.raises(ConfigError, match="no file"):
        load_clock_model(1.0, tmp_path / "missing.json")


# -- loader ----------------------------------------------------------------------------------
def test_shipped_measurements_and_provenance() -> None:
    ms = load_measurements()
    assert (ms.device, ms.driver, ms.torch) == ("NVIDIA H200", "580.159.04", "2.11.0+cu130")
    # sessions 0-2: the first 101 measurements; later sessions are appended, never edited
    assert sum(c.session <= 2 for c in ms.cases) == 101 and len(ms.sessions) >= 3
    assert ms.session(1).gpu_count == 1 and ms.session(0).gpu_count == 2
    assert {c.thermal for c in ms.cases if c.session <= 2} == {"as_found", "hot", "steady"}


@pytest.mark.parametrize("sample, field", [
    ({"id": "a", "kind": "fft", "description": {}, "measured": {"time_ns": 1}}, "samples[0].kind"),
    ({"id": "a", "kind": "gemm", "description": {}}, "samples[0].measured"),
    ({"id": "a", "kind": "gemm", "description": {}, "measured": {"time_ns": 0}}, "samples[0].measured.time_ns"),
])
def test_malformed_files_name_the_field(tmp_path: Path, sample: dict, field: str) -> None:
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"samples": [sample]}))
    with pytest.raises(ConfigError) as err:
        load_measurements(p)
    assert err.value.field == field


# -- collectives: the eager loop on the engine ----------------------------------------------
def test_small_collective_is_host_bound_large_one_device_bound(ctx) -> None:
    small = predict_collective(ctx, _case("collective", {"collective": "all_reduce", "num_ranks": 2, "nbytes": 65536}))
    assert small.predicted_ns == host_interval_ns(ctx, "all_reduce", 2)
    big = predict_collective(ctx, _case("collective", {"collective": "all_reduce", "num_ranks": 2, "nbytes": 2**30}))
    # ring all-reduce on two GPUs: two steps of half the buffer each way at the calibrated link
    # rate, each after the size-dependent latency that brings it to the measured device time
    rate = 450.0 * ctx.cost.link_efficiency("nvlink")
    transfer = 2 * (600 + 2**29 / rate)
    expected = max(transfer, ctx.cost.collective_ns("all_reduce", 2, 2**30))
    assert big.predicted_ns == pytest.approx(expected, abs=4)
    assert big.components["device_ns"] == big.predicted_ns


def test_mid_size_collective_takes_the_measured_device_time(ctx) -> None:
    """48 MB: NCCL is well below the large-message rate; the engine run takes the measured curve."""
    nbytes = 48_000_000
    step = sized_step_latency_ns(ctx, "all_to_all", 2, float(nbytes))
    assert step > 1000  # far above the fitted per-step latency: the bandwidth ramp
    p = predict_collective(ctx, _case("collective", {"collective": "all_to_all", "num_ranks": 2, "nbytes": nbytes}))
    assert p.components["device_ns"] == pytest.approx(ctx.cost.collective_ns("all_to_all", 2, nbytes), abs=2)


def test_four_rank_collective_runs_on_the_nvswitch_board(ctx) -> None:
    p = predict_collective(ctx, _case("collective", {"collective": "all_to_all", "num_ranks": 4, "nbytes": 2**30}))
    assert "dgx_h200" in p.method
    ratio = p.predicted_ns / ctx.cost.collective_ns("all_to_all", 4, 2**30)
    assert 0.8 < ratio < 1.25  # the engine's lowering against the measured 4-GPU curve


# -- pipelines -------------------------------------------------------------------------------
@pytest.mark.parametrize("case_id, name, chunks", [
    ("pipeline_comm_heavy_gpipe", "gpipe", None), ("pipeline_comm_heavy_1f1b", "1f1b", None),
    ("pipeline_comm_heavy_interleaved", "interleaved", 2)])
def test_recorded_orders_are_the_schedules_moesim_generates(cases, case_id: str, name: str, chunks) -> None:
    d = cases[case_id].description
    recorded = schedule_from_orders(d["orders"], d["schedule"], d["num_chunks_per_rank"])
    assert recorded.steps == generate(name, 2, 8, chunks).steps


def test_bad_order_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="orders"):
        schedule_from_orders([["F0.0", "X0.0"]], "custom", 1)


def test_mlp_table_kernels(ctx) -> None:
    sched = generate("gpipe", 2, 3)
    table = MLPStageTable(ctx, sched, tokens=256, hidden=512, ffn=1024, blocks_per_stage=2, state="sustained")
    first0 = [k.name for k in table.backward_kernels(0, accumulate=False)]
    later1 = [k.name for k in table.backward_kernels(1, accumulate=True)]
    assert first0.count("fc1.dgrad") == 1            # stage 0's first block needs no input gradient
    assert later1.count("fc1.dgrad") == 2 and later1.count("fc2.accumulate") == 2
    assert [k.name for k in table.kernels(sched.steps[0][0])] == ["fc1", "gelu", "fc2"] * 2
    assert table.send_bytes(sched.steps[0][0]) == 2 * 256 * 512
    fwd = table.work(sched.steps[0][0])
    assert fwd.flops == 2 * (2 * 256 * 512 * 1024) * 2


def test_pipeline_step_is_at_least_the_busiest_gpu(ctx, cases) -> None:
    p = predict_pipeline(ctx, cases["pipeline_comm_heavy_1f1b"])
    assert p.predicted_ns >= max(p.components["rank0_compute_ns"], p.components["rank1_compute_ns"])
    assert p.clock_state == "boost"
    assert predict_pipeline(ctx, cases["pipeline_compute_heavy_gpipe"]).clock_state == "sustained"


# -- MoE layers ------------------------------------------------------------------------------
def test_moe_shape_from_counts(cases) -> None:
    s = shape_of(cases["moe_t2048_zipf_contiguous"])
    assert s.num_ranks == 2 and s.sent_rows(0) == 2048 * 2 and s.sent_rows(1) == 2048 * 2
    assert s.expert_rows(0) == [2861, 1675, 1024, 734]
    matrix = s.dispatch_bytes()
    assert matrix[0][1] == (324 + 254 + 214 + 180) * 4096 * 2


def test_moe_host_thread_charges_each_calls_measured_host_time(ctx, cases) -> None:
    """Per rank: 3 index_select, 2 (empty + all_to_all_single with splits), a slice and a
    swiglu_ffn call per expert with tokens, cat, zeros, broadcast mul, index_add_."""
    case = cases["moe_t2048_uniform_contiguous"]
    experts = sum(1 for n in shape_of(case).expert_rows(0) if n > 0)
    h = ctx.host_ns
    swiglu = 5 * max(1, round(h("swiglu_ffn") / 5))
    expected = (3 * h("index_select") + 2 * (h("empty") + h("all_to_all_single_splits")) + experts * (h("slice") + swiglu)
                + h("cat") + h("zeros") + h("mul_broadcast") + h("index_add_"))
    p = predict_moe(ctx, case)
    assert p.components["rank0_host_ns"] == pytest.approx(expected, abs=5)
    assert h("swiglu_ffn") > h("index_select") > h("empty")


def test_moe_unpermute_uses_the_measured_index_add(ctx, cases) -> None:
    p = predict_moe(ctx, cases["moe_t8192_uniform_contiguous"])
    rows = shape_of(cases["moe_t8192_uniform_contiguous"]).sent_rows(0)
    index_add = ctx.cost.memory_ns("permute", rows * (4.0 * 4096 + 8), "index_add")
    assert index_add > 2 * ctx.cost.memory_ns("permute", rows * (4.0 * 4096 + 8), "scatter")
    assert p.components["rank0_unpermute_ns"] >= index_add


def test_moe_layer_prediction_structure(ctx, cases) -> None:
    p = predict_moe(ctx, cases["moe_t8192_zipf_contiguous"])
    c = p.components
    assert c["rank0_experts_ns"] > 2 * c["rank1_experts_ns"]   # the hot experts sit on rank 0
    assert p.predicted_ns > c["dispatch_ns"] + c["rank0_experts_ns"] + c["combine_ns"]


# -- reports ---------------------------------------------------------------------------------
def test_summary_and_error_bars_known_answers() -> None:
    preds = [Prediction(f"c{i}", k, "as_found", 100.0, 100.0 + e, "m", "n/a")
             for i, (k, e) in enumerate([("a", 1.0), ("a", -20.0), ("b", 4.0)])]
    groups = summarize(preds)
    assert [g.name for g in groups] == ["all", "a", "b"]
    assert groups[0].median_abs == pytest.approx(0.04) and groups[0].max_abs == pytest.approx(0.2)
    assert groups[0].worst_case == "c1" and groups[0].over_target == 1
    bars = error_bars(preds, "cmd")
    assert bars["cases"] == {"c0": 0.015, "c1": 0.205, "c2": 0.045} and bars["median_abs_error"] == 0.045


def test_context_rejects_bad_input(ctx) -> None:
    with pytest.raises(ConfigError, match="num_ranks"):
        ctx.topology(1)
    with pytest.raises(ConfigError, match="--mode"):
        build_context(mode="quantum")
    assert build_context(mode="analytical").label.endswith("engine mode analytical")
