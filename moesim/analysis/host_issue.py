"""Could an eager host keep up? Host issue time per GPU against the GPU work it carries.

``moesim run`` assumes by default (``host="graphs"``) that the host issues kernels ahead of the
GPU (as CUDA graphs or a fast host do). The validation (docs/accuracy.md) shows where that fails:
eager PyTorch programs whose kernels are short are as slow as their Python thread. This check
says how close a simulated step is to that regime: per GPU, the host time eager PyTorch would
spend issuing its compute tasks, priced exactly as ``host="eager"`` prices them
(:class:`moesim.lowering.host.HostPricing`: per op class where the profile measured ``host_op``
rows, else per counted kernel, or ``Scenario.host_launch_us``), against the time the GPU spends
on those tasks. It reads only the recorded spans, so it works the same for both engines (a
reduced run's lane stands for every GPU of its pipeline rank).

With ``Scenario.host = "eager"`` the host threads are simulated (:mod:`moesim.lowering.host`):
the record then also gives the busiest host thread's time against the step, how the simulated
host tasks were priced (``issued``: per op class, per counted kernel for compute tasks with no
ops known, per call, syncs), and the message says how much of the step the host thread was busy.
"""
from __future__ import annotations

from typing import Any

from moesim.engine.recorder import Recorder
from moesim.engine.sim import HOST_STREAM
from moesim.lowering.host import HostPricing

RISK_RATIO = 0.5  # host issue above half the GPU work: report it as a bottleneck


def host_issue(recorder: Recorder, pricing: HostPricing, mode: str = "graphs") -> dict[str, Any]:
    """The GPU whose issue takes the largest share of its compute time, with the figures;
    ``mode`` is the scenario's host mode (``"eager"``: the host threads' simulated busy time too).
    Compute spans with no kernels counted and no host time stated are not issued work (ignored)."""
    kernels: dict[int, int] = {}
    issue: dict[int, int] = {}
    busy: dict[int, int] = {}
    host: dict[int, int] = {}
    issued: dict[str, int] = {}   # simulated host tasks by how they were priced: op, kernel, call, sync
    priced = [0, 0]   # compute tasks priced per op class, at the per-kernel figure
    for s in recorder.spans:
        if s.stream == HOST_STREAM:
            host[s.rank] = host.get(s.rank, 0) + (s.end_ns - s.start_ns)
            how = (s.args or {}).get("priced", "sync")
            issued[how] = issued.get(how, 0) + 1
            continue
        args = s.args or {}
        n = int(args.get("kernels", 0) or 0)
        if s.stream != "compute" or not (n or args.get("host_ns") or args.get("ops")):
            continue
        ns, per_op = pricing.compute_ns(args, s.category)
        priced[0 if per_op else 1] += 1
        kernels[s.rank] = kernels.get(s.rank, 0) + n
        issue[s.rank] = issue.get(s.rank, 0) + ns
        busy[s.rank] = busy.get(s.rank, 0) + (s.end_ns - s.start_ns)
    if not issue or not any(issue.values()):
        return {}
    worst = max(sorted(issue), key=lambda g: issue[g] / max(busy[g], 1))
    out = {"mode": mode, "gpu": worst, "kernels": kernels[worst], "pricing": _pricing_name(pricing, priced),
           "launch_us": round(pricing.kernel_ns / 1e3, 2), "launch_source": pricing.source,
           "per_op_tasks": priced[0], "per_kernel_tasks": priced[1],
           "issue_ms": round(issue[worst] / 1e6, 3), "gpu_busy_ms": round(busy[worst] / 1e6, 3),
           "ratio": round(issue[worst] / max(busy[worst], 1), 4)}
    speeds = pricing.model.host_speeds() if callable(getattr(pricing.model, "host_speeds", None)) else {}
    if len(speeds) > 1 and pricing.per_op:
        out["host_speed"] = {"priced": getattr(pricing.model, "host_speed", "mean"), "runs": len(speeds),
                             "fastest": round(min(speeds.values()), 3), "slowest": round(max(speeds.values()), 3)}
    if host:
        g = max(sorted(host), key=lambda r: host[r])
        step = max(int(recorder.end_ns), 1)
        out.update(host_gpu=g, host_busy_ms=round(host[g] / 1e6, 3), host_busy_fraction=round(host[g] / step, 4),
                   issued=dict(sorted(issued.items())))
    return out


def _pricing_name(pricing: HostPricing, priced: list[int]) -> str:
    if not pricing.per_op:
        return "per counted kernel"
    return "per op class" if not priced[1] else f"per op class ({priced[1]} tasks without ops per counted kernel)"


def _how(rec: dict[str, Any]) -> str:
    if rec["pricing"].startswith("per op class"):
        return f"{rec['pricing']}, {rec['launch_source']}"
    return f"{rec['launch_us']:.1f} us per counted kernel, {rec['launch_source']}"


def speed_span(rec: "dict[str, Any] | None") -> "tuple[float, float] | None":
    """(fastest, slowest) host run of the profile as factors on the host speed the run was priced
    at (``Scenario.host_speed``); None where the profile measured fewer than two host runs."""
    sp = (rec or {}).get("host_speed")
    if not sp:
        return None
    priced = {"mean": 1.0, "fastest": sp["fastest"], "slowest": sp["slowest"]}[sp["priced"]]
    return sp["fastest"] / priced, sp["slowest"] / priced


def _speed_note(rec: dict[str, Any]) -> str:
    """How far the host-bound figure moves with the host CPU, by the profile's own host runs."""
    sp = rec.get("host_speed")
    if not sp:
        return ""
    return (f"; host time scales with the host CPU: this profile's {sp['runs']} host runs span "
            f"x{sp['fastest']:.2f}-x{sp['slowest']:.2f} of the mean (priced: {sp['priced']}; "
            "--set host_speed=slowest|fastest for either end)")


def host_issue_message(rec: dict[str, Any]) -> "str | None":
    """A bottleneck line when the issue time reaches ``RISK_RATIO`` of the GPU work (simulated host
    threads: when the busiest one is busy for that share of the step)."""
    if rec and "host_busy_fraction" in rec:
        if rec["host_busy_fraction"] < RISK_RATIO:
            return None
        return (f"eager host: GPU {rec['host_gpu']}'s host thread busy {rec['host_busy_ms']:.1f} ms, "
                f"{100 * rec['host_busy_fraction']:.0f}% of the step, issuing its kernels and collective calls "
                f"({_how(rec)}); CUDA graphs or larger kernels help{_speed_note(rec)}")
    if not rec or rec["ratio"] < RISK_RATIO:
        return None
    return (f"eager host issue: GPU {rec['gpu']} launches {rec['kernels']:,} kernels per step, about "
            f"{rec['issue_ms']:.1f} ms of host time in eager PyTorch ({_how(rec)}) "
            f"for {rec['gpu_busy_ms']:.1f} ms of GPU work ({rec['ratio']:.2f}x); the step may be host-bound "
            f"(simulate it with --set host=eager; CUDA graphs or larger kernels help){_speed_note(rec)}")
