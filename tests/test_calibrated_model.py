"""The calibrated cost model: exact at measured points, monotone between them, sensible beyond."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.costs.base import CostModel
from moesim.costs.calibrated import CalibratedCostModel
from moesim.costs.fitting import Envelope, LogGrid, bus_factor, collective_steps, fit_latency_bandwidth
from moesim.costs.profile import load_profile, profile_from_dict
from moesim.costs.roofline import make_cost_model
from moesim.errors import ConfigError
from moesim.ops import Attention, Gemm, MemoryOp


@pytest.fixture(scope="module")
def model() -> CalibratedCostModel:
    return CalibratedCostModel(load_profile("h200_sxm"))


@pytest.fixture(scope="module")
def with_fallback() -> CalibratedCostModel:
    return CalibratedCostModel(load_profile("h200_sxm"), fallback=make_cost_model("H200"))


HEADER = {"schema_version": 1, "device": "NVIDIA H200", "gpu_count": 1, "driver": "d", "cuda": "c", "nccl": "n",
          "torch": "t", "date": "2026-01-01T00:00:00Z", "command": "synthetic", "notes": "test"}


def synthetic(times: dict[tuple[int, int, int], float]) -> CalibratedCostModel:
    rows = [{"op": "gemm", "dtype": "bf16", "layout": "fwd", "m": m, "n": n, "k": k, "time_ns": t, "repeats": 5}
            for (m, n, k), t in times.items()]
    return CalibratedCostModel(profile_from_dict({**HEADER, "samples": rows}, name="synthetic"))


# -- protocol and identity -----------------------------------------------------------------
def test_implements_the_cost_model_protocol(model: CalibratedCostModel) -> None:
    assert isinstance(model, CostModel)
    assert model.calibrated is True
    assert model.name == "h200_sxm profile (calibrated, 2026-11-28)"
    assert model.device == "H200"
    assert 130 * 2**30 < model.hbm_bytes < 141 * 2**30  # usable memory torch reported
    assert model.peak_flops == pytest.approx(989e12)


# -- exact at grid points ------------------------------------------------------------------
def test_gemm_returns_the_measured_median_at_grid_points(model: CalibratedCostModel) -> None:
    rows = model.profile.select("gemm", dtype="bf16", layout="fwd")
    for row in rows[::7]:
        assert model.gemm_ns(row["m"], row["n"], row["k"], "bf16", "fwd") == pytest.approx(row["time_ns"], rel=1e-9)
    fp8 = model.profile.select("gemm", dtype="fp8")[5]
    assert model.gemm_ns(fp8["m"], fp8["n"], fp8["k"], "fp8", "fwd") == pytest.approx(fp8["time_ns"], rel=1e-9)


def _cell_medians(rows, keys: tuple[str, ...]) -> dict[tuple, float]:
    """Measured time per cell; a cell measured by several runs is their geometric mean."""
    logs: dict[tuple, list[float]] = {}
    for r in rows:
        logs.setdefault(tuple(r[k] for k in keys), []).append(math.log(r["time_ns"]))
    return {cell: math.exp(sum(v) / len(v)) for cell, v in logs.items()}


def test_attention_returns_the_measured_median_at_grid_points(model: CalibratedCostModel) -> None:
    plain = [r for r in model.profile.select("attention") if not r.get("call")]   # enable_gqa rows price Attention.call
    cells = _cell_medians(plain, ("direction", "batch", "heads", "seq", "head_dim"))
    # batch-1 cells were measured by two runs with the same heating; the model averages them
    assert len(model.profile.select("attention", direction="fwd", batch=1, heads=64, seq=4096, head_dim=64)) == 2
    for (direction, batch, heads, seq, head_dim), t in list(cells.items())[::11]:
        op = Attention(batch=batch, heads=heads, kv_heads=heads, seq_q=seq, seq_kv=seq, head_dim=head_dim, causal=True,
                       backward=direction == "bwd")
        assert model.compute_ns(op) == pytest.approx(t, abs=1.0)


def test_attention_keeps_batch_and_heads_apart(model: CalibratedCostModel) -> None:
    """Measured (2, 32, s) and (1, 64, s) differ; the model returns each, not one for both."""
    two = model.profile.select("attention", direction="fwd", batch=2, heads=32, seq=2048, head_dim=64)[0]["time_ns"]
    one = _cell_medians(model.profile.select("attention", direction="fwd", batch=1, heads=64, seq=2048, head_dim=64),
                        ("seq",))[(2048,)]
    assert two != pytest.approx(one, rel=0.02)
    assert model.compute_ns(Attention(2, 32, 32, 2048, 2048, 64)) == pytest.approx(two, abs=1.0)
    assert model.compute_ns(Attention(1, 64, 64, 2048, 2048, 64)) == pytest.approx(one, abs=1.0)


def test_memory_and_collectives_return_the_measured_median(model: CalibratedCostModel) -> None:
    for cache in ("cold", "warm"):
        rows = [r for r in model.profile.select("memory", cache=cache) if "tokens" not in r]   # not moe_kernels rows
        cells = _cell_medians(rows, ("kind", "variant", "nbytes"))
        assert len(cells) > 50
        for (kind, variant, nbytes), t in list(cells.items())[::9]:
            assert model.memory_ns(kind, nbytes, variant, cache) == pytest.approx(t, rel=1e-9)
    for row in model.profile.select("collective", mode="eager")[::5]:
        got = model.collective_ns(row["collective"], row["num_ranks"], row["nbytes"], mode="eager")
        assert abs(got - row["time_ns"]) <= 1.0


def test_memory_kind_averages_its_variants(model: CalibratedCostModel) -> None:
    gather, scatter = model.memory_ns("permute", 2**26, "gather"), model.memory_ns("permute", 2**26, "scatter")
    assert model.compute_ns(MemoryOp("permute", 2**26)) == round((gather + scatter) / 2)  # index_add: by name only


def test_index_add_is_a_measured_scatter_add_several_times_index_copy(model: CalibratedCostModel) -> None:
    for nbytes in (2**25, 2**28):
        ratio = model.memory_ns("permute", nbytes, "index_add") / model.memory_ns("permute", nbytes, "scatter")
        assert 2.0 < ratio < 4.0  # bf16 atomics, two source rows per destination row
    assert 3000.0 < 2**30 / model.memory_ns("copy", 2**30, "zeros") < 4300.0  # a fill: GB/s of bytes written
    with pytest.raises(ConfigError, match="cache"):
        model.memory_ns("copy", 2**20, "copy", cache="hot")


def test_host_table_has_per_call_costs(model: CalibratedCostModel) -> None:
    calls = model.host_calls()
    assert {"mm", "index_select", "index_add_", "swiglu_ffn", "all_to_all_single_splits", "empty"} <= set(calls)
    assert model.host_ns("empty") < model.host_ns("launch_add1") < model.host_ns("mm") < model.host_ns("swiglu_ffn")
    assert model.host_ns("not_measured") == model.launch_overhead_ns()


def test_collective_efficiency_grows_with_size(model: CalibratedCostModel) -> None:
    effs = [model.collective_efficiency("all_reduce", 2, 2**k) for k in (20, 24, 26, 28, 30)]
    assert effs == sorted(effs) and effs[0] < 0.3 and 0.6 < effs[-1] <= 1.0
    assert effs[2] < 0.9 * model.link_efficiency("nvlink")  # 64 MiB: well below the large-message figure


def test_uneven_all_to_all_lies_between_its_measured_curves(model: CalibratedCostModel) -> None:
    """Even splits give the all_to_all curve, the profile's split the all_to_all_v curve, one-way send/recv."""
    n = 2**28
    even = model.all_to_all_v_ns([[n / 2, n / 2], [n / 2, n / 2]])
    assert even == pytest.approx(model.collective_ns("all_to_all", 2, n), rel=1e-6)
    zipf = model.all_to_all_v_ns([[0.8 * n, 0.2 * n], [0.8 * n, 0.2 * n]])
    assert zipf == pytest.approx(model.collective_ns("all_to_all_v", 2, n), rel=1e-6)
    one_way = model.all_to_all_v_ns([[0.0, n / 2], [0.0, 0.0]])
    assert one_way == pytest.approx(model.collective_ns("send_recv", 2, n / 2), rel=1e-6)
    middle = model.all_to_all_v_ns([[0.0, n / 2], [n / 4, 0.0]])
    assert min(one_way, even) <= middle <= max(one_way, even)


