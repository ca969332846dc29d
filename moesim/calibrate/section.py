"""The result of one measurement section: its samples, the errors it survived, what it skipped.

Every measurement loop runs each shape inside :meth:`Section.attempt`, so one failing shape
(out of memory, an unsupported dtype) is logged and skipped instead of losing the whole run.
It also counts what it measured and for how long, and names what the budget made it skip, so a
run can say what a complete profile would cost; :func:`progress_hook` lets a caller (the
``moesim calibrate run`` progress bar) see each shape as it starts.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from moesim.calibrate.timing import Budget

def error_line(exc: BaseException, width: int = 200) -> str:
    """``<ExceptionType>: <first line of its message, at most width characters>`` (an error record)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:width] if str(exc) else ''}"


_HOOKS: list[Callable[[str, str], None]] = []  # called with (section, shape label) as a shape starts


@contextmanager
def progress_hook(callback: Callable[[str, str], None] | None) -> Iterator[None]:
    """Within the block, every :meth:`Section.attempt` calls ``callback(section, label)`` first."""
    if callback is not None:
        _HOOKS.append(callback)
    try:
        yield
    finally:
        if callback is not None:
            _HOOKS.remove(callback)


def notify(section: str, label: str) -> None:
    """Tell the progress hooks that ``section`` starts measuring ``label``."""
    for hook in _HOOKS:
        hook(section, label)


@dataclass
class Section:
    """Samples and errors collected by one measurement section (mutable while it runs)."""

    name: str
    samples: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: int = 0
    checks: dict = field(default_factory=dict)
    attempted: int = 0  # shapes measured (or failed) within the budget
    elapsed_s: float = 0.0  # wall time of those attempts
    skipped_labels: list[str] = field(default_factory=list)

    def attempt(self, label: str, budget: Budget, fn: Callable[[], "dict | list[dict] | None"]) -> None:
        """Run one measurement; add its sample(s), or log its error; skip once over budget."""
        if budget.expired():
            self.skipped += 1
            self.skipped_labels.append(label)
            return
        notify(self.name, label)
        t0 = time.perf_counter()
        self.attempted += 1
        try:
            out = fn()
        except Exception as exc:  # one bad shape must not end the run
            msg = f"{self.name} {label}: {error_line(exc)}"
            self.errors.append(msg)
            print("  error:", msg, file=sys.stderr, flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return
        finally:
            self.elapsed_s += time.perf_counter() - t0
        if out is None:
            return
        self.samples.extend(out if isinstance(out, list) else [out])

    def summary(self) -> str:
        return f"{self.name}: {len(self.samples)} samples, {len(self.errors)} errors, {self.skipped} skipped"

    def merge(self, other: "Section") -> None:
        self.samples.extend(other.samples)
        self.errors.extend(other.errors)
        self.skipped += other.skipped
        self.attempted += other.attempted
        self.elapsed_s += other.elapsed_s
        self.skipped_labels.extend(other.skipped_labels)
