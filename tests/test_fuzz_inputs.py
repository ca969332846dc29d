"""Fuzzers for the inputs the loader fuzzers did not generate: raw bytes and alias bombs as
YAML, extreme floats (subnormal, 1e300, NaN) as link figures, path-like scenario names, and
routing traces inconsistent with the model. Property everywhere: a valid value or a
ConfigError naming its field, within a few seconds, and nothing written outside the directory."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fuzzing import time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesim.errors import ConfigError
from moesim.lowering.moe_routing import _check_trace_totals
from moesim.pathnames import MAX_NAME_BYTES, check_file_stem, name_problem, safe_file_stem
from moesim.topology.loader import build_topology
from moesim.topology.spec import MAX_BANDWIDTH_GBPS, MIN_BANDWIDTH_GBPS
from moesim.yamlio import MAX_EXPANDED_NODES, parse_yaml

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMIT_S = 5.0


def parsed_or_refused(text: str) -> object:
    with time_limit(LIMIT_S):
        try:
            return parse_yaml(text, "fuzz")
        except ConfigError as err:
            assert err.field in str(err) and "fuzz" in str(err)
            return None


@FUZZ
@given(st.binary(max_size=400))
def test_raw_bytes_as_yaml_parse_or_name_the_problem(raw: bytes) -> None:
    parsed_or_refused(raw.decode("utf-8", "surrogateescape"))


def alias_bomb(width: int, depth: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    return "\n".join(lines) + "\n"


@FUZZ
@given(st.integers(1, 12), st.integers(1, 10))
def test_alias_bombs_are_refused_before_they_expand(width: int, depth: int) -> None:
    text = alias_bomb(width, depth)
    expanded = sum(width ** (i + 1) for i in range(depth + 1))
    data = parsed_or_refused(text)
    if expanded > MAX_EXPANDED_NODES or depth + 1 > 64:
        assert data is None
    elif data is not None:
        assert len(data) == depth + 1


EXTREME = st.sampled_from([5e-324, 2.2e-308, 1e-300, 1e-9, 1e-3, 0.5, 1.0, 450.0, 1e5, 1e5 * (1 + 1e-15), 1e6,
                           1e300, 1.7e308, float("inf"), float("nan"), -0.0, -1.0, 0.0])


@FUZZ
@given(bandwidth=st.one_of(EXTREME, st.floats()), latency=st.one_of(st.integers(-2, 10**40), EXTREME))
def test_extreme_link_figures_build_inside_the_physical_range_or_are_refused(bandwidth: float, latency: object) -> None:
    spec = {"name": "t", "gpu": {"kind": "H100"}, "gpus_per_node": 2,
            "intra": {"type": "nvswitch", "bandwidth_gbps": bandwidth, "latency_ns": latency}}
    with time_limit(LIMIT_S):
        try:
            topo = build_topology(spec, "fuzz")
        except ConfigError as err:
            assert err.field in str(err)
            return
    assert MIN_BANDWIDTH_GBPS <= bandwidth <= MAX_BANDWIDTH_GBPS
    assert all(MIN_BANDWIDTH_GBPS <= link.bandwidth_gbps <= MAX_BANDWIDTH_GBPS for link in topo.links)


PATHLIKE = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(["..", ".", "/", "\\", "a", "x.trace", "\x00", "\n", "~", "-", "é", "\udcff", " "]),
             max_size=8).map("".join),
    st.text(min_size=100, max_size=200),
)


@FUZZ
@given(PATHLIKE)
def test_path_like_names_are_refused_or_stay_inside_the_directory(name: str) -> None:
    out = Path("/tmp/moesim-out")
    try:
        stem = check_file_stem(name, "scenario.name")
    except ConfigError as err:
        assert err.field == "scenario.name" and name_problem(name)
    else:
        target = (out / f"{stem}.utilization.png").resolve()
        assert target.parent == out.resolve() and len(target.name.encode()) <= 255
    safe = safe_file_stem(name)
    assert name_problem(safe) is None and len(safe.encode()) <= MAX_NAME_BYTES
    assert (out / f"{safe}.trace.json").resolve().parent == out.resolve()


@FUZZ
@given(layers=st.integers(1, 3), mbs=st.integers(1, 3), ranks=st.integers(1, 4), experts=st.integers(1, 8),
       pairs=st.integers(1, 64), how=st.sampled_from(["exact", "scaled", "one_layer", "one_rank_silent", "random"]),
       data=st.data())
def test_traces_inconsistent_with_the_model_are_refused(layers: int, mbs: int, ranks: int, experts: int, pairs: int,
                                                        how: str, data: st.DataObject) -> None:
    """Per layer, microbatch and source rank a trace must route the model's tokens x top_k."""
    routed = np.zeros((layers, mbs, ranks, experts), dtype=np.int64)
    routed[..., 0] = pairs
    if how == "scaled":
        routed *= data.draw(st.sampled_from([0, 2, 1000]))
    elif how == "one_layer" and layers > 1:
        routed[-1, ..., 0] += 1
    elif how == "one_rank_silent":
        routed[:, :, -1] = 0
    elif how == "random":
        routed = np.asarray(data.draw(st.lists(st.integers(0, pairs), min_size=routed.size, max_size=routed.size)),
                            dtype=np.int64).reshape(routed.shape)
    consistent = bool((routed.sum(axis=-1) == pairs).all())
    if consistent:
        _check_trace_totals(routed, pairs, "fuzz.npz")
    else:
        with pytest.raises(ConfigError, match="moe.routing.trace_path"):
            _check_trace_totals(routed, pairs, "fuzz.npz")