# -- interpolation -------------------------------------------------------------------------
def test_log_grid_is_exact_for_power_laws() -> None:
    axes = [(64.0, 512.0, 4096.0), (1024.0, 8192.0), (1024.0, 2048.0, 16384.0)]
    law = lambda m, n, k: 3.0 * m**0.5 * n * k**0.8  # noqa: E731  (linear in log space)
    grid = LogGrid(axes, np.array([[[law(m, n, k) for k in axes[2]] for n in axes[1]] for m in axes[0]]))
    for point in [(100.0, 3000.0, 5000.0), (64.0, 8192.0, 16384.0), (3000.0, 1024.0, 1500.0)]:
        assert grid(point) == pytest.approx(law(*point), rel=1e-12)
    assert grid((10.0, 1e6, 1.0)) == pytest.approx(law(64.0, 8192.0, 1024.0), rel=1e-12)  # clamped


increments = st.lists(st.floats(min_value=0.0, max_value=1e5, allow_nan=False), min_size=3, max_size=3)


@settings(max_examples=60, deadline=None)
@given(a=increments, b=increments, c=increments, frac=st.tuples(*[st.floats(0.0, 1.0)] * 4))
def test_monotone_data_give_monotone_interpolation(a, b, c, frac) -> None:
    ms, ns, ks = (64, 512, 4096), (1024, 2048, 8192), (1024, 4096, 16384)
    ca, cb, cc = np.cumsum(a), np.cumsum(b), np.cumsum(c)
    times = {(m, n, k): 1000.0 + ca[i] + cb[j] + cc[l]
             for i, m in enumerate(ms) for j, n in enumerate(ns) for l, k in enumerate(ks)}
    mdl = synthetic(times)
    lo_m, hi_m = sorted(64 * 64 ** f for f in frac[:2])
    n, k = 1024 * 8 ** frac[2], 1024 * 16 ** frac[3]
    assert mdl.gemm_ns(lo_m, n, k) <= mdl.gemm_ns(hi_m, n, k) * (1 + 1e-12)
    assert mdl.gemm_ns(lo_m, 1024, k) <= mdl.gemm_ns(lo_m, n, k) * (1 + 1e-12)
    assert mdl.gemm_ns(lo_m, n, 1024) <= mdl.gemm_ns(lo_m, n, k) * (1 + 1e-12)


