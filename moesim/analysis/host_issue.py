"""Could an eager host keep up? Kernel launches per GPU against the GPU work they carry.

``moesim run`` assumes by default that the host issues kernels ahead of the GPU (as CUDA graphs
or a fast host do). The validation (docs/accuracy.md) shows where that fails: eager PyTorch
programs whose kernels are short are as slow as their Python thread. This check says how close a
simulated step is to that regime: per GPU, the kernels its compute tasks launch (``args["kernels"]``,
counted by the lowering) times the host time eager PyTorch spends per counted kernel, against the
time the GPU spends on those tasks. The per-kernel figure is the calibrated profile's ``eager_host``
(an eager Llama layer's host time per counted kernel on the H200 machines, 74.5 us; the shipped
H200 profile's for a roofline cost model, labelled so; the bare back-to-back launch where a
profile has no ``eager_host``), or ``Scenario.host_launch_us``.

With ``Scenario.host = "eager"`` the host threads are simulated (:mod:`moesim.lowering.host`):
the record then also gives the busiest host thread's time against the step, and the message
says how much of the step the host thread was busy.
"""
from __future__ import annotations

from typing import Any

from moesim.engine.recorder import Recorder
from moesim.engine.sim import HOST_STREAM

RISK_RATIO = 0.5  # host issue above half the GPU work: report it as a bottleneck


def host_issue(recorder: Recorder, launch_ns: float, launch_source: str, mode: str = "ahead") -> dict[str, Any]:
    """The GPU whose launches take the largest share of its compute time, with the figures;
    ``mode`` is the scenario's host mode (``"eager"``: the host threads' simulated busy time too)."""
    kernels: dict[int, int] = {}
    busy: dict[int, int] = {}
    host: dict[int, int] = {}
    for s in recorder.spans:
        if s.stream == HOST_STREAM:
            host[s.rank] = host.get(s.rank, 0) + (s.end_ns - s.start_ns)
            continue
        n = s.args.get("kernels", 0) if s.args else 0
        if n and s.stream == "compute":
            kernels[s.rank] = kernels.get(s.rank, 0) + int(n)
            busy[s.rank] = busy.get(s.rank, 0) + (s.end_ns - s.start_ns)
    if not kernels or launch_ns <= 0:
        return {}
    worst = max(sorted(kernels), key=lambda g: kernels[g] * launch_ns / max(busy[g], 1))
    issue_ns = kernels[worst] * launch_ns
    out = {"mode": mode, "gpu": worst, "kernels": kernels[worst], "launch_us": round(launch_ns / 1e3, 2),
           "launch_source": launch_source, "issue_ms": round(issue_ns / 1e6, 3),
           "gpu_busy_ms": round(busy[worst] / 1e6, 3), "ratio": round(issue_ns / max(busy[worst], 1), 4)}
    if host:
        g = max(sorted(host), key=lambda r: host[r])
        step = max(int(recorder.end_ns), 1)
        out.update(host_gpu=g, host_busy_ms=round(host[g] / 1e6, 3), host_busy_fraction=round(host[g] / step, 4))
    return out


def host_issue_message(rec: dict[str, Any]) -> "str | None":
    """A bottleneck line when the launches reach ``RISK_RATIO`` of the GPU work (simulated host
    threads: when the busiest one is busy for that share of the step)."""
    if rec and "host_busy_fraction" in rec:
        if rec["host_busy_fraction"] < RISK_RATIO:
            return None
        return (f"eager host: GPU {rec['host_gpu']}'s host thread busy {rec['host_busy_ms']:.1f} ms, "
                f"{100 * rec['host_busy_fraction']:.0f}% of the step, issuing its kernels and collective calls "
                f"(launch {rec['launch_us']:.1f} us, {rec['launch_source']}); CUDA graphs or larger kernels help")
    if not rec or rec["ratio"] < RISK_RATIO:
        return None
    return (f"eager host issue: GPU {rec['gpu']} launches {rec['kernels']:,} kernels per step, about "
            f"{rec['issue_ms']:.1f} ms of host time in eager PyTorch ({rec['launch_us']:.1f} us each, {rec['launch_source']}) "
            f"for {rec['gpu_busy_ms']:.1f} ms of GPU work ({rec['ratio']:.2f}x); the step may be host-bound "
            "(simulate it with --set host=eager; CUDA graphs or larger kernels help)")
