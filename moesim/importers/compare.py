"""``moesim trace compare``: a real profiler trace against a moesim trace, per op class and step.

The real side is a Kineto trace (:mod:`moesim.importers.kineto`), classified kernel by kernel.
The simulated side is a trace moesim wrote (``moesim layer -o`` or ``moesim run``): a compute
span's time is split over its op classes in proportion to its ``op_ns`` (the cost model's time
of each kernel class, as ``moesim layer`` reports it), or over the ops it lists (``ops``, split
evenly); communication spans count as ``nccl: <collective>``; host threads are left out (they
are not GPU time). moesim's classes map onto the comparison classes by :func:`sim_class`
(``memory: norm`` -> ``norm``; elementwise, copy, cast and softmax -> ``elementwise``; permute,
sort, top-k, histogram -> ``permute & router``).

Both sides are GPU busy time per step and GPU (summed kernel durations, so overlapping streams
each count), over the same kernels in the per-class and the per-step table: a real step is one
iteration of the profiled loop (with ``ProfilerStep#N`` annotations, kernels launched outside
every step are left out of both tables and counted in a note), a simulated step one
microbatch (``moesim layer --iterations N``) or, for a run without microbatch marks, the
whole trace. The report lists every class with measured, simulated and the miss, the steps side
by side, and the biggest misses first.
"""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError
from moesim.importers.kineto import KinetoTrace, class_times_ns, load_kineto, unclassified_names

_SIM_CLASS_RULES = (("grouped GEMM", "grouped GEMM"), ("GEMM fp8", "GEMM fp8"), ("GEMM", "GEMM"),
                    ("attention", "attention"), ("memory: norm", "norm"), ("memory: permute", "permute & router"),
                    ("memory: sort", "permute & router"), ("memory: topk", "permute & router"),
                    ("memory: histogram", "permute & router"), ("memory: ", "elementwise"),
                    ("sync: counts to host", "memcpy"), ("compute: optimizer", "elementwise"),
                    ("compute: grad_accum", "elementwise"))
_COMM = {"all_reduce": "nccl: all_reduce", "all_gather": "nccl: all_gather", "reduce_scatter": "nccl: reduce_scatter",
         "all_to_all": "nccl: all_to_all", "send": "nccl: send_recv", "recv": "nccl: send_recv",
         "send_recv": "nccl: send_recv", "broadcast": "nccl: broadcast"}
_OP_REPR = re.compile(r"^(GroupedGemm|Gemm|Attention|MemoryOp)\((.*)$")
MAX_SIM_TRACE_BYTES = 2 << 30  # decompressed; checked while reading


