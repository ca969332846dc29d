"""The SM clock a tensor-dense kernel runs at, given the clock probed around it.

A case that recorded its SM clock is predicted at it (:func:`lab.legacy_validate.clocks.scale_to_clock`).
The probe reads the clock with spin kernels before and after the timed kernel. Run 22
(``lab.boost_probe``) read it *during* dense bf16 GEMMs too, with spin kernels on a
second stream: from idle, where the probes around a GEMM read 1980 MHz, the GEMM ran at about
1580 MHz (8192^3 and 16384x14336x4096: 1571-1586 MHz; run 23, 2048x8192x4096 too: 1546-1591);
after 5 s of load, where they read 1600-1700 MHz, at 1200-1350 MHz (run 23). The GPU pulls its clock down within microseconds
while a kernel draws more than it allows; a kernel that drives the tensor cores harder is pulled
down further. Timed pairs say the same: each grid shape's time from idle against its time after
the load gives the clock (in the probe's units) at which ``scale_to_clock`` reproduces the pair,
and that clock falls as the kernel's tensor activity ``a`` (its FLOP rate at the profile's clock
over the profile's best GEMM rate) rises: a = 0.74 1993-2012 MHz, 0.80 1921, 0.88 1901-1904, 0.91
1868, 0.94 1783-1786, 0.96 1739-1740 (run 22).

The rule: a kernel of tensor activity ``a`` at a probed clock ``f`` runs at ``min(f, C / a)``: the
clock times the tensor activity is held under ``C``. ``C`` is fitted on run 22's seven grid shapes
(least squares in log space over their idle pairs) and checked on run 23's eight other grid shapes
(:func:`fit_tensor_clock_cap`); no validation case enters it. Below ``C / a`` nothing changes, so
power-capped cases (probes at 1500-1720 MHz) and low-activity kernels (small and skinny GEMMs,
flash attention, memory ops) keep their predictions.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Sequence

from lab.legacy_validate.clocks import scale_to_clock

DEFAULT_FIT = Path(__file__).resolve().parents[2] / "data" / "validation" / "runs" / "run22_h200_boost_probe.json"
IDLE_PHASES = ("as_found", "as_found_again")
PAIR_PHASE = "steady"


@dataclass(frozen=True)
class TensorClockCap:
    """``min(f, cap_mhz / a)``: the clock a kernel of tensor activity ``a`` runs at when probed at ``f``."""

    cap_mhz: float
    pairs: tuple  # (shape, activity, probed MHz, paired MHz) of the fit
    source: str

    def effective_mhz(self, probed_mhz: float, activity: float) -> float:
        if activity <= 0:
            return probed_mhz
        return min(probed_mhz, self.cap_mhz / activity)


def paired_clock_mhz(idle_ns: float, loaded_ns: float, loaded_mhz: float, phi: float, ref_mhz: float) -> float:
    """The clock at which :func:`scale_to_clock` makes the idle time ``idle_ns`` from the loaded
    time ``loaded_ns`` at ``loaded_mhz`` (the same shape, clock-bound share ``phi``): bisection on
    the monotone time ratio, 300-6000 MHz."""
    target = idle_ns / loaded_ns
    base = scale_to_clock(1.0, phi, ref_mhz, loaded_mhz)

    def excess(f: float) -> float:
        return scale_to_clock(1.0, phi, ref_mhz, f) / base - target

    lo, hi = 300.0, 6000.0
    if excess(lo) * excess(hi) > 0:
        return hi if excess(hi) > 0 else lo
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if excess(lo) * excess(mid) <= 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def fit_tensor_clock_cap(rows: Sequence[dict], profile_share: "Callable[[dict], tuple[float, float]]",
                         ref_mhz: float, source: str) -> "TensorClockCap | None":
    """Fit ``C`` on a boost probe's rows: for each shape timed from idle and after the load, the
    paired clock (:func:`paired_clock_mhz`) against ``min(f, C / a)``; ``C`` to the MHz minimising
    the squared log error. ``profile_share(row)`` gives the shape's profile time and its activity."""
    loaded = {r["shape"]: r for r in rows if r.get("phase") == PAIR_PHASE}
    pairs = []
    for r in rows:
        pair = loaded.get(r["shape"])
        if r.get("phase") not in IDLE_PHASES or pair is None:
            continue
        _, a = profile_share(r)
        f_loaded = float(pair["clock"]["sm_mhz"])
        paired = paired_clock_mhz(float(r["time_ns"]), float(pair["time_ns"]), f_loaded, a, ref_mhz)
        pairs.append((r["shape"], round(a, 4), float(r["clock"]["sm_mhz"]), round(paired, 1)))
    if not pairs:
        return None

    def loss(c: float) -> float:
        return sum(math.log(min(f, c / a) / p) ** 2 for _, a, f, p in pairs if a > 0)

    cap = min(range(1000, 3001), key=loss)
    return TensorClockCap(float(cap), tuple(pairs), source)


def load_fit_rows(path: "str | Path | None" = None) -> "tuple[list[dict], str] | None":
    """The GEMM rows of a boost probe file (``lab.boost_probe``), or None when absent."""
    p = Path(path) if path is not None else DEFAULT_FIT
    if not p.is_file():
        return None
    rows = [r for r in json.loads(p.read_text()).get("rows") or [] if str(r.get("shape", "")).startswith("gemm_")]
    return rows, str(p)
