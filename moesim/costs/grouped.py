"""Grouped-GEMM and scaled-FP8-GEMM pricing for the calibrated cost model.

**The mechanism.** A grouped GEMM (``torch._grouped_mm``: CUTLASS's sm90 persistent grouped
kernel) computes every group's output in tiles of ``tile_rows`` token rows by 128 columns; a
group of ``m_g`` rows costs ``ceil(m_g / tile_rows)`` row tiles, so its FLOPs are padded to whole
tiles. An empty group costs no tile but still its scheduling (in ``wgrad`` also zeroing its
``[k, n]`` output); a group with tokens adds its own setup. The tiles of all groups share the
SMs: with fewer tiles than SMs the kernel lasts one tile. A tile advances at the rate the dense
GEMM of the same ``(n, k)`` and layout reaches (read off the profile's GEMM grid, so shape
effects come from measurements), times a fitted efficiency; weights and activations must also
stream through HBM. For a count vector over ``G`` groups, ``L`` of them with tokens:

    t = latency + per_group * G + per_live * L
        + max(efficiency * max(padded_flops, sms * tile_flops_max) / dense_rate(n, k),
              bytes / bandwidth)

``wgrad`` tiles the ``[k, n]`` output of every non-empty group; each tile's reduction runs over
the group's rows, padded to ``WGRAD_K_TILE``. The five numbers (latency, per_group, per_live,
efficiency, bandwidth; all >= 0, so every term rises with every group's tokens) are fitted per
(dtype, scaling, layout) to the profile's ``grouped_gemm_v`` rows by least squares on log time;
``tile_rows`` is 128 (CUTLASS's sm90 grouped tile) unless 64 fits clearly better.

**Interpolation where measured.** Per measured (layout, n, k) the ratio measured / law is kept
as a curve over the law's own time (log bins, piecewise linear, slopes limited so the product
still rises with the law; a shape's mean and each bin are shrunk towards 1 and towards the
shape's mean by ``RATIO_PRIOR_ROWS`` pseudo-rows, so one noisy sample cannot bend it). A vector
of a measured shape takes that ratio at its law time; past the measured range the ratio is held
at its end (the law, anchored to the nearest measured point, carries the trend). An unmeasured
shape takes the ratio curve of the nearest measured shape of its layout in (log n, log k), if one
lies within a factor of ``NEAREST_SHAPE_MAX`` (distance ``log 2``), else the law alone: leaving
each shape of the H100 profile's grid out in turn (``python -m lab.grouped_shape_loso``, bf16,
kernels >= 50 us), the nearest shape's curve predicts the left-out rows at median |error| 6.9% /
7.0% / 12.7% (fwd / dgrad / wgrad) where the law alone gives 7.8% / 8.0% / 15.3% and the other
shapes' pooled curve 7.5% / 7.6% / 13.7%; on the H200 grid 7.6% / 7.8% / 15.9% against the law's
7.8% / 8.6% / 17.1% (every H100 grid shape has a neighbour within the limit).
The time is therefore non-decreasing in every group's tokens, and moving tokens between groups
changes it only through tiles (FLOPs never change).

Scaled FP8 GEMMs (``Gemm(dtype="fp8", scaling="rowwise" | "blockwise")``) are interpolated on a
grid of the profile's fp8 ``gemm`` rows of that scaling, like bf16 GEMMs.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from moesim.costs.fitting import GemmTable, gemm_table, gemm_table_ns
from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES, Gemm, GroupedGemm

N_TILE = 128  # output-column tile edge of CUTLASS's sm90 grouped kernels
WGRAD_K_TILE = 64  # reduction (token) block of a wgrad tile
TILE_ROWS = (128, 64)  # candidate row-tile heights; 64 must fit clearly better (by TILE_MARGIN) to win
TILE_MARGIN = 0.98
RATIO_BIN = 0.7  # width of the ratio curve's bins in log(law time) (a factor of 2)
NEAREST_SHAPE_MAX = math.log(2.0)  # an unmeasured shape borrows the nearest measured shape's ratio within this
RATIO_PRIOR_ROWS = 2.0  # shrinkage: a shape's ratio counts this many pseudo-rows at 1, a bin's at the shape's
MIN_RATIO_SLOPE = -0.8  # d log(ratio) / d log(law time) >= this, so time rises with the law
MIN_FIT_ROWS = 6
OUT_BYTES = 2.0  # grouped kernels write bf16 (fp8 ones too)
LAYOUT_DENSE = {"fwd": "fwd", "dgrad": "bwd_data", "wgrad": "bwd_weight"}  # gemm-grid layout of each
DENSE_REF_ROWS = 16384  # token rows of the dense GEMM whose rate a tile runs at

DenseRate = Callable[[int, int, str, str, str], float]  # (n, k, layout, dtype, scaling) -> dense FLOPs per ns


@dataclass(frozen=True)
class TileWork:
    """What a grouped kernel over one count vector must do."""

    padded_flops: float  # FLOPs after padding every group to whole tiles
    tile_flops_max: float  # FLOPs of the largest single tile
    nbytes: float  # HBM bytes: activations in and out, weights of non-empty groups (wgrad: every output)
    groups: int
    live: int  # groups with at least one token

    def occupied_flops(self, sms: int) -> float:
        """Padded FLOPs, or (fewer tiles than SMs) the FLOPs of ``sms`` largest tiles."""
        return max(self.padded_flops, sms * self.tile_flops_max)


def tile_work(counts: Sequence[int], n: int, k: int, layout: str, dtype: str, tile_rows: int) -> TileWork:
    """Tile-padded FLOPs and bytes of one grouped GEMM (the law's inputs; see the module docstring)."""
    elem = DTYPE_BYTES[dtype]
    live = [c for c in counts if c > 0]
    rows = sum(live)
    n_tiles = -(-n // N_TILE)
    if layout == "wgrad":
        per_group_tiles = -(-k // tile_rows) * n_tiles
        k_pad = [-(-c // WGRAD_K_TILE) * WGRAD_K_TILE for c in live]
        tile = 2.0 * tile_rows * N_TILE
        padded = per_group_tiles * tile * sum(k_pad)   # integer-valued floats: exact, as the per-group sum
        largest = tile * max(k_pad, default=0)
        nbytes = elem * rows * (k + n) + OUT_BYTES * len(counts) * k * n
    else:
        tile = 2.0 * tile_rows * N_TILE * k
        padded = n_tiles * tile * sum(-(-c // tile_rows) for c in live)   # exact, as the per-group sum
        largest = tile if live else 0.0
        nbytes = elem * (rows * k + len(live) * k * n) + OUT_BYTES * rows * n
    return TileWork(padded, largest, nbytes, len(counts), len(live))


@dataclass(frozen=True)
class GroupedLaw:
    """The fitted tile law of one (dtype, scaling, layout); see the module docstring."""

    latency_ns: float
    per_group_ns: float  # every group, empty or not (what an empty group costs)
    per_live_ns: float  # added by each group with tokens
    efficiency: float  # grouped tile time / dense GEMM time on the same FLOPs
    bytes_per_ns: float
    tile_rows: int

    def __call__(self, work: TileWork, dense_flops_per_ns: float, sms: int) -> float:
        compute = self.efficiency * work.occupied_flops(sms) / dense_flops_per_ns
        return (self.latency_ns + self.per_group_ns * work.groups + self.per_live_ns * work.live
                + max(compute, work.nbytes / self.bytes_per_ns))


def fit_law(rows: Sequence[Mapping[str, Any]], dense_rate: DenseRate, sms: int) -> GroupedLaw:
    """Least squares on log time over ``rows`` (grouped_gemm_v samples of one dtype), for each
    candidate tile height; 128 (CUTLASS's sm90 grouped tile) unless 64 fits clearly better."""
    from scipy.optimize import least_squares

    times = np.array([float(r["time_ns"]) for r in rows])
    rates = np.array([dense_rate(r["n"], r["k"], r["layout"], r["dtype"], _scaling(r)) for r in rows])
    best: tuple[float, GroupedLaw] | None = None
    for tile_rows in TILE_ROWS:
        works = [tile_work(r["counts"], r["n"], r["k"], r["layout"], r["dtype"], tile_rows) for r in rows]
        feats = np.array([(w.groups, w.live, w.occupied_flops(sms), w.nbytes) for w in works])

        def resid(x: np.ndarray, feats: np.ndarray = feats) -> np.ndarray:
            lat, pg, pe, eff, inv_bw = x
            t = lat + pg * feats[:, 0] + pe * feats[:, 1] + np.maximum(eff * feats[:, 2] / rates, feats[:, 3] * inv_bw)
            return np.log(t / times)
        fits = [least_squares(resid, x0, bounds=([0, 0, 0, 0.2, 1e-6], [np.inf, np.inf, np.inf, 20.0, 1.0]),
                              x_scale=[1e3, 10.0, 10.0, 0.1, 1e-4])
                for x0 in ([float(np.min(times)) * 0.5, 10.0, 10.0, 1.2, 1.0 / 3000.0],  # two starts: the
                           [float(np.min(times)) * 0.1, 100.0, 100.0, 0.8, 1.0 / 5000.0])]  # fit is not convex
        fit = min(fits, key=lambda f: float(np.sum(f.fun ** 2)))
        cost = float(np.sum(fit.fun ** 2))
        lat, pg, pe, eff, inv_bw = (float(v) for v in fit.x)
        law = GroupedLaw(lat, pg, pe, eff, 1.0 / inv_bw, tile_rows)
        if best is None or cost < TILE_MARGIN * best[0]:
            best = (cost, law)
    assert best is not None
    return best[1]


@dataclass(frozen=True)
class RatioCurve:
    """measured / law as a function of log(law time) for one shape (piecewise linear, held at the ends)."""

    log_law: tuple[float, ...]
    log_ratio: tuple[float, ...]

    @classmethod
    def fit(cls, law_ns: Sequence[float], measured_ns: Sequence[float]) -> "RatioCurve":
        x = np.log(np.asarray(law_ns, dtype=float))
        y = np.log(np.asarray(measured_ns, dtype=float)) - x
        bins: dict[int, list[int]] = defaultdict(list)
        for i, b in enumerate(np.floor((x - x.min()) / RATIO_BIN).astype(int)):
            bins[int(b)].append(i)
        shape = float(np.sum(y)) / (y.size + RATIO_PRIOR_ROWS)
        pts = sorted((float(np.mean(x[ix])), shape + float(np.sum(y[ix] - shape)) / (len(ix) + RATIO_PRIOR_ROWS))
                     for ix in bins.values())
        xs, ys = [pts[0][0]], [pts[0][1]]
        for px, py in pts[1:]:
            ys.append(max(py, ys[-1] + MIN_RATIO_SLOPE * (px - xs[-1])))
            xs.append(px)
        return cls(tuple(xs), tuple(ys))

    def __call__(self, law_ns: float) -> float:
        return math.exp(float(np.interp(math.log(max(law_ns, 1e-9)), self.log_law, self.log_ratio)))


class GroupedModel:
    """Count-vector grouped-GEMM times from a profile's ``grouped_gemm_v`` rows (module docstring)."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], dense_rate: DenseRate, sms: int) -> None:
        self.dense_rate, self.sms = dense_rate, sms
        self.laws: dict[tuple[str, str, str], GroupedLaw] = {}
        self.ratios: dict[tuple[str, str, str, int, int], RatioCurve] = {}
        by_key: dict[tuple[str, str], list] = defaultdict(list)
        for r in rows:
            by_key[(r["dtype"], _scaling(r))].append(r)
        for (dtype, scaling), rs in by_key.items():
            pooled: list[GroupedLaw] = []  # fitted once, if a layout has too few rows of its own
            for layout in sorted({r["layout"] for r in rs}):
                own = [r for r in rs if r["layout"] == layout]
                if len(own) < MIN_FIT_ROWS and not pooled:
                    pooled.append(fit_law(rs, dense_rate, sms))
                law = fit_law(own, dense_rate, sms) if len(own) >= MIN_FIT_ROWS else pooled[0]
                self.laws[(dtype, scaling, layout)] = law
                shapes: dict[tuple[int, int], list] = defaultdict(list)
                for r in own:
                    shapes[(r["n"], r["k"])].append(r)
                for (n, k), srs in shapes.items():
                    law_ns = [self._law_ns(law, r["counts"], n, k, layout, dtype, scaling) for r in srs]
                    self.ratios[(dtype, scaling, layout, n, k)] = RatioCurve.fit(law_ns, [r["time_ns"] for r in srs])

    def covers(self, dtype: str, scaling: str, layout: str) -> bool:
        return (dtype, scaling, layout) in self.laws

    def _law_ns(self, law: GroupedLaw, counts: Sequence[int], n: int, k: int, layout: str, dtype: str,
                scaling: str) -> float:
        work = tile_work(counts, n, k, layout, dtype, law.tile_rows)
        return law(work, self.dense_rate(n, k, layout, dtype, scaling), self.sms)

    def law_ns(self, op: GroupedGemm) -> float:
        """The fitted law alone (no per-shape ratio)."""
        scaling = op.scaling or _default_scaling(op.dtype)
        return self._law_ns(self.laws[(op.dtype, scaling, op.layout)], op.counts, op.n, op.k, op.layout, op.dtype,
                            scaling)

    def measured_shape(self, dtype: str, scaling: str, layout: str, n: int, k: int) -> "tuple[int, int] | None":
        """The (n, k) whose ratio curve prices this shape: itself where measured, else the nearest
        measured shape of the same (dtype, scaling, layout) in (log n, log k) within
        ``NEAREST_SHAPE_MAX`` (ties: the smaller (n, k)), else None (the law alone)."""
        if (dtype, scaling, layout, n, k) in self.ratios:
            return n, k
        near = [(math.hypot(math.log(n_ / n), math.log(k_ / k)), n_, k_)
                for (d, s, lay, n_, k_) in self.ratios if (d, s, lay) == (dtype, scaling, layout)]
        if not near:
            return None
        dist, n_, k_ = min(near)
        return (n_, k_) if dist <= NEAREST_SHAPE_MAX else None

    def ratio_curve(self, dtype: str, scaling: str, layout: str, n: int, k: int) -> "RatioCurve | None":
        """The ratio curve :meth:`measured_shape` names (None: the law alone)."""
        shape = self.measured_shape(dtype, scaling, layout, n, k)
        return None if shape is None else self.ratios[(dtype, scaling, layout, *shape)]

    def time_ns(self, op: GroupedGemm) -> float:
        """The law times the measured ratio of the op's shape, or of the nearest measured shape
        (:meth:`ratio_curve`; 1 where none is near)."""
        scaling = op.scaling or _default_scaling(op.dtype)
        law = self.law_ns(op)
        curve = self.ratio_curve(op.dtype, scaling, op.layout, op.n, op.k)
        return law * (curve(law) if curve else 1.0)


def _default_scaling(dtype: str) -> str:
    """fp8 grouped kernels are rowwise-scaled (``torch._scaled_grouped_mm``); others unscaled."""
    return "rowwise" if dtype == "fp8" else ""


def _scaling(row: Mapping[str, Any]) -> str:
    return row.get("scaling") or _default_scaling(row["dtype"])


def gemm_scaling(row: Mapping[str, Any]) -> str:
    """The scale layout of a ``gemm`` row: fp8 rows without one are tensorwise (older profiles)."""
    return row.get("scaling") or ("tensorwise" if row["dtype"] == "fp8" else "")


def scaled_gemm_grids(rows: Sequence[Mapping[str, Any]]) -> dict[str, GemmTable]:
    """Per fp8 scaling other than tensorwise: a log grid over (m, n, k) of its ``gemm`` rows
    (:func:`~moesim.costs.fitting.gemm_table`, as for the other GEMMs)."""
    by: dict[str, list] = defaultdict(list)
    for r in rows:
        if r["dtype"] == "fp8" and gemm_scaling(r) not in ("", "tensorwise"):
            by[gemm_scaling(r)].append(r)
    return {scaling: gemm_table(rs, DTYPE_BYTES["fp8"]) for scaling, rs in by.items()}


def scaled_gemm_ns(grids: Mapping[str, GemmTable], op: Gemm) -> float:
    """One scaled fp8 GEMM from its scaling's grid (the caller checks ``op.scaling in grids``)."""
    return op.groups * gemm_table_ns(grids[op.scaling], DTYPE_BYTES["fp8"], op.m, op.n, op.k)


# -- hooks of CalibratedCostModel (``model`` below) -------------------------------------------------
DEFAULT_SMS = 132  # H100 / H200 SXM, when the profile's device has no datasheet entry
DATASHEET_GEMM_EFFICIENCY = 0.75  # dense rate assumed from the datasheet peak when no GEMM was measured


Pricing = tuple[dict[str, GemmTable], "GroupedModel | None", "GroupedModel | None"]


def build_pricing(model: Any) -> Pricing:
    """The scaled-fp8 GEMM grids and the count-vector grouped model of ``model``'s profile (built
    once per profile file by :meth:`moesim.costs.calibrated.CalibratedCostModel._build_tables`,
    which shares them read-only with every later model of the file; the grouped model's dense
    rates are read off the GEMM tables of the model that built them, equal to every later one's)."""
    scaled = scaled_gemm_grids(model.profile.select("gemm"))
    rows = model.profile.select("grouped_gemm_v")
    te_rows = model.profile.select("grouped_gemm_te")
    sms = int(model.datasheet.sms) if model.datasheet else DEFAULT_SMS
    rate = _dense_rate(model, scaled)
    return (scaled, GroupedModel(rows, rate, sms) if rows else None,
            GroupedModel(te_rows, rate, sms) if te_rows else None)


def _dense_rate(model: Any, scaled: Mapping[str, GemmTable]) -> DenseRate:
    """FLOPs per ns of the dense GEMM a tile runs like: ``DENSE_REF_ROWS`` token rows of the same
    (n, k), from the profile's grid of that dtype, scaling and layout (wgrad: the weight-gradient
    GEMM reducing over the rows), else the datasheet peak x ``DATASHEET_GEMM_EFFICIENCY``."""
    cache: dict[tuple, float] = {}

    def rate(n: int, k: int, layout: str, dtype: str, scaling: str) -> float:
        key = (n, k, layout, dtype, scaling)
        if key not in cache:
            m_, n_, k_ = (k, n, DENSE_REF_ROWS) if layout == "wgrad" else (DENSE_REF_ROWS, n, k)
            flops = 2.0 * m_ * n_ * k_
            if dtype == "fp8" and scaling in scaled:
                t = scaled_gemm_ns(scaled, Gemm(m_, n_, k_, "fp8", scaling=scaling))
            elif (dtype, LAYOUT_DENSE[layout]) in model._gemm:
                t = model.gemm_ns(m_, n_, k_, dtype, LAYOUT_DENSE[layout])
            elif (dtype, None) in model._gemm:
                t = model.gemm_ns(m_, n_, k_, dtype)
            elif model.datasheet is not None:
                t = flops / (model.datasheet.peak_flops_for(dtype) * 1e-9 * DATASHEET_GEMM_EFFICIENCY)
            else:
                raise ConfigError("samples", f"grouped_gemm_v rows of {dtype} need {dtype} gemm rows in the profile "
                                  f"or a datasheet entry for {model.device!r}", "measure the gemm section too",
                                  source=model.profile.source)
            cache[key] = flops / t
        return cache[key]
    return rate


def grouped_gemm_ns(model: Any, op: GroupedGemm) -> float:
    """A grouped GEMM. Transformer Engine's (``op.impl == "te"``): the count-vector model of the
    profile's ``grouped_gemm_te`` rows where its (dtype, scaling, layout) was measured (fp8 without
    a scaling: per-tensor scales, ``"tensorwise"``, as TE's current and delayed scaling run; an
    unmeasured (n, k) labelled as below), else priced as the one-kernel grouped GEMM and
    labelled ``"GroupedGemm[te ...] (not measured: torch._grouped_mm stands in)"``. One kernel
    (``impl ""``): the count-vector model where its (dtype, scaling, layout) was measured (an
    (n, k) the grid lacks labelled ``"GroupedGemm[...] (NxK not measured: ...)"`` in
    ``model.fallback_ops``: a measured stand-in); else, for a backward layout whose forward was
    measured, that forward law at the same FLOPs (labelled ``"GroupedGemm[<dtype> <scaling>
    <layout>] (...)"``); else (bf16 fwd / dgrad) the older equal-groups grid at the mean rows of
    the non-empty groups, labelled ``"GroupedGemm (equal-groups grid)"`` in
    ``model.fallback_ops``; else the fallback (roofline), labelled ``"GroupedGemm"`` and
    ``"GroupedGemm[<dtype> <scaling> <layout>]"``."""
    dtype = "bf16" if op.dtype == "fp16" else op.dtype
    scaling = op.scaling or _default_scaling(dtype)
    if op.impl == "te":
        te: GroupedModel | None = model._grouped_te
        plain = replace(op, impl="", dtype=dtype)
        te_scaling = op.scaling or ("tensorwise" if dtype == "fp8" else "")   # TE's fp8 GEMMs: one scale a tensor
        if te is not None and te.covers(dtype, te_scaling, op.layout):
            _note_unmeasured_shape(model, te, dtype, te_scaling, op, "te ")
            return te.time_ns(replace(plain, scaling=te_scaling))
        model.fallback_ops.add(f"GroupedGemm[te {dtype} {te_scaling or 'unscaled'} {op.layout}] (not measured: "
                               f"torch._grouped_mm{' rowwise' if dtype == 'fp8' else ''} stands in)")
        return grouped_gemm_ns(model, plain)
    grouped: GroupedModel | None = model._grouped_v
    if grouped is not None and grouped.covers(dtype, scaling, op.layout):
        _note_unmeasured_shape(model, grouped, dtype, scaling, op)
        return grouped.time_ns(op if dtype == op.dtype else GroupedGemm(op.counts, op.n, op.k, dtype, op.layout,
                                                                        op.scaling, op.name))
    if grouped is not None and op.layout != "fwd" and grouped.covers(dtype, scaling, "fwd"):
        # the same kernel family's measured forward at the same FLOPs stands in (dgrad: inner and
        # output widths swap), named in fallback_ops: nearer than the datasheet roofline
        model.fallback_ops.add(f"GroupedGemm[{dtype} {scaling or 'unscaled'} {op.layout}] (not measured: the "
                               "measured fwd law at the same FLOPs)")
        n, k = (op.k, op.n) if op.layout == "dgrad" else (op.n, op.k)
        return grouped.time_ns(GroupedGemm(op.counts, n, k, dtype, "fwd", op.scaling, op.name))
    live = [c for c in op.counts if c > 0]
    if dtype == "bf16" and op.layout != "wgrad" and model._grouped is not None and ("bf16", "fwd") in model._gemm:
        model.fallback_ops.add("GroupedGemm (equal-groups grid)")
        if not live:
            return float(model.gemm_ns(1, op.n, op.k, "bf16", "fwd"))
        m = sum(live) / len(live)
        per = model.gemm_ns(max(1, round(m)), op.n, op.k, "bf16", LAYOUT_DENSE[op.layout])
        return float(len(live) * per * model._grouped((float(len(live)), float(max(m, 1.0)))))
    model.fallback_ops.add(f"GroupedGemm[{dtype} {scaling or 'unscaled'} {op.layout}]")
    return float(model._fallback_compute(op, "GroupedGemm", f"no {dtype} {scaling or 'unscaled'} {op.layout} "
                                         "grouped_gemm_v rows in the profile"))


def _note_unmeasured_shape(model: Any, grouped: GroupedModel, dtype: str, scaling: str, op: GroupedGemm,
                           impl: str = "") -> None:
    """An (n, k) ``grouped``'s rows lack is said in the result, as a measured stand-in:
    ``"GroupedGemm[<impl><dtype> <scaling> <layout>] (NxK not measured: the tile law with the ratio
    of measured N'xK')"`` (``"... the tile law alone)"`` where no measured shape is near)."""
    shape = grouped.measured_shape(dtype, scaling, op.layout, op.n, op.k)
    if shape != (op.n, op.k):
        model.fallback_ops.add(f"GroupedGemm[{impl}{dtype} {scaling or 'unscaled'} {op.layout}] ({op.n}x{op.k} not "
                               "measured: the tile law " + (f"with the ratio of measured {shape[0]}x{shape[1]})"
                                                            if shape else "alone)"))


def scaled_gemm_price(model: Any, op: Gemm) -> float:
    """An fp8 GEMM with rowwise or blockwise scales: its scaling's measured grid, else the fallback
    (roofline at the datasheet fp8 peak), labelled ``"Gemm"`` and ``"Gemm[fp8 <scaling>]"``."""
    if op.scaling in model._scaled:
        return scaled_gemm_ns(model._scaled, op)
    model.fallback_ops.add(f"Gemm[fp8 {op.scaling}]")
    return float(model._fallback_compute(op, "Gemm.scaling", f"no fp8 {op.scaling} GEMMs in the profile"))
