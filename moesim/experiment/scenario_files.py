"""Scenario files in YAML or TOML: the same fields as the Python form, read into an Experiment.

A file holds one scenario (a mapping with the :class:`~moesim.experiment.scenario.Scenario`
fields: ``name``, ``topology``, ``model``, ``plan``...) or an experiment::

    name: my-experiment          # default: the file's stem
    description: ...
    defaults: {topology: dgx_h100, nodes: 2}      # merged under every scenario
    scenarios:
      - name: base
        model: qwen3-30b-a3b
        plan: {dp: 16, ep: 8, pp: 1, num_microbatches: 4}
        moe: {routing: {kind: zipf, zipf_s: 1.2}}
    comparisons: [{baseline: base, optimized: other, lesson: ...}]

(TOML: ``[[scenarios]]`` tables.) Nested fields are the dataclasses' own (``plan`` ->
:class:`ParallelPlan`, ``moe`` -> :class:`MoEOptions` with ``routing`` -> ``RoutingConfig``,
``memory`` -> ``MemoryConfig``, ``overlap`` -> ``OverlapOptions``, ``faults`` -> ``Faults``); a
list becomes a tuple where the field holds one. ``model`` is a preset name, ``{hf: PATH,
seq_len: ..., <spec field>: ...}`` (a Hugging Face config.json, relative to the file, with
overrides), ``{preset: NAME, <spec field>: ...}``, or a whole spec ``{spec: MoESpec |
TransformerSpec, <every field>}``. An unknown key is a ConfigError naming it and listing the
valid ones; ``--set`` applies to the result as to any scenario. :func:`scenario_to_dict` writes
a Scenario back in this form (the importers write their scenarios with it).

Paths: a relative ``model.hf`` is read from the scenario file's own directory; a relative
``topology``, ``profile`` or ``moe.routing.trace_path`` (in a scenario or in ``defaults``) too when
a file of that name is there, else it is kept as written (a shipped topology or profile name such
as ``dgx_h100`` or ``h100_sxm``, or a path from the working directory). A file so runs the same
from any working directory.

Missing or mistyped fields are ConfigErrors naming the field (``scenario.model: missing``,
``model.num_layers: must be an integer >= 1, got 'two'``), never a Python signature error.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError

SUFFIXES = (".yaml", ".yml", ".toml")
_EXPERIMENT_KEYS = ("name", "description", "defaults", "scenarios", "comparisons", "notes")
_TOPOLOGY_KEYS = ("gpus_per_node", "gpu", "links", "nic", "nodes_per_rail")


def load_scenario_file(path: str | Path) -> dict[str, Any]:
    """What a YAML / TOML scenario file describes (see the module docstring), as the keyword
    arguments of an ``Experiment``: built scenarios, comparisons as mappings (the caller,
    :func:`moesim.experiment.experiment.load_experiment`, makes them ``Comparison`` objects)."""
    p = Path(path)
    data = _read(p)
    if not data:
        raise ConfigError("experiment file", f"{str(p)!r} is empty",
                          "give one scenario (name:, topology:, model:, plan: ...) or scenarios: [...]; "
                          "see tests/data/scenarios/qwen3_ep8.yaml")
    if "scenarios" not in data:
        if not {"model", "topology"} & set(data) and set(_TOPOLOGY_KEYS) & set(data):
            raise ConfigError("experiment file", f"{str(p)!r} is a topology, not an experiment (a Python file "
                              "defining EXPERIMENT, or a YAML / TOML scenario file)",
                              "pass an experiment such as experiments/1f1b_vs_interleaved.py; a topology is named "
                              "inside it (topology: dgx_h100 or path/to/fabric.yaml); 'moesim topo show' inspects one")
        data = {"name": p.stem, "scenarios": [data]}
    unknown = sorted(set(data) - set(_EXPERIMENT_KEYS))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}", "unknown experiment key(s)",
                          f"use {', '.join(_EXPERIMENT_KEYS)}; scenario fields go under scenarios:", source=str(p))
    items = data["scenarios"]
    if not isinstance(items, list) or not items or not all(isinstance(s, dict) for s in items):
        raise ConfigError("scenarios", "must be a non-empty list of mappings", "give one mapping per scenario",
                          source=str(p))
    defaults = _mapping(data.get("defaults", {}), "defaults", str(p))
    scenarios = tuple(build_scenario({**defaults, **s}, base=p.parent, source=f"{p}: scenarios[{i}]")
                      for i, s in enumerate(items))
    comparisons = tuple(_mapping(c, "comparisons", str(p)) for c in data.get("comparisons") or [])
    notes = data.get("notes") or []   # absent: none (a file without notes printed "note: ()")
    return {"name": str(data.get("name") or p.stem), "scenarios": scenarios, "comparisons": comparisons,
            "description": str(data.get("description") or ""),
            "notes": tuple(str(n) for n in notes) if isinstance(notes, list) else (str(notes),)}


def build_scenario(data: dict[str, Any], *, base: Path | None = None, source: str = "") -> Any:
    """One Scenario from its mapping (``base``: the scenario file's directory, where relative
    ``model.hf``, ``topology``, ``profile`` and ``moe.routing.trace_path`` paths start when a file
    of that name is there)."""
    from moesim.experiment.scenario import Scenario

    data = dict(_mapping(data, "scenario", source))
    if base is not None:
        _resolve_paths(data, base)
    if "model" in data:
        data["model"] = build_model(data["model"], base=base, source=source)
    return _build(Scenario, data, "scenario", source)


def build_model(value: Any, *, base: Path | None = None, source: str = "") -> Any:
    """A preset name, or a model spec from ``{hf: ...}``, ``{preset: ...}`` or ``{spec: ...}``."""
    from moesim.workload.hf_config import load_hf_config
    from moesim.workload.moe import MoESpec
    from moesim.workload.presets import get_model
    from moesim.workload.transformer import TransformerSpec

    if isinstance(value, str):
        return value
    fields = dict(_mapping(value, "model", source))
    kinds = [k for k in ("hf", "preset", "spec") if k in fields]
    if len(kinds) != 1:
        raise ConfigError("model", f"give exactly one of hf, preset or spec, got {kinds or 'none'}",
                          "e.g. model: {hf: path/to/config.json, seq_len: 4096}", source=source)
    kind = kinds[0]
    head = fields.pop(kind)
    if not isinstance(head, str) or not head:
        what = {"spec": "a spec class name, MoESpec or TransformerSpec", "hf": "the path of a config.json",
                "preset": "a preset name"}[kind]
        raise ConfigError(f"model.{kind}", f"must be {what}, got {head!r}"[:200],
                          {"spec": "write model: {spec: MoESpec, name: ..., num_layers: ..., <every field>}",
                           "hf": "write model: {hf: path/to/config.json, seq_len: 4096}",
                           "preset": "write model: {preset: qwen3-30b-a3b, num_layers: 2} (`moesim models` lists them)",
                           }[kind], source=source)
    if kind == "spec":
        classes = {"MoESpec": MoESpec, "TransformerSpec": TransformerSpec}
        if head not in classes:
            raise ConfigError("model.spec", f"unknown spec {head!r}", "use MoESpec or TransformerSpec", source=source)
        return _build(classes[head], fields, "model", source)
    if kind == "hf":
        from moesim.workload.transformer import check_whole

        path = Path(head)
        seq_len = fields.pop("seq_len", None)
        if seq_len is not None:
            _prefixed(check_whole, "model", source)("seq_len", seq_len)
        spec = load_hf_config(path if path.is_absolute() or base is None else base / path, seq_len=seq_len).spec
    else:
        spec = get_model(head)
    return _replace(spec, fields, "model", source)


def scenario_to_dict(scn: Any) -> dict[str, Any]:
    """A Scenario as the mapping :func:`build_scenario` reads back to an equal Scenario: only the
    fields that differ from their defaults, nested dataclasses as mappings, spec models whole."""
    from moesim.experiment.scenario import Scenario

    out = _diff(scn, Scenario(name="x", topology="x", model="x"))
    out["name"], out["topology"] = scn.name, scn.topology
    model = scn.model
    if not isinstance(model, str):
        spec = {f.name: _plain(getattr(model, f.name)) for f in dataclasses.fields(model)}
        out["model"] = {"spec": type(model).__name__, **spec}
    else:
        out["model"] = model
    return out


# -- internals -----------------------------------------------------------------------------------
def _read(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError("experiment file", f"{str(p)!r} does not exist", "give a .yaml, .yml or .toml scenario file")
    if p.suffix.lower() == ".toml":
        from moesim.yamlio import read_text_file  # size-checked before reading, UTF-8 checked

        text = read_text_file(p, "experiment file")
        try:
            data = tomllib.loads(text)
        except (ValueError, RecursionError) as err:  # TOMLDecodeError, a 5,000-digit number, arrays nested 10^5 deep
            raise ConfigError("experiment file", f"not valid TOML ({str(err)[:160]})", "fix that line",
                              source=str(p)) from None
    else:
        data = _read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError("experiment file", f"expected a mapping, got {type(data).__name__}",
                          "start with name: ... (one scenario) or scenarios: [...]", source=str(p))
    return data


def _read_yaml(p: Path) -> Any:
    try:  # the project's bounded YAML reader where present (aliases, depth and size limits)
        from moesim.yamlio import read_yaml_mapping
    except ImportError:
        import yaml

        try:
            return yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError("experiment file", f"not valid YAML ({err})", "fix that line", source=str(p)) from None
    return read_yaml_mapping(p, "start with name: ... (one scenario) or scenarios: [...]")


def _mapping(value: Any, where: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, f"must be a mapping of fields, got {value!r}"[:160], source=source)
    return value


def _build(cls: type, data: dict[str, Any], where: str, source: str) -> Any:
    """``cls(**data)`` with nested dataclasses built from mappings and lists made tuples."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown field of {cls.__name__}",
                          f"use one of: {', '.join(names)}", source=source)
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        also = f" (so are {', '.join(missing[1:])})" if len(missing) > 1 else ""
        fix = _MISSING_FIX.get(f"{cls.__name__}.{missing[0]}",
                               f"add {missing[0]}: ... under {where} (a {cls.__name__} needs {', '.join(required)})")
        raise ConfigError(f"{where}.{missing[0]}", f"missing{also}", fix, source=source)
    kwargs = {k: _value(cls, k, hints[k], v, f"{where}.{k}", source) for k, v in data.items()}
    try:
        if where == "model":   # a spec's own checks name the bare field: name model.<field>
            return _prefixed(cls, where, source)(**kwargs)
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(where, f"cannot build {cls.__name__} ({err})", source=source) from None


