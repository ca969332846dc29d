"""The result of one measurement section: its samples, the errors it survived, what it skipped.

Every measurement loop runs each shape inside :meth:`Section.attempt`, so one failing shape
(out of memory, an unsupported dtype) is logged and skipped instead of losing the whole run.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

import torch

from moesim.calibrate.timing import Budget


@dataclass
class Section:
    """Samples and errors collected by one measurement section (mutable while it runs)."""

    name: str
    samples: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: int = 0
    checks: dict = field(default_factory=dict)

    def attempt(self, label: str, budget: Budget, fn: Callable[[], "dict | list[dict] | None"]) -> None:
        """Run one measurement; add its sample(s), or log its error; skip once over budget."""
        if budget.expired():
            self.skipped += 1
            return
        try:
            out = fn()
        except Exception as exc:  # one bad shape must not end the run
            msg = f"{self.name} {label}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            self.errors.append(msg)
            print("  error:", msg, file=sys.stderr, flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return
        if out is None:
            return
        self.samples.extend(out if isinstance(out, list) else [out])

    def summary(self) -> str:
        return f"{self.name}: {len(self.samples)} samples, {len(self.errors)} errors, {self.skipped} skipped"

    def merge(self, other: "Section") -> None:
        self.samples.extend(other.samples)
        self.errors.extend(other.errors)
        self.skipped += other.skipped