def test_a_file_name_cannot_reach_outside_the_output_directory(tmp_path: Path) -> None:
    for name in ("../x", "a/../../b", "..", "/etc/passwd", "a\\..\\b"):
        with pytest.raises(ConfigError, match="scenario.name"):
            check_file_stem(name, "scenario.name")
        assert os.sep not in safe_file_stem(name) and safe_file_stem(name) not in (".", "..")


@FUZZ
@given(slow=st.one_of(EXTREME, st.floats()), frac=st.one_of(EXTREME, st.floats()),
       jitter=st.one_of(st.integers(-5, 10**30), EXTREME))
def test_extreme_fault_figures_are_held_to_physical_ranges(slow: float, frac: float, jitter: object) -> None:
    from moesim.experiment.faults import MAX_SLOWDOWN, Faults

    for kwargs in ({"slow_gpus": {0: slow}}, {"slow_nics": {0: frac}}, {"degraded_links": (("a", "b", frac),)},
                   {"jitter_ns": jitter}):
        try:
            faults = Faults(**kwargs)
        except ConfigError as err:
            assert err.field.startswith("faults.")
            continue
        assert all(1 <= f <= MAX_SLOWDOWN for f in faults.slow_gpus.values())
        assert all(1 / MAX_SLOWDOWN <= f <= 1 for f in faults.slow_nics.values())
        assert all(1 / MAX_SLOWDOWN <= d[2] <= 1 for d in faults.degraded_links)
        assert isinstance(faults.jitter_ns, int) and 0 <= faults.jitter_ns <= 10**9


def test_a_run_stopped_early_says_its_tasks_are_unfinished() -> None:
    from moesim.engine.sim import Simulation
    from moesim.topology.loader import load_topology

    sim = Simulation(load_topology("dgx_h100"))
    first = sim.compute(0, 1000, "first")
    sim.compute(0, 1000, "second", deps=[first])
    with pytest.warns(RuntimeWarning, match="1 of 2 tasks unfinished"):
        result = sim.run(until_ns=1500)
    assert not result.complete and result.num_unfinished == 1
    assert result.recorder.meta["unfinished_tasks"] == 1


TRACE_MOE = dict(name="t-moe", num_layers=2, hidden=256, num_heads=8, num_kv_heads=8, head_dim=32, ffn_hidden=512,
                 vocab=1000, seq_len=256, num_experts=16, top_k=2, expert_ffn_hidden=256)
PAIRS = 256 * 2 * 2 // 16  # per (layer, rank, expert): seq_len x top_k x 2 microbatches over 16 experts


def _counts(case: str) -> np.ndarray:
    good = np.full((1, 2, 8, 16), PAIRS, dtype=np.int64)  # [steps, layers, ranks, experts]
    return {"consistent": good, "1/64 of the tokens": good // 64, "1000x the tokens": good * 1000,
            "layers with different totals": np.concatenate([good[:, :1], good[:, 1:] * 2], axis=1),
            "a source rank sending nothing": np.where(np.arange(8)[None, None, :, None] == 3, 0, good),
            "32 experts for a 16-expert model": np.concatenate([good, good], axis=3) // 2,
            "4 ranks for ep 8": good[:, :, :4] * 2}[case]


