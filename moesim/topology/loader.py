"""Load ``topologies/*.yaml`` into a :class:`Topology`, with strict, actionable validation.

A file declares ``name``, ``gpu: {kind}``, ``nodes`` (default 1), ``gpus_per_node``, an ``intra``
block whose ``type`` picks a spec in :data:`INTRA_TYPES`, and a ``scale_out`` block (a type in
:data:`SCALE_OUT_TYPES`) that is used when ``nodes > 1``. The fields a block accepts are exactly
the fields of its spec dataclass, so the schema lives in one place (:mod:`moesim.topology.spec`).
``extends: <name or path>`` starts from another file and changes only what it lists (blocks are
merged key by key unless their ``type`` changes), so variants are not copy-pasted.
Every mistake raises :class:`ConfigError` naming the file, the field and the fix: unknown keys
(with the closest valid key), missing fields, wrong types, bad values, unknown types, duplicate
YAML keys or node names, several hosts without a scale-out fabric, and GPUs that cannot reach
each other in the built graph.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import os
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import networkx as nx

from moesim.errors import ConfigError
from moesim.shipped import data_path
from moesim.topology.model import Topology
from moesim.topology.spec import INTRA_TYPES, SCALE_OUT_TYPES, FabricSpec
from moesim.yamlio import read_text_file, yaml_mapping

TOPOLOGY_DIR = data_path("topologies")  # installed with the package, or the checkout's topologies/
TOP_KEYS = ("name", "description", "gpu", "nodes", "gpus_per_node", "intra", "scale_out")
REQUIRED_TOP_KEYS = ("name", "gpu", "gpus_per_node", "intra")


def available_topologies() -> list[str]:
    """Bare names of the shipped topology files."""
    return sorted(p.stem for p in TOPOLOGY_DIR.glob("*.yaml"))


def resolve_path(path_or_name: str | Path) -> Path:
    """A file path as given, or ``topologies/<name>.yaml`` for a bare name."""
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise ConfigError("topology", f"must be a topology name or a file path, got {path_or_name!r}",
                          f"use one of: {', '.join(available_topologies())}, or a path to a YAML file")
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = TOPOLOGY_DIR / f"{path_or_name}.yaml"
    if path.suffix == "" and shipped.is_file():
        return shipped
    raise ConfigError("topology", f"no file or shipped topology named {str(path_or_name)!r}",
                      f"give a path to a YAML file or one of: {', '.join(available_topologies())}")


def load_topology(path_or_name: str | Path, **overrides: Any) -> Topology:
    """Load a topology file (path or bare name such as ``"dgx_h100"``).

    ``overrides`` replace top-level fields (``nodes=4``) or, with a dotted key passed as
    ``**{"scale_out.spines": 8}``, fields of a block; ``None`` values are ignored.
    """
    path = resolve_path(path_or_name)
    spec, source = read_spec(path)
    given = {k: v for k, v in overrides.items() if v is not None}
    source += (f" (with {', '.join(f'{k}={v}' for k, v in given.items())})" if given else "")
    for key, value in given.items():
        _apply_override(spec, key, value, source)
    return build_topology(spec, source)


def read_spec(path: Path, _chain: tuple[Path, ...] = ()) -> tuple[dict, str]:
    """The YAML-shaped spec of a file with its ``extends`` chain merged in, and its source label."""
    data = read_yaml(path)
    base_name = data.pop("extends", None)
    if base_name is None:
        return data, str(path)
    if not isinstance(base_name, str):
        raise ConfigError("extends", f"must be a topology name or path, got {base_name!r}", "write extends: dgx_h100",
                          source=str(path))
    base_path = path.parent / base_name if (path.parent / base_name).is_file() else resolve_path(base_name)
    if base_path.resolve() in _chain or base_path.resolve() == path.resolve():
        raise ConfigError("extends", f"{base_name!r} leads back to {path.name} (a cycle)",
                          "extend a file that does not extend this one", source=str(path))
    base, base_source = read_spec(base_path, _chain + (path.resolve(),))
    return _merge(base, data), f"{path} (extends {base_source})"


def _merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for key, value in child.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and value.get("type", old.get("type")) == old.get("type"):
            out[key] = {**old, **value}
        else:
            out[key] = value
    return out


_PARSED: dict[tuple[str, str], dict] = {}   # (path, sha256 of the bytes) -> the parsed mapping


def read_yaml(path: Path) -> dict:
    """Parse one YAML mapping within :mod:`moesim.yamlio`'s limits (size, aliases, nesting,
    UTF-8); syntax errors, duplicate and complex keys become ConfigError. A file read before with
    the same bytes gives a fresh copy of the mapping parsed then (a sweep loads one topology per
    scenario)."""
    text = read_text_file(path, "yaml")   # checked: size, readable, UTF-8
    key = (str(path.absolute()), hashlib.sha256(text.encode("utf-8")).hexdigest())
    if key in _PARSED:
        return copy.deepcopy(_PARSED[key])
    data = yaml_mapping(text, str(path), "start the file with 'name: ...', 'gpu: {kind: H100}', ...")
    _PARSED[key] = copy.deepcopy(data)
    return data


def build_topology(spec: dict, source: str = "<dict>") -> Topology:
    """Validate a YAML-shaped dict and build its :class:`Topology`."""
    fabric = parse_spec(spec, source)
    try:
        topo = fabric.build(source)
    except ConfigError as e:
        raise ConfigError(e.field, e.problem, e.fix, source=source) from None
    _check_connected(topo, source)
    return topo


def parse_spec(spec: dict, source: str = "<dict>") -> FabricSpec:
    """The :class:`FabricSpec` a YAML-shaped dict declares (every field checked)."""
    _check_keys(spec, TOP_KEYS, REQUIRED_TOP_KEYS, "", source)
    gpu = _mapping(spec["gpu"], "gpu", source)
    _check_keys(gpu, ("kind",), ("kind",), "gpu.", source)
    top = {"name": str, "description": str, "nodes": int, "gpus_per_node": int}
    values = {k: _typed(spec[k], t, k, source) for k, t in top.items() if k in spec}
    values["gpu_kind"] = _typed(gpu["kind"], str, "gpu.kind", source)
    values["intra"] = _block(spec["intra"], "intra", INTRA_TYPES, source)
    nodes = values.get("nodes", 1)
    if spec.get("scale_out") is not None:
        values["scale_out"] = _block(spec["scale_out"], "scale_out", SCALE_OUT_TYPES, source)
    elif isinstance(nodes, int) and nodes > 1:
        raise ConfigError("scale_out", f"nodes is {nodes} but the file has no scale_out block to join the hosts",
                          f"add scale_out with type: {' or '.join(SCALE_OUT_TYPES)} (or set nodes: 1)", source=source)
    try:
        return FabricSpec(**values)
    except ConfigError as e:
        raise ConfigError(e.field, e.problem, e.fix, source=source) from None


# -- helpers ------------------------------------------------------------------------------------
def _apply_override(spec: dict, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    if parts[0] not in TOP_KEYS:
        raise ConfigError(key if key.strip() else repr(key), "is not a topology field that can be overridden",
                          _suggest(parts[0], TOP_KEYS), source=source)
    target = spec
    for part in parts[:-1]:
        if not isinstance(target.get(part), dict):
            raise ConfigError(key, f"the file has no {part!r} block to override into", f"add a {part} block to the file",
                              source=source)
        target = target[part]
    target[parts[-1]] = value


def _block(raw: Any, name: str, registry: dict[str, type], source: str) -> Any:
    """Build the spec dataclass named by ``raw['type']`` from the rest of the block."""
    block = _mapping(raw, name, source)
    if "type" not in block:
        raise ConfigError(f"{name}.type", "is missing", f"add type: one of {', '.join(registry)}", source=source)
    kind = block["type"]
    if not isinstance(kind, str) or kind not in registry:  # a list or mapping here is not hashable
        raise ConfigError(f"{name}.type", f"unknown type {kind!r}", f"use one of: {', '.join(registry)}", source=source)
    cls = registry[kind]
    specs = {f.name: f for f in fields(cls)}
    required = tuple(n for n, f in specs.items() if f.default is MISSING and f.default_factory is MISSING)
    _check_keys(block, ("type", *specs), required, f"{name}.", source, context=f"for {name} type {kind!r}")
    hints = typing.get_type_hints(cls)
    values = {k: _typed(v, hints[k], f"{name}.{k}", source) for k, v in block.items() if k != "type"}
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"{name}.{e.field}", e.problem, e.fix, source=source) from None


def _check_keys(block: dict, valid: tuple[str, ...], required: tuple[str, ...], prefix: str, source: str,
                context: str = "") -> None:
    for key in block:
        if key not in valid:
            where = f" {context}" if context else ""
            shown = key if isinstance(key, str) and key.strip() else repr(key)  # a blank key must still show
            raise ConfigError(f"{prefix}{shown}", f"unknown key{where}", _suggest(str(key), valid), source=source)
    for key in required:
        if key not in block:
            block_name = prefix.rstrip(".") or "top level"
            raise ConfigError(f"{prefix}{key}", "is missing", f"add {key}: <value> to the {block_name}", source=source)


def _suggest(key: str, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid keys: {', '.join(valid)}"


def _mapping(raw: Any, field: str, source: str) -> dict:
    if not isinstance(raw, dict):
        fix = "write it as a block, e.g. gpu: {kind: H100}" if field == "gpu" else f"write {field}: as an indented block with type: ..."
        raise ConfigError(field, f"must be a mapping of fields, got {type(raw).__name__} {raw!r}", fix, source=source)
    return raw


_TYPE_WORDS = {int: "a whole number", float: "a number", str: "text", type(None): "null"}


def _typed(value: Any, hint: Any, field: str, source: str) -> Any:
    """``value`` checked against a field annotation (int, float, str or an optional of them)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    for t in options:
        if t is type(None) and value is None:
            return None
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
    wanted = " or ".join(_TYPE_WORDS.get(t, getattr(t, "__name__", str(t))) for t in options)
    raise ConfigError(field, f"must be {wanted}, got {type(value).__name__} {value!r}",
                      f"write {field.split('.')[-1]} as {wanted}", source=source)


def _check_connected(topo: Topology, source: str) -> None:
    """Every GPU must reach every other GPU in the built graph."""
    if topo.num_gpus < 2:
        return
    comp = next(c for c in nx.strongly_connected_components(topo.graph) if topo.gpus[0] in c)
    lost = [g for g in topo.gpus if g not in comp]
    if lost:
        same_host = topo.host_of(topo.rank_of(lost[0])) == topo.host_of(0)
        field = "intra" if same_host else "scale_out"
        raise ConfigError(field, f"GPU {lost[0]} cannot reach GPU {topo.gpus[0]} ({len(lost)} GPU(s) cut off)",
                          "join every GPU: e.g. nvlink_pairs group_size equal to gpus_per_node, or a scale_out fabric",
                          source=source)