@dataclass(frozen=True)
class SimTrace:
    """GPU time per comparison class and step of a moesim trace, per GPU."""

    path: str
    scenario: str
    cost_model: str
    gpus: int
    steps: tuple[dict[str, float], ...]

    @property
    def per_step(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.steps:
            for k, v in s.items():
                out[k] = out.get(k, 0.0) + v / len(self.steps)
        return out


@dataclass(frozen=True)
class ClassRow:
    name: str
    measured_ns: float
    simulated_ns: float

    @property
    def miss_ns(self) -> float:
        return self.simulated_ns - self.measured_ns

    @property
    def miss_pct(self) -> float | None:
        return 100.0 * self.miss_ns / self.measured_ns if self.measured_ns else None


@dataclass(frozen=True)
class Comparison:
    """Measured vs simulated GPU time per class (per step and GPU), and per step."""

    real: KinetoTrace
    sim: SimTrace
    rows: tuple[ClassRow, ...]
    real_steps_ns: tuple[float, ...]
    sim_steps_ns: tuple[float, ...]
    unclassified: tuple[tuple[str, int, float], ...]

    @property
    def biggest_misses(self) -> tuple[ClassRow, ...]:
        return tuple(sorted(self.rows, key=lambda r: (-abs(r.miss_ns), r.name)))

    def to_dict(self) -> dict[str, Any]:
        return {"real": self.real.path, "simulated": self.sim.path, "device": self.real.device_name,
                "real_steps": len(self.real.steps), "step_source": self.real.step_source,
                "real_events_in_steps": len(self.real.stepped_events), "real_events": len(self.real.events),
                "sim_steps": len(self.sim.steps), "cost_model": self.sim.cost_model,
                "classes": [{"class": r.name, "measured_ns": round(r.measured_ns), "simulated_ns": round(r.simulated_ns),
                             "miss_ns": round(r.miss_ns),
                             "miss_pct": None if r.miss_pct is None else round(r.miss_pct, 1)} for r in self.rows],
                "real_steps_ns": [round(x) for x in self.real_steps_ns],
                "sim_steps_ns": [round(x) for x in self.sim_steps_ns],
                "unclassified": [{"name": n, "ns": ns, "share": round(s, 4)} for n, ns, s in self.unclassified],
                "notes": list(self.real.notes)}


def sim_class(name: str) -> str:
    """The comparison class of one of moesim's op classes (see the module docstring)."""
    if name.startswith("comm: "):
        return _COMM.get(name[6:], "nccl: other")
    for prefix, cls in _SIM_CLASS_RULES:
        if name.startswith(prefix):
            return cls
    return "unclassified"


def load_sim_trace(path: str | Path) -> SimTrace:
    """GPU time per class and step of a trace moesim wrote (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("simulated trace", f"{str(p)!r} does not exist",
                          "give the *.trace.json that moesim layer -o or moesim run wrote")
    try:
        with (gzip.open(p, "rb") if p.suffix == ".gz" else p.open("rb")) as handle:
            raw = handle.read(MAX_SIM_TRACE_BYTES + 1)  # bounded: a small .gz can expand to many GB
        if len(raw) > MAX_SIM_TRACE_BYTES:
            raise ValueError(f"more than {MAX_SIM_TRACE_BYTES:,} bytes decompressed")
        doc = json.loads(raw)
    except (ValueError, RecursionError, OSError, EOFError) as err:  # also 5,000-digit numbers, 10^5-deep lists
        raise ConfigError("simulated trace", f"not valid JSON ({str(err)[:160]})", "give a trace moesim wrote",
                          source=str(p)) from None
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or meta.get("producer") != "moesim":
        raise ConfigError("simulated trace", "was not written by moesim (no metadata.producer 'moesim')",
                          "give the real trace first and moesim's *.trace.json second", source=str(p))
    threads = {(e.get("pid"), e.get("tid")): str((e.get("args") or {}).get("name", ""))
               for e in doc.get("traceEvents", []) if e.get("ph") == "M" and e.get("name") == "thread_name"}
    steps: dict[int, dict[str, float]] = {}
    gpus: set[str] = set()
    for e in doc.get("traceEvents", []):
        if e.get("ph") != "X":
            continue
        thread = threads.get((e.get("pid"), e.get("tid")), "")
        gpu, _, stream = thread.partition(" ")
        if not gpu.startswith("gpu") or stream.startswith("host"):
            continue
        gpus.add(gpu)
        args = e.get("args") or {}
        step = steps.setdefault(int(args.get("microbatch", 0) or 0), {})
        for cls, ns in _span_classes(e, args, stream):
            step[cls] = step.get(cls, 0.0) + ns
    n = max(1, len(gpus))
    ordered = tuple({k: v / n for k, v in steps[i].items()} for i in sorted(steps))
    return SimTrace(str(p), str(meta.get("scenario", "")), str(meta.get("cost_model", "")), n, ordered or ({},))


def _span_classes(e: dict[str, Any], args: dict[str, Any], stream: str) -> list[tuple[str, float]]:
    dur_ns = float(e.get("dur", 0)) * 1000
    if not stream.startswith("compute"):
        return [(sim_class(f"comm: {e.get('cat', '')}"), dur_ns)]
    parts = {k: float(v) for k, v in (args.get("op_ns") or {}).items()}
    if not parts and args.get("ops"):
        ops = args["ops"] if isinstance(args["ops"], list) else [args["ops"]]
        for op in ops:
            name = _op_class_of_repr(str(op))
            parts[name] = parts.get(name, 0.0) + 1.0
    total = sum(parts.values())
    if total > 0:
        return [(sim_class(k), dur_ns * v / total) for k, v in parts.items()]
    if args.get("host_sync"):
        return [("memcpy", dur_ns)]
    return [(sim_class(f"compute: {e.get('cat', '')}"), dur_ns)]


def _op_class_of_repr(text: str) -> str:
    """moesim's op class of an op as the trace prints it (``GroupedGemm(...)``, ``MemoryOp(kind='x'...``)."""
    m = _OP_REPR.match(text)
    if not m:
        return "unclassified"
    kind, rest = m.groups()
    if kind == "GroupedGemm" or (kind == "Gemm" and re.search(r"groups=([2-9]|\d{2,})", rest)):
        return "grouped GEMM"
    if kind == "Gemm":
        return "GEMM fp8" if "dtype='fp8'" in rest else "GEMM"
    if kind == "Attention":
        return "attention"
    mk = re.search(r"kind='([a-z_]+)'", rest)
    return f"memory: {mk.group(1) if mk else 'elementwise'}"


def compare(real_path: str | Path, sim_path: str | Path, *, salvage: bool = False) -> Comparison:
    """Measured (``real_path``) vs simulated (``sim_path``) GPU time per class and step."""
    real = load_kineto(real_path, salvage=salvage)
    sim = load_sim_trace(sim_path)
    devices = max(1, len(real.devices))
    stepped = real.stepped_events   # the kernels of the steps divided by, not those launched outside every step
    per_step = {k: v / (len(real.steps) * devices) for k, v in class_times_ns(stepped).items()}
    simulated = sim.per_step
    names = sorted(set(per_step) | set(simulated), key=lambda k: -max(per_step.get(k, 0), simulated.get(k, 0)))
    rows = tuple(ClassRow(k, per_step.get(k, 0.0), simulated.get(k, 0.0)) for k in names
                 if max(per_step.get(k, 0.0), simulated.get(k, 0.0)) >= 0.5)  # drop zero-length marks
    real_steps = tuple(sum(g.dur_ns for g in s) / devices for s in real.steps)
    sim_steps = tuple(sum(s.values()) for s in sim.steps)
    return Comparison(real, sim, rows, real_steps, sim_steps, tuple(unclassified_names(stepped)))