# -- extrapolation -------------------------------------------------------------------------
def test_gemm_extrapolation_is_positive_increasing_and_linear_for_large_m(model: CalibratedCostModel) -> None:
    times = [model.compute_ns(Gemm(m, 8192, 8192)) for m in (32768, 65536, 131072, 262144)]
    assert times == sorted(times)
    assert times[3] / times[2] == pytest.approx(2.0, rel=0.02)
    corner = model.compute_ns(Gemm(64, 1024, 1024))  # the smallest measured shape
    assert 1 <= model.compute_ns(Gemm(1, 1, 1)) <= model.compute_ns(Gemm(8, 1024, 1024)) <= corner


def test_memory_extrapolation_is_positive_and_increasing(model: CalibratedCostModel) -> None:
    sizes = [1, 2**10, 2**16, 2**33, 2**34, 2**36]
    times = [model.compute_ns(MemoryOp("copy", b)) for b in sizes]
    assert all(t >= 1 for t in times) and times == sorted(times)
    assert times[-1] / times[-2] == pytest.approx(4.0, rel=0.02)  # bandwidth-bound beyond 4 GiB


def test_attention_scales_with_flops_beyond_the_grid(model: CalibratedCostModel) -> None:
    base = model.compute_ns(Attention(1, 128, 128, 16384, 16384, 128))  # at the measured token cap
    assert model.compute_ns(Attention(2, 128, 128, 16384, 16384, 128)) == pytest.approx(2 * base, rel=0.01)
    assert model.compute_ns(Attention(16, 128, 128, 16384, 16384, 128)) == pytest.approx(16 * base, rel=0.01)
    non_causal = model.compute_ns(Attention(1, 128, 128, 16384, 16384, 128, causal=False))
    assert non_causal == pytest.approx(2 * base, rel=0.01)


