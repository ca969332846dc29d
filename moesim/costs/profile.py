"""Calibration profiles: the one loader that reads and validates a measured profile JSON.

A profile (format in docs/calibration.md) holds provenance (device, driver, CUDA, NCCL and
torch versions, date, the command that measured it) and long-format samples, one measured
median per row: ``{"op": "gemm", "dtype": "bf16", "m": 4096, ..., "time_ns": 295840.0, ...}``.
:func:`load_profile` checks every field it will use and raises :class:`ConfigError` naming the
first bad one (``samples[12].time_ns: must be a finite number > 0``), so the cost model can
trust what it gets. Fields this module does not know are kept, never rejected.

A profile is named by a path or by a name looked up, in order, in the shipped profiles
(``moesim/profiles/``), each directory of ``MOESIM_PROFILE_PATH`` (``os.pathsep``-separated)
and ``~/.config/moesim/profiles`` (:func:`resolve_profile_path`). Every loaded profile knows its
identity (name, device, date, source, a short sha256 of the file: :meth:`Profile.identity`),
which every result repeats.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES, FP8_SCALINGS, GROUPED_LAYOUTS, MEMORY_OP_KINDS

PROFILE_DIR = Path(__file__).resolve().parents[1] / "profiles"
PROFILE_PATH_ENV = "MOESIM_PROFILE_PATH"
USER_PROFILE_DIR = Path("~/.config/moesim/profiles")
SHA256_CHARS = 12  # the short digest a result quotes
SCHEMA_VERSION = 1

GEMM_LAYOUTS = ("fwd", "bwd_data", "bwd_weight")
PROFILE_COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "all_to_all_v",
                       "send_recv", "exchange")
COLLECTIVE_MODES = ("eager", "graph")
MEMORY_CACHES = ("cold", "warm")  # L2 evicted before each repeat, or not

_STR, _INT, _POS, _BOOL = "str", "int", "pos", "bool"  # field kinds; tuples are enumerations
_COUNTS = "counts"  # a non-empty list of integers >= 0 (tokens per expert of a grouped GEMM)
_NAMES = "names"    # a non-empty list of strings (the op classes a host_mix chain rotates through)
MAX_TIME_NS = 1e13  # ~2.8 hours: no single measured op takes longer
MIN_TIME_NS = 1.0   # no measured kernel, copy or host call takes under a nanosecond (1e-300 divided by zero)

HEADER_FIELDS: dict[str, str] = {
    "device": _STR, "driver": _STR, "cuda": _STR, "nccl": _STR, "torch": _STR,
    "date": _STR, "command": _STR, "notes": _STR,
}

# op -> required fields (kind or allowed values); "time_ns" and "repeats" are required for all
OP_FIELDS: dict[str, dict[str, Any]] = {
    "gemm": {"dtype": tuple(DTYPE_BYTES), "m": _INT, "n": _INT, "k": _INT},
    "grouped_gemm": {"dtype": tuple(DTYPE_BYTES), "groups": _INT, "m": _INT, "n": _INT, "k": _INT},
    "grouped_gemm_v": {"dtype": tuple(DTYPE_BYTES), "layout": GROUPED_LAYOUTS, "n": _INT, "k": _INT,
                       "counts": _COUNTS},  # one grouped kernel over a token-count vector
    # Transformer Engine's grouped GEMM: one cuBLAS GEMM per group over 4 streams (calibrate/grouped.py)
    "grouped_gemm_te": {"dtype": tuple(DTYPE_BYTES), "layout": GROUPED_LAYOUTS, "n": _INT, "k": _INT,
                        "counts": _COUNTS},
    "swiglu_ffn": {"dtype": tuple(DTYPE_BYTES), "tokens": _INT, "hidden": _INT, "ffn": _INT},
    "attention": {"dtype": tuple(DTYPE_BYTES), "direction": ("fwd", "bwd"), "causal": _BOOL,
                  "batch": _INT, "heads": _INT, "seq": _INT, "head_dim": _INT},
    "memory": {"kind": MEMORY_OP_KINDS, "variant": _STR, "nbytes": _INT},
    "launch": {"variant": _STR},
    "host": {"call": _STR},  # host (CPU issue) time of one eager call, GPU kept busy
    "host_op": {"call": _STR, "phase": ("fwd", "bwd", "plain")},  # per op class (calibrate/host_classes.py)
    "host_mix": {"phase": ("fwd", "bwd", "plain"), "classes": _NAMES},  # a chain mixing classes (calibrate/host_classes.py)
    "host_after_sync": {"calls": _INT, "steady_ns": _POS},  # issue right after a GPU read (calibrate/host_sync.py)
    "sync": {"nbytes": _INT},  # device-to-host copy of a small tensor (.tolist(); calibrate/moe_kernels.py)
    "collective": {"collective": PROFILE_COLLECTIVES, "num_ranks": _INT, "nbytes": _INT},
    "overlap": {"collective": _STR, "victim": ("gemm", "collective"), "num_ranks": _INT, "nbytes": _INT,
                "alone_ns": _POS},
    "clock": {"class": ("gemm", "attention"), "sm_mhz": _POS},  # a shape's time and its SM clock (calibrate/clock_section.py)
    # a GEMM's time with that share of the GPU's time in GEMMs for seconds, and on a cool GPU (lab/duty_clock_probe.py)
    "duty": {"class": ("gemm", "attention"), "duty": _POS, "cool_time_ns": _POS},
}
# optional fields with a fixed vocabulary, and the value assumed when absent
OPTIONAL_FIELDS: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "gemm": {"layout": (GEMM_LAYOUTS, "fwd"), "scaling": (("", *FP8_SCALINGS), "")},  # "": bf16, or fp8 tensorwise
    "grouped_gemm_v": {"scaling": (("", *FP8_SCALINGS), "")},
    "grouped_gemm_te": {"scaling": (("", *FP8_SCALINGS), "")},
    "collective": {"mode": (COLLECTIVE_MODES, "eager")},
    "memory": {"cache": (MEMORY_CACHES, "cold")},
    "sync": {"variant": (("idle", "queued"), "idle")},
}
# optional integer fields >= 0 (0: not applicable): the shape a moe_kernels memory row was measured at
SHAPE_FIELDS: dict[str, tuple[str, ...]] = {"memory": ("tokens", "experts", "top_k", "hidden")}
STAT_FIELDS = ("p25_ns", "p75_ns", "min_ns", "max_ns")


@dataclass(frozen=True)
class Profile:
    """A validated calibration profile.

    Attributes:
        name: the file's stem, e.g. ``"h200_sxm"``.
        device: the device as the driver names it, e.g. ``"NVIDIA H200"``.
        gpu_count: GPUs the measurements used (the most of any run).
        driver, cuda, nccl, torch, date, command, notes: provenance, as recorded.
        samples: the measured rows (read-only mappings), optional fields filled with defaults.
        extra: every other top-level field (``runs``, ``gpu_memory_bytes``, ``errors``, ...).
        source: where it was loaded from.
    """

    name: str
    device: str
    gpu_count: int
    driver: str
    cuda: str
    nccl: str
    torch: str
    date: str
    command: str
    notes: str
    samples: tuple[Mapping[str, Any], ...]
    extra: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    sha256: str = ""  # of the file's bytes, first SHA256_CHARS hex digits ("" when not read from a file)

    @property
    def device_kind(self) -> str:
        """Short device name for registries, e.g. ``"H200"`` from ``"NVIDIA H200"``."""
        words = self.device.replace("NVIDIA", "").split()
        return words[0].upper() if words else self.device.upper()

    def select(self, op: str, **match: Any) -> list[Mapping[str, Any]]:
        """Samples of ``op`` whose fields equal every ``match`` value (in the profile's order)."""
        return [s for s in self._by_op.get(op, ()) if all(s.get(k) == v for k, v in match.items())]

    @cached_property
    def _by_op(self) -> dict[str, list[Mapping[str, Any]]]:
        by: dict[str, list[Mapping[str, Any]]] = {}
        for s in self.samples:
            by.setdefault(s["op"], []).append(s)
        return by

    def ops(self) -> set[str]:
        """The ops that have at least one sample."""
        return set(self._by_op)

    def identity(self) -> dict[str, str]:
        """What a result quotes to say which profile priced it: name, device, date, source, sha256."""
        return {"name": self.name, "device": self.device, "date": self.date, "source": self.source,
                "sha256": self.sha256}


def profile_search_dirs() -> list[Path]:
    """Where a profile name is looked up, in order: the shipped profiles, each directory of
    ``MOESIM_PROFILE_PATH`` (``os.pathsep``-separated), then ``~/.config/moesim/profiles``."""
    extra = [Path(d).expanduser() for d in os.environ.get(PROFILE_PATH_ENV, "").split(os.pathsep) if d.strip()]
    return [PROFILE_DIR, *extra, USER_PROFILE_DIR.expanduser()]


def available_profiles() -> list[str]:
    """Names of the profiles found on the search path (:func:`profile_search_dirs`)."""
    return sorted({p.stem for d in profile_search_dirs() if d.is_dir() for p in d.glob("*.json")})


def resolve_profile_path(path_or_name: "str | Path") -> Path:
    """A profile file: ``path_or_name`` itself when it is a file, else ``<name>.json`` in the
    first directory of :func:`profile_search_dirs` that has it (a bare name only)."""
    p = Path(path_or_name).expanduser()
    if p.is_file():
        return p
    if len(p.parts) > 1:
        raise ConfigError("profile", f"file {str(p)!r} not found", "give an existing profile JSON or a profile name: "
                          + (", ".join(available_profiles()) or "none found"))
    file_name = p.name if p.suffix == ".json" else f"{p.name}.json"
    for folder in profile_search_dirs():
        if (folder / file_name).is_file():
            return folder / file_name
    searched = "; ".join(str(d) for d in profile_search_dirs())
    raise ConfigError("profile", f"no profile named {str(path_or_name)!r} (searched: {searched})",
                      f"give a JSON path, put the file in {PROFILE_PATH_ENV} or {USER_PROFILE_DIR}, or use one of: "
                      + (", ".join(available_profiles()) or "none found"))


MAX_PROFILE_BYTES = 64 << 20  # checked before reading: a profile is a JSON list of measured rows
_LOADED: dict[tuple[str, str], Profile] = {}
"""Profiles read so far, by (path, sha256 of the file's bytes): a Profile is immutable, and every
scenario of a sweep or of ``moesim validate`` loads the same file again."""


def load_profile(path_or_name: "str | Path") -> Profile:
    """Read, validate and return a profile; ConfigError naming the first bad field. A file read
    before with the same bytes returns the Profile built then (parsing and checking are skipped)."""
    path = resolve_profile_path(path_or_name)
    size = path.stat().st_size
    if size > MAX_PROFILE_BYTES:
        raise ConfigError("profile", f"the file is {size:,} bytes, more than {MAX_PROFILE_BYTES:,}",
                          "give a calibration profile (the shipped ones are a few MB)", source=str(path))
    raw = path.read_bytes()
    key = (str(path.absolute()), hashlib.sha256(raw).hexdigest())
    if key in _LOADED:
        return _LOADED[key]
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5,000-digit number, 10^5 nested lists
        where = f" ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else \
            " (nested too deeply)" if isinstance(exc, RecursionError) else f" ({str(exc)[:80]})"
        raise ConfigError("profile", f"not valid JSON{where}", "re-run the calibration",
                          source=str(path)) from None
    profile = profile_from_dict(data, name=path.stem, source=_shown_source(path))
    _LOADED[key] = replace(profile, sha256=key[1][:SHA256_CHARS])
    return _LOADED[key]


def _shown_source(path: Path) -> str:
    """A shipped profile as ``moesim/profiles/<file>`` (the same on every machine), else the absolute path."""
    resolved = path.resolve()
    return f"moesim/profiles/{resolved.name}" if resolved.parent == PROFILE_DIR.resolve() else str(resolved)


def profile_from_dict(data: Any, name: str = "profile", source: str = "") -> Profile:
    """Validate a parsed profile document and build the :class:`Profile`."""
    if not isinstance(data, dict):
        raise ConfigError("profile", f"top level must be an object, got {type(data).__name__}", source=source)
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError("schema_version", f"expected {SCHEMA_VERSION}, got {version!r}",
                          "re-run the calibration with this moesim version", source=source)
    for key, kind in HEADER_FIELDS.items():
        _check_value(data, key, kind, key, source)
    count = data.get("gpu_count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError("gpu_count", f"must be an integer >= 1, got {count!r}", source=source)
    rows = data.get("samples")
    if not isinstance(rows, list) or not rows:
        raise ConfigError("samples", "must be a non-empty list of measured rows", "re-run the calibration", source=source)
    samples = tuple(MappingProxyType(_check_sample(i, s, source)) for i, s in enumerate(rows))
    memory = data.get("gpu_memory_bytes")
    if memory is not None and not _is_number(memory, allow_zero=True):   # 0: not known (CPU smoke runs)
        raise ConfigError("gpu_memory_bytes", f"must be a finite number of bytes >= 0, got {memory!r}",
                          "remove the field or give the GPU's memory in bytes", source=source)
    _check_kernel_region(data.get("kernel_region"), source)
    _check_eager_host(data.get("eager_host"), source)
    known = set(HEADER_FIELDS) | {"schema_version", "gpu_count", "samples"}
    return Profile(
        name=name, gpu_count=count, samples=samples, source=source,
        extra=MappingProxyType({k: v for k, v in data.items() if k not in known}),
        **{k: data[k] for k in HEADER_FIELDS},
    )


def _check_kernel_region(rec: Any, source: str) -> None:
    """``kernel_region`` (optional): ``region_ns`` and ``floor_ns``, finite numbers >= 0."""
    if rec is None:
        return
    if not isinstance(rec, dict):
        raise ConfigError("kernel_region", f"must be an object, got {type(rec).__name__}",
                          "give {\"region_ns\": ..., \"floor_ns\": ...} or remove the field", source=source)
    for key in ("region_ns", "floor_ns"):
        if not _is_number(rec.get(key), allow_zero=True) or float(rec[key]) > 1e9:
            raise ConfigError(f"kernel_region.{key}", f"must be a number of ns in [0, 1e9], got {rec.get(key)!r}",
                              "measure it with moesim calibrate run --sections kernel_region", source=source)


def _check_eager_host(rec: Any, source: str) -> None:
    """``eager_host`` (optional): ``per_kernel_ns``, a finite number of ns in (0, 1e9]."""
    if rec is None:
        return
    if not isinstance(rec, dict) or not _is_number(rec.get("per_kernel_ns"), allow_zero=False) \
            or float(rec["per_kernel_ns"]) > 1e9:
        raise ConfigError("eager_host.per_kernel_ns", f"must be a number of ns in (0, 1e9], got {rec!r:.80}",
                          "remove the field, or write it with python -m lab.eager_host from a checkout", source=source)


def _check_sample(i: int, row: Any, source: str) -> dict[str, Any]:
    where = f"samples[{i}]"
    if not isinstance(row, dict):
        raise ConfigError(where, f"must be an object, got {type(row).__name__}", source=source)
    op = row.get("op")
    if not isinstance(op, str) or op not in OP_FIELDS:  # a list here is not hashable
        raise ConfigError(f"{where}.op", f"unknown op {op!r}", f"use one of: {', '.join(sorted(OP_FIELDS))}",
                          source=source)
    _check_value(row, "time_ns", _POS, f"{where}.time_ns", source)
    if not MIN_TIME_NS <= row["time_ns"] <= MAX_TIME_NS:
        raise ConfigError(f"{where}.time_ns", f"{row['time_ns']!r} ns is not the time of one op",
                          f"a measured kernel, collective or host call takes {MIN_TIME_NS:.0f} to {MAX_TIME_NS:.0e} "
                          "ns; fix the row", source=source)
    _check_value(row, "repeats", _INT, f"{where}.repeats", source)
    for key, kind in OP_FIELDS[op].items():
        _check_value(row, key, kind, f"{where}.{key}", source)
    for key in STAT_FIELDS:
        if key in row and not _is_number(row[key], allow_zero=True):
            raise ConfigError(f"{where}.{key}", f"must be a finite number >= 0, got {row[key]!r}", source=source)
    for key in SHAPE_FIELDS.get(op, ()):
        value = row.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}.{key}", f"must be an integer >= 0 (0: not applicable), got {value!r}",
                              "fix the row (moesim.calibrate.moe_kernels writes the shape it measured)", source=source)
    out = dict(row)
    for key, (allowed, default) in OPTIONAL_FIELDS.get(op, {}).items():
        out.setdefault(key, default)
        _check_value(out, key, allowed, f"{where}.{key}", source)
    return out


