"""The profile's ``kernel_region`` section: the fixed cost of a CUDA-event-timed region.

Every profile sample times its kernels inside one CUDA-event region after an L2-evicting write
(:class:`~moesim.calibrate.timing.Timer`), and that region costs more than its kernels. Here a
region holds a chain of 1 or 2 back-to-back kernels of one kind, each on its own buffers: a
one-element add (the floor of any kernel's in-stream time), three small GEMMs and four memory
kernels of a few MiB. :func:`moesim.costs.regions.region_from_chains` turns the chain times into
the region cost and the in-stream floor that ``moesim.costs.regions`` subtracts. The longer chains
and clock passes of the original study are ``lab/chain_probe.py`` (run 9).
"""
from __future__ import annotations

import sys
import time
from typing import Callable

import torch

from moesim.calibrate import kernels, memops, provenance
from moesim.calibrate.timing import Timer

MIB = 2**20
CHAIN_GEMMS = ((64, 2048, 4096), (256, 4096, 4096), (1024, 1024, 1024))  # (m, n, k), fwd layout
CHAIN_MEMORY = (("silu", 4 * MIB), ("mul", 6 * MIB), ("rmsnorm", 16 * MIB), ("copy", 4 * MIB))


def chain_kernels(kind: str, n: int) -> list[Callable[[], object]]:
    """``n`` callables of one kind, each on its own buffers (cold when run after the flush)."""
    if kind == "tiny":
        xs = [torch.zeros(1, device="cuda") for _ in range(n)]
        return [lambda x=x: x.add_(1.0) for x in xs]
    if kind.startswith("gemm_"):
        m, nn, k = (int(v) for v in kind[5:].split("x"))
        ops = []
        for i in range(n):
            a = kernels.randn(m * k, "cuda", 100 + i).view(m, k)
            w = kernels.randn(nn * k, "cuda", 200 + i).view(nn, k)
            ops.append(lambda a=a, w=w: torch.mm(a, w.t()))
        return ops
    variant, nbytes = kind.split("_")
    numel = memops._numel_for(variant, int(nbytes))
    ops = []
    for i in range(n):
        bufs = [kernels.randn(numel, "cuda", 300 + 3 * i + j) for j in range(3)]
        ops.append(memops._kernel(variant, bufs, numel, "cuda"))
    return ops


REGION_LENGTHS = (1, 2)  # what the region cost needs (longer chains of short GEMMs turn host-bound)


def measure_kernel_region(timer: "Timer", device: str) -> "dict | None":
    """The profile's ``kernel_region``: every chain kind timed as regions of 1 and 2 kernels with
    ``timer`` (the calibration's own protocol), reduced by
    :func:`moesim.costs.regions.region_from_chains`; the raw chain times ride along. None off a GPU
    (the region cost is the CUDA-event region's)."""
    if device != "cuda":
        return None
    from moesim.costs.regions import region_from_chains  # standard library only
    rows = []
    for kind in chain_kinds():
        ops = chain_kernels(kind, max(REGION_LENGTHS))
        for n in REGION_LENGTHS:
            def run(chain: list = ops[:n]) -> None:
                for op in chain:
                    op()
            st = timer.time(run)
            rows.append({"kind": kind, "state": "calibration", "n": n, "time_ns": st.fields()["time_ns"]})
        del ops
    rec = region_from_chains(rows)
    if rec is None:
        return None
    return {**rec, "chains": rows, "derived": "moesim.costs.regions.region_from_chains: median over kinds of "
            "2 t(1) - t(2); floor t(2) - t(1) of a one-element add",
            **{k: v for k, v in provenance.collect(device, 1).items() if k in ("device", "driver", "cuda", "torch")},
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv)}


def chain_kinds() -> list[str]:
    """The chain kinds: ``tiny``, ``gemm_MxNxK`` and ``VARIANT_NBYTES``."""
    return ["tiny"] + [f"gemm_{m}x{n}x{k}" for m, n, k in CHAIN_GEMMS] + [f"{v}_{b}" for v, b in CHAIN_MEMORY]
