"""The validation-workload harness (moesim.calibrate.layer_workloads) in its CPU smoke mode: every
entry's description is complete enough to predict the case, the routing is the simulator's own
draw, and the case plan covers the shapes the GPU run must measure."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
torch = pytest.importorskip("torch")

from moesim.calibrate import layer_cases as lc
from moesim.calibrate import layer_workloads as lw
from moesim.moe.routing import RoutingConfig, generate_counts

MOE_KEYS = {"kind", "tokens", "batch", "seq", "pass", "dtype", "program", "grad", "model", "experts",
            "token_movement", "combine", "routing", "router", "syncs_per_forward"}
DENSE_KEYS = {"kind", "tokens", "batch", "seq", "pass", "dtype", "program", "grad", "model", "attention"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    d = tmp_path_factory.mktemp("lw")
    doc = lw.run("cpu", budget_s=120.0, out=d / "smoke.json", trace_dir=d / "traces", only="",
                 inventory_on=True, preheat_s=0.0)
    return doc, d


def test_smoke_measures_every_planned_case(smoke):
    doc, d = smoke
    planned = {c.id for c in lw.plan_cases(smoke=True)}
    assert doc["skipped"] == []
    assert {e["id"] for e in doc["entries"]} == planned
    assert len(planned) == len(lw.plan_cases(smoke=True)), "case ids must be unique"
    assert json.loads((d / "smoke.json").read_text())["format"] == lw.FORMAT


def test_measured_fields(smoke):
    for e in smoke[0]["entries"]:
        m = e["measured"]
        assert m["time_ns"] > 0 and m["p25_ns"] <= m["time_ns"] <= m["p75_ns"], e["id"]
        assert m["iterations"] >= 1 and m["rounds"] >= 3 and m["warmup"] >= 1


def test_descriptions_are_complete(smoke):
    for e in smoke[0]["entries"]:
        w = e["workload"]
        assert (MOE_KEYS if w["kind"] == "moe_block" else DENSE_KEYS) <= set(w), e["id"]
        assert w["pass"] in lc.PASSES and w["dtype"] == "bf16" and w["program"]
        assert w["grad"]["mode"] == ("accumulate" if w["pass"] == "fwd_bwd" else "none")
        if w["kind"] == "moe_block":
            assert w["experts"] in ("grouped", "loop") and w["token_movement"] in ("torchtitan", "megatron")
            assert w["syncs_per_forward"] == int(w["experts"] == "loop" or w["token_movement"] == "megatron")


def test_routing_counts_are_the_simulator_draw(smoke):
    for e in smoke[0]["entries"]:
        w = e["workload"]
        if w["kind"] != "moe_block":
            continue
        r, m = w["routing"], w["model"]
        counts = np.array(r["counts"])
        assert counts.size == m["num_experts"] and (counts >= 0).all()
        assert counts.sum() == w["tokens"] * m["top_k"], e["id"]
        spec = types.SimpleNamespace(num_experts=m["num_experts"], top_k=m["top_k"], n_groups=1, topk_groups=1,
                                     max_nodes_per_token=0)
        again = generate_counts(RoutingConfig(**r["config"]), spec, 1, 1, 1, 0)[0, 0, 0]
        assert again.tolist() == r["counts"], e["id"]


def test_smoke_substitutions_are_flagged(smoke):
    for e in smoke[0]["entries"]:
        w = e["workload"]
        if w["kind"] == "moe_block" and w["experts"] == "grouped" and w["pass"] == "fwd_bwd":
            assert any("grouped_mm emulated" in s for s in w["smoke_substitutions"]), e["id"]


def test_inventory_and_traces(smoke):
    doc, _ = smoke
    inv = doc["kernel_inventory"]
    assert any("loop" in k for k in inv) and any("dense_layer" in k for k in inv)
    for rec in inv.values():
        assert rec["count"] == sum(rec["by_name"].values()) > 0
    assert len(doc["traces"]) == 2
    for path in doc["traces"]:
        with open(path) as f:
            assert json.load(f)["traceEvents"]


def test_zipf_draw_is_skewed():
    shape = lc.MOE_SHAPES["qwen3_30b_a3b"]
    _, uni = lw.draw_routing(shape, 4096, "uniform", 0.0)
    _, zipf = lw.draw_routing(shape, 4096, "zipf", 1.0)
    assert zipf["max_count"] > 2 * uni["max_count"]
    assert sum(zipf["counts"]) == sum(uni["counts"]) == 4096 * shape.top_k


def test_routing_bias_mismatch_is_caught():
    shape = lc.SMOKE_MOE["tiny_moe"]
    case = lc.Case("moe_block", "tiny_moe", 32, "fwd", "grouped", "torchtitan", "scatter_add", "uniform", 0.0, 1)
    chosen, r = lw.draw_routing(shape, 32, "uniform", 0.0)
    w = lw.MoEWeights(shape, "cpu")
    x = torch.randn(32, shape.hidden, dtype=torch.bfloat16)
    good = lw.route_bias(chosen, shape.num_experts, lw.ROUTE_BIAS_FP32, torch.float32, "cpu")
    lw.check_routing(w, x, good, case, shape.top_k, r["counts"])
    bad = lw.route_bias((chosen + 1) % shape.num_experts, shape.num_experts, lw.ROUTE_BIAS_FP32, torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="routing bias failed"):
        lw.check_routing(w, x, bad, case, shape.top_k, r["counts"])


def test_gpu_plan_covers_the_brief():
    cases = lw.plan_cases(smoke=False)
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))
    moe = [c for c in cases if c.kind == "moe_block"]
    assert {c.model for c in moe} == set(lc.MOE_SHAPES)
    assert {c.tokens for c in moe} == {1024, 4096, 8192, 16384}
    assert {(c.experts, c.movement) for c in moe} == {("grouped", "torchtitan"), ("loop", "torchtitan"),
                                                     ("grouped", "megatron")}
    assert {c.tokens for c in cases if c.kind == "dense_layer"} == {2048, 4096, 8192}
    assert [c.tier for c in cases] == sorted(c.tier for c in cases), "cheaper-to-lose tiers run last"
