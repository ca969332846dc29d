"""The text of Megatron-LM arguments -> a token list: a file or a string, plain or a launch script.

Plain text may span lines (``\\`` continuations) and hold ``#`` comments; a launcher before the
script (``torchrun ... pretrain_gpt.py``) is dropped and said. A launch script that keeps its
flags in bash arrays (``MODEL_ARGS=( ... )``, as Megatron-LM's ``examples/`` do) is read array by
array: the arrays the launch line expands after the script, in order, with plain
``NAME=value`` variables substituted (``${NAME:-default}`` takes the default); arrays appended
with ``+=`` (usually inside an ``if``) and variables it cannot resolve are named in the notes.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from moesim.errors import ConfigError


def argument_tokens(text_or_path: str | Path, notes: list[str]) -> list[str]:
    """The argument tokens of ``text_or_path`` (see the module docstring); what was dropped or
    assumed goes to ``notes``."""
    text = _text(text_or_path)
    script = _script_tokens(text, notes)
    return script if script is not None else _drop_launcher(_tokens(text), notes)


def _text(value: str | Path) -> str:
    """The arguments: a file's text, or the text itself (anything holding a ``--flag``)."""
    looks_like_args = isinstance(value, str) and str(value).lstrip().startswith("--")
    p = Path(value) if not looks_like_args and "\n" not in str(value) and len(str(value)) < 1024 else None
    if p is not None and p.is_file():
        return p.read_text(encoding="utf-8", errors="replace")
    if isinstance(value, Path) or "--" not in str(value):
        raise ConfigError("--megatron-args", f"{str(value)!r} is neither a file nor arguments",
                          "give a file of arguments, or the arguments in quotes")
    return str(value)


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text.replace("\\\n", " "), comments=True)
    except ValueError as err:
        raise ConfigError("--megatron-args", f"cannot split the arguments ({err})", "close every quote") from None


_ARRAY = re.compile(r"^[ \t]*([A-Za-z_]\w*)=\(", re.M)


def _arrays(text: str) -> dict[str, str]:
    """``NAME=( ... )`` bodies: on one line, or up to the line that starts with ``)``."""
    out = {}
    for m in _ARRAY.finditer(text):
        rest = text[m.end():]
        first = rest.split("\n", 1)[0]
        if ")" in first:
            out[m.group(1)] = first[:first.rindex(")")]
            continue
        end = re.search(r"^[ \t]*\)", rest, re.M)
        out[m.group(1)] = rest[:end.start()] if end else rest
    return out
_ASSIGN = re.compile(r"^[ \t]*(?:export[ \t]+)?([A-Za-z_]\w*)=([^(\n][^\n]*)$", re.M)
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def _script_tokens(text: str, notes: list[str]) -> list[str] | None:
    """The arguments of a launch script that keeps them in bash arrays (``MODEL_ARGS=( ... )``,
    as Megatron-LM's examples do): the arrays expanded after the ``.py`` script, in order, with
    plain ``NAME=value`` variables substituted (``${NAME:-default}`` takes the default). None when
    the text has no arrays."""
    arrays = _arrays(text)
    if not arrays:
        return None
    env: dict[str, str] = {}
    for m in _ASSIGN.finditer(text):
        env[m.group(1)] = _substitute(m.group(2).strip().strip('"').strip("'"), env, set())
    names = _launched_arrays(text, arrays)
    unresolved: set[str] = set()
    tokens = [part for n in names for t in _tokens(arrays[n]) for part in _split_pair(_substitute(t, env, unresolved))]
    appended = sorted(set(re.findall(r"^[ \t]*([A-Za-z_]\w*)\+=\(", text, re.M)))
    notes.append(f"launch script: read the argument arrays {', '.join(names)}"
                 + (f"; appended arrays not read (often conditional): {', '.join(appended)}" if appended else "")
                 + (f"; variables left as written: {', '.join(sorted(unresolved))}" if unresolved else ""))
    return tokens


def _launched_arrays(text: str, arrays: dict[str, str]) -> list[str]:
    """The arrays the launch line expands after the script (those before it are the launcher's)."""
    joined = text.replace("\\\n", " ")
    launch = next((line for line in joined.splitlines() if "[@]" in line and ("torchrun" in line or ".py" in line
                                                                             or "python" in line)), "")
    words = launch.split()
    refs: list[str] = []
    script_seen = False
    for w in words[1:]:
        m = re.fullmatch(r"\"?\$\{(\w+)\[@\]\}\"?", w)
        if m is None:
            w = w.strip("\"'")
            script_seen = script_seen or w.endswith(".py") or w.startswith("$")
            continue
        if script_seen and m.group(1) in arrays:
            refs.append(m.group(1))
    return refs or list(arrays)


def _split_pair(token: str) -> list[str]:
    """``"--flag value"`` quoted as one word -> ``["--flag", "value"]``."""
    return token.split() if token.startswith("--") and " " in token else [token]


def _substitute(token: str, env: dict[str, str], unresolved: set[str]) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        if name in env:
            return env[name]
        if m.group(2) is not None:
            return m.group(2).strip('"').strip("'")
        unresolved.add(name)
        return m.group(0)
    return _VAR.sub(one, token)


def _drop_launcher(tokens: list[str], notes: list[str]) -> list[str]:
    scripts = [i for i, t in enumerate(tokens) if t.endswith(".py")]
    if scripts:
        dropped = tokens[:scripts[-1] + 1]
        notes.append(f"launcher dropped: {' '.join(dropped)}")
        return tokens[scripts[-1] + 1:]
    return tokens
