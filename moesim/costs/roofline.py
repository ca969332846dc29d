"""The datasheet roofline cost model: the fallback when no calibrated profile exists.

An op takes ``max(compute time, HBM time) + launch overhead``. Compute time divides FLOPs by
the dense peak times an efficiency; HBM time divides bytes by the datasheet bandwidth times an
efficiency. GEMMs also pay tile and wave quantisation: CUTLASS/cuBLAS kernels compute 128x128
output tiles, so m, n, k are padded to multiples of 128 and the tiles run in waves of one tile
per SM (NVIDIA Deep Learning Performance Guide, "Matrix Multiplication Background": tile and
wave quantisation). When there are fewer tiles than SMs the K dimension is split over idle SMs
(split-K / stream-K, as cuBLAS does). Small-M GEMMs therefore fall off the peak the way real
ones do. A ``GroupedGemm`` pays the same per group: each group's rows padded to whole tiles,
no tiles for empty groups, all groups' tiles in shared waves, plus the weights of the non-empty
groups through HBM (:func:`grouped_padded_flops`). Communication terms (link efficiency,
per-step and p2p latency) come from NCCL's own cost model and nccl-tests figures (reference
moe_and_hardware.md §6.3-6.4).

Every efficiency factor is a named, documented field of :class:`RooflineEfficiency`; those
marked "assumption" have no measurement behind them. Results are labelled ``uncalibrated``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from moesim.costs.base import LINK_KINDS
from moesim.costs.devices import DeviceSpec, get_device
from moesim.errors import ConfigError
from moesim.costs.grouped import TileWork, tile_work
from moesim.ops import COLLECTIVE_OPS, MEMORY_OP_KINDS, Attention, ComputeOp, Gemm, GroupedGemm, MemoryOp

# Ring-style collectives advance in 2(n-1) or (n-1) steps; the others are pairwise exchanges.
_RING_OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")


def _default_memory_efficiency() -> dict[str, float]:
    # Assumptions: streaming copies reach ~90% of datasheet HBM bandwidth; kernels with
    # reductions (norm, softmax) or scattered access (permute) less; top-k, sorts and histograms
    # are latency-bound; a cast (fp8 quantize) streams like an elementwise op.
    return {"copy": 0.90, "elementwise": 0.85, "norm": 0.75, "softmax": 0.75, "topk": 0.30, "permute": 0.60,
            "sort": 0.30, "histogram": 0.30, "cast": 0.85}


def _default_link_efficiency() -> dict[str, float]:
    return {
        # nccl-tests #212 (sjeaugey): 450 GB/s NVLink line rate, ~370 GB/s effective -> 0.82.
        "nvlink": 370.0 / 450.0,
        "nvswitch": 370.0 / 450.0,
        # nccl-tests #267: CX-7 NDR (50 GB/s line rate) reaches 48-49 GB/s -> 0.96.
        "ib": 48.0 / 50.0,
        # Assumption: PCIe Gen5 x16 moves ~80% of 64 GB/s after TLP/DLLP overhead.
        "pcie": 0.80,
        # Assumption: RoCE Ethernet a little below IB.
        "ethernet": 0.90,
        # Assumption: NVLink-C2C behaves like NVLink.
        "c2c": 370.0 / 450.0,
    }


def _default_step_latency_ns() -> dict[str, int]:
    # NCCL tuning.cc (b6475625) ring LL128 hwLat per step: NVLink 1.9 us, PCI 2.5 us, NET 4.0 us.
    # LL128 is NCCL's protocol for the mid-size messages where step latency matters; large
    # messages are bandwidth-bound either way. C2C assumed equal to NVLink.
    return {"nvlink": 1900, "nvswitch": 1900, "c2c": 1900, "pcie": 2500, "ib": 4000, "ethernet": 4000}


def _default_p2p_latency_ns() -> dict[str, int]:
    # [INS] 64-byte latencies: NVLink 3.33 us, IB 2.8 us, RoCE 3.6 us. PCIe is derived: NVLink x
    # NCCL's LL128 PCI/NVLink hwLat ratio (2.5/1.9). C2C assumed equal to NVLink.
    return {"nvlink": 3330, "nvswitch": 3330, "c2c": 3330, "ib": 2800, "ethernet": 3600, "pcie": 4380}


@dataclass(frozen=True)
class RooflineEfficiency:
    """The factors the roofline applies to datasheet peaks. Fractions are in (0, 1].

    Attributes:
        gemm_efficiency: fraction of dense peak a large, tile-aligned GEMM reaches.
            Assumption: ~0.75 (cuBLAS bf16 on H100 reaches ~700-750 of 989 TFLOP/s).
        gemm_tile: output tile edge used for tile/wave quantisation (128, CUTLASS default).
        gemm_memory_efficiency: fraction of HBM bandwidth for GEMM and attention operands.
            Assumption.
        attention_forward_efficiency: FlashAttention-2 reports 50-73% of A100 peak forward and
            FlashAttention-3 ~75% on H100; 0.5 is the conservative end.
        attention_backward_efficiency: assumption, below forward (backward kernels are slower).
        memory_efficiency: fraction of HBM bandwidth per MemoryOp kind (assumptions).
        launch_overhead_ns: added to every kernel. Assumption: 2 us, about a back-to-back empty
            kernel; nccl #1984 shows CPU launch costs ~3 us per call without CUDA graphs.
        link_efficiency: achieved / datasheet bandwidth per link kind (sources in the code).
        step_latency_ns: per-step latency of ring-style collectives per link kind.
        p2p_latency_ns: latency of one point-to-point message per link kind.
        overlap_slowdown: compute-time multiplier while a collective shares the GPU (SMs and
            HBM contention). Assumption: 1.1; DeepSeek-V3 gives 20 of 132 SMs to communication.
    """

    gemm_efficiency: float = 0.75
    gemm_tile: int = 128
    gemm_memory_efficiency: float = 0.80
    attention_forward_efficiency: float = 0.50
    attention_backward_efficiency: float = 0.40
    memory_efficiency: dict[str, float] = field(default_factory=_default_memory_efficiency, hash=False)
    launch_overhead_ns: int = 2000
    link_efficiency: dict[str, float] = field(default_factory=_default_link_efficiency, hash=False)
    step_latency_ns: dict[str, int] = field(default_factory=_default_step_latency_ns, hash=False)
    p2p_latency_ns: dict[str, int] = field(default_factory=_default_p2p_latency_ns, hash=False)
    overlap_slowdown: float = 1.1

    def __post_init__(self) -> None:
        for name in ("gemm_efficiency", "gemm_memory_efficiency", "attention_forward_efficiency",
                     "attention_backward_efficiency"):
            _check_fraction(name, getattr(self, name))
        for kind, value in self.memory_efficiency.items():
            _check_fraction(f"memory_efficiency[{kind!r}]", value)
        for kind, value in self.link_efficiency.items():
            _check_fraction(f"link_efficiency[{kind!r}]", value)
        _check_keys("memory_efficiency", self.memory_efficiency, MEMORY_OP_KINDS)
        for name in ("link_efficiency", "step_latency_ns", "p2p_latency_ns"):
            _check_keys(name, getattr(self, name), LINK_KINDS)
        if self.gemm_tile < 1:
            raise ConfigError("gemm_tile", f"must be >= 1, got {self.gemm_tile}")
        if self.launch_overhead_ns < 0:
            raise ConfigError("launch_overhead_ns", f"must be >= 0, got {self.launch_overhead_ns}")
        if self.overlap_slowdown < 1.0:
            raise ConfigError("overlap_slowdown", f"must be >= 1, got {self.overlap_slowdown}",
                              "use 1.0 for no slowdown")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ConfigError(name, f"must be in (0, 1], got {value}")


def _check_keys(name: str, table: dict, required: tuple[str, ...]) -> None:
    missing = [k for k in required if k not in table]
    if missing:
        raise ConfigError(name, f"missing entries for {missing}", f"give a value for each of {list(required)}")


@dataclass(frozen=True)
class RooflineTerms:
    """The pieces of one op's roofline time, in (fractional) nanoseconds."""

    compute_ns: float
    memory_ns: float
    launch_ns: float

    @property
    def bound(self) -> str:
        """``"compute"``, ``"memory"`` or ``"launch"``: which term sets the time."""
        if max(self.compute_ns, self.memory_ns) < self.launch_ns:
            return "launch"
        return "compute" if self.compute_ns >= self.memory_ns else "memory"

    @property
    def total_ns(self) -> int:
        return max(1, math.ceil(max(self.compute_ns, self.memory_ns) + self.launch_ns))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def gemm_padded_flops(op: Gemm, tile: int, sms: int) -> float:
    """FLOPs the GPU effectively spends on ``op`` after tile, wave and split-K quantisation.

    Output tiles of ``tile x tile`` run one per SM per wave; K is padded to ``tile``. With fewer
    tiles than SMs, K is split over the idle SMs (at most one K-tile per split).
    """
    if min(op.m, op.n, op.k, op.groups) <= 0:
        return 0.0
    tiles = _ceil_div(op.m, tile) * _ceil_div(op.n, tile) * op.groups
    k_tiles = _ceil_div(op.k, tile)
    splits = max(1, min(sms // tiles, k_tiles)) if tiles < sms else 1
    waves = _ceil_div(tiles * splits, sms)
    k_tiles_per_split = _ceil_div(k_tiles, splits)
    return float(waves * sms) * 2.0 * tile * tile * (k_tiles_per_split * tile)


def grouped_padded_flops(op: GroupedGemm, tile: int, sms: int) -> float:
    """FLOPs a grouped GEMM effectively spends: each group padded to whole ``tile``-row tiles
    (fwd / dgrad: ``ceil(m_g / tile)`` row tiles of ``n``; wgrad: the ``[k, n]`` output of each
    non-empty group, its token reduction padded to 64), no tiles for empty groups, and the tiles of
    all groups sharing the SMs in waves (fewer tiles than SMs: one tile's time)."""
    return _waved_flops(tile_work(op.counts, op.n, op.k, op.layout, op.dtype, tile), op.layout, sms)


def _waved_flops(work: TileWork, layout: str, sms: int) -> float:
    """:func:`grouped_padded_flops` of an already computed tile work."""
    if work.tile_flops_max <= 0.0:
        return 0.0
    if layout == "wgrad":  # unequal tiles: a persistent kernel's longest SM
        return work.occupied_flops(sms)
    tiles = round(work.padded_flops / work.tile_flops_max)
    return _ceil_div(tiles, sms) * sms * work.tile_flops_max


class RooflineCostModel:
    """Datasheet roofline costs for one GPU kind (implements ``CostModel``).

    ``device`` (the attribute) is the device name, as the protocol asks; the full datasheet is
    ``device_spec``.
    """

    calibrated = False

    def __init__(self, device: DeviceSpec, efficiency: RooflineEfficiency | None = None) -> None:
        self.device_spec = device
        self.efficiency = efficiency if efficiency is not None else RooflineEfficiency()
        self.device = device.name
        self.name = f"roofline:{device.name} (uncalibrated)"
        self.hbm_bytes = float(device.hbm_bytes)
        self.peak_flops = float(device.peak_flops_for("bf16"))

    def __repr__(self) -> str:
        return f"RooflineCostModel({self.name!r})"

    # -- compute --------------------------------------------------------------------------
    def terms(self, op: ComputeOp) -> RooflineTerms:
        """The compute, memory and launch terms of ``op`` (for explaining a result)."""
        eff = self.efficiency
        if isinstance(op, Gemm):
            flops = gemm_padded_flops(op, eff.gemm_tile, self.device_spec.sms)
            compute = self._flops_ns(flops, op.dtype, eff.gemm_efficiency)
            memory = self._bytes_ns(op.bytes, eff.gemm_memory_efficiency)
        elif isinstance(op, GroupedGemm):  # tile-padded FLOPs per group; weights of non-empty groups
            work = tile_work(op.counts, op.n, op.k, op.layout, op.dtype, eff.gemm_tile)
            compute = self._flops_ns(_waved_flops(work, op.layout, self.device_spec.sms), op.dtype,
                                     eff.gemm_efficiency)
            memory = self._bytes_ns(work.nbytes, eff.gemm_memory_efficiency)
        elif isinstance(op, Attention):
            frac = eff.attention_backward_efficiency if op.backward else eff.attention_forward_efficiency
            compute = self._flops_ns(op.flops, op.dtype, frac)
            memory = self._bytes_ns(op.bytes, eff.gemm_memory_efficiency)
        elif isinstance(op, MemoryOp):
            if op.kind not in eff.memory_efficiency:
                raise ConfigError("MemoryOp.kind", f"unknown kind {op.kind!r}",
                                  f"use one of: {', '.join(MEMORY_OP_KINDS)}")
            compute = 0.0
            memory = self._bytes_ns(op.bytes, eff.memory_efficiency[op.kind])
        else:
            raise ConfigError("op", f"{type(op).__name__} is not a compute op", "pass a Gemm, Attention or MemoryOp")
        return RooflineTerms(compute, memory, float(eff.launch_overhead_ns))

    def compute_ns(self, op: ComputeOp) -> int:
        """Time of one compute op in integer nanoseconds (>= 1)."""
        return self.terms(op).total_ns

    def sources(self) -> dict[str, str]:
        """Every op class from the datasheet roofline (``uncalibrated``)."""
        return {"all op classes": f"roofline ({self.device} datasheet, uncalibrated)"}

    def _flops_ns(self, flops: float, dtype: str, fraction: float) -> float:
        return flops / (self.device_spec.peak_flops_for(dtype) * fraction) * 1e9

    def _bytes_ns(self, num_bytes: float, fraction: float) -> float:
        # GB/s equals bytes per ns.
        return num_bytes / (self.device_spec.hbm_bandwidth_gbps * fraction)

    # -- communication --------------------------------------------------------------------
    def link_efficiency(self, kind: str) -> float:
        """Fraction of a link's datasheet bandwidth that transfers achieve on it."""
        return self.efficiency.link_efficiency[_check_link_kind(kind)]

    def collective_step_latency_ns(self, op: str, num_ranks: int, link_kind: str) -> int:
        """Fixed latency per algorithm step: NCCL LL128 ring hwLat for ring-style collectives,
        the point-to-point latency for pairwise ones (all_to_all, send_recv)."""
        if op not in COLLECTIVE_OPS:
            raise ConfigError("op", f"unknown collective {op!r}", f"use one of: {', '.join(COLLECTIVE_OPS)}")
        if num_ranks < 1:
            raise ConfigError("num_ranks", f"must be >= 1, got {num_ranks}")
        kind = _check_link_kind(link_kind)
        if op in _RING_OPS:
            return max(1, int(self.efficiency.step_latency_ns[kind]))
        return self.p2p_latency_ns(kind)

    def p2p_latency_ns(self, link_kind: str) -> int:
        """Fixed latency of one point-to-point send/recv."""
        return max(1, int(self.efficiency.p2p_latency_ns[_check_link_kind(link_kind)]))

    def overlap_slowdown(self) -> float:
        """Compute-time multiplier (>= 1) while a collective runs concurrently."""
        return self.efficiency.overlap_slowdown


def _check_link_kind(kind: str) -> str:
    if kind not in LINK_KINDS:
        raise ConfigError("link_kind", f"unknown link kind {kind!r}", f"use one of: {', '.join(LINK_KINDS)}")
    return kind


def make_cost_model(device_name: str, efficiency: RooflineEfficiency | None = None) -> RooflineCostModel:
    """A roofline cost model for the registered device called ``device_name``."""
    return RooflineCostModel(get_device(device_name), efficiency)
