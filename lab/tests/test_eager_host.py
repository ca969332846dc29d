"""lab.eager_host: the shipped profile's ``eager_host`` figure is what the stored eager-probe runs
(``lab/eager_probe.py --stack``, runs 26-27) give. Run from the repository root:
``python -m pytest -q lab/tests``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from moesim.errors import ConfigError

RUNS = Path(__file__).resolve().parents[2] / "data" / "validation" / "runs"
STACKS = [RUNS / "run26_h200_eager_stack.json", RUNS / "run27_h200_eager_check.json"]


def test_the_profile_eager_host_figure_is_derived_from_the_stored_probes() -> None:
    from lab.eager_host import counted_kernels, derive
    from moesim.costs.calibrated import CalibratedCostModel
    rec = derive([(f"data/validation/runs/{f.name}", json.loads(f.read_text())) for f in STACKS])
    assert counted_kernels(512) == 28  # a Llama-3-8B layer at TP1 (forward, input and weight backward)
    cost = CalibratedCostModel("h200_sxm")
    assert cost.eager_host_ns() == rec["per_kernel_ns"] and 50_000 < rec["per_kernel_ns"] < 90_000
    assert cost.eager_host_ns() > 5 * cost.launch_overhead_ns()  # in-program vs back to back
    with pytest.raises(ConfigError, match="--stack"):  # single-layer runs cannot give the per-layer slope
        derive([("run25", json.loads((RUNS / "run25_h200_eager_probe.json").read_text()))])
