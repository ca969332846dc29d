"""The schedule data model: actions, overlapped pairs and per-rank step lists.

A pipeline schedule is pure data. An :class:`Action` is one op (F forward, B input-grad
backward, W weight-grad backward, BW fused full backward) of one microbatch on one *virtual
stage* along that microbatch's path through the model. DualPipe's overlapped F&B pair is one
step, an :class:`Overlap`. A :class:`Schedule` holds the ordered steps of every rank plus the
layout that says which rank owns which stage ("looped": stage s on rank s % p, covering GPipe,
1F1B, ZB-H1/H2 and Megatron interleaved; "v": the ZB-V / DualPipeV V-shape; "dual": DualPipe's
two opposite paths). Nothing here knows about time or the engine.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Union

from moesim.errors import ConfigError

KINDS = ("F", "B", "W", "BW")
BACKWARD_KINDS = ("B", "BW")
LAYOUTS = ("looped", "v", "dual")


@dataclass(frozen=True)
class Action:
    """One op: ``kind`` of ``microbatch`` on global virtual ``stage`` of direction ``path``."""

    kind: str
    stage: int
    microbatch: int
    path: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError("action.kind", f"unknown op kind {self.kind!r}", f"use one of: {', '.join(KINDS)}")
        for field in ("stage", "microbatch", "path"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"action.{field}", f"must be an integer >= 0, got {value!r}")

    @property
    def is_backward(self) -> bool:
        """True for B and BW: the ops that consume the stored activation."""
        return self.kind in BACKWARD_KINDS

    @property
    def key(self) -> tuple[int, int, int]:
        """(path, stage, microbatch): the unit the dependency rules talk about."""
        return (self.path, self.stage, self.microbatch)

    def __str__(self) -> str:
        suffix = f"@{self.path}" if self.path else ""
        return f"{self.stage}{self.kind}{self.microbatch}{suffix}"


@dataclass(frozen=True)
class Overlap:
    """DualPipe's overlapped pair: one slot that runs a forward and a backward together."""

    first: Action
    second: Action

    def __post_init__(self) -> None:
        if self.first.kind != "F" or not self.second.is_backward:
            raise ConfigError(
                "overlap", f"an overlapped pair is a forward then a backward, got {self.first}&{self.second}",
                "write it as F&B or F&BW",
            )

    def __str__(self) -> str:
        return f"{self.first}&{self.second}"


Step = Union[Action, Overlap]


def actions_of(step: Step) -> tuple[Action, ...]:
    """The actions a step runs (two for an overlapped pair)."""
    return (step.first, step.second) if isinstance(step, Overlap) else (step,)


@dataclass(frozen=True)
class Schedule:
    """Per-rank ordered steps of one training iteration, plus the stage-to-rank layout.

    ``num_microbatches`` counts every microbatch of the iteration; DualPipe splits them evenly
    over its two paths (``microbatches_per_path``). ``num_chunks`` is model chunks per rank.
    """

    name: str
    num_ranks: int
    num_microbatches: int
    num_chunks: int
    num_paths: int
    layout: str
    steps: tuple[tuple[Step, ...], ...]

    def __post_init__(self) -> None:
        for field in ("num_ranks", "num_microbatches", "num_chunks", "num_paths"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(field, f"must be an integer >= 1, got {value!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError("layout", f"unknown layout {self.layout!r}", f"use one of: {', '.join(LAYOUTS)}")
        if len(self.steps) != self.num_ranks:
            raise ConfigError("steps", f"has {len(self.steps)} rank rows but num_ranks={self.num_ranks}")
        self._check_layout_shape()

    def _check_layout_shape(self) -> None:
        expected = {"v": (2, 1), "dual": (2, 2)}.get(self.layout)
        if self.layout == "looped" and self.num_paths != 1:
            raise ConfigError("num_paths", f"the looped layout has one path, got {self.num_paths}")
        if expected and (self.num_chunks, self.num_paths) != expected:
            raise ConfigError(
                "num_chunks", f"layout {self.layout!r} needs num_chunks={expected[0]} and num_paths={expected[1]}, "
                f"got {self.num_chunks} and {self.num_paths}",
            )
        if self.num_microbatches % self.num_paths:
            raise ConfigError(
                "num_microbatches", f"must split evenly over {self.num_paths} paths, got {self.num_microbatches}"
            )

    @property
    def num_stages(self) -> int:
        """Virtual stages along one path."""
        return self.num_ranks if self.layout == "dual" else self.num_ranks * self.num_chunks

    @property
    def microbatches_per_path(self) -> int:
        return self.num_microbatches // self.num_paths

    def rank_of(self, path: int, stage: int) -> int:
        """The rank that owns ``stage`` of ``path``."""
        p = self.num_ranks
        if self.layout == "looped":
            return stage % p
        if self.layout == "v":
            return stage if stage < p else 2 * p - 1 - stage
        return stage if path == 0 else p - 1 - stage

    def chunk_of(self, path: int, stage: int) -> int:
        """Which of its rank's model chunks ``stage`` of ``path`` is."""
        if self.layout == "looped":
            return stage // self.num_ranks
        if self.layout == "v":
            return 0 if stage < self.num_ranks else 1
        return path

    def is_last_stage(self, stage: int) -> bool:
        return stage == self.num_stages - 1

    @cached_property
    def backward_kind(self) -> dict[tuple[int, int, int], str]:
        """(path, stage, microbatch) -> the backward kind ("B" or "BW") this schedule uses."""
        kinds: dict[tuple[int, int, int], str] = {}
        for row in self.steps:
            for step in row:
                for action in actions_of(step):
                    if action.is_backward:
                        kinds.setdefault(action.key, action.kind)
        return kinds

    def op_counts(self, rank: int) -> Counter[str]:
        """How many ops of each kind ``rank`` runs (an overlapped pair counts both)."""
        return Counter(a.kind for step in self.steps[rank] for a in actions_of(step))
