"""Dispatch: one predictor per measurement kind, and predicting a whole file."""
from __future__ import annotations

from typing import Callable, Iterable

from moesim.errors import unknown_name
from lab.legacy_validate.collectives import predict_collective
from lab.legacy_validate.context import ValidationContext
from moesim.validate.measurements import Measurement
from lab.legacy_validate.moe import predict_moe
from lab.legacy_validate.pipeline import predict_pipeline
from lab.legacy_validate.prediction import Prediction
from lab.legacy_validate.single import predict_single

PREDICTORS: dict[str, Callable[[ValidationContext, Measurement], Prediction]] = {
    "gemm": predict_single,
    "swiglu_ffn": predict_single,
    "attention": predict_single,
    "memory": predict_single,
    "collective": predict_collective,
    "pipeline": predict_pipeline,
    "moe_layer": predict_moe,
}


def predict(ctx: ValidationContext, case: Measurement) -> Prediction:
    """moesim's prediction of one stored measurement."""
    if case.kind not in PREDICTORS:
        raise unknown_name("kind", case.kind, list(PREDICTORS))
    return PREDICTORS[case.kind](ctx, case)


def predict_all(ctx: ValidationContext, cases: Iterable[Measurement], kinds: "Iterable[str] | None" = None) -> list[Prediction]:
    """Predictions for every case (of ``kinds`` when given), in file order."""
    wanted = set(kinds) if kinds else None
    if wanted:
        bad = sorted(wanted - set(PREDICTORS))
        if bad:
            raise unknown_name("--kind", bad[0], list(PREDICTORS))
    return [predict(ctx, c) for c in cases if wanted is None or c.kind in wanted]
