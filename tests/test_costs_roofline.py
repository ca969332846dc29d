"""Datasheet devices and the roofline cost model: exact times, bounds and properties."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.costs import DEVICES, CostModel, RooflineCostModel, RooflineEfficiency, get_device, make_cost_model
from moesim.costs.roofline import gemm_padded_flops
from moesim.errors import ConfigError
from moesim.ops import Attention, Gemm, MemoryOp

H100 = make_cost_model("H100")
FAST = settings(max_examples=80, deadline=None)


def test_registry_has_the_reference_gpus():
    assert set(DEVICES) == {"A100", "H100", "H100-PCIE", "H800", "H200", "B200", "GB200"}
    assert get_device("h200").hbm_bandwidth_gbps == 4800.0
    assert get_device("A100").peak_flops_for("bf16") == 312e12
    assert get_device("B200").peak_flops_for("fp4") == 9000e12


def test_unknown_device_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        get_device("V100")
    assert err.value.field == "device"
    assert "H100" in str(err.value) and "GB200" in str(err.value)


def test_missing_dtype_peak_names_the_field():
    with pytest.raises(ConfigError) as err:
        make_cost_model("A100").compute_ns(Gemm(1024, 1024, 1024, dtype="fp8"))
    assert err.value.field == "dtype"


def test_model_satisfies_protocol_and_labels_itself():
    assert isinstance(H100, CostModel)
    assert H100.name == "roofline:H100 (uncalibrated)"
    assert H100.calibrated is False
    assert H100.device == "H100"
    assert H100.peak_flops == 989.4e12
    assert H100.hbm_bytes == 80 * 2**30


def test_wave_aligned_gemm_runs_at_peak_times_efficiency():
    # 132 SMs: m = 128*132 gives 132*32 tiles = exactly 32 waves, k a multiple of 128.
    op = Gemm(m=128 * 132, n=4096, k=8192)
    expected = op.flops / (989.4e12 * 0.75) * 1e9 + 2000
    assert H100.terms(op).bound == "compute"
    assert H100.compute_ns(op) == math.ceil(expected)


def test_large_gemm_is_within_wave_quantisation_of_peak():
    op = Gemm(8192, 8192, 8192)
    ideal_ns = op.flops / (989.4e12 * 0.75) * 1e9
    assert ideal_ns < H100.compute_ns(op) < 1.04 * ideal_ns + 2000


def test_tiny_op_is_launch_bound():
    terms = H100.terms(Gemm(1, 1, 1))
    assert terms.bound == "launch"
    # One 128^3 tile on one SM (~0.75 us) is still shorter than the 2 us launch overhead.
    assert 2000 < H100.compute_ns(Gemm(1, 1, 1)) < 2 * 2000


def test_memory_op_time_is_bytes_over_bandwidth():
    op = MemoryOp("copy", 3.35e9)
    expected = 3.35e9 / (3350.0 * 0.90) + 2000  # GB/s == bytes/ns
    assert H100.compute_ns(op) == math.ceil(expected)
    assert H100.terms(op).bound == "memory"


def test_zero_launch_overhead_still_returns_at_least_one():
    model = RooflineCostModel(get_device("H100"), RooflineEfficiency(launch_overhead_ns=0))
    assert model.compute_ns(MemoryOp("copy", 0.0)) == 1
    assert model.compute_ns(Gemm(0, 0, 0)) == 1


def test_decode_gemm_is_memory_bound():
    # One token through a 4096x4096 weight: reading 32 MiB of weights dominates.
    assert H100.terms(Gemm(1, 4096, 4096)).bound == "memory"


def test_small_m_falls_off_peak():
    def achieved(m: int) -> float:
        op = Gemm(m, 4096, 4096)
        return op.flops / H100.compute_ns(op)

    assert achieved(16) < 0.2 * achieved(4096)


def test_split_k_uses_idle_sms():
    # One 128x128 output tile with a long K: split-K spreads K over all 132 SMs.
    op = Gemm(128, 128, 128 * 132)
    assert gemm_padded_flops(op, 128, 132) == 132 * 2.0 * 128 * 128 * 128


def test_attention_backward_slower_than_forward():
    fwd = Attention(1, 32, 8, 4096, 4096, 128)
    bwd = Attention(1, 32, 8, 4096, 4096, 128, backward=True)
    assert H100.compute_ns(bwd) > 2.5 * (H100.compute_ns(fwd) - 2000)


def test_link_efficiency_from_nccl_figures():
    assert H100.link_efficiency("nvlink") == pytest.approx(370 / 450)
    assert H100.link_efficiency("ib") == pytest.approx(0.96)
    with pytest.raises(ConfigError) as err:
        H100.link_efficiency("wifi")
    assert err.value.field == "link_kind"


def test_collective_latencies():
    assert H100.collective_step_latency_ns("all_reduce", 8, "nvlink") == 1900
    assert H100.collective_step_latency_ns("reduce_scatter", 16, "ib") == 4000
    assert H100.collective_step_latency_ns("all_to_all", 64, "ib") == H100.p2p_latency_ns("ib") == 2800
    assert H100.overlap_slowdown() == pytest.approx(1.1)
    with pytest.raises(ConfigError):
        H100.collective_step_latency_ns("gossip", 8, "nvlink")
    with pytest.raises(ConfigError) as err:
        H100.collective_step_latency_ns("all_reduce", 0, "nvlink")
    assert err.value.field == "num_ranks"


def test_efficiency_validation_names_the_field():
    with pytest.raises(ConfigError) as err:
        RooflineEfficiency(gemm_efficiency=1.5)
    assert err.value.field == "gemm_efficiency"
    with pytest.raises(ConfigError) as err:
        RooflineEfficiency(overlap_slowdown=0.9)
    assert err.value.field == "overlap_slowdown"
    with pytest.raises(ConfigError) as err:
        RooflineEfficiency(memory_efficiency={"copy": 0.9})
    assert err.value.field == "memory_efficiency"


def test_unknown_memory_kind_is_a_config_error():
    with pytest.raises(ConfigError):
        H100.compute_ns(MemoryOp("teleport", 100.0))


dims = st.integers(min_value=0, max_value=20000)


@FAST
@given(m=dims, n=dims, k=dims, dm=st.integers(0, 5000), dn=st.integers(0, 5000), dk=st.integers(0, 5000),
       groups=st.integers(1, 8), device=st.sampled_from(sorted(DEVICES)))
def test_gemm_time_is_monotonic_in_every_dimension(m, n, k, dm, dn, dk, groups, device):
    model = make_cost_model(device)
    base = model.compute_ns(Gemm(m, n, k, groups=groups))
    assert base >= 1
    assert model.compute_ns(Gemm(m + dm, n, k, groups=groups)) >= base
    assert model.compute_ns(Gemm(m, n + dn, k, groups=groups)) >= base
    assert model.compute_ns(Gemm(m, n, k + dk, groups=groups)) >= base
    assert model.compute_ns(Gemm(m, n, k, groups=groups + 1)) >= base


@FAST
@given(size=st.floats(0, 1e11), extra=st.floats(0, 1e10), kind=st.sampled_from(["copy", "norm", "topk", "permute"]))
def test_memory_time_is_monotonic_and_positive(size, extra, kind):
    small = H100.compute_ns(MemoryOp(kind, size))
    assert isinstance(small, int) and small >= 1
    assert H100.compute_ns(MemoryOp(kind, size + extra)) >= small


@FAST
@given(seq=st.integers(1, 8192), heads=st.sampled_from([1, 8, 32]), backward=st.booleans())
def test_attention_time_is_an_int_and_grows_with_sequence(seq, heads, backward):
    t = H100.compute_ns(Attention(1, heads, 1, seq, seq, 128, backward=backward))
    t2 = H100.compute_ns(Attention(1, heads, 1, seq + 64, seq + 64, 128, backward=backward))
    assert isinstance(t, int) and 1 <= t <= t2
