"""Datasheet numbers for the GPU kinds moesim knows, and the registry that names them.

A :class:`DeviceSpec` holds what a datasheet says about one GPU: HBM size and bandwidth, dense
tensor-core peak per dtype (never the 2:4-sparse figure NVIDIA tables often quote), NVLink
bandwidth per direction and SM count. It carries no efficiency factors: those belong to the cost
models (``roofline.py`` applies them; calibrated profiles replace them with measurements).
Every number comes from /work/shared/reference/moe_and_hardware.md section 6.1, whose sources
each entry's ``source`` string repeats.

HBM sizes: NVIDIA's "80 GB" HBM label is binary-sized (nvidia-smi shows 81920 MiB on an A100
80GB), so ``hbm_bytes`` is the label times 2**30. Bandwidths are decimal GB/s (1e9 B/s), which
is numerically bytes per nanosecond, the unit the topology uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from moesim.errors import ConfigError, unknown_name

GIB = 2**30
TFLOPS = 1e12


@dataclass(frozen=True)
class DeviceSpec:
    """One GPU kind as its datasheet describes it.

    Attributes:
        name: registry key, e.g. ``"H200"``.
        hbm_bytes: HBM capacity in bytes.
        hbm_bandwidth_gbps: HBM bandwidth in GB/s (1e9 B/s).
        peak_flops: dense tensor-core FLOP/s by dtype (``"bf16"``, ``"fp16"``, ``"fp8"``, ...).
        nvlink_gbps_per_direction: NVLink bandwidth per GPU per direction, GB/s.
        sms: streaming multiprocessors.
        source: where the numbers come from.
        max_sm_mhz: the SM clock a short burst on a cool GPU runs at (``nvidia-smi
            --query-gpu=clocks.max.sm``); 0 where not known. ``gpu_clock="boost"`` prices against it.
    """

    name: str
    hbm_bytes: float
    hbm_bandwidth_gbps: float
    peak_flops: dict[str, float] = field(hash=False)
    nvlink_gbps_per_direction: float
    sms: int
    source: str
    max_sm_mhz: float = 0.0

    def __post_init__(self) -> None:
        for attr in ("hbm_bytes", "hbm_bandwidth_gbps", "nvlink_gbps_per_direction", "sms"):
            if getattr(self, attr) <= 0:
                raise ConfigError(f"{self.name}.{attr}", f"must be > 0, got {getattr(self, attr)}")
        if "bf16" not in self.peak_flops:
            raise ConfigError(f"{self.name}.peak_flops", "needs a 'bf16' entry", "add the dense bf16 peak")
        for dtype, flops in self.peak_flops.items():
            if flops <= 0:
                raise ConfigError(f"{self.name}.peak_flops[{dtype!r}]", f"must be > 0, got {flops}")

    def peak_flops_for(self, dtype: str) -> float:
        """Dense tensor-core peak FLOP/s for ``dtype``; ConfigError if the GPU has none."""
        if dtype not in self.peak_flops:
            raise ConfigError(
                "dtype",
                f"{self.name} has no {dtype!r} tensor-core peak on record",
                f"use one of: {', '.join(sorted(self.peak_flops))}",
            )
        return self.peak_flops[dtype]


def _peaks(bf16_tflops: float, fp8_tflops: float = 0.0, fp4_tflops: float = 0.0) -> dict[str, float]:
    """Dense peaks by dtype. fp16 runs at the bf16 tensor-core rate on all these parts."""
    peaks = {"bf16": bf16_tflops * TFLOPS, "fp16": bf16_tflops * TFLOPS}
    if fp8_tflops:
        peaks["fp8"] = fp8_tflops * TFLOPS
    if fp4_tflops:
        peaks["fp4"] = fp4_tflops * TFLOPS
    return peaks


_REF = "reference moe_and_hardware.md §6.1"
# clocks.max.sm that nvidia-smi reported on every lent H100 and H200 (data/validation/runs/*/gpu.txt)
_LENT_MAX_MHZ = 1980.0

DEVICES: dict[str, DeviceSpec] = {
    "A100": DeviceSpec(
        name="A100", hbm_bytes=80 * GIB, hbm_bandwidth_gbps=2039.0, peak_flops=_peaks(312.0),
        nvlink_gbps_per_direction=300.0, sms=108,
        source=f"{_REF}: A100 SXM 80GB, glennklockwood.com/garden/processors/A100 (NVIDIA datasheet)",
    ),
    "H100": DeviceSpec(
        name="H100", hbm_bytes=80 * GIB, hbm_bandwidth_gbps=3350.0, peak_flops=_peaks(989.4, 1978.9),
        nvlink_gbps_per_direction=450.0, sms=132,
        source=f"{_REF}: H100 SXM5, glennklockwood.com/garden/processors/h100; hpctech H100 table",
        max_sm_mhz=_LENT_MAX_MHZ,
    ),
    "H100-PCIE": DeviceSpec(
        name="H100-PCIE", hbm_bytes=80 * GIB, hbm_bandwidth_gbps=2000.0, peak_flops=_peaks(756.0, 1513.0),
        nvlink_gbps_per_direction=300.0, sms=114,
        source="NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe column: bf16 1,513 TFLOPS and fp8 3,026 with "
        "sparsity (half dense), HBM2e 2 TB/s, NVLink bridge 600 GB/s; 114 SMs (H100 whitepaper)",
    ),
    "H800": DeviceSpec(
        name="H800", hbm_bytes=80 * GIB, hbm_bandwidth_gbps=3350.0, peak_flops=_peaks(989.4, 1979.0),
        nvlink_gbps_per_direction=200.0, sms=132,
        source=f"{_REF}: H800 SXM, bf16 from waredb.com; fp8 and HBM assumed = H100; NVLink 400 GB/s "
        "bidirectional spec (DeepSeek-V3 §3.2.2 measured 160 GB/s usable)",
    ),
    "H200": DeviceSpec(
        name="H200", hbm_bytes=141 * GIB, hbm_bandwidth_gbps=4800.0, peak_flops=_peaks(989.0, 1979.0),
        nvlink_gbps_per_direction=450.0, sms=132,
        source=f"{_REF}: H200 SXM, lzwjava H200 spec page; aiminingco.com/gpu/h200/specs; SMs = H100",
        max_sm_mhz=_LENT_MAX_MHZ,
    ),
    "B200": DeviceSpec(
        name="B200", hbm_bytes=180 * GIB, hbm_bandwidth_gbps=7700.0,
        peak_flops=_peaks(2250.0, 4500.0, 9000.0), nvlink_gbps_per_direction=900.0, sms=148,
        source=f"{_REF}: B200 HGX 1000 W, hpc-ai.com B200 blog; glennklockwood B200; docs.vultr.com; "
        "148 SMs (2 dies x 74) per chipsandcheese 'Nvidia's B200' article",
    ),
    "GB200": DeviceSpec(
        name="GB200", hbm_bytes=186 * GIB, hbm_bandwidth_gbps=8000.0,
        peak_flops=_peaks(2500.0, 5000.0, 10000.0), nvlink_gbps_per_direction=900.0, sms=148,
        source=f"{_REF}: B200 in GB200 NVL72 (1200 W), glennklockwood B200; aiwiki GB200 NVL72; "
        "datacrunch GB200 blog; 186 GB of the 186-192 GB range; SMs assumed = B200",
    ),
}


def get_device(name: str) -> DeviceSpec:
    """The registered :class:`DeviceSpec` called ``name`` (case-insensitive)."""
    key = name.upper()
    if key not in DEVICES:
        raise unknown_name("device", name, list(DEVICES))
    return DEVICES[key]


def gemm_peak_ratio(gpu_kind: str, dtype: str) -> float:
    """The datasheet peak of ``dtype`` GEMMs over the bf16 peak on ``gpu_kind`` (1 where either is
    not on record): an MFU against the precision the model's GEMMs run in."""
    device = DEVICES.get(gpu_kind)
    if device is None or dtype not in device.peak_flops or not device.peak_flops.get("bf16"):
        return 1.0
    return device.peak_flops[dtype] / device.peak_flops["bf16"]
