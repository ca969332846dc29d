"""Argument checks shared by the schedule generators.

Every generator takes ``(num_ranks, num_microbatches, num_chunks)``; these helpers turn bad
values into :class:`ConfigError` naming the schedule, the rule and a fix.
"""
from __future__ import annotations

from moesim.errors import ConfigError


def check_sizes(name: str, num_ranks: int, num_microbatches: int) -> None:
    """Both counts must be integers >= 1."""
    for field, value in (("num_ranks", num_ranks), ("num_microbatches", num_microbatches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(field, f"{name} needs an integer >= 1, got {value!r}")


def fixed_chunks(name: str, num_chunks: int | None, expected: int) -> int:
    """Schedules with a fixed number of chunks per rank accept only that number (or None)."""
    if num_chunks is None or num_chunks == expected:
        return expected
    raise ConfigError(
        "num_chunks", f"{name} runs exactly {expected} model chunk(s) per rank, got {num_chunks}",
        f"leave num_chunks unset or use 'interleaved' for {num_chunks} chunks",
    )
