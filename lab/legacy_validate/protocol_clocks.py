"""The SM clock a single-GPU entry ran at when it recorded none: the clock that entries of the same
kind, timed under the same thermal protocol, recorded in the clocked sessions.

Sessions 0-2 timed their single-GPU entries without the clock probe. For those the model used to
guess the clock with the two-state rule of :mod:`lab.legacy_validate.clocks` (pre-heated means
power-capped, idle means boost). The clocked sessions showed the guess is wrong for whole kernel
kinds: after the same GEMM heat, flash attention runs near boost clocks (it draws less power per
clock than a dense GEMM) while GEMMs are capped. This module replaces the guess with telemetry: per
(kind, thermal protocol), the median SM clock recorded by the clocked entries of that kind and
protocol (``measured.clock.sm_mhz``). It is derived from the clocks alone, never from a measured
time, and stored with its provenance in ``data/validation/protocol_clocks.json``
(``python -m lab.legacy_validate.protocol_clocks``). An entry that recorded its clock is predicted at
that clock; the table serves only entries without one.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from moesim.errors import ConfigError
from lab.legacy_validate.clocks import recorded_clock_mhz
from moesim.validate.measurements import DEFAULT_PATH, Measurement, load_measurements

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "data" / "validation" / "protocol_clocks.json"
SINGLE_KINDS = ("gemm", "swiglu_ffn", "attention", "memory")


@dataclass(frozen=True)
class ProtocolClocks:
    """Median recorded SM clock (MHz) per (kind, thermal protocol)."""

    mhz: tuple          # ((kind, thermal, MHz, entries), ...): hashable, so contexts stay cache keys
    source: str

    def for_case(self, kind: str, thermal: str) -> "float | None":
        return next((m for k, t, m, _ in self.mhz if k == kind and t == thermal), None)


def derive(cases: Iterable[Measurement]) -> dict:
    """The table from every single-GPU entry that recorded its SM clock."""
    groups: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for c in cases:
        mhz = recorded_clock_mhz(c)
        if c.kind in SINGLE_KINDS and mhz is not None:
            groups.setdefault((c.kind, c.thermal), []).append((float(mhz), c.session))
    rows = []
    for (kind, thermal), vals in sorted(groups.items()):
        mhz = [v for v, _ in vals]
        rows.append({"kind": kind, "thermal": thermal, "sm_mhz": round(statistics.median(mhz), 1),
                     "min_mhz": round(min(mhz), 1), "max_mhz": round(max(mhz), 1), "entries": len(mhz),
                     "sessions": sorted({s for _, s in vals})})
    return {"what": "median recorded SM clock of clocked single-GPU entries per (kind, thermal protocol); "
                    "clocks only, no measured time", "rows": rows}


def load_protocol_clocks(path: "str | Path | None" = None) -> "ProtocolClocks | None":
    """The stored table, or None when the default file is absent."""
    p = Path(path) if path is not None else DEFAULT_TABLE
    if not p.is_file():
        if path is not None:
            raise ConfigError("--protocol-clocks", f"no table at {p}",
                              "write it with python -m lab.legacy_validate.protocol_clocks")
        return None
    try:
        rows = json.loads(p.read_text())["rows"]
        mhz = tuple((str(r["kind"]), str(r["thermal"]), float(r["sm_mhz"]), int(r["entries"])) for r in rows)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ConfigError("protocol clocks", f"malformed table ({type(exc).__name__}: {exc})",
                          "rewrite it with python -m lab.legacy_validate.protocol_clocks", source=str(p)) from None
    if any(m <= 0 for _, _, m, _ in mhz):
        raise ConfigError("protocol clocks", "every sm_mhz must be > 0", source=str(p))
    return ProtocolClocks(mhz, str(p))


def main(argv: "Sequence[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="src", type=Path, default=DEFAULT_PATH)
    p.add_argument("--out", type=Path, default=DEFAULT_TABLE)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    ms = load_measurements(args.src)
    doc = {"source": str(args.src.name), **derive(ms.cases)}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for r in doc["rows"]:
        print(f"{r['kind']:<11} {r['thermal']:<9} {r['sm_mhz']:7.1f} MHz  ({r['min_mhz']:.0f}-{r['max_mhz']:.0f}, "
              f"{r['entries']} entries, sessions {r['sessions']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
