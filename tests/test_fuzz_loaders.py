"""Fuzzing every loader: a bad input gives a ConfigError naming a field, never another exception or a hang.

Each test starts from a valid input (a shipped topology, the shipped calibration profile cut to
one sample per op, a custom model, a routing trace, a routing / plan / scenario / memory config),
mutates it (drops keys, adds unknown keys, puts wrong types, negative / zero / NaN / infinite /
huge numbers or nested garbage where values go) and checks the property: the call returns a
valid, usable object or raises :class:`ConfigError` whose ``field`` appears in its message.
Every call runs under a wall-clock alarm, so a hang fails the test instead of stalling it.
What the fuzzing found, and how it was fixed, is listed in docs/robustness.md.
"""
from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import yaml
from fuzzing import time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesim.costs.calibrated import CalibratedCostModel
from moesim.costs.profile import OP_FIELDS, PROFILE_DIR, load_profile, profile_from_dict
from moesim.costs.roofline import make_cost_model
from moesim.errors import ConfigError
from moesim.experiment.scenario import MoEOptions, ParallelPlan, Scenario
from moesim.memory import MemoryConfig, memory_budget
from moesim.experiment.build import build_scenario
from moesim.experiment.faults import Faults
from moesim.moe.placement import make_placement
from moesim.schedules.registry import generate
from moesim.moe.routing import RoutingConfig, generate_routing
from moesim.moe.traces import load_trace
from moesim.topology import spec as topology_spec
from moesim.topology.loader import TOPOLOGY_DIR, build_topology, load_topology, read_spec
from moesim.ops import Gemm, MemoryOp
from moesim.workload import custom
from moesim.workload.moe import MoESpec
from moesim.workload.transformer import TransformerSpec

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CALL_LIMIT_S = 5.0


# -- the property -------------------------------------------------------------------------------


def config_or_value(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or None when it raised a ConfigError that names its field.
    Any other exception, or a call longer than CALL_LIMIT_S, fails the test."""
    with time_limit(CALL_LIMIT_S):
        try:
            return fn(*args, **kwargs)
        except ConfigError as err:
            assert isinstance(err, ValueError)
            assert isinstance(err.field, str) and err.field, f"ConfigError without a field: {err}"
            assert err.field in str(err), f"message does not name the field {err.field!r}: {err}"
            return None


# -- values and mutations -----------------------------------------------------------------------
WEIRD_NUMBERS = st.sampled_from([0, -1, 1, 2, -0.0, 0.5, 1e-300, 1e300, 10**9, 10**18, 2**63, -(2**63),
                                 float("nan"), float("inf"), float("-inf")])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), WEIRD_NUMBERS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.sampled_from(["", "tokens", "1", "nan", "H100", "nvswitch", "bf16", "gemm", "1e3"]),
)
GARBAGE = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(st.text(max_size=4), st.integers(0, 3)), inner, max_size=3)),
    max_leaves=6)


def _paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path into nested dicts/lists (the empty path is the document itself)."""
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _paths(value, prefix + (i,))


def _at(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def mutate(data: st.DataObject, doc: Any, max_mutations: int = 3) -> Any:
    """Apply 1..max_mutations random edits to ``doc`` in place (and return it)."""
    for _ in range(data.draw(st.integers(1, max_mutations), label="mutations")):
        path = data.draw(st.sampled_from(list(_paths(doc))), label="path")
        op = data.draw(st.sampled_from(["drop", "replace", "number", "add"]), label="op")
        target = _at(doc, path)
        if op == "add" and isinstance(target, dict):
            target[data.draw(st.one_of(st.text(max_size=6), st.integers(0, 3)), label="new key")] = data.draw(GARBAGE)
        elif op == "add" and isinstance(target, list):
            target.append(data.draw(GARBAGE, label="new item"))
        elif path and op in ("drop", "replace", "number"):
            parent, key = _at(doc, path[:-1]), path[-1]
            if op == "drop":
                del parent[key]
            else:
                parent[key] = data.draw(WEIRD_NUMBERS if op == "number" else GARBAGE, label="value")
    return doc


# -- topologies ---------------------------------------------------------------------------------
REAL_GUARDS = (topology_spec.MAX_GPUS, topology_spec.MAX_LINKS)


@pytest.fixture(autouse=True, scope="module")
def small_size_guards() -> Iterator[None]:
    """Fabrics just under the real guards (spec.MAX_GPUS = 131,072 GPUs) are legal and take seconds
    to build; fuzzing lowers the guards so whatever passes them builds in a fraction of a second.
    (test_huge_clusters_are_refused_before_building checks sizes far past the real guards.)"""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(topology_spec, "MAX_GPUS", 2048)
        patch.setattr(topology_spec, "MAX_LINKS", 1 << 14)
        yield


TOPOLOGY_SPECS = {p.stem: read_spec(p)[0] for p in sorted(TOPOLOGY_DIR.glob("*.yaml"))}
SMALL_TOPOLOGIES = {name: spec for name, spec in TOPOLOGY_SPECS.items()
                    if spec["gpus_per_node"] * spec.get("nodes", 1) <= 72}


def check_topology(topo: Any) -> None:
    assert topo.num_gpus >= 1
    assert all(math.isfinite(link.bandwidth_gbps) and link.bandwidth_gbps > 0 for link in topo.links)
    assert all(0 <= link.latency_ns <= 10**9 for link in topo.links)
    if topo.num_gpus > 1:
        route = topo.route(0, topo.num_gpus - 1)
        assert route.link_ids and route.bottleneck_gbps > 0


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(SMALL_TOPOLOGIES)))
def test_fuzzed_topology_dicts_build_or_name_the_field(data: st.DataObject, name: str) -> None:
    doc = mutate(data, copy.deepcopy(SMALL_TOPOLOGIES[name]))
    topo = config_or_value(build_topology, doc, "fuzz")
    if topo is not None:
        check_topology(topo)


