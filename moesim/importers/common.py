"""What the framework importers share: the report of an import and the world-size arithmetic.

An :class:`ImportReport` holds the scenario mapping an importer built (the form of
:mod:`moesim.experiment.scenario_files`, so ``--set`` and the YAML writer apply to it) and the
fate of every setting the user gave: ``used`` (-> which scenario field), ``not_modelled``
(changes the cost, moesim cannot express it: what it does instead), ``no_cost`` (no effect on
time or memory: paths, logging, learning rates...) and ``notes`` (assumptions the importer had
to make, e.g. the world size).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moesim.errors import ConfigError


@dataclass(frozen=True)
class ImportReport:
    """An imported scenario and the account of its settings (see the module docstring)."""

    framework: str
    scenario: dict[str, Any]
    used: tuple[tuple[str, str], ...]
    not_modelled: tuple[tuple[str, str], ...]
    no_cost: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def lines(self) -> list[str]:
        """The report as text lines."""
        out = [f"{self.framework}: {len(self.used)} setting(s) used, {len(self.not_modelled)} not modelled, "
               f"{len(self.no_cost)} without cost"]
        out += [f"  used: {key} -> {target}" for key, target in self.used]
        out += [f"  NOT MODELLED: {key}: {why}" for key, why in self.not_modelled]
        if self.no_cost:
            out.append(f"  no effect on time or memory: {', '.join(self.no_cost)}")
        out += [f"  note: {n}" for n in self.notes]
        return out


def gpus_per_node(topology: str) -> int:
    """GPUs per node of a topology name or path."""
    from moesim.topology.loader import read_spec, resolve_path

    spec, _ = read_spec(resolve_path(topology))
    return int(spec.get("gpus_per_node", 1))


def world_size(topology: str, nodes: int | None, gpus: int | None, minimum: int, notes: list[str],
               flag: str) -> tuple[int, dict[str, Any]]:
    """(GPUs, the scenario's ``nodes`` / ``gpus_per_node`` fields) from ``--gpus`` / ``--nodes``,
    else ``minimum`` (the smallest world the layout needs), said in ``notes``."""
    per_node = gpus_per_node(topology)
    if gpus is not None and nodes is not None and gpus != nodes * per_node:
        raise ConfigError("--gpus", f"{gpus} differs from --nodes {nodes} x {per_node} GPUs of {topology}",
                          "give one of --gpus and --nodes")
    if gpus is None and nodes is not None:
        gpus = nodes * per_node
    if gpus is None:
        gpus = minimum
        notes.append(f"the world size is not in {flag}: using the smallest the layout needs, {gpus} GPU(s) "
                     "(give --gpus or --nodes)")
    if gpus < 1:
        raise ConfigError("--gpus", f"must be >= 1, got {gpus}")
    if gpus <= per_node:
        return gpus, ({"gpus_per_node": gpus} if gpus < per_node else {}) | {"nodes": 1}
    if gpus % per_node:
        raise ConfigError("--gpus", f"{gpus} GPUs are not whole nodes of {per_node} ({topology})",
                          f"use at most {per_node} GPUs or a multiple of {per_node}")
    return gpus, {"nodes": gpus // per_node}


def divide(what: str, total: int, by: int, by_what: str, fix: str) -> int:
    """``total / by`` when it divides, else a ConfigError naming both."""
    if by < 1 or total % by:
        raise ConfigError(what, f"{total} is not divisible by {by_what} = {by}", fix)
    return total // by


# Spec fields a preset may hold that describe how one run trained, not the model: the
# deepseek-v3 preset carries its report's FP8 GEMMs, FP8 dispatch and 4-node routing limit. An
# importer takes the architecture from ``--model`` and these from the framework's own settings.
RUN_FIELDS = ("gemm_dtype", "dispatch_dtype", "max_nodes_per_token")


def preset_architecture(spec: Any, model: str, framework: str, notes: list[str]) -> dict[str, Any]:
    """The fields of ``spec`` (``--model``'s preset or config) as a scenario ``model`` mapping,
    with :data:`RUN_FIELDS` at the spec class's defaults; any preset value so dropped is said in
    ``notes`` (the framework's settings decide precision and routing)."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(spec)}
    fields = {f: getattr(spec, f) for f in defaults}
    fields["spec"] = type(spec).__name__
    dropped = []
    for name in RUN_FIELDS:
        if name in fields and fields[name] != defaults[name]:
            dropped.append(f"{name}={fields[name]}")
            fields[name] = defaults[name]
    if dropped:
        notes.append(f"--model {model}: the architecture only; the preset's training settings {', '.join(dropped)} "
                     f"are not taken (precision and routing come from {framework})")
    return fields
