"""Shared guard for the fuzz tests: a wall-clock limit on one call (SIGALRM)."""
from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator


class Hang(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` in the code swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the calling thread if the block runs longer than ``seconds``."""
    def _alarm(_signum: int, _frame: Any) -> None:
        raise Hang(f"call took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
