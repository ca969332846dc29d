"""Model shapes the planner derives from a preset's model: even stage splits and reduced proxies.

The stage tables (and so the simulator) need the layers to split evenly over the virtual
stages; planning may consider uneven splits (DeepSeek-V3's 61 layers on PP16), which are costed
with :func:`padded_to_stages` (the worst stage's layer count on every stage). Simulations too
large to run are replaced by proxies with fewer layers (:func:`with_layers`), keeping the share
of MoE layers; the planner says whenever it does either.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from moesim.workload.moe import MoESpec


def moe_pattern(num_layers: int, num_moe: int) -> tuple[int, ...]:
    """``num_moe`` MoE layers spread evenly over ``num_layers`` (0/1 per layer)."""
    return tuple(int((i + 1) * num_moe // num_layers > i * num_moe // num_layers) for i in range(num_layers))


def with_layers(spec: Any, num_layers: int) -> Any:
    """``spec`` with ``num_layers`` layers and (for MoE) the same share of MoE layers; per-layer
    attention kinds (``layer_types``) repeat their pattern from the first layer (GPT-OSS's
    alternation of window and full layers stays an alternation)."""
    if num_layers == spec.num_layers:
        return spec
    changes: dict[str, Any] = {"num_layers": num_layers}
    kinds = getattr(spec, "layer_types", ())
    if kinds:
        changes["layer_types"] = tuple(kinds[i % len(kinds)] for i in range(num_layers))
    if isinstance(spec, MoESpec):
        if isinstance(spec.moe_layer_freq, int):
            dense = min(num_layers - 1, round(spec.first_k_dense * num_layers / spec.num_layers))
            changes["first_k_dense"] = max(0, dense)
        else:
            num_moe = max(1, round(num_layers * spec.num_moe_layers / spec.num_layers))
            changes.update(moe_layer_freq=moe_pattern(num_layers, num_moe), first_k_dense=0)
    return dataclasses.replace(spec, **changes)


def padded_to_stages(spec: Any, num_stages: int) -> tuple[Any, str]:
    """(spec whose layers split evenly over ``num_stages``, note): rounds the layer count up to
    the next multiple when it does not divide, so every stage costs as much as the fullest one."""
    if spec.num_layers % num_stages == 0:
        return spec, ""
    padded = -(-spec.num_layers // num_stages) * num_stages
    note = (f"{spec.num_layers} layers do not split evenly over {num_stages} stages: costed as {padded} "
            f"({padded // num_stages} per stage, the fullest stage's count)")
    return with_layers(spec, padded), note


def stages_of(schedule_name: str, pp: int, vpp: int) -> int:
    """Virtual stages a schedule puts on ``pp`` ranks (V schedules: 2 per rank; DualPipe: pp)."""
    if schedule_name in ("zb-v", "dualpipev"):
        return 2 * pp
    if schedule_name == "interleaved":
        return pp * vpp
    return pp
