"""Names that become file names: checked (refused when unsafe) or made safe, never trusted.

A scenario's name becomes ``<out>/<name>.trace.json`` and its plots, an experiment's name the
default run directory ``runs/<name>``. A name such as ``../../x`` would write outside ``--out``,
``a/b`` into a directory nobody asked for, and two scenarios of one name would overwrite each
other's files. :func:`check_file_stem` refuses such a name with a ConfigError naming the field;
:func:`check_output_names` does it for every scenario of a run, duplicates included, before
anything runs. :func:`safe_file_stem` is for names the user did not choose as file names (a
model's ``Org/Model`` name in a default label): it replaces what is unsafe instead.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable

from moesim.errors import ConfigError

# 255 bytes is the usual limit of one path component; the longest suffix written is
# ".utilization.png" / ".expert_load.png" (16 bytes), so 120 leaves room to spare.
MAX_NAME_BYTES = 120
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
_FIX = "use letters, digits and - _ . = , [ ] (no '/', '\\', '..' or control characters)"


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be one path component of an output file, or None when it can."""
    if not isinstance(name, str) or not name.strip():
        return f"must be non-empty text, got {name!r}"
    bad = _UNSAFE.search(name)
    if bad:
        return f"{name!r} holds {bad.group()!r}, which would make it a path, not a file name"
    if name in (".", ".."):
        return f"{name!r} names a directory"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 on the command line
        return f"{name!r} is not valid UTF-8 text"
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long, more than {MAX_NAME_BYTES} (it names output files)"
    return None


def check_file_stem(name: Any, field: str) -> str:
    """``name`` itself when it is safe as one path component (see :func:`name_problem`); else a
    ConfigError naming ``field``."""
    problem = name_problem(name)
    if problem:
        raise ConfigError(field, problem, _FIX)
    return name


def check_output_names(names: Iterable[str], field: str = "scenario.name") -> None:
    """Every name safe as a file name and no two the same (their files would overwrite each other)."""
    seen: set[str] = set()
    for name in names:
        check_file_stem(name, field)
        if name in seen:
            raise ConfigError(field, f"two scenarios are named {name!r}; their output files would overwrite each "
                              "other", "give each scenario its own name (a --set name=... applies to all of them)")
        seen.add(name)


def safe_file_stem(name: str) -> str:
    """``name`` with path separators, control characters and leading dots replaced by ``_``;
    over :data:`MAX_NAME_BYTES`, cut and ended with a short hash of the whole name."""
    stem = _UNSAFE.sub("_", str(name)).encode("utf-8", "replace").decode("utf-8")
    stem = re.sub(r"^\.+", lambda m: "_" * len(m.group()), stem)
    stem = stem if stem.strip() else "_" * max(1, len(stem))
    if len(stem.encode("utf-8")) > MAX_NAME_BYTES:
        digest = hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:10]
        stem = stem.encode("utf-8")[:MAX_NAME_BYTES - 11].decode("utf-8", "ignore") + "-" + digest
    return stem