@pytest.mark.parametrize("case, field", [
    ("consistent", None), ("1/64 of the tokens", "moe.routing.trace_path"), ("1000x the tokens", "moe.routing.trace_path"),
    ("layers with different totals", "moe.routing.trace_path"), ("a source rank sending nothing", "moe.routing.trace_path"),
    ("32 experts for a 16-expert model", "num_experts"), ("4 ranks for ep 8", "ep"),
])
def test_routing_traces_inconsistent_with_the_model_are_refused_by_a_run(case: str, field: str | None,
                                                                         tmp_path: Path) -> None:
    from moesim.experiment import MoEOptions, ParallelPlan, Scenario
    from moesim.experiment.runner import run_scenario
    from moesim.moe.routing import RoutingConfig
    from moesim.moe.traces import write_counts_trace
    from moesim.workload.moe import MoESpec

    path = tmp_path / "trace.npz"
    write_counts_trace(path, _counts(case))
    scn = Scenario(name="t", topology="dgx_h100", model=MoESpec(**TRACE_MOE), cost_model="roofline",
                   plan=ParallelPlan(tp=1, dp=8, pp=1, ep=8, num_microbatches=2),
                   moe=MoEOptions(routing=RoutingConfig(kind="trace", trace_path=str(path))))
    with time_limit(30):
        if field is None:
            result, _ = run_scenario(scn)
            # ranks x microbatches x tokens x top_k x MoE layers: the trace's pairs, all of them
            assert sum(result.moe["gpu_tokens"].values()) == 8 * 2 * 256 * 2 * 2 == int(_counts(case).sum())
            return
        with pytest.raises(ConfigError) as err:
            run_scenario(scn)
    assert err.value.field == field, str(err.value)


def test_assignment_traces_with_bad_expert_ids_or_top_k_are_refused(tmp_path: Path) -> None:
    from moesim.moe.traces import load_trace, write_assignments_trace

    chosen = np.tile(np.array([[0, 1]]), (1, 2, 64, 1))  # [steps, layers, tokens, top_k]
    src = np.repeat(np.arange(8), 8)[None, None, :]
    bad_id = chosen.copy()
    bad_id[0, 0, 0, 0] = 16
    write_assignments_trace(tmp_path / "id.npz", bad_id, src, num_experts=16)
    with pytest.raises(ConfigError, match="expert id >= num_experts"):
        load_trace(tmp_path / "id.npz")
    twice = chosen.copy()
    twice[..., 1] = 0
    write_assignments_trace(tmp_path / "twice.npz", twice, src, num_experts=16)
    with pytest.raises(ConfigError, match="same expert twice"):
        load_trace(tmp_path / "twice.npz")


@pytest.mark.parametrize("call", [
    lambda s: s.compute(0, 1e300, "a"), lambda s: s.compute(0, float("nan"), "a"),
    lambda s: s.send(0, 1, float("nan"), "x"), lambda s: s.send(0, 1, -1, "x"), lambda s: s.send(0, 1, float("inf"), "x"),
    lambda s: s.collective("all_reduce", [0, 1], float("nan"), "x"),
    lambda s: s.collective("all_to_all_v", [0, 1], [[0, float("nan")], [1, 0]], "x"),
    lambda s: s.send(0, 1, 10, "x", latency_ns=10**30),
], ids=["compute 1e300 ns", "compute NaN ns", "send NaN bytes", "send -1 bytes", "send inf bytes",
        "all-reduce NaN bytes", "all-to-all-v NaN bytes", "latency 1e30 ns"])
def test_the_engine_refuses_amounts_outside_physical_ranges(call: Any) -> None:
    from moesim.engine.sim import Simulation
    from moesim.topology.loader import load_topology

    with time_limit(LIMIT_S), pytest.raises(ConfigError):
        sim = Simulation(load_topology("dgx_h100"))
        call(sim)
        sim.run()


def test_an_experiment_file_that_never_ends_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moesim.experiment import experiment

    looping = tmp_path / "loop.py"
    looping.write_text("try:\n    while True:\n        pass\nexcept Exception:\n    pass\n")
    monkeypatch.setattr(experiment, "LOAD_LIMIT_S", 0.5)
    with time_limit(10), pytest.raises(ConfigError, match="still running after 0.5 s"):
        experiment.load_experiment(looping)
