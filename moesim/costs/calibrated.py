"""The calibrated cost model: per-op times interpolated from a measured profile.

Inside the measured range every time is an interpolation of measurements in log space:
GEMMs multilinearly over (log M, log N, log K) -> log time, attention over (log batch, log heads,
log seq) per head_dim and direction (batch and heads kept apart: the flash kernel's speed depends
on both; profiles measured at batch 1 only fold batch into heads), memory ops and collectives
piecewise-linearly over log bytes. At a grid point the model returns the measured median. Outside the range the time is
anchored to the nearest measured point and scaled by a model fitted to the measurements:
``t(p) = t(clamp(p)) * fit(p) / fit(clamp(p))``, where ``fit`` is a roofline envelope
(latency + max(FLOPs / achieved FLOP rate, bytes / achieved bandwidth)) for kernels and a
least-squares latency + bytes / bandwidth line for collectives. The anchor keeps the curve
continuous at the edge of the grid and the fit keeps it increasing beyond it.

Collectives at rank counts that were not measured use the fitted bus bandwidth with the ring
and pairwise step counts of :func:`collective_steps`, plus a fitted base + per-step latency.
Device-side ("device") times, the default, come from CUDA-graph measurements, which drop the
host's launch cost; "eager" times keep it (see :meth:`CalibratedCostModel.host_overhead_ns`).
:meth:`~CalibratedCostModel.host_ns` gives the measured host (CPU issue) time of one eager call
per op type, and :meth:`~CalibratedCostModel.all_to_all_v_ns` the device time of an uneven
all-to-all from its byte matrix.
What a profile does not cover (fp32 GEMMs, PCIe or InfiniBand links) goes to ``fallback`` when
one is given and raises ConfigError otherwise.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from moesim.costs.attention_window import window_ratio
from moesim.costs.clock import check_clock, clock_factors
from moesim.costs.devices import DEVICES
from moesim.costs.fitting import (Curve, Envelope, GemmTable, LogGrid, Point, anchored, bus_factor,
                                  collective_steps, gemm_table, gemm_table_ns)
from moesim.costs.profile import Profile, load_profile
from moesim.errors import ConfigError
from moesim.costs.grouped import build_pricing, gemm_scaling, grouped_gemm_ns, scaled_gemm_price
from moesim.costs.calibrated_host import CalibratedHost
from moesim.costs.host_classes import check_host_speed
from moesim.costs.moe_kernels import LEGACY_STAND_INS, MOE_KERNEL_KINDS
from moesim.ops import DTYPE_BYTES, MEMORY_OP_KINDS, Attention, ComputeOp, Gemm, GroupedGemm, MemoryOp

MEASURED_LINK_KINDS = ("nvlink", "nvswitch")  # an HGX board's NVLink/NVSwitch fabric
DTYPE_ALIASES = {"fp16": "bf16"}  # same tensor-core rate on Hopper
OP_ALIASES = {"broadcast": "all_gather"}  # not measured; a ring broadcast moves an all-gather's bytes
GRAPH_BASE_OP = {"all_to_all_v": "all_to_all", "exchange": "send_recv"}
# memory variants priced only when named: specific kernels of measured programs (the scatter-add of
# an MoE unpermute, a fill, the FP8 quantize kernels of the fp8_scaled section: an amax reduction,
# a scale and a saturating cast, several times a plain dtype cast's time), not representatives of
# their kind's generic op
NAMED_ONLY_VARIANTS = ("index_add", "zeros", "quantize_rowwise", "quantize_tensorwise", "cast_fp8")


# what _build_tables builds from a profile alone (read-only once built)
TABLES = ("_gemm", "_grouped", "_scaled", "_grouped_v", "_grouped_te", "_attn", "_mem", "_mem_warm", "_mem_shaped",
          "_host_calls", "_launch_ns", "_host_classes", "_coll", "_host_ns", "_latency_fit")
_TABLES: dict[tuple[str, str], dict[str, Any]] = {}


class CalibratedCostModel(CalibratedHost):
    """Costs from a measured profile (implements ``CostModel``); ``fallback`` answers the rest."""

    calibrated = True

    def __init__(self, profile: "Profile | str | Path", fallback: Any = None, gpu_clock: str = "sustained",
                 gemm_duty: float = 0.0, host_speed: str = "mean") -> None:
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.fallback = fallback
        self.device = self.profile.device_kind
        self.name = f"{self.profile.name} profile (calibrated, {self.profile.date[:10]})"
        spec = DEVICES.get(self.device)
        self.datasheet = spec
        # gpu_clock "boost": compute-bound classes at the maximum SM clock (moesim.costs.clock)
        self.gpu_clock = check_clock(gpu_clock)
        self.host_speed = check_host_speed(host_speed)
        self._clock: dict[str, float] = {}
        self.hbm_bytes = float(self.profile.extra.get("gpu_memory_bytes") or (spec.hbm_bytes if spec else 0.0)
                               or getattr(fallback, "hbm_bytes", 0.0))
        self.fallback_ops: set[str] = set()
        self._cache: dict[ComputeOp, int] = {}
        self._build_tables()
        self._set_host_speed()
        self.peak_flops = float(spec.peak_flops_for("bf16") if spec else getattr(fallback, "peak_flops", 0.0)
                                or self.measured_peak_flops("bf16"))
        if gpu_clock != "sustained":   # moesim.costs.clock: the profile's burst / duty rows priced by this model
            self._clock, clock_name = clock_factors(gpu_clock, self.profile.select("clock"), self.profile.select("duty"),
                                                    self._compute, spec.max_sm_mhz if spec else 0.0, gemm_duty,
                                                    f"the {self.profile.name} profile ({self.device})")
            self.name += clock_name
        if host_speed != "mean":
            self.name += (f", host speed {host_speed} (x{self._speed:.2f} the mean of its "
                          f"{len(self._host_classes.speeds)} host runs)")

    def __repr__(self) -> str:
        return f"CalibratedCostModel({self.name!r})"

    # -- building tables ------------------------------------------------------------------
    def _build_tables(self) -> None:
        """The profile's grids, curves and laws (:data:`TABLES`): built once per profile file and
        shared read-only by every model of it (a clock, duty or host speed only scales them; a
        profile not read from a file, ``sha256 == ""``, builds its own every time)."""
        key = (self.profile.source, self.profile.sha256)
        built = _TABLES.get(key) if self.profile.sha256 else None
        if built is not None:
            self.__dict__.update(built)
            return
        self._build_gemm()
        # fp8 by scaling; count-vector grouped GEMMs: one kernel, and Transformer Engine's per-group streams
        self._scaled, self._grouped_v, self._grouped_te = build_pricing(self)
        self._build_attention()
        self._build_memory()
        self._build_host()
        self._build_collectives()
        if self.profile.sha256:
            _TABLES[key] = {name: self.__dict__[name] for name in TABLES}

    def _build_gemm(self) -> None:
        self._gemm: dict[tuple[str, str | None], GemmTable] = {}
        rows_by: dict[tuple[str, str | None], list] = defaultdict(list)
        for r in self.profile.select("gemm"):
            if gemm_scaling(r) not in ("", "tensorwise"):  # rowwise / blockwise fp8: moesim.costs.grouped
                continue
            rows_by[(r["dtype"], r["layout"])].append(r)
            rows_by[(r["dtype"], None)].append(r)  # None = every layout, averaged in log space
        for key, rows in rows_by.items():
            self._gemm[key] = gemm_table(rows, DTYPE_BYTES[key[0]])
        self._grouped: LogGrid | None = None
        grouped = self.profile.select("grouped_gemm", dtype="bf16")
        if grouped and ("bf16", "fwd") in self._gemm:
            ratio_rows = [{**r, "time_ns": r["time_ns"] / (r["groups"] * self.gemm_ns(r["m"], r["n"], r["k"], "bf16", "fwd"))}
                          for r in grouped]
            self._grouped = LogGrid.from_rows(ratio_rows, ("groups", "m"))

    def _build_attention(self) -> None:
        """Per (direction, head_dim): a grid over (batch, heads, seq) when more than one batch was
        measured, else over (batch x heads, seq) (older profiles: batch folded into heads). A cell
        past the measured token cap (batch x heads x seq) is anchored at the measured cell of the
        same heads and seq with the nearest batch and scaled by the envelope (FLOPs-linear there)."""
        self._attn: dict[tuple[str, int, str], tuple[LogGrid, Envelope, tuple[str, ...]]] = {}
        groups: dict[tuple[str, int, str], list] = defaultdict(list)
        for r in self.profile.select("attention", dtype="bf16", causal=True):
            groups[(r["direction"], r["head_dim"], r.get("call", ""))].append({**r, "bh": r["batch"] * r["heads"]})
        for key, rows in groups.items():
            refs = [self._attn_ref(key[0], key[1], r["seq"], r["bh"]) for r in rows]
            env = Envelope.fit([a.flops for a in refs], [a.bytes for a in refs], [r["time_ns"] for r in rows])
            keys = ("batch", "heads", "seq") if len({r["batch"] for r in rows}) > 1 else ("bh", "seq")
            self._attn[key] = (LogGrid.from_rows(rows, keys, self._attn_filler(key, rows, env)), env, keys)

    def _attn_filler(self, key: tuple[str, int, str], rows: Sequence[Mapping[str, Any]], env: Envelope) -> Callable[[Point], float]:
        """Time of an unmeasured (batch, heads, seq) cell from the nearest-batch measured cell."""
        logs: dict[tuple[float, float, float], list[float]] = defaultdict(list)
        for r in rows:  # repeated cells (several runs) average in log space, as in the grid
            logs[(float(r["heads"]), float(r["seq"]), float(r["batch"]))].append(math.log(r["time_ns"]))
        by_hs: dict[tuple[float, float], list[tuple[float, float]]] = defaultdict(list)
        for (heads, seq, batch), ls in logs.items():
            by_hs[(heads, seq)].append((batch, math.exp(sum(ls) / len(ls))))

        def model(batch: float, heads: float, seq: float) -> float:
            ref = self._attn_ref(key[0], key[1], seq, batch * heads)
            return env(ref.flops, ref.bytes)

        def fill(p: Point) -> float:
            batch, heads, seq = p if len(p) == 3 else (1.0, *p)
            measured = by_hs.get((heads, seq))
            if not measured:  # no cell of this (heads, seq): the envelope alone
                return model(batch, heads, seq)
            b0, t0 = min(measured, key=lambda bt: abs(math.log(bt[0] / batch)))
            return t0 * model(batch, heads, seq) / model(b0, heads, seq)
        return fill

    @staticmethod
    def _attn_ref(direction: str, head_dim: int, seq: float, bh: float) -> Attention:
        return Attention(batch=1, heads=bh, kv_heads=bh, seq_q=seq, seq_kv=seq, head_dim=head_dim,  # type: ignore[arg-type]
                         causal=True, backward=direction == "bwd")

    def _build_memory(self) -> None:
        """One curve per (kind, variant) from the cold-cache samples (L2 evicted before each
        repeat); warm-cache samples, if a profile has them, are kept apart in ``_mem_warm``.
        Rows that carry the shape they were measured at (``tokens``: the ``moe_kernels``
        section, indexed as :mod:`moesim.costs.moe_kernels` says) form ``_mem_shaped``, used
        where a MemoryOp names that variant; the kinds' generic curves stay the memory section's."""
        self._mem: dict[str, dict[str, Curve]] = defaultdict(dict)
        self._mem_warm: dict[str, dict[str, Curve]] = defaultdict(dict)
        self._mem_shaped: dict[str, dict[str, Curve]] = defaultdict(dict)
        variants: dict[tuple[str, str, str, bool], list] = defaultdict(list)
        for r in self.profile.select("memory"):
            variants[(r["cache"], r["kind"], r["variant"], "tokens" in r)].append(r)
        for (cache, kind, variant, shaped), rows in sorted(variants.items()):
            table = self._mem if cache == "cold" else self._mem_warm
            table = self._mem_shaped if shaped and cache == "cold" else table
            table[kind][variant] = Curve(rows)

    def _build_collectives(self) -> None:
        self._coll: dict[tuple[str, int, str], Curve] = {}
        rows: dict[tuple[str, int, str], list] = defaultdict(list)
        for r in self.profile.select("collective"):
            rows[(r["collective"], r["num_ranks"], r["mode"])].append(r)
        for key, rs in rows.items():
            self._coll[key] = Curve(rs)
        self._host_ns = {op: self._measure_host_overhead(op) for op in {k[0] for k in rows}}
        for (op, n, mode), rs in list(rows.items()):
            if mode == "eager":
                self._coll[(op, n, "device")] = Curve(self._device_rows(op, n, rs))
        self._latency_fit = {op: self._fit_step_latency(op) for (op, _, mode) in self._coll if mode == "device"}

    def _measure_host_overhead(self, op: str) -> float:
        """Median eager - graph time over sizes <= 1 MiB (the host's launch cost per collective).

        Ops captured in no graph (all_to_all_v, exchange) borrow their base op's graph times.
        """
        has_graph = any(o == op and m == "graph" for (o, _, m) in self._coll)
        base = op if has_graph else GRAPH_BASE_OP.get(op, op)
        diffs = []
        for (o, n, mode), graph in list(self._coll.items()):
            eager = self._coll.get((op, n, "eager"))
            if o != base or mode != "graph" or eager is None:
                continue
            diffs += [eager(b) - graph(b) for b in np.exp(graph.grid.axes[0]) if b <= 2**20]
        return max(0.0, float(np.median(diffs))) if diffs else 0.0

    def _device_rows(self, op: str, n: int, eager: list) -> list[dict]:
        """Graph rows where measured; above them eager rows, minus the host overhead only up to 16 MiB:
        a back-to-back eager loop of larger collectives is GPU-bound (the host runs ahead), so its
        time is the device time (``GRAPH_MAX_NBYTES`` in ``moesim.calibrate.collectives``)."""
        graph = self._coll.get((op, n, "graph"))
        top = graph.max_nbytes if graph else 0
        out = [{"nbytes": float(b), "time_ns": graph.grid((float(b),))} for b in np.exp(graph.grid.axes[0])] if graph else []
        floor = out[-1]["time_ns"] if out else 1.0
        out += [{"nbytes": r["nbytes"], "time_ns": max(floor, r["time_ns"] - (self._host_ns[op] if r["nbytes"] <= 2**24 else 0.0))}
                for r in eager if r["nbytes"] > top * 1.0001]
        return out

    def _fit_step_latency(self, op: str) -> tuple[float, float]:
        """(base_ns, per_step_ns) with device latency = base + steps * per_step, over measured ranks."""
        pts = [(collective_steps(op, n), c.latency_ns) for (o, n, m), c in self._coll.items() if o == op and m == "device"]
        if len(pts) >= 2 and len({s for s, _ in pts}) >= 2:
            steps, lat = np.array(pts, dtype=float).T
            per_step, base = np.polyfit(steps, lat, 1)
            if per_step >= 0 and base >= 0:
                return float(base), float(per_step)
        return 0.0, float(np.mean([lat / s for s, lat in pts]))

    # -- compute --------------------------------------------------------------------------
    def compute_ns(self, op: ComputeOp) -> int:
        """Time of one compute op on one GPU in integer nanoseconds (>= 1)."""
        if op not in self._cache:
            t = self._compute(op)
            if self._clock and isinstance(op, (Gemm, GroupedGemm, Attention)):
                t *= self._clock["attention" if isinstance(op, Attention) else "gemm"]
            if not math.isfinite(t):
                raise ConfigError("profile", f"{self.name} prices {op!r} at {t} ns",
                                  "the profile's samples for this op are out of range; re-run the calibration",
                                  source=self.profile.source)
            self._cache[op] = max(1, int(round(t)))
        return self._cache[op]

    def _compute(self, op: ComputeOp) -> float:
        if isinstance(op, GroupedGemm):
            return grouped_gemm_ns(self, op)
        if isinstance(op, Gemm) and op.dtype == "fp8" and op.scaling in ("rowwise", "blockwise"):
            return scaled_gemm_price(self, op)
        if isinstance(op, Gemm):
            dtype = DTYPE_ALIASES.get(op.dtype, op.dtype)
            if (dtype, None) not in self._gemm:
                return self._fallback_compute(op, "dtype", f"no {op.dtype} GEMMs in the profile")
            t = self.gemm_ns(op.m, op.n, op.k, dtype)
            if op.groups > 1:
                t *= op.groups * (self._grouped((op.groups, op.m)) if self._grouped and dtype == "bf16" else 1.0)
            return t
        if isinstance(op, Attention):
            return self._attention_ns(op)
        if isinstance(op, MemoryOp):
            return self._memory_op_ns(op)
        raise ConfigError("op", f"{type(op).__name__} is not a compute op", "pass a Gemm, Attention or MemoryOp")

    def _memory_op_ns(self, op: MemoryOp) -> float:
        """A MemoryOp: the ``moe_kernels`` curve of its ``variant`` (found by name whatever the
        op's kind), or the memory section's; else, recorded in ``fallback_ops`` (never silent), the
        memory section's curve of the same kernel, the kind's generic curve, the mean of the kind's
        ``moe_kernels`` curves, or the fallback model (:mod:`moesim.costs.moe_kernels`)."""
        shaped = {v: c for curves in self._mem_shaped.values() for v, c in curves.items()}
        legacy = self._mem.get(op.kind, {})
        if op.variant in shaped:
            return shaped[op.variant](op.bytes)
        if op.variant in MOE_KERNEL_KINDS and LEGACY_STAND_INS.get(op.variant) in legacy:
            stand_in = LEGACY_STAND_INS[op.variant]
            self.fallback_ops.add(f"MemoryOp {op.kind}/{op.variant} (no moe_kernels rows: the memory section's "
                                  f"{stand_in!r} curve, measured at one shape)")
            return legacy[stand_in](op.bytes)
        if op.variant and op.variant not in MOE_KERNEL_KINDS and op.variant in legacy:
            return legacy[op.variant](op.bytes)
        what = f"MemoryOp {op.kind}/{op.variant}" if op.variant else ""
        if any(v not in NAMED_ONLY_VARIANTS for v in legacy):
            if what:
                self.fallback_ops.add(f"{what} (variant not measured: the kind's generic curve)")
            return self.memory_ns(op.kind, op.bytes)
        kin = list(self._mem_shaped.get(op.kind, {}).values())
        if kin:
            self.fallback_ops.add(f"{what or 'MemoryOp ' + op.kind} (no generic curve: the mean of the kind's "
                                  "moe_kernels curves)")
            return float(np.mean([c(op.bytes) for c in kin]))
        t = self._fallback_compute(op, "MemoryOp.kind", f"kind {op.kind!r} (variant {op.variant!r}) not measured "
                                   f"(profile has {sorted(self._mem)}; valid kinds {MEMORY_OP_KINDS})")
        self.fallback_ops.add(f"MemoryOp {op.kind}/{op.variant or '-'} (not measured: the fallback model)")
        return t

    def memory_ns(self, kind: str, nbytes: float, variant: str | None = None, cache: str = "cold") -> float:
        """A memory-bound kernel moving ``nbytes``; ``variant`` (e.g. ``"gather"``) picks one
        measured kernel, None averages the kind's variants (e.g. gather and scatter; not the
        ``NAMED_ONLY_VARIANTS`` nor the ``moe_kernels`` rows, which answer only where named; a
        name both sections use, e.g. ``"gather"``, means the memory section's kernel here and the
        ``moe_kernels`` one in ``compute_ns(MemoryOp(...))``: see :mod:`moesim.costs.moe_kernels`).
        ``cache="warm"``: its inputs were just written by the previous
        kernel (the warm-cache curve where measured, else the cold one); ``"cold"``: L2 evicted."""
        if cache not in ("cold", "warm"):
            raise ConfigError("cache", f"unknown cache state {cache!r}", "use 'cold' or 'warm'")
        if cache == "warm" and variant is not None and variant in self._mem_warm.get(kind, {}):
            return self._mem_warm[kind][variant](nbytes)
        curves = self._mem.get(kind, {})
        if variant is not None and variant not in curves and variant in self._mem_shaped.get(kind, {}):
            return self._mem_shaped[kind][variant](nbytes)
        if variant is None:
            generic = [c for v, c in curves.items() if v not in NAMED_ONLY_VARIANTS]
            if not generic:
                raise ConfigError("kind", f"memory kind {kind!r} not in the profile", f"use one of: {sorted(self._mem)}")
            return float(np.mean([curve(nbytes) for curve in generic]))
        if variant not in curves:
            raise ConfigError("variant", f"no {kind!r} variant {variant!r} in the profile",
                              f"use one of: {sorted({*curves, *self._mem_shaped.get(kind, {})})}")
        return curves[variant](nbytes)

    def gemm_ns(self, m: int, n: int, k: int, dtype: str = "bf16", layout: str | None = None) -> float:
        """One GEMM ``[m, k] x [k, n]``; ``layout`` picks fwd / bwd_data / bwd_weight, None averages."""
        key = (DTYPE_ALIASES.get(dtype, dtype), layout)
        if key not in self._gemm:
            raise ConfigError("dtype/layout", f"no {dtype} GEMMs with layout {layout!r} in the profile",
                              f"use one of: {sorted((d, l) for d, l in self._gemm if l)}")
        return gemm_table_ns(self._gemm[key], DTYPE_BYTES[key[0]], m, n, k)

    def _attention_ns(self, op: Attention) -> float:
        direction = "bwd" if op.backward else "fwd"
        if op.seq_q < 1 or op.seq_kv < 1:
            raise ConfigError("Attention.seq_q/seq_kv", f"need >= 1 query and key, got {op.seq_q} and {op.seq_kv}",
                              "give the sequence length (and a sliding window's width) in tokens")
        if not op.causal and op.seq_kv < op.seq_q:   # a sliding window: the band of a causal kernel over seq_q
            self.fallback_ops.add(f"Attention window {op.seq_kv} {direction} (not measured: the causal kernel at "
                                  "the query length, times the blocks a window kernel visits)")
            full = dataclasses.replace(op, seq_kv=op.seq_q, causal=True)
            return self._attention_ns(full) * window_ratio(op.seq_q, op.seq_kv, direction)
        call = getattr(op, "call", "")
        if call and not any(dr == direction and c == call for dr, _, c in self._attn):
            self.fallback_ops.add(f"Attention call={call} {direction} (not measured: the equal-heads kernel's grid)")
            call = ""
        dims = [d for (dr, d, c) in self._attn if dr == direction and c == call]
        if DTYPE_ALIASES.get(op.dtype, op.dtype) != "bf16" or not dims:
            return self._fallback_compute(op, "Attention.dtype", f"no {op.dtype} {direction} attention in the profile")
        head_dim = min(dims, key=lambda d: abs(math.log(d / max(op.head_dim, 1))))
        if head_dim != op.head_dim:  # never silent: another head_dim's kernel, scaled by FLOPs
            self.fallback_ops.add(f"Attention head_dim {op.head_dim} {direction} (not measured: head_dim {head_dim}'s "
                                  "grid scaled by FLOPs)")
        grid, env, keys = self._attn[(direction, head_dim, call)]
        batch, heads, seq = float(max(op.batch, 1)), float(max(op.heads, 1)), float(max(op.seq_kv, 1))
        point = (batch, heads, seq) if len(keys) == 3 else (batch * heads, seq)

        def model(p: Point) -> float:
            ref = self._attn_ref(direction, head_dim, p[-1], math.prod(p[:-1]))
            return env(ref.flops, ref.bytes)
        ref = self._attn_ref(direction, head_dim, seq, batch * heads)
        return anchored(grid, model, point) * op.flops / ref.flops

    def _fallback_compute(self, op: ComputeOp, field: str, problem: str) -> float:
        if self.fallback is None:
            raise ConfigError(field, problem, "measure it, or pass fallback=make_cost_model(device)", source=self.name)
        self.fallback_ops.add(type(op).__name__)
        return float(self.fallback.compute_ns(op))

    # -- communication --------------------------------------------------------------------
    @property
    def measured_link_kinds(self) -> tuple[str, ...]:
        """Link kinds whose collectives this profile measured (its ``collective_ns`` applies there)."""
        return MEASURED_LINK_KINDS

    def collective_ns(self, op: str, num_ranks: int, nbytes: float, mode: str = "device") -> int:
        """Time of one collective over NVLink/NVSwitch; ``nbytes`` as in nccl-tests.

        ``mode="device"``: GPU-side time (host launch cost excluded); ``"eager"``: as a PyTorch
        eager loop sees it. Unmeasured rank counts use the fitted latency and bus bandwidth.
        """
        op = self._check_collective(op, num_ranks)
        if num_ranks == 1:
            return 1
        if mode not in ("device", "eager"):
            raise ConfigError("mode", f"unknown mode {mode!r}", "use 'device' or 'eager'")
        curve = self._coll.get((op, num_ranks, mode))
        if curve is not None:
            return max(1, int(round(curve(nbytes))))
        ref_n = self._reference_ranks(op, num_ranks)
        busbw = self._coll[(op, ref_n, "device")].bytes_per_ns * bus_factor(op, ref_n)
        base, per_step = self._latency_fit[op]
        latency = base + per_step * collective_steps(op, num_ranks) + (self._host_ns[op] if mode == "eager" else 0.0)
        return max(1, int(round(latency + nbytes * bus_factor(op, num_ranks) / busbw)))

    def _measured(self, op: str) -> bool:
        return OP_ALIASES.get(op, op) in self._latency_fit

    def _check_collective(self, op: str, num_ranks: int) -> str:
        measured = sorted(self._latency_fit)
        name = OP_ALIASES.get(op, op)
        if name not in measured:
            raise ConfigError("op", f"collective {op!r} not in the profile", f"use one of: {', '.join(measured + list(OP_ALIASES))}")
        if num_ranks < 1:
            raise ConfigError("num_ranks", f"must be >= 1, got {num_ranks}")
        return name

    def _reference_ranks(self, op: str, num_ranks: int) -> int:
        """The measured rank count a prediction for ``num_ranks`` scales from (largest below, else smallest)."""
        ranks = sorted(n for (o, n, m) in self._coll if o == op and m == "device")
        below = [n for n in ranks if n <= num_ranks]
        return below[-1] if below else ranks[0]

    def bus_bandwidth_gbps(self, op: str = "all_reduce") -> float:
        """Fitted asymptotic bus bandwidth (GB/s) of ``op`` at its largest measured rank count."""
        op = self._check_collective(op, 2)
        n = max(n for (o, n, m) in self._coll if o == op and m == "device")
        return self._coll[(op, n, "device")].bytes_per_ns * bus_factor(op, n)

    def collective_link_efficiency(self, op: str) -> float:
        """Fitted bus bandwidth of ``op`` over the datasheet NVLink bandwidth per direction."""
        if self.datasheet is None:
            raise ConfigError("device", f"{self.device} has no datasheet entry", f"use one of: {', '.join(DEVICES)}")
        return min(1.0, self.bus_bandwidth_gbps(op) / self.datasheet.nvlink_gbps_per_direction)

    def link_efficiency(self, kind: str) -> float:
        """Fraction of the datasheet link bandwidth transfers achieve: measured all-reduce bus
        bandwidth / NVLink bandwidth for NVLink and NVSwitch; the fallback's for other kinds."""
        if kind in MEASURED_LINK_KINDS and self._measured("all_reduce"):
            return self.collective_link_efficiency("all_reduce")
        return float(self._fallback_comm("link_efficiency", kind)(kind))

    def collective_step_latency_ns(self, op: str, num_ranks: int, link_kind: str) -> int:
        """Per-step device latency such that ``collective_steps(op, n)`` steps add up to the
        fitted ``base + steps * per_step``."""
        if link_kind not in MEASURED_LINK_KINDS or not self._measured(op):
            return int(self._fallback_comm("collective_step_latency_ns", link_kind)(op, num_ranks, link_kind))
        name = self._check_collective(op, num_ranks)
        base, per_step = self._latency_fit[name]
        return max(1, int(round(per_step + base / collective_steps(name, num_ranks))))

    def p2p_latency_ns(self, link_kind: str) -> int:
        """Device-side latency of one send/recv (fitted intercept of the send/recv curve)."""
        if link_kind not in MEASURED_LINK_KINDS or not self._measured("send_recv"):
            return int(self._fallback_comm("p2p_latency_ns", link_kind)(link_kind))
        curve = self._coll[("send_recv", self._reference_ranks("send_recv", 2), "device")]
        return max(1, int(round(curve.latency_ns)))

    def collective_efficiency(self, op: str, num_ranks: int, nbytes: float) -> float:
        """Size-dependent link efficiency: the measured bus bandwidth of ``op`` at ``nbytes``
        (device time) over the datasheet NVLink bandwidth per direction. NCCL reaches the large-message
        figure (:meth:`link_efficiency`) only near 1 GiB; a constant efficiency over-rates tens of MB."""
        if self.datasheet is None:
            raise ConfigError("device", f"{self.device} has no datasheet entry", f"use one of: {', '.join(DEVICES)}")
        name = self._check_collective(op, num_ranks)
        t = self.collective_ns(name, num_ranks, nbytes)
        return min(1.0, nbytes * bus_factor(name, num_ranks) / t / self.datasheet.nvlink_gbps_per_direction)

    def all_to_all_v_ns(self, matrix: Sequence[Sequence[float]]) -> float:
        """Device time of an uneven all-to-all from its bytes ``matrix[src][dst]`` (NVLink/NVSwitch).

        Two ranks: the busier direction's bytes ``b`` and the ratio ``r`` of the other direction's
        bytes to ``b`` place the call between measured curves taken at the same ``b``: one-way
        send/recv (r = 0), the profile's uneven all_to_all_v (r of its split fractions) and the
        even all_to_all (r = 1), linearly in r. More ranks: the even all_to_all whose per-peer
        message is the largest one (``n * b`` bytes), an upper bound for skewed splits.
        """
        n = len(matrix)
        off = [float(matrix[i][j]) for i in range(n) for j in range(n) if i != j]
        b = max(off, default=0.0)
        if b <= 0.0:
            return 1.0
        if n != 2:
            return float(self.collective_ns("all_to_all", n, n * b))
        r = min(off) / b
        anchors = self._all_to_all_v_anchors()
        if r <= anchors[0][0]:
            return anchors[0][1](b)
        for (r0, f0), (r1, f1) in zip(anchors, anchors[1:]):
            if r <= r1:
                w = (r - r0) / (r1 - r0)
                return (1.0 - w) * f0(b) + w * f1(b)
        return anchors[-1][1](b)

    def _all_to_all_v_anchors(self) -> list[tuple[float, Callable[[float], float]]]:
        """(ratio of the lighter to the busier direction, time at busier-direction bytes) on 2 ranks."""
        self._check_collective("all_to_all", 2)
        out: list[tuple[float, Callable[[float], float]]] = [(1.0, lambda b: float(self.collective_ns("all_to_all", 2, 2 * b)))]
        if ("send_recv", 2, "device") in self._coll:
            out.append((0.0, lambda b: float(self.collective_ns("send_recv", 2, b))))
        rows = [r for r in self.profile.select("collective", collective="all_to_all_v", num_ranks=2) if r.get("split_fractions")]
        if rows and ("all_to_all_v", 2, "device") in self._coll:
            f = rows[0]["split_fractions"]
            busy, light = max(f[0][1], f[1][0]), min(f[0][1], f[1][0])
            if 0 < light < busy:
                out.append((light / busy, lambda b: float(self.collective_ns("all_to_all_v", 2, b / busy))))
        return sorted(out, key=lambda a: a[0])

    def host_overhead_ns(self, op: str) -> int:
        """Host launch cost of one eager PyTorch collective (eager minus CUDA-graph time)."""
        return int(round(self._host(self._host_ns[self._check_collective(op, 2)])))

    def _fallback_comm(self, method: str, kind: str) -> Callable[..., Any]:
        if self.fallback is None:
            raise ConfigError("link_kind", f"{kind!r} links or this collective were not measured (profile covers "
                              f"{MEASURED_LINK_KINDS}, collectives {sorted(self._latency_fit)})",
                              "pass fallback=make_cost_model(device)", source=self.name)
        return getattr(self.fallback, method)

    def sources(self) -> dict[str, str]:
        """Per op class, where its costs come from: ``measured (<device>)``, ``measured on <other
        device> (borrowed)`` where the profile says so (``borrowed``: rows copied from another
        profile, e.g. an H200's NVLink collectives in a one-GPU H100 profile), or ``roofline``
        where the profile has no rows of the class; plus, once ops were priced, ``outside the
        profile``: each op priced by the roofline or by a stated stand-in (another head_dim's
        attention, a kind's generic curve). Every result repeats it."""
        have = self.profile.ops()
        borrowed = {b.get("op"): b.get("from", "?") for b in self.profile.extra.get("borrowed") or []}

        def source(*ops: str) -> str:
            lent = [borrowed[op] for op in ops if op in borrowed]
            if lent:
                return f"measured on {lent[0]} (borrowed)"
            return f"measured ({self.profile.device})" if any(op in have for op in ops) else "roofline"
        out = {"gemm": source("gemm"), "grouped gemm": source("grouped_gemm_v", "grouped_gemm"),
               "attention": source("attention"), "memory-bound": source("memory"),
               "collectives": source("collective"), "compute/comm overlap": source("overlap"),
               "eager host": source("host_op") if "host_op" in have else "per-kernel figure"}
        if "grouped_gemm_te" in have:
            out["grouped gemm (TE streams)"] = source("grouped_gemm_te")
        if self.fallback_ops:
            out["outside the profile"] = "; ".join(sorted(self.fallback_ops))
        return out

    def overlap_slowdown(self) -> float:
        """Measured GEMM slowdown while NCCL traffic runs (geometric mean over experiments)."""
        return self._overlap_ratio("gemm")

    def collective_overlap_slowdown(self) -> float:
        """Measured collective slowdown while GEMMs run (geometric mean over experiments)."""
        return self._overlap_ratio("collective")

    def _overlap_ratio(self, victim: str) -> float:
        rows = self.profile.select("overlap", victim=victim)
        if not rows:
            return float(self.fallback.overlap_slowdown()) if self.fallback and victim == "gemm" else 1.0
        return max(1.0, float(np.exp(np.mean([math.log(r["time_ns"] / r["alone_ns"]) for r in rows]))))

    # -- headline figures -----------------------------------------------------------------
    def kernel_region(self) -> tuple[float, float]:
        """``(region_ns, floor_ns)``: the fixed cost of an event-timed region that every sample
        carries once, and the shortest in-stream kernel (profile field ``kernel_region``;
        ``(0, 0)`` without it); see :mod:`moesim.costs.regions`."""
        rec = self.profile.extra.get("kernel_region")
        return (float(rec["region_ns"]), float(rec["floor_ns"])) if rec else (0.0, 0.0)

    def measured_peak_flops(self, dtype: str = "bf16") -> float:
        """Best achieved GEMM FLOP/s in the profile."""
        rows = self.profile.select("gemm", dtype=dtype)
        return max((2.0 * r["m"] * r["n"] * r["k"] / r["time_ns"] * 1e9 for r in rows), default=0.0)

    def measured_hbm_gbps(self) -> float:
        """Best achieved copy bandwidth (bytes read + written per second / 1e9)."""
        return max((r["nbytes"] / r["time_ns"] for r in self.profile.select("memory", kind="copy")), default=0.0)
