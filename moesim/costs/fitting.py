"""Fitting and interpolation for the calibrated cost model (:mod:`moesim.costs.calibrated`).

Log-space grids (multilinear over log axes -> log time), roofline envelopes fitted to measured
rows, latency + bytes / bandwidth lines for collectives, piecewise-linear curves over log bytes,
and the ring / pairwise step counts and bus factors NCCL's algorithms imply.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Point = tuple[float, ...]


def collective_steps(op: str, num_ranks: int) -> int:
    """Algorithm steps of a collective: ring all-reduce 2(n-1); all-gather, reduce-scatter,
    broadcast and pairwise all-to-all n-1; a send/recv or exchange 1."""
    n = max(1, num_ranks)
    if op == "all_reduce":
        return max(1, 2 * (n - 1))
    if op in ("send_recv", "exchange"):
        return 1
    return max(1, n - 1)


def bus_factor(op: str, num_ranks: int) -> float:
    """busbw / algbw for ``op`` on ``num_ranks`` (nccl-tests convention)."""
    n = max(2, num_ranks)
    if op == "all_reduce":
        return 2.0 * (n - 1) / n
    if op in ("send_recv", "exchange"):
        return 1.0
    return (n - 1) / n


class LogGrid:
    """Multilinear interpolation of log(time) over log-spaced axes (one axis per shape field)."""

    def __init__(self, axes: Sequence[Sequence[float]], times: np.ndarray) -> None:
        self.axes = tuple(np.log(np.asarray(a, dtype=float)) for a in axes)
        self.log_times = np.log(np.asarray(times, dtype=float))
        assert self.log_times.shape == tuple(len(a) for a in self.axes), "grid shape mismatch"
        assert np.all(np.isfinite(self.log_times)), "grid has holes"

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
                  fill: Callable[[Point], float] | None = None) -> "LogGrid":
        """Grid over the distinct values of ``keys``; duplicate cells average in log space and
        holes take ``fill(point)``."""
        axes = [sorted({float(r[k]) for r in rows}) for k in keys]
        index = [{v: i for i, v in enumerate(a)} for a in axes]
        sums, counts = np.zeros([len(a) for a in axes]), np.zeros([len(a) for a in axes])
        for r in rows:
            cell = tuple(index[j][float(r[k])] for j, k in enumerate(keys))
            sums[cell] += math.log(r["time_ns"])
            counts[cell] += 1
        times = np.exp(sums / np.maximum(counts, 1))
        for cell in zip(*np.nonzero(counts == 0)):
            assert fill is not None, f"measured grid over {keys} has holes"
            times[cell] = fill(tuple(axes[j][i] for j, i in enumerate(cell)))
        return cls(axes, times)

    def clamp(self, point: Point) -> Point:
        return tuple(float(min(max(x, math.exp(a[0])), math.exp(a[-1]))) for x, a in zip(point, self.axes))

    def __call__(self, point: Point) -> float:
        """Interpolated time at ``clamp(point)``."""
        idx, wts = [], []
        for x, ax in zip(self.clamp(point), self.axes):
            if len(ax) == 1:
                idx.append(0)
                wts.append(0.0)
                continue
            lx = math.log(x)
            i = int(min(max(np.searchsorted(ax, lx, side="right") - 1, 0), len(ax) - 2))
            idx.append(i)
            wts.append(min(max((lx - ax[i]) / (ax[i + 1] - ax[i]), 0.0), 1.0))
        total = 0.0
        for corner in itertools.product((0, 1), repeat=len(idx)):
            weight = math.prod(w if c else 1.0 - w for c, w in zip(corner, wts))
            if weight > 0.0:
                total += weight * self.log_times[tuple(i + c for i, c in zip(idx, corner))]
        return math.exp(total)


@dataclass(frozen=True)
class Envelope:
    """Roofline fitted to measurements: ``latency + max(flops / flop_rate, bytes / byte_rate)``."""

    latency_ns: float
    flops_per_ns: float
    bytes_per_ns: float

    def __call__(self, flops: float, nbytes: float) -> float:
        compute = flops / self.flops_per_ns if self.flops_per_ns > 0 else 0.0
        return self.latency_ns + max(compute, nbytes / self.bytes_per_ns)

    @classmethod
    def fit(cls, flops: Sequence[float], nbytes: Sequence[float], times: Sequence[float]) -> "Envelope":
        """Rates = the best achieved; latency = what the fastest measurement spends beyond them."""
        f, b, t = (np.asarray(x, dtype=float) for x in (flops, nbytes, times))
        flop_rate = float(np.max(f / t)) if np.any(f > 0) else 0.0
        byte_rate = float(np.max(b / t))
        fastest = int(np.argmin(t))
        compute = f[fastest] / flop_rate if flop_rate > 0 else 0.0
        latency = t[fastest] - max(compute, b[fastest] / byte_rate)
        return cls(max(float(latency), 0.0), flop_rate, byte_rate)


def fit_latency_bandwidth(nbytes: Sequence[float], times: Sequence[float]) -> tuple[float, float]:
    """Least squares ``t = latency + nbytes / bandwidth`` in relative error (small and large
    sizes weigh alike); returns (latency_ns, bytes_per_ns)."""
    x, t = np.asarray(nbytes, dtype=float), np.asarray(times, dtype=float)
    if x.size >= 2 and np.ptp(x) > 0:
        (lat, slope), *_ = np.linalg.lstsq(np.stack([1.0 / t, x / t], axis=1), np.ones_like(t), rcond=None)
    else:
        lat, slope = 0.0, float(np.mean(t / x))
    if lat < 0 or slope <= 0:  # the data are not line-shaped: fall back to a pure bandwidth line
        lat, slope = 0.0, float(np.sum(x / t) / np.sum((x / t) ** 2))
    return float(lat), 1.0 / float(slope)


def anchored(grid: LogGrid, model: Callable[[Point], float], point: Point) -> float:
    clamped = grid.clamp(point)
    return grid(clamped) * model(point) / model(clamped)


def gemm_flops_bytes(p: Point, elem: float = 2.0) -> tuple[float, float]:
    m, n, k = p
    return 2.0 * m * n * k, elem * (m * k + k * n + m * n)


GemmTable = tuple[LogGrid, Envelope]


def gemm_table(rows: Sequence[Mapping[str, Any]], elem: float) -> GemmTable:
    """A log grid over (m, n, k) of GEMM rows and their fitted envelope; unmeasured cells take
    the envelope time scaled by the median measured / envelope ratio."""
    fb = [gemm_flops_bytes((r["m"], r["n"], r["k"]), elem) for r in rows]
    env = Envelope.fit(*zip(*fb), [r["time_ns"] for r in rows])
    scale = float(np.median([r["time_ns"] / env(*f) for r, f in zip(rows, fb)]))
    return LogGrid.from_rows(rows, ("m", "n", "k"), lambda p: scale * env(*gemm_flops_bytes(p, elem))), env


def gemm_table_ns(table: GemmTable, elem: float, m: int, n: int, k: int) -> float:
    """One GEMM ``[m, k] x [k, n]`` from a :func:`gemm_table`, anchored and envelope-scaled outside it."""
    grid, env = table
    return anchored(grid, lambda p: env(*gemm_flops_bytes(p, elem)), (float(max(m, 1)), float(max(n, 1)), float(max(k, 1))))


class Curve:
    """Time against bytes for one collective (or memory variant): interpolated, line-fitted outside."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.grid = LogGrid.from_rows(rows, ("nbytes",))
        self.latency_ns, self.bytes_per_ns = fit_latency_bandwidth([r["nbytes"] for r in rows],
                                                                  [r["time_ns"] for r in rows])
        self.max_nbytes = max(r["nbytes"] for r in rows)

    def __call__(self, nbytes: float) -> float:
        return anchored(self.grid, lambda p: self.latency_ns + p[0] / self.bytes_per_ns, (max(nbytes, 1.0),))
