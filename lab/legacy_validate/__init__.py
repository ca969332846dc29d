"""The retired validation predictors (formerly ``moesim.validate``; not the product, see lab/README.md).

For every stored measurement (``data/validation/h200_measurements.json``) the package builds the
same workload without a GPU and predicts its time: single kernels with the calibrated cost model
(``single``), NCCL collectives, pipelines and MoE layers with engine runs (``collectives``,
``pipeline``, ``moe``), all from one :class:`~lab.legacy_validate.context.ValidationContext`
(cost model, clock model, engine settings, the per-session host speed of ``host_speed``). ``report`` summarises the errors and ``cli`` is the
command. ``gpu_diagnostics`` is a separate torch script used to investigate misses on a GPU.

Names are imported lazily so that ``python3 -m lab.legacy_validate.gpu_diagnostics`` runs on a
machine that has torch but not the simulator's dependencies.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "build_context": "lab.legacy_validate.context", "ValidationContext": "lab.legacy_validate.context",
    "load_measurements": "moesim.validate.measurements", "Measurement": "moesim.validate.measurements",
    "predict": "lab.legacy_validate.predict", "predict_all": "lab.legacy_validate.predict",
    "Prediction": "lab.legacy_validate.prediction", "summarize": "lab.legacy_validate.report",
    "validate": "lab.legacy_validate.cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lab.legacy_validate' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
