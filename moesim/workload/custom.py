"""User-described layers: each layer is a list of GEMMs and elementwise ops.

For architectures the built-in specs cannot express, a user lists what one layer computes,
e.g. (YAML or a dict)::

    name: my-block
    num_layers: 24
    seq_len: 4096
    hidden: 4096
    layer:
      gemms:
        - {name: proj_in, m: tokens, n: 16384, k: 4096, tp: column}
        - {name: proj_out, m: tokens, n: 4096, k: 16384, tp: row}
      elementwise:
        - {name: act, bytes_per_token: 65536, tp_sharded: true}

``m: tokens`` means the microbatch's token count. Backward is derived from each forward GEMM:
input gradient (m, k, n) and weight gradient (k, n, m); a GEMM marked ``weight: false``
multiplies two activations and instead gets two input-gradient GEMMs. ``tp: column`` splits n
over tensor parallelism, ``tp: row`` splits k and adds an all-reduce of its output (Megatron
semantics; a column GEMM all-reduces its input gradient in backward). Give ``layers:`` (one per
layer) instead of ``layer:`` when layers differ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES, MEMORY_OP_KINDS, ComputeOp, Gemm, MemoryOp
from moesim.workload.common import CommOp, ProgramItem, check_dtype, compute_only, dgrad, wgrad

TP_MODES = ("none", "column", "row")
TOKENS = "tokens"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_bytes(field: str, value: Any) -> None:
    """A per-token byte figure: a finite number >= 0 (not a bool, text or NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ConfigError(field, f"must be a finite number >= 0, got {value!r}")


def _check_text(field: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ConfigError(field, f"must be text, got {value!r}")


def _check_flag(field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be true or false, got {value!r}")


@dataclass(frozen=True)
class CustomGemm:
    """One forward GEMM C[m, n] = A[m, k] @ B[k, n]; ``m`` may be ``"tokens"``."""

    name: str
    m: int | str
    n: int
    k: int
    tp: str = "none"
    groups: int = 1
    weight: bool = True

    def validate(self, where: str) -> None:
        _check_text(f"{where}.name", self.name)
        if self.m != TOKENS and not _is_count(self.m):
            raise ConfigError(f"{where}.m", f"must be a positive int or {TOKENS!r}, got {self.m!r}")
        for f in ("n", "k", "groups"):
            value = getattr(self, f)
            if not _is_count(value):
                raise ConfigError(f"{where}.{f}", f"must be a positive int, got {value!r}")
        if self.tp not in TP_MODES:
            raise ConfigError(f"{where}.tp", f"unknown mode {self.tp!r}", f"use one of: {', '.join(TP_MODES)}")
        _check_flag(f"{where}.weight", self.weight)


@dataclass(frozen=True)
class CustomElementwise:
    """A memory-bound op moving ``bytes_per_token`` per token through HBM (read + write).

    ``backward_bytes_per_token`` defaults to 1.5x forward (forward reads x, writes y; backward
    reads x and dy, writes dx). ``tp_sharded`` divides the bytes over tensor parallelism.
    """

    name: str
    bytes_per_token: float
    backward_bytes_per_token: float | None = None
    kind: str = "elementwise"
    tp_sharded: bool = False

    def validate(self, where: str) -> None:
        _check_text(f"{where}.name", self.name)
        _check_bytes(f"{where}.bytes_per_token", self.bytes_per_token)
        if self.backward_bytes_per_token is not None:
            _check_bytes(f"{where}.backward_bytes_per_token", self.backward_bytes_per_token)
        _check_flag(f"{where}.tp_sharded", self.tp_sharded)
        if self.kind not in MEMORY_OP_KINDS:
            raise ConfigError(f"{where}.kind", f"unknown kind {self.kind!r}",
                              f"use one of: {', '.join(MEMORY_OP_KINDS)}")

    @property
    def backward_bytes(self) -> float:
        return 1.5 * self.bytes_per_token if self.backward_bytes_per_token is None else self.backward_bytes_per_token


@dataclass(frozen=True)
class CustomLayer:
    """What one layer computes. ``activation_bytes_per_token`` overrides the default estimate
    (the input of every token-row GEMM, kept for its weight gradient)."""

    gemms: tuple[CustomGemm, ...]
    elementwise: tuple[CustomElementwise, ...] = ()
    activation_bytes_per_token: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "gemms", tuple(self.gemms))
        object.__setattr__(self, "elementwise", tuple(self.elementwise))
        if self.activation_bytes_per_token is not None:
            _check_bytes("activation_bytes_per_token", self.activation_bytes_per_token)


@dataclass(frozen=True)
class CustomModelSpec:
    """A model of ``num_layers`` user-described layers (``layers`` has 1 entry, repeated, or
    one per layer). ``hidden`` sizes the activations sent between pipeline stages."""

    name: str
    num_layers: int
    seq_len: int
    hidden: int
    layers: tuple[CustomLayer, ...]
    dtype: str = "bf16"
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        _check_text("name", self.name)
        for f in ("num_layers", "seq_len", "hidden"):
            if not _is_count(getattr(self, f)):
                raise ConfigError(f, f"must be a whole number > 0, got {getattr(self, f)!r}")
        _check_text("dtype", self.dtype)  # before the registry lookup: a list is not hashable
        check_dtype("dtype", self.dtype)
        if len(self.layers) not in (1, self.num_layers):
            raise ConfigError("layers", f"has {len(self.layers)} entries for {self.num_layers} layers",
                              "give one layer (repeated) or one per layer")
        for i, layer in enumerate(self.layers):
            if not layer.gemms and not layer.elementwise:
                raise ConfigError(f"layers[{i}]", "is empty", "list at least one gemm or elementwise op")
            for j, g in enumerate(layer.gemms):
                g.validate(f"layers[{i}].gemms[{j}]")
            for j, op in enumerate(layer.elementwise):
                op.validate(f"layers[{i}].elementwise[{j}]")

    def layer(self, layer_index: int) -> CustomLayer:
        if not 0 <= layer_index < self.num_layers:
            raise ConfigError("layer_index", f"{layer_index} is outside 0..{self.num_layers - 1}")
        return self.layers[0] if len(self.layers) == 1 else self.layers[layer_index]

    def is_moe_layer(self, layer_index: int) -> bool:
        return False

    @property
    def total_params(self) -> int:
        """Weights of all layers (GEMMs marked ``weight``; no embedding)."""
        if len(self.layers) == 1:  # one repeated layer: no loop over a (possibly huge) layer count
            return self.num_layers * _layer_params(self.layers[0])
        return sum(_layer_params(layer) for layer in self.layers)


def _layer_params(layer: CustomLayer) -> int:
    return sum(g.k * g.n * g.groups for g in layer.gemms if g.weight)


# -- building from a dict / YAML ----------------------------------------------------------
def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(where, f"must be a mapping, got {type(data).__name__}")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise ConfigError(where, f"unknown keys {unknown}", f"use only: {', '.join(sorted(known))}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(where, str(exc), "give every required key") from None


def _list(value: Any, where: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(where, f"must be a list, got {type(value).__name__} {value!r}")
    return list(value)


def _layer_from_dict(data: Any, where: str) -> CustomLayer:
    if not isinstance(data, Mapping):
        raise ConfigError(where, f"must be a mapping, got {type(data).__name__}")
    gemms = tuple(_build(CustomGemm, g, f"{where}.gemms[{j}]")
                  for j, g in enumerate(_list(data.get("gemms", []), f"{where}.gemms")))
    elem = tuple(_build(CustomElementwise, e, f"{where}.elementwise[{j}]")
                 for j, e in enumerate(_list(data.get("elementwise", []), f"{where}.elementwise")))
    for j, g in enumerate(gemms):
        g.validate(f"{where}.gemms[{j}]")  # report the path the user wrote
    for j, op in enumerate(elem):
        op.validate(f"{where}.elementwise[{j}]")
    extra = sorted(set(data) - {"gemms", "elementwise", "activation_bytes_per_token"}, key=str)
    if extra:
        raise ConfigError(where, f"unknown keys {extra}", "use gemms, elementwise, activation_bytes_per_token")
    return CustomLayer(gemms, elem, data.get("activation_bytes_per_token"))


def custom_model_from_dict(data: Mapping[str, Any], source: str = "") -> CustomModelSpec:
    """Build a :class:`CustomModelSpec` from a dict (e.g. loaded YAML); errors name the key."""
    if not isinstance(data, Mapping):
        raise ConfigError("model", f"must be a mapping of fields, got {type(data).__name__}",
                          "give name, num_layers, seq_len, hidden and layer(s)", source=source)
    if ("layer" in data) == ("layers" in data):
        raise ConfigError("layer", "give exactly one of 'layer' (repeated) or 'layers' (one per layer)", source=source)
    raw = [data["layer"]] if "layer" in data else _list(data["layers"], "layers")
    key = "layer" if "layer" in data else "layers"
    layers = tuple(_layer_from_dict(item, key if key == "layer" else f"layers[{i}]") for i, item in enumerate(raw))
    fields = {k: v for k, v in data.items() if k not in ("layer", "layers")}
    unknown = sorted(set(fields) - {"name", "num_layers", "seq_len", "hidden", "dtype", "source"}, key=str)
    if unknown:
        shown = unknown[0] if isinstance(unknown[0], str) and unknown[0].strip() else repr(unknown[0])
        raise ConfigError(shown, "unknown key", "use name, num_layers, seq_len, hidden, dtype, layer(s)",
                          source=source)
    missing = [k for k in ("name", "num_layers", "seq_len", "hidden") if k not in fields]
    if missing:
        raise ConfigError(missing[0], "is required", source=source)
    return CustomModelSpec(layers=layers, **fields)


# -- ops ----------------------------------------------------------------------------------
def _forward_gemm(spec: CustomModelSpec, g: CustomGemm, tokens: int, tp: int, where: str) -> Gemm:
    n, k = g.n, g.k
    if g.tp == "column":
        n = _split(n, tp, f"{where}.n")
    elif g.tp == "row":
        k = _split(k, tp, f"{where}.k")
    m = tokens if g.m == TOKENS else int(g.m)
    return Gemm(m=m, n=n, k=k, dtype=spec.dtype, groups=g.groups, name=g.name)


def _split(size: int, tp: int, field: str) -> int:
    if tp < 1 or size % tp:
        raise ConfigError(field, f"{size} is not divisible by tp = {tp}", "choose tp dividing it, or tp: none")
    return size // tp


def _tokens(spec: CustomModelSpec, mbs: int) -> int:
    if mbs <= 0:
        raise ConfigError("micro_batch_size", f"must be > 0, got {mbs}")
    return mbs * spec.seq_len


def _gemms(spec: CustomModelSpec, layer_index: int, mbs: int, tp: int) -> list[tuple[CustomGemm, Gemm]]:
    layer, tokens = spec.layer(layer_index), _tokens(spec, mbs)
    return [(g, _forward_gemm(spec, g, tokens, tp, f"layers[{layer_index}].gemms[{j}]"))
            for j, g in enumerate(layer.gemms)]


def _elementwise(spec: CustomModelSpec, layer_index: int, mbs: int, tp: int, backward: bool) -> list[MemoryOp]:
    tokens = _tokens(spec, mbs)
    ops = []
    for e in spec.layer(layer_index).elementwise:
        per_token = e.backward_bytes if backward else e.bytes_per_token
        share = tp if e.tp_sharded else 1
        ops.append(MemoryOp(e.kind, per_token * tokens / share, f"{e.name}.bwd" if backward else e.name))
    return ops


def custom_forward_program(spec: CustomModelSpec, layer_index: int, mbs: int, tp: int = 1) -> list[ProgramItem]:
    """Forward of one layer on one TP rank: GEMMs (row GEMMs followed by an all-reduce when
    tp > 1), then the elementwise ops."""
    e = DTYPE_BYTES[spec.dtype]
    items: list[ProgramItem] = []
    for g, op in _gemms(spec, layer_index, mbs, tp):
        items.append(op)
        if g.tp == "row" and tp > 1:
            items.append(CommOp("all_reduce", float(e * op.m * op.n * op.groups), f"{g.name}.tp_all_reduce"))
    return items + _elementwise(spec, layer_index, mbs, tp, backward=False)


def custom_backward_input_program(spec: CustomModelSpec, layer_index: int, mbs: int, tp: int = 1) -> list[ProgramItem]:
    """Activation-gradient backward: elementwise backward, then per GEMM in reverse order its
    input gradient (m, k, n) (and, for activation x activation GEMMs, the second operand's
    gradient (k, n, m)); column GEMMs all-reduce their input gradient when tp > 1."""
    e = DTYPE_BYTES[spec.dtype]
    items: list[ProgramItem] = list(_elementwise(spec, layer_index, mbs, tp, backward=True))
    for g, op in reversed(_gemms(spec, layer_index, mbs, tp)):
        items.append(dgrad(op))
        if not g.weight:
            items.append(replace(wgrad(op), name=f"{op.name}.dgrad_b"))
        if g.tp == "column" and tp > 1:
            items.append(CommOp("all_reduce", float(e * op.m * op.k * op.groups), f"{g.name}.tp_all_reduce.bwd"))
    return items


def custom_backward_weight_ops(spec: CustomModelSpec, layer_index: int, mbs: int, tp: int = 1) -> list[ComputeOp]:
    """Weight-gradient GEMMs (k, n, m) of every GEMM marked ``weight``, in reverse order."""
    return [wgrad(op) for g, op in reversed(_gemms(spec, layer_index, mbs, tp)) if g.weight]


def custom_forward_ops(spec: CustomModelSpec, layer_index: int, mbs: int, tp: int = 1) -> list[ComputeOp]:
    return compute_only(custom_forward_program(spec, layer_index, mbs, tp))


def custom_backward_input_ops(spec: CustomModelSpec, layer_index: int, mbs: int, tp: int = 1) -> list[ComputeOp]:
    return compute_only(custom_backward_input_program(spec, layer_index, mbs, tp))


def custom_activation_bytes(spec: CustomModelSpec, layer_index: int, mbs: int, tp: int = 1) -> float:
    """Bytes one layer keeps for backward on one rank: the user's per-token figure, or else the
    A operand of every GEMM (both operands for activation x activation GEMMs)."""
    layer = spec.layer(layer_index)
    tokens = _tokens(spec, mbs)
    if layer.activation_bytes_per_token is not None:
        return layer.activation_bytes_per_token * tokens
    e = DTYPE_BYTES[spec.dtype]
    return float(sum(e * op.groups * (op.m * op.k + (0 if g.weight else op.k * op.n))
                     for g, op in _gemms(spec, layer_index, mbs, tp)))


def custom_weight_bytes(spec: CustomModelSpec, layer_index: int, tp: int = 1) -> float:
    """Bytes of one layer's weights on one TP rank."""
    e = DTYPE_BYTES[spec.dtype]
    return float(sum(e * op.k * op.n * op.groups for g, op in _gemms(spec, layer_index, 1, tp) if g.weight))