SIZE_FIELDS = ("nodes", "gpus_per_node", "intra.group_size", "intra.gpus_per_switch", "intra.sockets",
               "intra.gpus_per_cpu", "scale_out.spines", "scale_out.nodes_per_leaf")


@FUZZ
@given(name=st.sampled_from(sorted(TOPOLOGY_SPECS)), field=st.sampled_from(SIZE_FIELDS),
       value=st.one_of(st.integers(-3, 40), st.integers(10**6, 10**15)))
def test_sizes_build_small_or_refuse_huge_quickly(name: str, field: str, value: int) -> None:
    """Small sizes build; sizes past the guards (spec.MAX_GPUS, MAX_LINKS) are refused before any
    graph is built. (Sizes just under the guards are legal and take seconds: not drawn here.)"""
    doc = copy.deepcopy(TOPOLOGY_SPECS[name])
    block, _, key = field.rpartition(".")
    target = doc.get(block) if block else doc
    if not isinstance(target, dict):
        return
    target[key] = value
    topo = config_or_value(build_topology, doc, "fuzz")
    if topo is not None:
        check_topology(topo)


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(SMALL_TOPOLOGIES)),
       corrupt=st.lists(st.tuples(st.integers(0, 2000), st.sampled_from(list(":-{}[]\t\n #&*!|>'\"%@`,?"))),
                        max_size=3))
