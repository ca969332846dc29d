"""What run 9's kernel probe measured, as model inputs: the cost of an event-timed region, and the
clock-bound share of memory kernels (``data/validation/kernel_probe.json``, written by
``lab.chain_probe``; no validation case enters either).

* :class:`ChainOverhead`. Every profile sample times its kernel alone, in one CUDA-event region
  after an L2-evicting write. The probe timed regions of N = 1, 2, 4, 8, 16 back-to-back kernels of
  one kind, each on its own cold buffers. A region of N kernels lasts ``N x in-stream + O``: the
  region cost ``O`` (the event-to-kernel and kernel-to-event gaps, and whatever the first kernel
  after the flush pays) is in every single-kernel sample once. Per kind and clock state ``O`` is
  the intercept of the two shortest chains, ``2 t(1) - t(2)`` (longer chains of short GEMMs become
  host-bound: the host issues ``torch.mm`` slower than the GPU runs it); the model's ``O`` is the
  median over kinds and states. A kernel inside a chain then takes its profile (alone) time minus
  ``O``, never less than the in-stream time of a one-element add (``t(2) - t(1)`` of that kind,
  median over states), and a timed region of several kernels adds ``O`` once.
* :class:`MemoryClockShare`. Every memory variant was timed at boost clocks (idle GPU) and under
  the profile's protocol (GEMM heat), with the SM clock of each repeat. With ``t = A + B / f``
  the pair gives the clock-bound share at the profile clock, ``phi = (1 - t_b / t_p) / (1 - f_p /
  f_b)``, per variant, cache state and size (pairs whose clocks differ by less than
  ``MIN_CLOCK_SPREAD`` are skipped: they cannot resolve it), smoothed over sizes by a running
  median of three (:func:`running_median`). The profile's memory curves ran at
  the median clock of the profile-protocol memory samples (``ref_mhz``).
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from moesim.costs.regions import in_stream_ns, region_from_chains

DEFAULT_KERNEL_PROBE = Path(__file__).resolve().parents[2] / "data" / "validation" / "kernel_probe.json"
MIN_CLOCK_SPREAD = 0.1         # 1 - f_profile / f_boost below this cannot resolve a share
PROFILE_STATE = "profile"
BOOST_STATE = "boost"


@dataclass(frozen=True)
class ChainOverhead:
    """Region cost ``region_ns`` (O) and the shortest in-stream kernel ``floor_ns``."""

    region_ns: float
    floor_ns: float
    per_kind: tuple     # ((kind, state, O ns), ...)
    source: str

    def in_stream_ns(self, alone_ns: float) -> float:
        """A kernel's time inside a chain from its time timed alone in a region."""
        return in_stream_ns(alone_ns, self.region_ns, self.floor_ns)

    def region_total_ns(self, alone_ns: Sequence[float]) -> float:
        """One timed region of the given kernels (each timed alone): in-stream times plus O once;
        a single kernel keeps its own time."""
        if len(alone_ns) <= 1:
            return float(sum(alone_ns))
        return float(sum(self.in_stream_ns(t) for t in alone_ns)) + self.region_ns


def chain_overhead(samples: Sequence[dict], source: str) -> "ChainOverhead | None":
    """:class:`ChainOverhead` from the probe's ``chain`` samples (None without chains); the
    derivation is :func:`moesim.costs.regions.region_from_chains`, as ``moesim calibrate`` uses."""
    rec = region_from_chains([s for s in samples if s.get("probe") == "chain"])
    if rec is None:
        return None
    return ChainOverhead(float(rec["region_ns"]), float(rec["floor_ns"]), tuple(tuple(x) for x in rec["per_kind"]),
                         source)


def clock_bound_share(t_boost: float, f_boost: float, t_profile: float, f_profile: float) -> "float | None":
    """``phi`` at the profile clock from one size timed at two clocks (None when unresolvable)."""
    if t_profile <= 0 or f_boost <= 0 or f_profile <= 0:
        return None
    spread = 1.0 - f_profile / f_boost
    if spread < MIN_CLOCK_SPREAD:
        return None
    return min(1.0, max(0.0, (1.0 - t_boost / t_profile) / spread))


@dataclass(frozen=True)
class MemoryClockShare:
    """Per (variant, cache): ((nbytes, phi), ...) sorted by size; ``ref_mhz`` the profile clock."""

    curves: tuple       # ((variant, cache, ((nbytes, phi), ...)), ...)
    ref_mhz: float
    source: str

    def share(self, variant: str, nbytes: float, cache: str = "cold") -> float:
        """``phi`` of ``variant`` at ``nbytes``, linear in log2(bytes) between measured sizes, held
        at the end values beyond them; a variant not measured warm uses its cold curve; 0 for an
        unknown variant (clock-independent, as before)."""
        table = {(v, c): pts for v, c, pts in self.curves}
        pts = table.get((variant, cache)) or table.get((variant, "cold"))
        if not pts:
            return 0.0
        if nbytes <= pts[0][0]:
            return pts[0][1]
        if nbytes >= pts[-1][0]:
            return pts[-1][1]
        x = math.log2(nbytes)
        for (b0, p0), (b1, p1) in zip(pts, pts[1:]):
            if b0 <= nbytes <= b1:
                w = (x - math.log2(b0)) / (math.log2(b1) - math.log2(b0))
                return p0 + w * (p1 - p0)
        return pts[-1][1]


def memory_clock_share(samples: Sequence[dict], source: str) -> "MemoryClockShare | None":
    """:class:`MemoryClockShare` from the probe's ``memory`` samples (None without both states)."""
    runs: dict[tuple[str, str, str, int], tuple[float, float]] = {}
    ref = []
    for s in samples:
        mhz = (s.get("clock") or {}).get("sm_mhz")
        if s.get("probe") != "memory" or not mhz:
            continue
        runs[(s["variant"], s.get("cache", "cold"), s["state"], int(s["nbytes"]))] = (float(s["time_ns"]), float(mhz))
        if s["state"] == PROFILE_STATE:
            ref.append(float(mhz))
    curves: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for (variant, cache, state, nbytes), (t_p, f_p) in runs.items():
        if state != PROFILE_STATE or (variant, cache, BOOST_STATE, nbytes) not in runs:
            continue
        t_b, f_b = runs[(variant, cache, BOOST_STATE, nbytes)]
        phi = clock_bound_share(t_b, f_b, t_p, f_p)
        if phi is not None:
            curves.setdefault((variant, cache), []).append((nbytes, phi))
    if not curves or not ref:
        return None
    packed = tuple((v, c, running_median(sorted(p))) for (v, c), p in sorted(curves.items()))
    return MemoryClockShare(packed, float(statistics.median(ref)), source)


def running_median(points: Sequence[tuple[int, float]]) -> tuple:
    """Each size's share replaced by the median of it and its two neighbours (the mean of two at
    the ends): one pair of timings resolves a share only to about +-0.2."""
    out = []
    for i, (nbytes, _) in enumerate(points):
        window = [p for _, p in points[max(0, i - 1):i + 2]]
        out.append((nbytes, float(statistics.median(window))))
    return tuple(out)


def load_kernel_probe(path: "str | Path | None" = None) -> "tuple[list[dict], str] | None":
    """The probe's samples, or None when the file is absent (neither correction applies)."""
    p = Path(path) if path is not None else DEFAULT_KERNEL_PROBE
    if not p.is_file():
        return None
    return list(json.loads(p.read_text()).get("samples") or []), str(p)
