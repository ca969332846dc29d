"""Invariants of a :class:`~moesim.memory.budget.Budget`, checked apart from building it.

``validate_budget`` returns the failed invariants as readable lines (empty list = all hold):
the parts add up to the total on every rank and the budget's total is the worst rank's; no
part is negative; the sharding divides (routed experts by ep, the tp x dp ranks of a stage by
ep x expert_tp so the expert-data-parallel group ZeRO shards over is whole, the layers by the
virtual pipeline stages, the shared-expert width by tp). Given a ``baseline``, an optimized
budget must also pass every check the baseline passes, including fitting in HBM.
"""
from __future__ import annotations

from moesim.costs.devices import GIB
from moesim.memory.budget import Budget, Sharding

# Relative tolerance of the sum check: parts are floats summed in a different order.
SUM_RTOL = 1e-9


def validate_budget(budget: Budget, baseline: Budget | None = None) -> list[str]:
    """Failed invariants of ``budget`` (and regressions against ``baseline``), one line each."""
    checks = _checks(budget)
    failures = [msg for msgs in checks.values() for msg in msgs]
    if baseline is not None:
        failures += _regressions(budget, baseline, checks)
    return failures


def _checks(budget: Budget) -> dict[str, list[str]]:
    """Check name -> failure messages (empty when the check passes)."""
    return {"sums": _sum_failures(budget), "non_negative": _negative_failures(budget),
            **_sharding_failures(budget.sharding)}


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= SUM_RTOL * max(1.0, abs(a), abs(b))


def _sum_failures(budget: Budget) -> list[str]:
    out = []
    if not _close(sum(budget.parts.values()), budget.total_bytes):
        out.append(f"sums: parts add up to {sum(budget.parts.values()):.0f} B but total is {budget.total_bytes:.0f} B")
    for r in budget.per_rank:
        if not _close(sum(r.parts.values()), r.total_bytes):
            out.append(f"sums: rank {r.rank} parts add up to {sum(r.parts.values()):.0f} B but its total is "
                       f"{r.total_bytes:.0f} B")
    if budget.per_rank and not _close(max(r.total_bytes for r in budget.per_rank), budget.total_bytes):
        out.append(f"sums: total {budget.total_bytes:.0f} B is not the worst rank's "
                   f"{max(r.total_bytes for r in budget.per_rank):.0f} B")
    return out


def _negative_failures(budget: Budget) -> list[str]:
    sources = [("worst GPU", budget.parts)] + [(f"rank {r.rank}", r.parts) for r in budget.per_rank]
    return [f"non_negative: {where} part {name!r} is {value:.0f} B"
            for where, parts in sources for name, value in parts.items() if value < 0]


def _sharding_failures(s: Sharding) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"experts_divisible": [], "expert_dp_whole": [], "layers_divisible": [],
                                 "shared_experts_divisible": []}
    if s.num_experts and s.num_experts % s.ep:
        out["experts_divisible"].append(
            f"experts_divisible: ep = {s.ep} does not divide num_experts = {s.num_experts} "
            f"(fix: choose ep among the divisors of {s.num_experts})")
    group = s.ep * s.expert_tp
    if s.num_experts and (s.tp * s.dp) % group:
        out["expert_dp_whole"].append(
            f"expert_dp_whole: ep x expert_tp = {group} does not divide tp x dp = {s.tp * s.dp}, so the "
            "expert-data-parallel group that ZeRO shards expert state over is not whole "
            "(fix: make ep x expert_tp a divisor of tp x dp)")
    if (s.num_layers + s.split_slots) % s.num_stages:
        slots = f" (+ {s.split_slots} embedding/loss slots)" if s.split_slots else ""
        out["layers_divisible"].append(
            f"layers_divisible: {s.num_layers} layers{slots} do not split evenly over {s.num_stages} virtual pipeline "
            f"stages (pp x chunks); the budget gave the first stages one layer more "
            "(fix: choose pp (x vpp) dividing the layer count)")
    if s.shared_ffn_hidden and s.shared_ffn_hidden % s.tp:
        out["shared_experts_divisible"].append(
            f"shared_experts_divisible: tp = {s.tp} does not divide the shared-expert width {s.shared_ffn_hidden}")
    return out


def _regressions(budget: Budget, baseline: Budget, checks: dict[str, list[str]]) -> list[str]:
    base = _checks(baseline)
    out = [f"regression: {name!r} passes in the baseline but fails here" for name, msgs in checks.items()
           if msgs and not base.get(name)]
    if baseline.fits and not budget.fits:
        out.append(f"regression: 'fits': the baseline fits ({baseline.margin_bytes / GIB:.2f} GiB margin) but "
                   f"this budget is over by {-budget.margin_bytes / GIB:.2f} GiB")
    return out
