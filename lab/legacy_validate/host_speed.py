"""Per-session, per-rank host speed: scaling the profile's host costs by an in-process probe.

The host time of the same eager call sequence varies between machines, processes and runs by up
to 1.6x (docs/accuracy.md), and the profile's host table was measured in one process on one
machine. A session that ran the host probe sequence (``lab.host_probe``) inside
each rank's process, before and after its timed workloads (``measured.host_probe`` of its
entries), says how fast those processes' host was. The reference file
(``data/validation/host_reference.json``, ``lab.host_reference``) holds, from one
set of processes, the ratio "host cost of a call / probe round time". From it and the profile,
:func:`build_host_speed` derives the probe time the profile's own processes would have had
(per host-table call: profile cost / ratio; the median over calls), and the same for the host
interval of small eager collectives (per op and size in the reference: the profile's interval
of that op / the ratio; the median over all of them, since every op takes the same
``ProcessGroupNCCL`` host path and one op's five sizes scatter too much: per op, all_to_all_v's
equivalent is 0.73x all_reduce's). A rank's host costs are then scaled by
``its probe time / that equivalent probe time``. The probe is the ``caught_up`` mode (GPU idle
at the start of each round, kernels run as issued: the state of the host-bound programs whose
time host costs decide). Never fitted to a validation case; a case without a probe, or a run
without the reference file, keeps scale 1.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from moesim.errors import ConfigError

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "data" / "validation" / "host_reference.json"
PROBE_MODE = "caught_up"
EAGER_PREFIX = "eager:"


@dataclass(frozen=True)
class HostSpeed:
    """Equivalent probe times of the profile's host costs (ns per probe round, ``mode``)."""

    mode: str
    table_probe_ns: float                                    # the host table's calls
    collective_probe_ns: float = 0.0                         # eager small collectives (0: use the table's)
    source: str = ""

    def table_scale(self, probe_ns: "float | None") -> float:
        """Factor on the host table's costs for a rank whose probe took ``probe_ns`` (1 if none)."""
        return 1.0 if probe_ns is None else probe_ns / self.table_probe_ns

    def collective_scale(self, probe_ns: "float | None") -> float:
        """Factor on the eager host interval of a collective (the table's factor without one)."""
        if probe_ns is None:
            return 1.0
        return probe_ns / (self.collective_probe_ns or self.table_probe_ns)


def load_reference(path: "str | Path | None" = None) -> "tuple[dict, str] | None":
    """The reference document, or None when the default file is absent."""
    p = Path(path) if path is not None else DEFAULT_REFERENCE
    if not p.is_file():
        if path is not None:
            raise ConfigError("--host-reference", f"no host reference at {p}",
                              f"pass an existing file, e.g. {DEFAULT_REFERENCE}")
        return None
    return json.loads(p.read_text()), str(p)


def build_host_speed(doc: Mapping[str, Any], host_ns: Callable[[str], float], host_calls: Sequence[str],
                     eager_interval_ns: Callable[[str], float], mode: str = PROBE_MODE, source: str = "") -> HostSpeed:
    """Equivalent probe times from a reference document and the profile's host costs.

    ``host_ns(call)`` and ``host_calls`` are the profile's host table; ``eager_interval_ns(op)``
    the profile's host interval of an eager collective (the predictor's).
    """
    if mode not in doc.get("modes", {}):
        raise ConfigError("modes", f"host reference has no probe mode {mode!r}",
                          "regenerate it with lab.host_reference", source=source)
    ratios: Mapping[str, float] = doc["modes"][mode]["host_over_probe"]
    table = [host_ns(c) / ratios[c] for c in host_calls if ratios.get(c, 0) > 0]
    if not table:
        raise ConfigError("host_over_probe", "no call shared with the profile's host table", source=source)
    coll = [eager_interval_ns(k[len(EAGER_PREFIX):].split("|")[0]) / v for k, v in ratios.items()
            if k.startswith(EAGER_PREFIX) and v > 0]
    return HostSpeed(mode, statistics.median(table), statistics.median(coll) if coll else 0.0, source)


def session_probe_ns(extra: Mapping[str, Any], num_ranks: int, mode: str = PROBE_MODE) -> "list[float | None]":
    """Per rank, the mean of the probes before and after the session's workloads (None: no probe)."""
    records = extra.get("host_probe") or []
    out: list[float | None] = [None] * num_ranks
    for rec in records:
        rank = int(rec.get("rank", -1))
        vals = [float(rec[w][f"{mode}_round_ns"]) for w in ("before", "after") if rec.get(w)]
        if 0 <= rank < num_ranks and vals:
            out[rank] = statistics.mean(vals)
    return out
