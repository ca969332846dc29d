"""Read YAML files safely: size, alias and nesting limits, strict keys, clear errors.

Every YAML file moesim reads goes through :func:`read_yaml_mapping` (or :func:`parse_yaml`
for text already in memory). PyYAML's ``SafeLoader`` builds no objects but plain data, yet a
few hundred bytes can still hurt: aliases that refer to aliases (a "billion laughs" bomb)
expand to billions of nodes once anything walks or prints the document, deep nesting overflows
the recursion limit, and bytes that are not UTF-8 raise ``UnicodeDecodeError``. This module
refuses each of those with a :class:`~moesim.errors.ConfigError` naming the file and the limit,
before the document is built: the file size is checked before it is read, the bytes are decoded
as UTF-8 (the position of the first bad byte is named), and the composed node graph is measured
(aliases counted, nesting depth and the size it expands to) before any Python object is made.
A key repeated in one mapping and a key that is not plain text or a number are refused too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from moesim.errors import ConfigError

MAX_YAML_BYTES = 1 << 20        # 1 MiB: a topology or scenario file is a few KiB
MAX_ALIASES = 64                # `*name` references in one document
MAX_DEPTH = 64                  # nested blocks / flow collections
MAX_EXPANDED_NODES = 100_000    # nodes once every alias is replaced by what it names


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


class _Limit(Exception):
    """A node graph over one of the limits; ``args[0]`` says which, ``line`` where."""

    def __init__(self, problem: str, line: int) -> None:
        super().__init__(problem)
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases and nesting while composing, and refuses a key repeated
    in one mapping (PyYAML keeps the last silently)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Limit(f"more than {MAX_ALIASES} aliases (*name)", self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Limit(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark.line + 1)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # a complex key ("? - a") is a list or a mapping: unhashable
                raise _Limit("a mapping key is not plain text or a number", key_node.start_mark.line + 1) from None
            if repeated:
                raise _DuplicateKey(str(key), key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def expanded_size(node: yaml.Node, limit: int = MAX_EXPANDED_NODES) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (shared sub-graphs counted
    each time they are referred to); stops counting past ``limit``. Linear in the distinct nodes."""
    memo: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) in memo:
            return memo[id(n)]
        memo[id(n)] = limit + 1  # a node that contains itself (a recursive alias) is over any limit
        if isinstance(n, yaml.SequenceNode):
            total = 1 + sum(min(size(c), limit + 1) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total = 1 + sum(min(size(k), limit + 1) + min(size(v), limit + 1) for k, v in n.value)
        else:
            total = 1
        memo[id(n)] = min(total, limit + 1)
        return memo[id(n)]

    return size(node)


def parse_yaml(text: str, source: str = "<yaml>") -> Any:
    """The document in ``text`` as plain data, within the limits (module docstring); every
    problem is a ConfigError with ``source`` and the line."""
    fix_limits = "write the values out instead of nesting aliases; a moesim file needs no more"
    loader = None
    try:
        loader = _StrictLoader(text)  # the reader refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_size(node) > MAX_EXPANDED_NODES:
            raise _Limit(f"expands to more than {MAX_EXPANDED_NODES:,} values through its aliases",
                         node.start_mark.line + 1)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("yaml", f"cannot parse{where}: {getattr(e, 'problem', None) or e}", "fix the YAML syntax",
                          source=source) from None
    except _DuplicateKey as e:
        raise ConfigError(e.key, f"appears twice in one block (line {e.line})", "keep one of them",
                          source=source) from None
    except _Limit as e:
        fix = ("write each key as a plain name, e.g. 'gpus_per_node:'" if "key" in str(e) else
               "flatten the nesting (a moesim file needs a few levels)" if "nested" in str(e) else fix_limits)
        raise ConfigError("yaml", f"line {e.line}: {e}", fix, source=source) from None
    except RecursionError:
        raise ConfigError("yaml", f"nested too deeply (limit {MAX_DEPTH} levels)", "flatten the nesting",
                          source=source) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_text_file(path: str | Path, field: str = "file", max_bytes: int = MAX_YAML_BYTES) -> str:
    """A text file's content, checked to be at most ``max_bytes`` (before it is read) and UTF-8."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise ConfigError(field, f"is {size:,} bytes, more than the {max_bytes:,} a moesim file may be",
                              "give the right file (a topology or scenario file is a few KiB)", source=str(p))
        with p.open("rb") as handle:
            raw = handle.read(max_bytes + 1)  # the file may have grown since stat
    except OSError as err:
        raise ConfigError(field, f"cannot read {str(p)!r} ({err.strerror or err})", "give a readable file") from None
    if len(raw) > max_bytes:
        raise ConfigError(field, f"is more than the {max_bytes:,} bytes a moesim file may be",
                          "give the right file", source=str(p))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ConfigError(field, f"is not UTF-8 text: byte 0x{raw[err.start]:02x} at line {line} "
                          f"(offset {err.start})", "save the file as UTF-8", source=str(p)) from None


def read_yaml_mapping(path: str | Path, what: str = "start the file with 'name: ...'") -> dict:
    """One YAML file that must hold a mapping (a topology, a scenario): read, decoded and parsed
    within the limits; ``what`` is the fix shown when the document is not a mapping."""
    return yaml_mapping(read_text_file(path, "yaml"), str(path), what)


def yaml_mapping(text: str, source: str, what: str = "start the file with 'name: ...'") -> dict:
    """:func:`read_yaml_mapping` of text already read (within the limits) from ``source``."""
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError("(file)", f"expected a mapping of fields, got {type(data).__name__}", what, source=source)
    return data
