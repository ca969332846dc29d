"""MoE router / token-movement kernel costs and host time per op class (issue 13, part A2).

Synthetic profiles with known answers: a named memory variant prices from its own curve, a
missing one from the kind's generic curve or the fallback model and says so in
``fallback_ops``; ``host_op_ns`` maps ops to classes (a GEMM's dgrad and wgrad each half of the
class's backward); ``sync_ns`` reads the sync rows; bad rows fail naming the field; both
calibration sections run on the CPU in seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from moesim.costs.calibrated import CalibratedCostModel
from moesim.costs.host_classes import op_calls
from moesim.costs.moe_kernels import MOE_KERNEL_KINDS, moe_kernel_bytes, moe_kernel_op
from moesim.costs.profile import profile_from_dict
from moesim.costs.roofline import make_cost_model
from moesim.errors import ConfigError
from moesim.ops import Attention, Gemm, GroupedGemm, MemoryOp

HEADER = {"schema_version": 1, "device": "NVIDIA H200", "gpu_count": 1, "driver": "d", "cuda": "c", "nccl": "n",
          "torch": "t", "date": "2026-01-01T00:00:00Z", "command": "synthetic", "notes": "test",
          "eager_host": {"per_kernel_ns": 70_000.0}}
SHAPE = {"tokens": 4096, "experts": 128, "top_k": 8, "hidden": 2048}
HOST = {("linear", "fwd"): 20_000.0, ("linear", "bwd"): 60_000.0, ("linear", "plain"): 12_000.0,
        ("module_linear", "fwd"): 27_000.0, ("sdpa", "bwd"): 90_000.0, ("cast", "fwd"): 5_000.0,
        ("softmax", "fwd"): 8_000.0, ("argsort", "fwd"): 11_000.0, ("grouped_mm", "bwd"): 80_000.0}


def _mem(kind: str, variant: str, nbytes: int, t: float, **shape: int) -> dict:
    return {"op": "memory", "kind": kind, "variant": variant, "nbytes": nbytes, "time_ns": t, "repeats": 7, **shape}


def _rows(sync: bool = True) -> list[dict]:
    rows = [_mem("permute", "gather", 1 << 20, 5_000.0), _mem("permute", "gather", 1 << 24, 40_000.0),
            _mem("permute", "index_add", 1 << 20, 9_000.0, **SHAPE),
            _mem("permute", "index_add", 1 << 24, 90_000.0, **SHAPE),
            _mem("permute", "gather", 1 << 20, 7_000.0, **SHAPE), _mem("permute", "gather", 1 << 24, 60_000.0, **SHAPE),
            _mem("sort", "argsort", 1 << 16, 30_000.0, **SHAPE), _mem("sort", "argsort", 1 << 20, 50_000.0, **SHAPE),
            {"op": "launch", "variant": "eager_back_to_back", "time_ns": 6_000.0, "repeats": 5}]
    rows += [{"op": "host_op", "call": c, "phase": p, "time_ns": t, "repeats": 7} for (c, p), t in HOST.items()]
    if sync:
        rows += [{"op": "sync", "variant": v, "nbytes": n, "time_ns": t, "repeats": 40}
                 for v, base in (("queued", 10_000.0), ("idle", 20_000.0)) for n, t in ((64, base), (2048, 2 * base))]
    return rows


def _model(rows: list[dict], fallback: bool = True) -> CalibratedCostModel:
    profile = profile_from_dict({**HEADER, "samples": rows}, name="synthetic")
    return CalibratedCostModel(profile, fallback=make_cost_model("H200") if fallback else None)


@pytest.fixture()
def model() -> CalibratedCostModel:
    return _model(_rows())


# -- memory variants ------------------------------------------------------------------------
def test_a_named_variant_prices_from_its_own_curve(model: CalibratedCostModel) -> None:
    assert model.compute_ns(MemoryOp("permute", float(1 << 24), variant="index_add")) == 90_000
    assert model.compute_ns(MemoryOp("permute", float(1 << 20), variant="gather")) == 7_000  # torch.gather rows
    assert model.fallback_ops == set()
    # memory_ns keeps the memory section's meaning of a name both sections use (its gather = index_select)
    assert model.memory_ns("permute", float(1 << 20), "gather") == pytest.approx(5_000)


def test_a_variant_without_moe_rows_uses_the_same_kernel_of_the_memory_section_labelled() -> None:
    model = _model([r for r in _rows() if r.get("variant") != "index_add"])
    assert model.compute_ns(MemoryOp("permute", float(1 << 20), variant="index_select")) == 5_000
    assert any("permute/index_select" in f and "'gather' curve" in f for f in model.fallback_ops)


def test_moe_kernel_rows_do_not_change_the_kinds_generic_curve(model: CalibratedCostModel) -> None:
    assert model.compute_ns(MemoryOp("permute", float(1 << 24))) == 40_000  # the memory section's gather only


def test_a_missing_variant_uses_the_generic_curve_and_says_so(model: CalibratedCostModel) -> None:
    assert model.compute_ns(MemoryOp("permute", float(1 << 20), variant="scatter_add")) == 5_000
    assert any("permute/scatter_add" in f and "generic" in f for f in model.fallback_ops)


def test_a_variant_is_found_by_name_and_a_kind_without_generic_curve_averages_its_moe_curves(
        model: CalibratedCostModel) -> None:
    assert model.compute_ns(MemoryOp("elementwise", float(1 << 20), variant="argsort")) == 50_000
    assert model.fallback_ops == set()
    assert model.compute_ns(MemoryOp("sort", float(1 << 16))) == 30_000  # no variant, no memory-section sort
    assert any("sort" in f and "mean of the kind's moe_kernels curves" in f for f in model.fallback_ops)


def test_a_missing_kind_goes_to_the_fallback_model_labelled(model: CalibratedCostModel) -> None:
    op = moe_kernel_op("histc", **SHAPE)
    assert model.compute_ns(op) == make_cost_model("H200").compute_ns(op)
    assert any("histogram/histc" in f and "fallback model" in f for f in model.fallback_ops)
    with pytest.raises(ConfigError) as err:
        _model(_rows(), fallback=False).compute_ns(op)
    assert err.value.field == "MemoryOp.kind"


def test_moe_kernel_bytes_follow_the_documented_formulas() -> None:
    t, e, k, h = 4096, 128, 8, 2048
    assert moe_kernel_bytes("index_add", t, e, k, h) == 4 * t * k * h + 8 * t * k
    assert moe_kernel_bytes("topk", t, e, k, h) == 4 * t * e + 12 * t * k
    assert moe_kernel_bytes("argsort", t, e, k, h) == 16 * t * k
    assert moe_kernel_bytes("softmax_fp32", t, e, k, h) == 8 * t * e
    assert moe_kernel_bytes("cast_fp32", t, e, k, h) == 6 * t * h
    assert moe_kernel_bytes("prob_mul_fp32", t, e, k, h) == 8 * t * k * h + 4 * t * k
    f = 768   # the glu variants' width is the expert FFN's half of fc1
    assert [moe_kernel_bytes(v, t, e, k, f) for v in ("glu_silu", "glu_mul", "glu_silu_bwd")] == \
        [4 * t * k * f, 6 * t * k * f, 6 * t * k * f]
    op = moe_kernel_op("histc", t, e, k, h)
    assert (op.kind, op.variant, op.bytes) == ("histogram", "histc", 8 * t * k + 8 * e)
    with pytest.raises(ConfigError) as err:
        moe_kernel_bytes("unpermute", t, e, k, h)
    assert err.value.field == "variant"
    with pytest.raises(ConfigError) as err:
        moe_kernel_bytes("gather", 0, e, k, h)
    assert err.value.field == "tokens"


# -- host time per op class -----------------------------------------------------------------
def test_host_op_ns_reads_the_class_and_phase(model: CalibratedCostModel) -> None:
    gemm = Gemm(m=4096, n=2048, k=2048)
    assert model.host_op_ns(gemm, "fwd") == 20_000
    assert model.host_op_ns(gemm, "plain") == 12_000
    assert model.host_op_ns(gemm, "bwd") == 30_000  # dgrad and wgrad each carry half
    assert model.host_op_ns(GroupedGemm(counts=(8, 0, 24), n=64, k=64, layout="dgrad"), "bwd") == 40_000
    attn = Attention(batch=1, heads=8, kv_heads=8, seq_q=512, seq_kv=512, head_dim=128, backward=True)
    assert model.host_op_ns(attn, "bwd") == 90_000  # one backward op: the whole
    assert model.host_op_ns(moe_kernel_op("softmax_fp32", **SHAPE), "fwd") == 8_000
    assert model.host_op_ns(moe_kernel_op("argsort", **SHAPE), "bwd") == 11_000  # no backward: its issue
    assert model.module_call_ns("fwd") == 7_000
    assert model.fallback_ops == set()


def test_a_missing_class_costs_the_per_kernel_figure_labelled(model: CalibratedCostModel) -> None:
    rope = MemoryOp("elementwise", 1e6, "attn.rope")
    assert op_calls(rope) == ("rope",)
    assert model.host_op_ns(rope, "fwd") == 70_000  # eager_host per counted kernel
    assert "host_op rope/fwd (not measured: the per-kernel eager figure)" in model.fallback_ops
    # zeros + cast + scatter_add + cast: the two casts measured, the other two at the per-kernel figure
    assert model.host_op_ns(moe_kernel_op("routing_map", **SHAPE), "fwd") == 2 * 5_000 + 2 * 70_000
    assert {"host_op zeros/fwd", "host_op scatter_add/fwd"} <= {f.split(" (")[0] for f in model.fallback_ops}
    with pytest.raises(ConfigError) as err:
        model.host_op_ns(rope, "sideways")
    assert err.value.field == "phase"


def test_sync_ns_reads_the_sync_curves(model: CalibratedCostModel) -> None:
    assert model.sync_ns(64) == 10_000  # queued: from the end of the queued work
    assert model.sync_ns(2048, "idle") == 40_000
    bare = _model(_rows(sync=False))
    assert bare.sync_ns(64) == 6_000  # one back-to-back launch, a lower bound
    assert any(f.startswith("sync") for f in bare.fallback_ops)


@pytest.mark.parametrize("row, field", [
    ({"op": "host_op", "call": "linear", "time_ns": 1.0, "repeats": 1}, "samples[0].phase"),
    ({"op": "host_op", "call": "linear", "phase": "sideways", "time_ns": 1.0, "repeats": 1}, "samples[0].phase"),
    ({"op": "host_op", "phase": "fwd", "time_ns": 1.0, "repeats": 1}, "samples[0].call"),
    ({"op": "sync", "nbytes": 0, "time_ns": 1.0, "repeats": 1}, "samples[0].nbytes"),
    ({"op": "sync", "nbytes": 8, "variant": "late", "time_ns": 1.0, "repeats": 1}, "samples[0].variant"),
    ({"op": "host_op", "call": "linear", "phase": "fwd", "time_ns": -3.0, "repeats": 1}, "samples[0].time_ns"),
    (_mem("permute", "index_add", 64, 1.0, tokens=-1), "samples[0].tokens"),
    (_mem("permute", "index_add", 64, 1.0, top_k=2.5), "samples[0].top_k"),
])
def test_bad_rows_name_the_field(row: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        profile_from_dict({**HEADER, "samples": [row]})
    assert err.value.field == field


# -- the calibration sections on the CPU ----------------------------------------------------
def test_both_sections_run_on_the_cpu_and_price(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from moesim.calibrate.measure import run_calibration

    out = tmp_path / "smoke.json"
    run_calibration("cpu", out, "smoke", budget_s=60.0, sections=("moe_kernels", "host_classes"))
    data = json.loads(out.read_text())
    assert not data["errors"], data["errors"]
    memory = [r for r in data["samples"] if r["op"] == "memory"]
    assert {r["variant"] for r in memory} == set(MOE_KERNEL_KINDS)
    assert all({"tokens", "experts", "top_k", "hidden"} <= set(r) for r in memory)
    phases = {(r["call"], r["phase"]) for r in data["samples"] if r["op"] == "host_op"}
    assert {("linear", "fwd"), ("linear", "bwd"), ("linear", "plain"), ("argsort", "fwd")} <= phases
    assert ("argsort", "bwd") not in phases  # autograd records no backward for it
    assert any(r["op"] == "sync" for r in data["samples"])
    model = CalibratedCostModel(out)
    assert model.compute_ns(moe_kernel_op("index_add", 256, 8, 2, 64)) > 0
    assert model.host_op_ns(Gemm(m=64, n=64, k=64), "bwd") > 0
    assert model.sync_ns(64) > 0
    assert model.fallback_ops == set()


def test_the_eager_section_measures_only_the_non_vectorized_variants_and_rope_programs(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from moesim.calibrate.measure import run_calibration
    from moesim.calibrate.moe_kernels import EAGER_VARIANTS

    out = tmp_path / "eager.json"
    run_calibration("cpu", out, "smoke", budget_s=30.0, sections=("eager_kernels",))
    data = json.loads(out.read_text())
    assert not data["errors"], data["errors"]
    assert {r["variant"] for r in data["samples"]} == set(EAGER_VARIANTS)
    assert {"rope_halves", "rope_rotate_half_bwd", "rope_complex"} <= set(EAGER_VARIANTS)
    assert {r["dtype"] for r in data["samples"] if r["variant"] == "prob_mul_fp32"} == {"fp32"}
    model = CalibratedCostModel(out)
    op = moe_kernel_op("glu_silu", 256, 1, 2, 64)
    assert op.kind == "elementwise" and model.compute_ns(op) > 0
    assert model.fallback_ops == set()


def test_the_measured_rope_programs_rotate() -> None:
    """The eager RoPE forms the eager_kernels section times are RoPE: the halves and rotate-half
    forms give the same result, and every form keeps each token's norm (a rotation)."""
    torch = pytest.importorskip("torch")
    from moesim.calibrate.moe_kernels import _rand, _rope_program

    t, heads, d = 16, 2, 8
    outs = {form: _rope_program(f"rope_{form}", t, heads, d, "cpu")().float() for form in ("halves", "rotate_half",
                                                                                         "complex")}
    assert torch.allclose(outs["halves"], outs["rotate_half"], atol=1e-2)
    q = _rand((t, 2 * heads * d), "cpu", torch.bfloat16, 12)[:, :heads * d].view(1, t, heads, d).transpose(1, 2)
    x = _rand((1, t, heads, d), "cpu", torch.bfloat16, 11)   # the inputs the programs draw
    assert torch.allclose(outs["halves"].norm(dim=-1), q.float().norm(dim=-1), rtol=2e-2)
    assert torch.allclose(outs["complex"].norm(dim=-1), x.float().norm(dim=-1), rtol=2e-2)
    grads = _rope_program("rope_complex_bwd", t, heads, d, "cpu")()
    assert grads[0].shape == (1, t, heads, d)
