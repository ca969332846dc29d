"""The Ray executor on a local two-CPU Ray instance (skipped when Ray is not installed)."""
from __future__ import annotations

import json

import pytest

from moesim.experiment import ParallelPlan, Scenario
from moesim.sweep import RayExecutor, expand, make_executor, run_sweep
from moesim.workload.transformer import TransformerSpec

ray = pytest.importorskip("ray")

TINY = TransformerSpec(name="tiny", num_layers=8, hidden=1024, num_heads=16, num_kv_heads=4, head_dim=64,
                       ffn_hidden=4096, vocab=32000, seq_len=1024)
BASE = Scenario(name="tiny", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=2, pp=4, num_microbatches=8))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_ray_sweep_runs_points_as_tasks_and_keeps_the_given_instance(local_ray, tmp_path):
    tasks = expand([BASE], {"plan.vpp": ["1", "2"]})  # vpp=2 with 1f1b is an invalid combination
    executor = make_executor("ray")
    assert isinstance(executor, RayExecutor)
    outcome = run_sweep(tasks, tmp_path, executor, title="ray")
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    by_vpp = {r["overrides"]["plan.vpp"]: r for r in records}
    assert by_vpp["1"]["status"] == "ok" and by_vpp["1"]["result"]["step_time_ms"] > 0
    assert by_vpp["2"]["status"] == "error" and "only used by the 'interleaved' schedule" in by_vpp["2"]["error"]
    assert (outcome.num_run, len(outcome.ok), outcome.front) == (2, 1, (by_vpp["1"]["id"],))
    assert local_ray.is_initialized()  # an instance the caller started is left running