_MISSING_FIX = {  # (class, field) -> how to give it
    "Scenario.name": "give the scenario a short name, e.g. name: base",
    "Scenario.topology": "give topology: dgx_h100 (a shipped name, see `moesim topo list`) or a path to a "
                         "topology YAML, in the scenario or under defaults:",
    "Scenario.model": "give model: qwen3-30b-a3b (a preset), {preset: NAME, <field>: ...}, "
                      "{hf: path/to/config.json} or {spec: MoESpec, <every field>}",
}


def _prefixed(fn: Any, where: str, source: str) -> Any:
    """``fn`` whose ConfigErrors name ``where.<field>`` (``model.num_layers``) instead of the bare field."""
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as err:
            if err.source or "." in err.field or err.field.startswith(where):
                raise
            raise ConfigError(f"{where}.{err.field}", err.problem, err.fix, source=source) from None
    return call


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative file paths of a scenario mapping made relative to ``base`` (the scenario file's
    directory) where a file of that name is there; others kept (shipped names, working-directory paths)."""
    for key in ("topology", "profile"):
        if isinstance(data.get(key), str):
            data[key] = _near(data[key], base)
    moe = data.get("moe")
    if isinstance(moe, dict) and isinstance(moe.get("routing"), dict) and isinstance(moe["routing"].get("trace_path"), str):
        routing = dict(moe["routing"], trace_path=_near(moe["routing"]["trace_path"], base))
        data["moe"] = {**moe, "routing": routing}


def _near(value: str, base: Path) -> str:
    path = Path(value)
    if not value or path.is_absolute():
        return value
    try:
        return str(base / path) if (base / path).is_file() else value
    except (OSError, ValueError):   # a name too long for the file system, a NUL byte
        return value


def _replace(spec: Any, fields: dict[str, Any], where: str, source: str) -> Any:
    if not fields:
        return spec
    built = _build(type(spec), {**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}, **fields},
                   where, source)
    return built


_NESTED = {("MoEOptions", "routing"): "RoutingConfig", ("Scenario", "faults"): "Faults"}


def _value(owner: type, name: str, hint: Any, value: Any, where: str, source: str) -> Any:
    target = _nested_class(owner, name, hint)
    if target is not None and isinstance(value, dict):
        return _build(target, value, where, source)
    if isinstance(value, dict) and typing.get_args(hint)[:1] == (int,):  # Mapping[int, ...]: TOML keys are text
        try:
            return {int(k): v for k, v in value.items()}
        except (TypeError, ValueError):
            raise ConfigError(where, f"keys must be whole numbers (ranks), got {list(value)[:4]}", source=source) from None
    if isinstance(value, list) and _wants_tuple(hint):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def _nested_class(owner: type, name: str, hint: Any) -> type | None:
    special = _NESTED.get((owner.__name__, name))
    if special == "RoutingConfig":
        from moesim.moe.routing import RoutingConfig

        return RoutingConfig
    if special == "Faults":
        from moesim.experiment.faults import Faults

        return Faults
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _wants_tuple(hint: Any) -> bool:
    text = str(hint)
    return "tuple" in text


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _diff(obj: Any, default: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value, base = getattr(obj, f.name), getattr(default, f.name, None)
        if value == base:
            continue
        if dataclasses.is_dataclass(value) and dataclasses.is_dataclass(base) and type(value) is type(base):
            out[f.name] = _diff(value, base)
        else:
            out[f.name] = _plain(value)
    return out
