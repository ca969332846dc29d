"""The measurement scripts in CPU smoke mode (needs torch; skipped without it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moesim.calibrate.collectives import zipf_split_fractions  # noqa: E402
from moesim.calibrate.dist import run_workers  # noqa: E402
from moesim.calibrate.measure import run_calibration  # noqa: E402
from moesim.calibrate.moe_bench import MoEConfig, counts_matrix, moe_check_worker, placement  # noqa: E402
from moesim.calibrate.pipeline_bench import PipelineConfig, pipeline_check_worker  # noqa: E402
from moesim.calibrate.timing import stats_from_ns  # noqa: E402
from moesim.costs.calibrated import CalibratedCostModel  # noqa: E402
from moesim.costs.profile import load_profile  # noqa: E402
from moesim.ops import Gemm  # noqa: E402


def test_cpu_smoke_run_writes_a_valid_profile(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    sections = ("launch", "host_ops", "gemm", "attention", "memory", "swiglu", "collectives")
    run_calibration("cpu", out, mode="smoke", budget_s=60, sections=sections)
    profile = load_profile(out)
    assert {"gemm", "attention", "memory", "swiglu_ffn", "launch", "host"} <= profile.ops()
    assert {s["batch"] for s in profile.select("attention")} == {1, 2}  # batch and heads are separate axes
    assert {"index_add", "zeros"} <= {s["variant"] for s in profile.select("memory")}
    assert {s["cache"] for s in profile.select("memory")} == {"cold", "warm"}
    assert {"mm", "index_add_", "swiglu_ffn", "empty"} <= {s["call"] for s in profile.select("host")}
    assert len(profile.select("gemm")) == 8 and profile.device == "cpu"
    assert any("collectives: skipped" in e for e in profile.extra["errors"])  # no ranks asked for
    cpu = profile.extra["host_cpu"]   # host rows depend on the CPU: the run names it
    assert cpu["model"] and cpu["logical_cpus"] >= 1
    model = CalibratedCostModel(profile)
    row = profile.select("gemm")[0]
    assert model.gemm_ns(row["m"], row["n"], row["k"], "bf16", "fwd") == pytest.approx(row["time_ns"])
    assert model.compute_ns(Gemm(4096, 4096, 4096)) > model.compute_ns(Gemm(32, 64, 64))


def test_stats_known_answer() -> None:
    st = stats_from_ns([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (st.median_ns, st.min_ns, st.max_ns, st.repeats) == (3.0, 1.0, 5.0, 5)
    assert st.fields()["time_ns"] == 3.0 and st.p25_ns == 2.0 and st.p75_ns == 4.0


def test_moe_routing_plan_conserves_tokens() -> None:
    cfg = MoEConfig(64, 16, 8, 8, 2, "zipf", 1.2, "contiguous")
    counts = counts_matrix(cfg, 2)
    assert counts.sum(axis=(1, 2)).tolist() == [64 * 2, 64 * 2]
    assert placement(cfg, 2) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert placement(MoEConfig(64, 16, 8, 8, 2, "zipf", 1.2, "hot_split"), 2) == [0, 1, 0, 1, 0, 1, 0, 1]
    assert counts[:, 0].sum() > counts[:, 1].sum()  # Zipf: the hot experts live on rank 0
    frac = np.array(zipf_split_fractions(4))
    assert np.allclose(frac.sum(axis=1), 1.0) and frac[0, 0] > frac[0, 3]


def test_distributed_workloads_match_a_one_rank_reference() -> None:
    """Pipeline gradients and the expert-parallel layer, on two gloo ranks, against references."""
    cfg = {"pipeline": PipelineConfig("check", 16, 32, 4, 8, 2),
           "moe": [MoEConfig(16, 16, 8, 4, 2, "zipf", 1.2, "hot_split")], "timeout_s": 60}
    pipes, errors = run_workers(pipeline_check_worker, 2, "gloo", cfg, timeout_s=90)
    assert not errors and max(max(r.values()) for r in pipes) < 1e-2
    moes, errors = run_workers(moe_check_worker, 2, "gloo", cfg, timeout_s=90)
    assert not errors and max(max(r.values()) for r in moes) < 1e-2


def test_the_megatron_host_section_is_asked_for_by_name_and_says_why_it_measured_nothing() -> None:
    """``host_megatron`` needs megatron-core: not in the default sections; where megatron-core is
    missing it records why and yields no rows (with it installed, its rows carry the version)."""
    from moesim.calibrate import framework_host
    from moesim.calibrate.measure import ALL_SECTIONS, DEFAULT_SECTIONS
    from moesim.calibrate.timing import Budget

    assert "host_megatron" in ALL_SECTIONS and "host_megatron" not in DEFAULT_SECTIONS
    if framework_host.megatron_version() is not None:
        pytest.skip("megatron-core is installed here")
    sec = framework_host.measure_host_megatron(None, None, "cpu", Budget(10))
    assert sec.samples == [] and len(sec.errors) == 1 and "pip install megatron-core" in sec.errors[0]


def test_the_grouped_grid_measures_fused_fc1_and_many_expert_shapes_at_their_largest_counts() -> None:
    from moesim.calibrate.grouped import GPU_PLAN, ExpertShape, capped_total, grouped_specs

    qwen = ExpertShape("q", 2048, 768, (128,))
    assert qwen.projections() == ((768, 2048), (2048, 768), (1536, 2048), (2048, 1536))
    assert ExpertShape("q", 2048, 768, (128,), fused_fc1=False).projections() == ((768, 2048), (2048, 768))
    # 128 experts x 2048 rows is over the 131072-row cap: cut to 1024 per expert, not dropped
    assert capped_total(GPU_PLAN, 128, 2048, 768, 2048) == 131072
    assert capped_total(GPU_PLAN, 8, 2048, 768, 2048) == 16384          # under the caps: as asked
    n, k = 28672, 4096                                                   # the FLOP cap binds
    total = capped_total(GPU_PLAN, 8, 8192, n, k)
    assert total % 8 == 0 and 2.0 * total * n * k <= GPU_PLAN.max_flops < 2.0 * (total + 8) * n * k
    specs = list(grouped_specs(GPU_PLAN))
    keys = [(layout, n, k, len(c), sum(c), kind) for _, layout, n, k, _, c, kind in specs if kind != "equal"]
    assert len({(l, n, k, g, kind) for l, n, k, g, t, kind in keys if (n, k, g) == (1536, 2048, 128)}) > 1
    assert max(t for l, n, k, g, t, kind in keys if (n, k, g) == (1536, 2048, 128)) == 131072
    rounds = [r for r, *_ in specs]
    assert rounds == sorted(rounds)                                      # a budget cut drops whole rounds
    assert all(sum(c) <= GPU_PLAN.max_rows + 16 * len(c) for *_, c, _ in specs)
