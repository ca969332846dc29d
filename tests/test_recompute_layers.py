"""Full recomputation of some layers only: Megatron's --recompute-method uniform / block with
--recompute-num-layers, torchtitan's selective AC every N-th layer ("every")."""
from __future__ import annotations

import dataclasses

import pytest

from moesim.errors import ConfigError
from moesim.experiment import ParallelPlan, Scenario
from moesim.experiment.build import scenario_budget
from moesim.experiment.runner import run_scenario
from moesim.memory import MemoryConfig
from moesim.memory.parts import chunk_activation, layer_activation_bytes
from moesim.workload.transformer import TransformerSpec

TINY = TransformerSpec(name="tiny", num_layers=8, hidden=1024, num_heads=16, num_kv_heads=4, head_dim=64,
                       ffn_hidden=4096, vocab=32000, seq_len=1024)


def _full(method: str, n: int) -> MemoryConfig:
    return MemoryConfig(recompute="full", recompute_method=method, recompute_num_layers=n)


def test_which_layers_each_method_recomputes() -> None:
    assert [_full("block", 3).recompute_at(i) for i in range(5)] == ["input"] * 3 + ["kept"] * 2
    assert [_full("every", 2).recompute_at(i) for i in range(4)] == ["kept", "input", "kept", "input"]
    assert [_full("uniform", 2).recompute_at(i) for i in range(4)] == ["input", "recomputed"] * 2
    assert MemoryConfig().recompute_at(0) == "none" and MemoryConfig(recompute="full").recompute_at(5) == "input"


def test_a_chunk_keeps_the_inputs_of_recomputed_layers_and_everything_of_the_others() -> None:
    full, none = (layer_activation_bytes(TINY, 0, 1, 1, False, MemoryConfig(recompute=r)) for r in ("full", "none"))
    assert 0 < full < none
    layers = range(8)
    got = {(m, n): chunk_activation(TINY, layers, False, 1, 1, False, _full(m, n))[0]
           for m, n in (("block", 2), ("every", 2), ("uniform", 2), ("uniform", 1), ("block", 8))}
    assert got[("block", 2)] == pytest.approx(2 * full + 6 * none)
    assert got[("every", 2)] == pytest.approx(4 * full + 4 * none)
    assert got[("uniform", 2)] == pytest.approx(4 * full)
    assert got[("uniform", 1)] == pytest.approx(got[("block", 8)]) == pytest.approx(8 * full)


def test_the_step_recomputes_only_the_layers_chosen() -> None:
    """Recompute time grows with the layers recomputed: none < every 4th < every 2nd < all."""
    def step(memory: MemoryConfig) -> float:
        scn = Scenario(name="r", topology="dgx_h100", model=TINY, memory=memory,
                       plan=ParallelPlan(tp=4, dp=1, pp=2, num_microbatches=4))
        return run_scenario(scn)[0].step_time_ms
    times = [step(m) for m in (MemoryConfig(), _full("every", 4), _full("every", 2), MemoryConfig(recompute="full"))]
    assert times == sorted(times) and len(set(times)) == 4
    assert step(_full("block", 4)) == pytest.approx(times[-1])   # 4 layers a stage: block 4 is every layer


def test_a_method_without_full_recompute_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"recompute_method: .*'block'.*recompute is 'selective'"):
        MemoryConfig(recompute="selective", recompute_method="block", recompute_num_layers=2)
    with pytest.raises(ConfigError, match="recompute_method"):
        MemoryConfig(recompute="full", recompute_method="some")
    with pytest.raises(ConfigError, match="recompute_num_layers"):
        MemoryConfig(recompute="full", recompute_num_layers=0)


def test_the_planner_estimate_charges_the_recomputed_share_of_a_stage() -> None:
    from moesim.planner.estimate import _recompute_share

    assert _recompute_share(MemoryConfig(), 4) == 0.0
    assert _recompute_share(MemoryConfig(recompute="full"), 4) == 1.0
    assert _recompute_share(_full("every", 2), 4) == 0.5 and _recompute_share(_full("block", 1), 4) == 0.25
    assert _recompute_share(_full("uniform", 3), 4) == 1.0   # every layer re-runs, whatever the group size
