"""A Ray instance the sweep starts itself keeps its session files in a private temporary
directory, removed at shutdown (skipped when Ray is not installed)."""
from __future__ import annotations

import pytest

from moesim.experiment import ParallelPlan, Scenario
from moesim.sweep import RayExecutor, expand, run_sweep
from moesim.workload.transformer import TransformerSpec

ray = pytest.importorskip("ray")

TINY = TransformerSpec(name="tiny", num_layers=4, hidden=512, num_heads=8, num_kv_heads=8, head_dim=64,
                       ffn_hidden=2048, vocab=32000, seq_len=512)
BASE = Scenario(name="tiny", topology="dgx_h100", model=TINY, plan=ParallelPlan(tp=2, pp=4, num_microbatches=4))


def test_a_private_ray_instance_leaves_no_session_directory(tmp_path, monkeypatch):
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    made: list[str] = []
    import tempfile

    real = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    executor = RayExecutor(num_cpus=1)
    outcome = run_sweep(expand([BASE], {"plan.num_microbatches": ["4"]}), tmp_path, executor, title="private")
    assert len(outcome.ok) == 1 and not ray.is_initialized()
    assert len(made) == 1 and "moesim-ray-" in made[0]
    import os
    assert not os.path.exists(made[0])   # session files, logs and sockets removed with the instance