def test_fuzzed_topology_yaml_files_load_or_name_the_field(data: st.DataObject, name: str,
                                                           corrupt: list[tuple[int, str]]) -> None:
    doc = mutate(data, copy.deepcopy(SMALL_TOPOLOGIES[name]), max_mutations=2)
    text = yaml.safe_dump(doc, sort_keys=False)
    for pos, char in corrupt:
        pos = min(pos, len(text))
        text = text[:pos] + char + text[pos:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_text(text)
        topo = config_or_value(load_topology, path)
    if topo is not None:
        check_topology(topo)


@FUZZ
@given(key=st.sampled_from(["nodes", "gpus_per_node", "name", "gpu", "scale_out.spines", "scale_out.kind",
                            "intra.bandwidth_gbps", "intra.latency_ns", "scale_out.nic_gbps", "intra", "bogus",
                            "scale_out.nodes_per_leaf", "intra.nope", "gpu.kind", ""]),
       value=GARBAGE)
def test_topology_overrides_load_or_name_the_field(key: str, value: Any) -> None:
    topo = config_or_value(load_topology, "dgx_h100", **{key: value})
    if topo is not None:
        check_topology(topo)


def test_huge_clusters_are_refused_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology_spec, "MAX_GPUS", REAL_GUARDS[0])
    monkeypatch.setattr(topology_spec, "MAX_LINKS", REAL_GUARDS[1])
    cases = {"nodes": ({"nodes": 10**9}, {"nodes": 2**40}, {"nodes": REAL_GUARDS[0] // 8 + 1}),
             "gpus_per_node": ({"gpus_per_node": 10**7},),
             "scale_out.spines": ({"nodes": 2, "scale_out.spines": 10**8},)}
    for field, overrides in cases.items():
        for override in overrides:
            with time_limit(2.0), pytest.raises(ConfigError) as err:
                load_topology("dgx_h100", **override)
            assert err.value.field == field and "more than moesim builds" in str(err.value)


# -- calibration profiles -----------------------------------------------------------------------
def _small_profile() -> dict:
    doc = json.loads((PROFILE_DIR / "h200_sxm.json").read_text())
    seen: dict[str, dict] = {}
    for row in doc["samples"]:
        seen.setdefault(row["op"], row)
    doc["samples"] = list(seen.values())
    doc.pop("runs", None)
    doc.pop("gpu_topology", None)
    return doc


SMALL_PROFILE = _small_profile()


@FUZZ
@given(data=st.data())
def test_fuzzed_profiles_load_or_name_the_field(data: st.DataObject) -> None:
    doc = mutate(data, copy.deepcopy(SMALL_PROFILE))
    profile = config_or_value(profile_from_dict, doc, "fuzz")
    if profile is None:
        return
    assert profile.samples and all(s["time_ns"] > 0 and math.isfinite(s["time_ns"]) for s in profile.samples)
    assert profile.ops() <= set(OP_FIELDS)
    # the profile's consumer answers or names the field too
    model = config_or_value(CalibratedCostModel, profile, make_cost_model("H200"))
    if model is not None:
        for query in (lambda: model.compute_ns(Gemm(m=4096, n=4096, k=4096)),
                      lambda: model.compute_ns(MemoryOp("copy", 1e6, "x")),
                      lambda: model.collective_step_latency_ns("all_reduce", 8, "nvswitch")):
            value = config_or_value(query)
            assert value is None or (math.isfinite(value) and value >= 0)


@FUZZ
@given(doc=GARBAGE)
def test_any_json_document_is_a_profile_or_names_the_field(doc: Any) -> None:
    config_or_value(profile_from_dict, doc, "fuzz")


@FUZZ
@given(text=st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_profile_files_with_garbage_text_name_the_field(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.json"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        config_or_value(load_profile, path)


# -- routing traces -----------------------------------------------------------------------------
TRACE_KEYS = ("counts", "assignments", "src_rank", "num_experts", "num_ranks", "microbatch", "num_microbatches",
              "format_version", "junk")
DTYPES = ("int64", "int32", "int8", "uint8", "uint64", "float64", "float32", "bool", "complex64")


@st.composite
def trace_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Arrays of a routing-trace file: right or wrong names, shapes, dtypes and values."""
    out = {}
    for key in draw(st.lists(st.sampled_from(TRACE_KEYS), unique=True, min_size=1, max_size=5)):
        scalar = key.startswith("num_") or key == "format_version"
        ndim = draw(st.sampled_from([0, 0, 1]) if scalar else st.integers(0, 6))
        shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
        dtype = draw(st.sampled_from(("int64",) * 4 + DTYPES))
        low, high = draw(st.sampled_from([(0, 4), (0, 4), (-3, 3), (0, 2**40)]))
        values = draw(st.lists(st.integers(low, high), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        with np.errstate(all="ignore"):
            out[key] = np.array(values, dtype=np.int64).astype(dtype).reshape(shape)
    return out


@FUZZ
@given(arrays=trace_arrays(), num_microbatches=st.integers(1, 3))
def test_fuzzed_trace_files_load_or_name_the_field(arrays: dict[str, np.ndarray], num_microbatches: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.npz"
        np.savez(path, **arrays)
        trace = config_or_value(load_trace, path)
        if trace is None:
            return
        assert trace.num_steps >= 1 and trace.num_layers >= 1 and trace.num_experts >= 1 and trace.num_ranks >= 1
        counts = config_or_value(trace.step_counts, 0, 0, num_microbatches)
        if counts is not None:
            assert counts.shape == (num_microbatches, trace.num_ranks, trace.num_experts) and (counts >= 0).all()


@FUZZ
@given(blob=st.binary(max_size=64), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x93NUMPY"]))
def test_corrupt_trace_files_name_the_field(blob: bytes, prefix: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.npz"
        path.write_bytes(prefix + blob)
        config_or_value(load_trace, path)


def test_trace_with_object_arrays_or_a_directory_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, counts=np.array([[1], [2, 3]], dtype=object))
    with pytest.raises(ConfigError, match="counts|trace"):
        load_trace(path)
    with pytest.raises(ConfigError, match="trace_path"):
        load_trace(tmp_path)


# -- custom models ------------------------------------------------------------------------------
CUSTOM_BLOCK = {
    "name": "fuzz-block", "num_layers": 2, "seq_len": 16, "hidden": 8, "dtype": "bf16",
    "layer": {
        "gemms": [{"name": "up", "m": "tokens", "n": 32, "k": 8, "tp": "column"},
                  {"name": "down", "m": "tokens", "n": 8, "k": 32, "tp": "row", "groups": 1, "weight": True}],
        "elementwise": [{"name": "act", "bytes_per_token": 128, "backward_bytes_per_token": 192, "tp_sharded": True,
                         "kind": "elementwise"}],
        "activation_bytes_per_token": 64,
    },
}
CUSTOM_LAYERS = {**{k: v for k, v in CUSTOM_BLOCK.items() if k != "layer"},
                 "layers": [CUSTOM_BLOCK["layer"], {"gemms": [{"name": "x", "m": 4, "n": 8, "k": 8}]}]}


def use_custom_model(spec: custom.CustomModelSpec) -> None:
    """Every op builder works on a validated model (or names the field, e.g. a TP split)."""
    for tp in (1, 2):
        for fn in (custom.custom_forward_program, custom.custom_backward_input_program,
                   custom.custom_backward_weight_ops, custom.custom_activation_bytes):
            out = config_or_value(fn, spec, spec.num_layers - 1, 1, tp)
            if isinstance(out, float):
                assert math.isfinite(out) and out >= 0
        config_or_value(custom.custom_weight_bytes, spec, 0, tp)
    assert spec.total_params >= 0


@FUZZ
@given(data=st.data(), base=st.sampled_from([CUSTOM_BLOCK, CUSTOM_LAYERS]))
def test_fuzzed_custom_models_build_or_name_the_field(data: st.DataObject, base: dict) -> None:
    doc = mutate(data, copy.deepcopy(base))
    spec = config_or_value(custom.custom_model_from_dict, doc, "fuzz")
    if spec is not None:
        use_custom_model(spec)


@FUZZ
@given(doc=GARBAGE)
def test_any_document_is_a_custom_model_or_names_the_field(doc: Any) -> None:
    config_or_value(custom.custom_model_from_dict, doc, "fuzz")


# -- routing configs ----------------------------------------------------------------------------
TINY_MOE = MoESpec(name="fuzz-moe", num_layers=2, hidden=64, num_heads=4, num_kv_heads=4, head_dim=16,
                   ffn_hidden=128, vocab=128, seq_len=32, num_experts=8, top_k=2, expert_ffn_hidden=32,
                   n_groups=4, topk_groups=2, max_nodes_per_token=1)
ROUTING_VALID = dict(kind=["uniform", "zipf", "dirichlet", "trace"], tokens_per_rank=[None, 1, 16, 64],
                     seed=[0, 7], zipf_s=[0.0, 0.9], dirichlet_alpha=[0.3, 1.0], gating=["topk", "group_limited",
                     "node_limited"], drift=["none", "rotate", "random_walk"], drift_rate=[0.0, 0.5],
                     layer_mode=["independent", "shared"], capacity_factor=[None, 1.0, 1.5],
                     sampler=["auto", "exact", "fast"], pilot_tokens=[64, 1024], trace_path=[None])


@st.composite
def field_values(draw: st.DrawFn, valid: dict[str, list]) -> dict[str, Any]:
    """Keyword arguments: each field valid (usually), garbage or left out."""
    out = {}
    for name, choices in valid.items():
        how = draw(st.sampled_from(["valid"] * 6 + ["garbage", "number", "omit"]), label=name)
        if how == "valid":
            out[name] = draw(st.sampled_from(choices))
        elif how == "garbage":
            out[name] = draw(GARBAGE)
        elif how == "number":
            out[name] = draw(WEIRD_NUMBERS)
    return out


@FUZZ
@given(kwargs=field_values(ROUTING_VALID))
def test_fuzzed_routing_configs_validate_and_sample(kwargs: dict) -> None:
    cfg = config_or_value(lambda: RoutingConfig(**kwargs))
    if cfg is not None and cfg.kind != "trace" and cfg.tokens_per_rank is None:  # a Scenario fills it in
        with pytest.raises(ConfigError, match="tokens_per_rank"):
            generate_routing(cfg, TINY_MOE, 2, 2, 2, 1, host_of=[0, 1])
        return
    if cfg is None or cfg.kind == "trace" or cfg.tokens_per_rank > 256:
        return
    batch = config_or_value(generate_routing, cfg, TINY_MOE, 2, 2, 2, 1, host_of=[0, 1])
    if batch is not None:
        assert batch.routed.shape == (2, 2, 2, 8) and (batch.kept >= 0).all() and (batch.kept <= batch.routed).all()
        assert batch.routed.sum() == 2 * 2 * 2 * cfg.tokens_per_rank * 2


# -- plans, scenarios and overrides -------------------------------------------------------------
TINY = TransformerSpec(name="fuzz-dense", num_layers=8, hidden=256, num_heads=8, num_kv_heads=4, head_dim=32,
                       ffn_hidden=1024, vocab=1024, seq_len=128)
PLAN_VALID = dict(tp=[1, 2, 4], dp=[1, 2, 4], pp=[1, 2], vpp=[1, 2], ep=[1, 2], sequence_parallel=[True, False],
                  micro_batch_size=[1, 2], num_microbatches=[1, 4, 8], order=["tp-dp-pp", "pp-dp-tp"],
                  dp_overlap=[True, False], p2p_overlap=[True, False], grad_dtype_bytes=[2, 4])


@FUZZ
@given(kwargs=field_values(PLAN_VALID))
def test_fuzzed_plans_validate_or_name_the_field(kwargs: dict) -> None:
    plan = config_or_value(lambda: ParallelPlan(**kwargs))
    if plan is not None:
        assert plan.world_size >= 1 and plan.dp % plan.ep == 0
        if plan.world_size <= 4096:  # a valid plan may be huge (tp = 10**9); enumerate small ones only
            ranks = {plan.rank(t, d, p) for t in range(plan.tp) for d in range(plan.dp) for p in range(plan.pp)}
            assert ranks == set(range(plan.world_size))


def _scenario(**changes: Any) -> Scenario:
    base = dict(name="s", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=2, pp=4, num_microbatches=4))
    return Scenario(**{**base, **changes})


SCENARIO_VALID = dict(name=["s"], topology=["dgx_h100"], model=[TINY, "llama3-8b"], schedule=["1f1b", "gpipe"],
                      nodes=[None, 1], cost_model=["auto", "roofline"], network=["fluid", "analytical"], seed=[0, 3],
                      description=[""], plan=[ParallelPlan(tp=2, pp=4, num_microbatches=4)], moe=[MoEOptions()],
                      memory=[MemoryConfig(), MemoryConfig(recompute="full")], faults=[None, Faults(jitter_ns=100)])


@FUZZ
@given(kwargs=field_values(SCENARIO_VALID))
def test_fuzzed_scenarios_build_or_name_the_field(kwargs: dict) -> None:
    kwargs.setdefault("name", "s")
    kwargs.setdefault("topology", "dgx_h100")
    kwargs.setdefault("model", TINY)
    scn = config_or_value(lambda: Scenario(**kwargs))
    if scn is not None:  # every field has the right kind, so the build works or names a field (never a TypeError)
        built = config_or_value(build_scenario, scn)
        if built is not None:
            assert built.topology.num_gpus == scn.plan.world_size and built.tokens_per_step > 0


MOE_VALID = dict(routing=[None, RoutingConfig(kind="zipf", seed=1, tokens_per_rank=16)],
                 placement=["contiguous", "round_robin", "eplb", "load_balanced"], num_redundant=[0, 2],
                 replica_policy=["proportional", "round_robin", "nearest"], stats_step=[0, 2], step=[0, 1])


@FUZZ
@given(kwargs=field_values(MOE_VALID))
def test_fuzzed_moe_options_build_or_name_the_field(kwargs: dict) -> None:
    opts = config_or_value(lambda: MoEOptions(**kwargs))
    if opts is not None:
        plan = ParallelPlan(tp=2, dp=2, pp=2, ep=2, num_microbatches=4)
        built = config_or_value(build_scenario, _scenario(model=TINY_MOE, plan=plan, moe=opts))
        if built is not None:
            assert built.exchange is not None and built.tokens_per_step > 0


OVERRIDE_KEYS = ["plan.tp", "plan.dp", "plan.pp", "plan.vpp", "plan.ep", "plan.num_microbatches",
                 "plan.micro_batch_size", "plan.order", "plan.sequence_parallel", "plan.grad_dtype_bytes", "schedule",
                 "nodes", "seed", "network", "cost_model", "name", "moe.num_redundant", "moe.placement", "moe.step",
                 "moe.routing", "moe.routing.seed", "memory.recompute", "plan", "plan.", ".plan", "", "plan.tp.x",
                 "faults", "faults.jitter_ns",
                 "bogus", "moe.bogus"]
OVERRIDE_TEXT = st.one_of(st.text(max_size=6), st.sampled_from(["1", "2", "0", "-1", "true", "false", "True", "nan",
                                                                 "1e3", "²", " 4", "4 ", "None", "0x10", "1_000"]))


@FUZZ
@given(overrides=st.dictionaries(st.one_of(st.sampled_from(OVERRIDE_KEYS), st.text(max_size=8)), OVERRIDE_TEXT,
                                 max_size=3))
def test_fuzzed_overrides_apply_or_name_the_field(overrides: dict[str, str]) -> None:
    base = Scenario(name="s", topology="dgx_h100", model=TINY,
                    moe=MoEOptions(), plan=ParallelPlan(tp=2, pp=4, num_microbatches=4))
    scn = config_or_value(base.with_overrides, overrides)
    if scn is not None:
        assert isinstance(scn, Scenario) and isinstance(scn.plan, ParallelPlan) and isinstance(scn.moe, MoEOptions)
        assert isinstance(scn.memory, MemoryConfig) and (scn.faults is None or isinstance(scn.faults, Faults))
        assert scn.moe.routing is None or isinstance(scn.moe.routing, RoutingConfig)
        assert isinstance(scn.schedule, str) and isinstance(scn.seed, int) and scn.seed >= 0


# -- memory configs -----------------------------------------------------------------------------
MEMORY_VALID = dict(recompute=["none", "selective", "full"], zero_stage=[0, 1, 3], distributed_optimizer=[False, True],
                    optimizer=["adam", "sgd"], master_weights=[True, False], param_dtype=["bf16", "fp32"],
                    grad_dtype=[None, "fp32"], optimizer_state_dtype=["fp32", "bf16"], flash_attention=[True, False],
                    dropout=[False, True], w_retained_fraction=[0.0, 0.9], ep=[1, 2], expert_tp=[1],
                    num_redundant_experts=[0, 1], a2a_buffer_bytes=[None, 2.0**20],
                    framework_reserve_bytes=[0, 2.0**30], p2p_buffers=[None, 4], inference=[False, True],
                    batch=[1, 4], context_len=[0, 64], kv_cache_dtype=["bf16", "fp8"], tokens_per_step=[128])


@FUZZ
@given(kwargs=field_values(MEMORY_VALID), model=st.sampled_from([TINY, TINY_MOE]))
def test_fuzzed_memory_configs_give_a_budget_or_name_the_field(kwargs: dict, model: Any) -> None:
    cfg = config_or_value(lambda: MemoryConfig(**kwargs))
    if cfg is None:
        return
    plan = ParallelPlan(tp=2, dp=2, pp=2, ep=2 if cfg.ep == 2 else 1, num_microbatches=4)
    budget = config_or_value(memory_budget, model, plan, "1f1b", cfg, "H100")
    if budget is not None:
        assert math.isfinite(budget.total_bytes) and budget.total_bytes > 0
        assert all(math.isfinite(v) and v >= 0 for v in budget.parts.values())


# -- bad inputs found by the fuzzing above, each now a ConfigError naming its field ------------
FIXED_BAD_INPUTS = {  # case: (the call, the field its ConfigError names); see docs/robustness.md
    "plan.order not text": (lambda: ParallelPlan(order=0), "plan.order"),
    "override with a blank key": (lambda: _scenario().with_overrides({"": "x"}), "''"),
    "override with a space key": (lambda: _scenario().with_overrides({" ": "4"}), "' '"),
    "override plan=x": (lambda: _scenario().with_overrides({"plan": "x"}), "plan"),
    "override moe=x": (lambda: _scenario().with_overrides({"moe": "x"}), "moe"),
    "override memory=x": (lambda: _scenario().with_overrides({"memory": "None"}), "memory"),
    "override faults=x": (lambda: _scenario().with_overrides({"faults": "x"}), "scenario.faults"),
    "override moe.routing=x": (lambda: _scenario().with_overrides({"moe.routing": "x"}), "moe.routing"),
    "override moe.routing=5": (lambda: _scenario().with_overrides({"moe.routing": "5"}), "moe.routing"),
    "scenario model=42": (lambda: _scenario(model=42), "scenario.model"),
    "scenario topology=5": (lambda: _scenario(topology=5), "scenario.topology"),
    "scenario plan=x": (lambda: _scenario(plan="x"), "scenario.plan"),
    "scenario moe=None": (lambda: _scenario(moe=None), "scenario.moe"),
    "scenario memory=None": (lambda: _scenario(memory=None), "scenario.memory"),
    "scenario faults=x": (lambda: _scenario(faults="x"), "scenario.faults"),
    "scenario seed=x": (lambda: _scenario(seed="x"), "scenario.seed"),
    "scenario seed=-1": (lambda: _scenario(seed=-1), "scenario.seed"),
    "scenario seed=True": (lambda: _scenario(seed=True), "scenario.seed"),
    "scenario nodes=True": (lambda: _scenario(nodes=True), "scenario.nodes"),
    "scenario schedule=[]": (lambda: _scenario(schedule=[]), "scenario.schedule"),
    "scenario description=None": (lambda: _scenario(description=None), "scenario.description"),
    "moe placement=[]": (lambda: MoEOptions(placement=[]), "moe.placement"),
    "moe replica_policy=None": (lambda: MoEOptions(replica_policy=None), "moe.replica_policy"),
    "moe routing=x": (lambda: MoEOptions(routing="x"), "moe.routing"),
    "moe routing={}": (lambda: MoEOptions(routing={"kind": "zipf"}), "moe.routing"),
    "moe step=x": (lambda: MoEOptions(step="x"), "moe.step"),
    "moe stats_step=-1": (lambda: MoEOptions(stats_step=-1), "moe.stats_step"),
    "moe num_redundant=True": (lambda: MoEOptions(num_redundant=True), "moe.num_redundant"),
    "schedule registry []": (lambda: generate([], 4, 8), "schedule"),
    "schedule registry {}": (lambda: generate({}, 4, 8), "schedule"),
    "placement registry []": (lambda: make_placement([], None), "placement"),
}


@pytest.mark.parametrize("case", sorted(FIXED_BAD_INPUTS))
def test_bad_input_found_by_fuzzing_names_its_field(case: str) -> None:
    call, field = FIXED_BAD_INPUTS[case]
    with pytest.raises(ConfigError) as err:
        with time_limit(CALL_LIMIT_S):
            call()
    assert err.value.field == field and field in str(err.value)
    assert err.value.problem and err.value.fix, f"no fix suggested: {err.value}"


def test_valid_scenarios_and_overrides_still_work() -> None:
    routing = RoutingConfig(kind="zipf", tokens_per_rank=16)
    scn = _scenario(seed=7, faults=Faults(jitter_ns=10), moe=MoEOptions(routing=routing, step=0))
    assert scn.memory == MemoryConfig() and scn.seed == 7
    out = scn.with_overrides({"plan.tp": "4", "plan.pp": "2", "moe.routing.seed": "3", "memory.recompute": "full",
                              "faults.jitter_ns": "20", "seed": "5", "schedule": "gpipe"})
    assert (out.plan.tp, out.plan.pp, out.moe.routing.seed, out.memory.recompute) == (4, 2, 3, "full")
    assert (out.faults.jitter_ns, out.seed, out.schedule) == (20, 5, "gpipe")
    assert _scenario(topology=Path("dgx_h100")).topology == Path("dgx_h100")
    assert _scenario().with_overrides({"plan": ParallelPlan(tp=8)}).plan == ParallelPlan(tp=8)
    built = build_scenario(_scenario(memory=MemoryConfig(recompute="full"), faults=Faults(jitter_ns=5)))
    assert built.tokens_per_step > 0 and built.scenario.memory.recompute == "full"