def test_grouped_gemm_uses_the_measured_grouped_kernel(model: CalibratedCostModel) -> None:
    row = model.profile.select("grouped_gemm", groups=8, m=1024, n=2048, k=4096)[0]
    got = model.compute_ns(Gemm(1024, 2048, 4096, groups=8))
    assert got == pytest.approx(row["time_ns"], rel=0.25)
    assert model.compute_ns(Gemm(1024, 2048, 4096, groups=16)) > got


# -- collectives -----------------------------------------------------------------------------
def test_collectives_at_unmeasured_rank_counts_scale_sensibly(model: CalibratedCostModel) -> None:
    sizes = [4096, 2**20, 2**26, 2**30, 2**32]
    times = [model.collective_ns("all_reduce", 8, b) for b in sizes]
    assert times == sorted(times)
    assert model.collective_ns("all_reduce", 8, 2**30) > model.collective_ns("all_reduce", 4, 2**30)
    busbw = 2**32 / model.collective_ns("all_reduce", 8, 2**32) * bus_factor("all_reduce", 8)
    assert busbw == pytest.approx(model.bus_bandwidth_gbps("all_reduce"), rel=0.05)
    assert model.collective_ns("broadcast", 8, 2**20) == model.collective_ns("all_gather", 8, 2**20)
    assert model.collective_ns("all_reduce", 1, 2**30) == 1


def test_eager_collectives_add_the_host_overhead(model: CalibratedCostModel) -> None:
    device = model.collective_ns("all_reduce", 8, 4096)
    eager = model.collective_ns("all_reduce", 8, 4096, mode="eager")
    assert eager - device == pytest.approx(model.host_overhead_ns("all_reduce"), abs=2)
    assert 0 < model.collective_ns("all_reduce", 2, 4096) < model.collective_ns("all_reduce", 2, 4096, mode="eager")


def test_link_efficiency_is_measured_bus_bandwidth_over_datasheet(model: CalibratedCostModel) -> None:
    eff = model.link_efficiency("nvlink")
    assert 0.0 < eff <= 1.0
    assert eff == pytest.approx(model.bus_bandwidth_gbps("all_reduce") / 450.0)
    assert model.link_efficiency("nvswitch") == eff


def test_step_latencies_add_up_to_the_fitted_latency(model: CalibratedCostModel) -> None:
    base, per_step = model._latency_fit["all_reduce"]
    for n in (2, 4, 8, 64):
        steps = collective_steps("all_reduce", n)
        total = steps * model.collective_step_latency_ns("all_reduce", n, "nvlink")
        assert total == pytest.approx(base + steps * per_step, abs=steps)
    assert model.p2p_latency_ns("nvlink") > 0


def test_overlap_slowdown_is_the_geometric_mean_of_measured_ratios(model: CalibratedCostModel) -> None:
    rows = model.profile.select("overlap", victim="gemm")
    expected = math.exp(sum(math.log(r["time_ns"] / r["alone_ns"]) for r in rows) / len(rows))
    assert model.overlap_slowdown() == pytest.approx(expected)
    assert model.overlap_slowdown() >= 1.0 and model.collective_overlap_slowdown() >= 1.0


def test_collective_steps_known_answers() -> None:
    assert [collective_steps("all_reduce", n) for n in (2, 4, 8)] == [2, 6, 14]
    assert [collective_steps("all_to_all", n) for n in (2, 8)] == [1, 7]
    assert collective_steps("send_recv", 8) == 1


# -- what the profile does not cover ---------------------------------------------------------
def test_unmeasured_things_raise_without_fallback(model: CalibratedCostModel) -> None:
    with pytest.raises(ConfigError) as err:
        model.compute_ns(Gemm(1024, 1024, 1024, dtype="fp32"))
    assert err.value.field == "dtype"
    with pytest.raises(ConfigError) as err:
        model.link_efficiency("ib")
    assert err.value.field == "link_kind"
    with pytest.raises(ConfigError):
        model.collective_ns("all_reduce", 2, 1024, mode="fast")


