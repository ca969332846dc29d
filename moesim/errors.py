"""Error types shared by every layer.

User-facing mistakes (bad config, unknown name, impossible plan) raise :class:`ConfigError`,
a ``ValueError`` whose message names the field and the fix. A simulation that cannot finish
raises :class:`DeadlockError` listing the stuck tasks. Internal invariants use ``assert``.
"""
from __future__ import annotations


class MoesimError(Exception):
    """Base class of every error moesim raises on purpose."""


class ConfigError(MoesimError, ValueError):
    """Bad user input. The message names the field, the bad value and the fix."""

    def __init__(self, field: str, problem: str, fix: str = "", *, source: str = "") -> None:
        where = f"{source}: " if source else ""
        msg = f"{where}{field}: {problem}"
        if fix:
            msg += f" (fix: {fix})"
        super().__init__(msg)
        self.field = field
        self.problem = problem
        self.fix = fix
        self.source = source


class DeadlockError(MoesimError, RuntimeError):
    """The event queue emptied while tasks were still unfinished."""

    def __init__(self, stuck: list[str]) -> None:
        shown = stuck[:40]
        more = f"\n  ... and {len(stuck) - len(shown)} more" if len(stuck) > len(shown) else ""
        super().__init__(
            f"simulation cannot finish: {len(stuck)} task(s) stuck\n  " + "\n  ".join(shown) + more
        )
        self.stuck = stuck


def unknown_name(field: str, name: str, valid: "list[str] | tuple[str, ...]", source: str = "") -> ConfigError:
    """Build the standard error for a registry lookup miss, listing the valid names."""
    return ConfigError(field, f"unknown name {name!r}", f"use one of: {', '.join(sorted(valid))}", source=source)
