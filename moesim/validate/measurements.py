"""Loading the stored real-GPU measurements that ``moesim validate`` compares against.

The file (``data/validation/h200_measurements.json``, written by
``moesim.calibrate.validate_workloads``) holds one entry per measured workload: an ``id``, a
``kind`` (gemm, swiglu_ffn, attention, memory, collective, pipeline, moe_layer), a
machine-readable ``description`` and the ``measured`` statistics, plus the provenance of each
measurement session (date, GPU count, command). This module turns it into frozen records and
rejects a malformed file with a :class:`~moesim.errors.ConfigError` naming the bad field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from moesim.errors import ConfigError
from moesim.shipped import data_path

KINDS = ("gemm", "swiglu_ffn", "attention", "memory", "collective", "pipeline", "moe_layer")
DEFAULT_PATH = data_path("data", "validation", "h200_measurements.json")


@dataclass(frozen=True)
class Session:
    """Provenance of one measurement session (one call of the measuring script)."""

    index: int
    date: str
    command: str
    gpu_count: int


@dataclass(frozen=True)
class Measurement:
    """One measured workload: what ran (``description``) and its median time."""

    case_id: str
    kind: str
    description: Mapping[str, Any]
    measured_ns: float
    p25_ns: float
    p75_ns: float
    repeats: int
    session: int
    extra: Mapping[str, Any]

    @property
    def thermal(self) -> str:
        """The GPU's thermal state when measured: as_found, hot or steady."""
        return str(self.description.get("thermal", "as_found"))


@dataclass(frozen=True)
class MeasurementSet:
    """Every measurement of one file plus the file's provenance."""

    path: str
    device: str
    driver: str
    cuda: str
    nccl: str
    torch: str
    date: str
    sessions: tuple[Session, ...]
    cases: tuple[Measurement, ...]

    def session(self, index: int) -> Session:
        """The session a measurement came from (session 0 when the file lists none)."""
        for s in self.sessions:
            if s.index == index:
                return s
        return Session(index, self.date, "", 0)


def load_measurements(path: "str | Path | None" = None) -> MeasurementSet:
    """Read and check a measurement file (the shipped H200 file by default)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    if not p.is_file():
        raise ConfigError("--kernels", f"no measurement file at {p}", f"pass an existing file, e.g. {DEFAULT_PATH}")
    try:
        doc = json.loads(p.read_text())
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5,000-digit number, lists nested 10^5 deep
        raise ConfigError("--kernels", f"{p} is not valid JSON ({str(exc)[:120]})", source=str(p)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("samples"), list) or not doc["samples"]:
        raise ConfigError("samples", "missing or empty", "use a file written by moesim calibrate workloads", source=str(p))
    cases = tuple(_measurement(entry, i, str(p)) for i, entry in enumerate(doc["samples"]))
    ids = [c.case_id for c in cases]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise ConfigError("samples", f"duplicate id {duplicate!r}", "give every entry a unique id", source=str(p))
    sessions = tuple(Session(i, str(s.get("date", "")), str(s.get("command", "")), int(s.get("gpu_count", 0)))
                     for i, s in enumerate(doc.get("sessions") or []))
    return MeasurementSet(
        path=str(p), device=str(doc.get("device", "")), driver=str(doc.get("driver", "")),
        cuda=str(doc.get("cuda", "")), nccl=str(doc.get("nccl", "")), torch=str(doc.get("torch", "")),
        date=str(doc.get("date", "")), sessions=sessions, cases=cases,
    )


def _measurement(entry: Any, index: int, source: str) -> Measurement:
    where = f"samples[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(where, "must be an object", source=source)
    for key in ("id", "kind", "description", "measured"):
        if key not in entry:
            raise ConfigError(f"{where}.{key}", "missing", source=source)
    if entry["kind"] not in KINDS:
        raise ConfigError(f"{where}.kind", f"unknown kind {entry['kind']!r}", f"use one of: {', '.join(KINDS)}",
                          source=source)
    measured = entry["measured"]
    time_ns = measured.get("time_ns") if isinstance(measured, dict) else None
    if not isinstance(time_ns, (int, float)) or not time_ns > 0:
        raise ConfigError(f"{where}.measured.time_ns", f"must be a number > 0, got {time_ns!r}", source=source)
    extra = {k: v for k, v in measured.items() if k not in ("time_ns", "p25_ns", "p75_ns", "repeats")}
    return Measurement(
        case_id=str(entry["id"]), kind=entry["kind"], description=dict(entry["description"]),
        measured_ns=float(time_ns), p25_ns=float(measured.get("p25_ns", time_ns)),
        p75_ns=float(measured.get("p75_ns", time_ns)), repeats=int(measured.get("repeats", 1)),
        session=int(entry.get("session", 0)), extra=extra,
    )