def test_fallback_answers_what_was_not_measured(with_fallback: CalibratedCostModel) -> None:
    fb = with_fallback.fallback
    op = Attention(1, 32, 32, 4096, 4096, 128, dtype="fp8")  # no fp8 attention in the profile
    assert with_fallback.compute_ns(op) == fb.compute_ns(op)
    assert "Attention" in with_fallback.fallback_ops
    assert with_fallback.link_efficiency("ib") == fb.link_efficiency("ib")
    assert with_fallback.p2p_latency_ns("pcie") == fb.p2p_latency_ns("pcie")
    assert with_fallback.compute_ns(Gemm(4096, 4096, 4096)) != fb.compute_ns(Gemm(4096, 4096, 4096))


# -- fitting helpers -------------------------------------------------------------------------
def test_fit_latency_bandwidth_recovers_a_line() -> None:
    sizes = [2.0**i for i in range(12, 31, 2)]
    lat, bw = fit_latency_bandwidth(sizes, [5000.0 + s / 300.0 for s in sizes])
    assert lat == pytest.approx(5000.0, rel=1e-6) and bw == pytest.approx(300.0, rel=1e-6)


def test_envelope_known_answer() -> None:
    env = Envelope.fit(flops=[2e6, 2e9], nbytes=[1e3, 1e6], times=[3000.0, 2e6])
    assert env.flops_per_ns == pytest.approx(1000.0)  # best achieved: 2e9 / 2e6
    assert env.latency_ns == pytest.approx(3000.0 - 2e6 / 1000.0)  # fastest run minus its compute
    assert env(0.0, 0.0) == pytest.approx(env.latency_ns)


def test_a_profile_without_collectives_defers_communication_to_the_fallback() -> None:
    times = {(m, n, k): 1000.0 + m * n * k / 1e6 for m in (64, 512) for n in (1024, 2048) for k in (1024, 2048)}
    rows = [{"op": "gemm", "dtype": "bf16", "m": m, "n": n, "k": k, "time_ns": t, "repeats": 5}
            for (m, n, k), t in times.items()]
    fb = make_cost_model("H200")
    mdl = CalibratedCostModel(profile_from_dict({**HEADER, "samples": rows}, name="gemm_only"), fallback=fb)
    assert mdl.link_efficiency("nvlink") == fb.link_efficiency("nvlink")
    assert mdl.p2p_latency_ns("nvlink") == fb.p2p_latency_ns("nvlink")
    assert mdl.overlap_slowdown() == fb.overlap_slowdown()
    assert mdl.compute_ns(Gemm(64, 1024, 1024)) == 1000 + round(64 * 1024 * 1024 / 1e6)
    with pytest.raises(ConfigError, match="not in the profile"):
        mdl.collective_ns("all_reduce", 8, 2**20)


def test_a_sliding_window_is_priced_as_a_block_skipping_kernel(model: CalibratedCostModel) -> None:
    """A window layer (causal=False, seq_kv = W < seq_q) costs the causal kernel at the query
    length times the tile law of :mod:`moesim.costs.attention_window` (FlexAttention on an H100,
    GPT-OSS's shape: window / causal 0.33 forward, 0.24 backward), and says it is a stand-in."""
    from moesim.costs.attention_window import band_blocks, window_ratio

    assert band_blocks(4096, 128) == 63 and band_blocks(4096, 4096) == 528 == 32 * 33 // 2
    assert window_ratio(4096, 128, "fwd") == pytest.approx(0.166 / 0.503, rel=0.01)
    assert window_ratio(4096, 128, "bwd") == pytest.approx(0.395 / 1.669, rel=0.01)
    ratios = [window_ratio(4096, w, "fwd") for w in (128, 512, 1024, 2048, 4096)]
    assert ratios == sorted(ratios) and ratios[-1] == 1.0
    for backward in (False, True):
        full = Attention(1, 64, 8, 4096, 4096, 64, causal=True, backward=backward)
        window = Attention(1, 64, 8, 4096, 128, 64, causal=False, backward=backward)
        ratio = window_ratio(4096, 128, "bwd" if backward else "fwd")
        assert model.compute_ns(window) == pytest.approx(model.compute_ns(full) * ratio, abs=1.0)
    assert any("Attention window 128" in f for f in model.fallback_ops)
    with pytest.raises(ConfigError, match="seq_kv"):
        model.compute_ns(Attention(1, 64, 8, 4096, 0, 64, causal=False))
