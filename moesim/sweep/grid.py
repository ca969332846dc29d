"""Sweep points: the ``--grid key=v1,v2`` parser and the Cartesian product over base scenarios.

A :class:`SweepPoint` is one base scenario plus one choice of value for every grid key. Values
stay strings (the ``--set`` form; :meth:`Scenario.with_overrides` coerces them), so a point's
``id`` (a hash of the base scenario name and the sorted overrides) is the same whether the grid
came from the command line or from Python, and a rerun recognises the points it already ran.
Keys are checked against the base scenarios' fields before anything runs; values are applied
per point, so an invalid combination fails that point only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from moesim.errors import ConfigError, unknown_name
from moesim.experiment.scenario import Scenario

GRID_FIELD = "--grid"
ID_LENGTH = 12


@dataclass(frozen=True)
class SweepPoint:
    """One scenario of a sweep: a base scenario name and its overrides (sorted by key)."""

    base: str
    overrides: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        keys = [k for k, _ in self.overrides]
        assert keys == sorted(set(keys)), "overrides must be sorted with unique keys"

    @property
    def id(self) -> str:
        """Stable id: a hash of the base name and the sorted overrides."""
        text = json.dumps([self.base, [list(kv) for kv in self.overrides]], separators=(",", ":"))
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:ID_LENGTH]

    @property
    def name(self) -> str:
        """Readable name, e.g. ``tiny[plan.num_microbatches=8, schedule=1f1b]``."""
        if not self.overrides:
            return self.base
        return f"{self.base}[{', '.join(f'{k}={v}' for k, v in self.overrides)}]"

    def record(self) -> dict[str, Any]:
        """The identifying fields every results.jsonl line starts with."""
        return {"id": self.id, "name": self.name, "base": self.base, "overrides": dict(self.overrides)}


def parse_grid(items: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``["plan.tp=1,2", "schedule=1f1b"]`` -> ``{"plan.tp": ("1", "2"), "schedule": ("1f1b",)}``
    (keys in the order given)."""
    grid: dict[str, tuple[str, ...]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key):
            raise ConfigError(GRID_FIELD, f"{item!r} is not key=v1,v2,...",
                              "write e.g. --grid plan.num_microbatches=8,16,32")
        values = tuple(v.strip() for v in raw.split(","))
        if any(not v for v in values):
            raise ConfigError(GRID_FIELD, f"{item!r} has an empty value", "separate values by single commas: key=v1,v2")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(GRID_FIELD, f"{key}: value(s) {', '.join(repeated)} given twice", "list each value once")
        if key in grid:
            raise ConfigError(GRID_FIELD, f"key {key!r} given twice", "put all its values in one --grid key=v1,v2")
        grid[key] = values
    return grid


def check_key(scn: Scenario, key: str) -> None:
    """Raise a ConfigError naming ``--grid`` unless ``key`` is a settable dotted field of ``scn``."""
    obj: Any = scn
    parts = key.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "scenario"
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(GRID_FIELD, f"unknown key {key!r}: {where} of scenario {scn.name!r} is a "
                              f"{type(obj).__name__}, which has no fields to set",
                              f"set {where} itself, or give the base scenario a {where} object")
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            prefix = "" if depth == 0 else ".".join(parts[:depth]) + "."
            raise ConfigError(GRID_FIELD, f"unknown key {key!r}: {type(obj).__name__} has no field {part!r}",
                              f"use one of: {', '.join(prefix + n for n in names)}")
        obj = getattr(obj, part)


def select_scenarios(scenarios: Sequence[Scenario], name: str | None) -> tuple[Scenario, ...]:
    """All scenarios, or only the one named ``name`` (``--scenario``)."""
    if name is None:
        return tuple(scenarios)
    found = [s for s in scenarios if s.name == name]
    if not found:
        raise unknown_name("--scenario", name, [s.name for s in scenarios])
    return tuple(found)


# At ~1 s per point a sweep of 100,000 points is a day on 4 cores; more is a typo.
MAX_POINTS = 100_000


def expand(scenarios: Sequence[Scenario], grid: Mapping[str, Sequence[Any]]) -> list[tuple[SweepPoint, Scenario]]:
    """Every base scenario times the Cartesian product of the grid, as (point, base scenario)
    pairs, in a deterministic order (scenario order, then grid order). Keys are checked first."""
    for scn in scenarios:
        for key in grid:
            check_key(scn, key)
    keys = list(grid)
    num_points = len(scenarios) * math.prod(len(grid[k]) for k in keys)
    if num_points > MAX_POINTS:  # refused before the product is built (six axes of 100 values hung)
        sizes = " x ".join(str(len(grid[k])) for k in keys)
        raise ConfigError(GRID_FIELD, f"{len(scenarios)} scenario(s) x {sizes} values = {num_points:,} points, more "
                          f"than a sweep runs ({MAX_POINTS:,})", "sweep fewer values, or split the grid over "
                          "several sweeps (each resumes on its own results.jsonl)")
    combos = list(itertools.product(*[[str(v) for v in grid[k]] for k in keys]))
    pairs = []
    for scn in scenarios:
        for combo in combos:
            pairs.append((SweepPoint(scn.name, tuple(sorted(zip(keys, combo)))), scn))
    return pairs
