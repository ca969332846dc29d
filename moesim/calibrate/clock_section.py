"""Section ``clock``: the SM clock the run's own protocol holds kernels at (needs a CUDA GPU).

A profile row is a time at whatever clock the GPU held while it was measured. This section times
GEMMs and causal flash attention (forward and backward) on shapes of the profile's grids under the
run's heating (``--heat-ms``, after its ``--preheat-s``) with a
:class:`~moesim.calibrate.clock_timer.ClockedTimer`, so each row is a shape's time and the SM clock
it ran at: ``{"op": "clock", "class": "gemm" | "attention", "sm_mhz", "time_ns", shape...}``. The
median per class is the profile's sustained clock. Each row also holds ``cool_time_ns``: the same
shape timed after ``COOL_IDLE_S`` of idle GPU, as a short burst (no heating, ~30 ms), the state a
short benchmark or one layer's timing loop runs in; ``gpu_clock="boost"`` prices compute-bound
kernels by the median ratio of these burst times to the profile's own prices of the same shapes
(:mod:`moesim.costs.clock`).
"""
from __future__ import annotations

import time

from moesim.calibrate.clock_timer import ClockedTimer
from moesim.calibrate.kernels import attention_op, gemm_op
from moesim.calibrate.section import Section
from moesim.calibrate.timing import Budget, Timer

COOL_IDLE_S = 2.0   # idle before each burst: the clock and the power controller recover (lab/duty_clock_probe.py)
GEMMS = ((1024, 4096, 4096), (4096, 4096, 4096), (2048, 8192, 4096), (16384, 4096, 8192), (8192, 8192, 8192))
ATTENTION = ((1, 32, 2048, 128), (1, 16, 4096, 128), (4, 32, 2048, 128), (2, 32, 4096, 64), (1, 64, 4096, 64))


def measure_clock(timer: Timer, grid: object, device: str, budget: Budget) -> Section:
    sec = Section("clock")
    if device != "cuda":
        sec.errors.append("clock: needs a CUDA GPU (the SM clock is read by timed spin probes)")
        return sec
    from moesim.calibrate.clock_timer import Nvml
    import torch

    nvml = Nvml(torch.cuda.current_device())
    clocked = ClockedTimer(device, nvml, heat_ms=timer.heat_ms)
    burst = Timer(device, heat_ms=0.0)

    def cool(fn) -> float:
        """The median time of ``fn`` as a short burst after ``COOL_IDLE_S`` of idle GPU."""
        torch.cuda.synchronize()
        time.sleep(COOL_IDLE_S)
        return round(burst.time(fn).median_ns, 1)

    try:
        for m, n, k in GEMMS:
            def one_gemm(m: int = m, n: int = n, k: int = k) -> dict:
                fn = gemm_op(device, m, n, k)
                st = clocked.time(fn)
                return {"op": "clock", "class": "gemm", "m": m, "n": n, "k": k, **st.fields(),
                        "sm_mhz": clocked.last_clock["sm_mhz"], "cool_time_ns": cool(fn)}
            sec.attempt(f"clock gemm {m}x{n}x{k}", budget, one_gemm)
        for b, h, s, d in ATTENTION:
            for direction in ("fwd", "bwd"):
                def one_attn(b: int = b, h: int = h, s: int = s, d: int = d, direction: str = direction) -> dict:
                    fn = attention_op(device, direction, b, h, s, d)
                    st = clocked.time(fn)
                    return {"op": "clock", "class": "attention", "direction": direction, "batch": b, "heads": h,
                            "seq": s, "head_dim": d, **st.fields(), "sm_mhz": clocked.last_clock["sm_mhz"],
                            "cool_time_ns": cool(fn)}
                sec.attempt(f"clock attention {direction} b={b} h={h} s={s} d={d}", budget, one_attn)
    finally:
        nvml.stop()
    return sec