def _check_value(row: Mapping[str, Any], key: str, kind: Any, where: str, source: str) -> None:
    if key not in row:
        raise ConfigError(where, "missing", "add the field (see docs/calibration.md)", source=source)
    value = row[key]
    if isinstance(kind, tuple):
        if value not in kind:
            raise ConfigError(where, f"unknown value {value!r}", f"use one of: {', '.join(map(str, kind))}", source=source)
    elif kind == _STR and not isinstance(value, str):
        raise ConfigError(where, f"must be a string, got {value!r}", source=source)
    elif kind == _BOOL and not isinstance(value, bool):
        raise ConfigError(where, f"must be true or false, got {value!r}", source=source)
    elif kind == _INT and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(where, f"must be an integer >= 1, got {value!r}", source=source)
    elif kind == _COUNTS and (not isinstance(value, list) or not value or any(
            not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in value)):
        raise ConfigError(where, f"must be a non-empty list of integers >= 0, got {value!r:.80}", source=source)
    elif kind == _NAMES and (not isinstance(value, list) or not value or any(not isinstance(c, str) for c in value)):
        raise ConfigError(where, f"must be a non-empty list of names, got {value!r:.80}", source=source)
    elif kind == _POS and not _is_number(value, allow_zero=False):
        raise ConfigError(where, f"must be a finite number > 0, got {value!r}", source=source)


def _is_number(value: Any, allow_zero: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value >= 0 if allow_zero else value > 0
