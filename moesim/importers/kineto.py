"""PyTorch profiler (Kineto) Chrome traces: GPU kernels classified into moesim's op classes.

:func:`load_kineto` reads a trace written by ``torch.profiler`` (``export_chrome_trace``, plain
or ``.gz``) and keeps its GPU activity: kernels, memcpys and memsets (``ph: "X"``, categories
``kernel``, ``gpu_memcpy``, ``gpu_memset``), each with the aten op that launched it where the
trace links them (``External id``) and the input shapes where it recorded them
(``record_shapes=True``). A truncated file is refused naming the byte where it stops, unless
``salvage=True``, which keeps every complete event before it and says how many.

:func:`classify` names a kernel's comparison class (:data:`CLASSES`): ``GEMM``, ``GEMM fp8``,
``grouped GEMM``, ``attention``, ``norm``, ``elementwise`` (pointwise, casts, copies, fills,
reductions, softmax), ``permute & router`` (gather / scatter / index, sort, top-k, histogram,
scan), ``memcpy``, one ``nccl: <kind>`` per collective, else ``unclassified`` (reported with its
share of time, never dropped). Kernel names are matched by substrings of the libraries that
emit them (cuBLAS ``nvjet`` / ``sm90_xmma`` / CUTLASS, FlashAttention / cuDNN SDPA, ATen's
``at::native`` kernels, Triton, NCCL).

Steps: ``ProfilerStep#N`` annotations where the trace has them (a kernel belongs to the step
whose CPU range holds its launch; kernels launched outside every step are in no step, counted in
``notes`` and left out of :attr:`KinetoTrace.stepped_events`); else the kernel sequence's shortest exact period (a loop of
identical iterations, as ``moesim.calibrate.layer_workloads --profile-trace`` writes); else one step.
"""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
NCCL_KINDS = (("allreduce", "all_reduce"), ("all_reduce", "all_reduce"), ("allgather", "all_gather"),
              ("all_gather", "all_gather"), ("reducescatter", "reduce_scatter"), ("reduce_scatter", "reduce_scatter"),
              ("alltoall", "all_to_all"), ("all_to_all", "all_to_all"), ("sendrecv", "send_recv"),
              ("send", "send_recv"), ("recv", "send_recv"), ("broadcast", "broadcast"))
CLASSES = ("GEMM", "GEMM fp8", "grouped GEMM", "attention", "norm", "elementwise", "permute & router", "memcpy",
           "nccl: all_reduce", "nccl: all_gather", "nccl: reduce_scatter", "nccl: all_to_all", "nccl: send_recv",
           "nccl: broadcast", "nccl: other", "unclassified")
# (class, substrings of the lower-cased kernel name), tried in order: first match wins.
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("grouped GEMM", ("grouped_gemm", "groupedgemm", "groupproblemshape", "grouped_mm", "moe_gemm", "group_gemm")),
    ("attention", ("flash", "fmha", "attention", "sdpa", "_attn_", "mha_")),
    ("norm", ("layer_norm", "layernorm", "rms_norm", "rmsnorm", "gammabetabackward", "batch_norm", "group_norm")),
    ("elementwise", ("arange",)),  # ATen's arange kernel carries "with_index" in its name
    ("permute & router", ("scatter", "gather", "index", "radixsort", "radix_sort", "sort", "topk", "histogram",
                          "histc", "bincount", "permute", "masked", "devicescan", "cumsum", "nonzero", "unique")),
    ("GEMM", ("nvjet", "gemm", "gemv", "xmma", "cublas", "cutlass", "s16816", "matmul", "wgmma", "splitk")),
    ("elementwise", ("elementwise", "reduce_kernel", "copy", "fill", "silu", "gelu", "softmax", "multi_tensor",
                     "adam", "cast", "triton", "cat", "functor", "where", "clamp", "dropout", "neg_kernel", "exp",
                     "pow", "sqrt", "rsqrt", "mul", "add", "sum", "mean", "amax", "quantize")),
)
_FP8 = ("e4m3", "e5m2", "fp8", "f8f8")


@dataclass(frozen=True)
class GpuEvent:
    """One kernel, memcpy or memset on the GPU; times in integer nanoseconds."""

    name: str
    category: str
    start_ns: int
    dur_ns: int
    device: int
    stream: int
    external_id: int | None = None
    correlation: int | None = None
    aten_op: str = ""
    input_dims: tuple = ()
    input_types: tuple = ()

    @property
    def op_class(self) -> str:
        return classify(self.name, self.category)


@dataclass(frozen=True)
class KinetoTrace:
    """The GPU events of a trace, split into steps, and facts about the file."""

    path: str
    device_name: str
    events: tuple[GpuEvent, ...]
    steps: tuple[tuple[GpuEvent, ...], ...]
    step_source: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def devices(self) -> tuple[int, ...]:
        return tuple(sorted({e.device for e in self.events}))

    @property
    def stepped_events(self) -> tuple[GpuEvent, ...]:
        """The GPU events inside the steps (all of them unless ProfilerStep annotations leave some out)."""
        return tuple(g for s in self.steps for g in s)


def classify(name: str, category: str = "kernel") -> str:
    """The comparison class of a GPU event (see the module docstring)."""
    if category == "gpu_memcpy":
        return "memcpy"
    if category == "gpu_memset":
        return "elementwise"
    low = name.lower()
    if "nccl" in low:
        for key, kind in NCCL_KINDS:
            if key in low:
                return f"nccl: {kind}"
        return "nccl: other"
    for cls, keys in _RULES:
        if any(k in low for k in keys):
            if cls == "GEMM" and any(k in low for k in _FP8):
                return "GEMM fp8"
            return cls
    return "unclassified"


# -- reading -------------------------------------------------------------------------------------
def load_kineto(path: str | Path, *, salvage: bool = False) -> KinetoTrace:
    """The GPU activity of a Kineto trace file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("trace", f"{str(p)!r} does not exist", "give a torch.profiler Chrome trace (.json or .json.gz)")
    text = _read_text(p)
    notes: list[str] = []
    try:
        doc = json.loads(text)
    except RecursionError:
        raise ConfigError("trace", "nested too deeply to be a trace", "give a torch.profiler Chrome trace",
                          source=str(p)) from None
    except ValueError as err:  # a JSONDecodeError, or a number of more than 4,300 digits
        if not isinstance(err, json.JSONDecodeError):
            raise ConfigError("trace", f"not valid JSON ({str(err)[:120]})", "give a torch.profiler Chrome trace",
                              source=str(p)) from None
        if not salvage:
            raise ConfigError("trace", f"not complete JSON: it stops or breaks at byte {err.pos} of {len(text)} "
                              f"({err.msg}); a truncated trace", "export the trace again, or pass --salvage to keep "
                              "the complete events before that point", source=str(p)) from None
        doc, kept = _salvage(text, str(p))
        notes.append(f"truncated at byte {err.pos} of {len(text)}: kept the {kept} complete events before it")
    events = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        raise ConfigError("trace", "has no traceEvents list", "give a torch.profiler Chrome trace", source=str(p))
    if isinstance(doc, dict) and doc.get("metadata", {}).get("producer") == "moesim":
        raise ConfigError("trace", "is a moesim simulated trace, not a profiler trace",
                          "give the real (torch.profiler) trace first, the simulated one second", source=str(p))
    gpu = _gpu_events(events)
    if not gpu:
        raise ConfigError("trace", "holds no GPU kernels", "profile with ProfilerActivity.CUDA", source=str(p))
    steps, how = _split_steps(gpu, events)
    inside = sum(len(st) for st in steps)
    if inside < len(gpu):
        outside_ns = sum(g.dur_ns for g in gpu) - sum(g.dur_ns for st in steps for g in st)
        notes.append(f"{len(gpu) - inside} of {len(gpu)} GPU events ({outside_ns / 1e6:.3f} ms of GPU time) were "
                     f"launched outside every ProfilerStep: in no step (trace compare leaves them out of both its tables)")
    device = _device_name(doc)
    return KinetoTrace(str(p), device, tuple(gpu), steps, how, tuple(notes))


def _read_text(p: Path) -> str:
    try:
        with (gzip.open(p, "rb") if p.suffix == ".gz" else p.open("rb")) as handle:
            raw = handle.read(MAX_TRACE_BYTES + 1)  # bounded: a small .gz can expand to many GB
    except (OSError, EOFError) as err:
        raise ConfigError("trace", f"cannot read ({err})", "give an intact .json or .json.gz", source=str(p)) from None
    if len(raw) > MAX_TRACE_BYTES:
        raise ConfigError("trace", f"is more than {MAX_TRACE_BYTES:,} bytes (decompressed)",
                          "profile fewer steps (a layer's fwd+bwd is a few MB)", source=str(p))
    return raw.decode("utf-8", errors="replace")


MAX_TRACE_BYTES = 2 << 30


def _salvage(text: str, src: str) -> tuple[dict[str, Any], int]:
    """The complete events of a truncated ``{"traceEvents": [...`` document, in order."""
    start = text.find('"traceEvents"')
    bracket = text.find("[", start)
    if start < 0 or bracket < 0:
        raise ConfigError("trace", "truncated before its traceEvents list", "export the trace again", source=src)
    decoder = json.JSONDecoder()
    events: list[Any] = []
    pos = bracket + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        events.append(obj)
    head = text[:start].rstrip().rstrip(",") + "}"
    try:
        doc = json.loads(head)
    except json.JSONDecodeError:
        doc = {}
    return {**doc, "traceEvents": events}, len(events)


def _gpu_events(events: list[Any]) -> list[GpuEvent]:
    ops = _aten_ops(events)
    out = []
    for e in events:
        if not isinstance(e, dict) or e.get("ph") != "X" or e.get("cat") not in GPU_CATEGORIES:
            continue
        args = e.get("args") or {}
        ext = args.get("External id")
        op = ops.get(ext, {}) if isinstance(ext, int) else {}
        out.append(GpuEvent(name=str(e.get("name", "")), category=str(e["cat"]), start_ns=_ns(e.get("ts", 0)),
                            dur_ns=_ns(e.get("dur", 0)), device=int(args.get("device", e.get("pid", 0)) or 0),
                            stream=int(args.get("stream", e.get("tid", 0)) or 0),
                            external_id=ext if isinstance(ext, int) else None,
                            correlation=args.get("correlation") if isinstance(args.get("correlation"), int) else None,
                            aten_op=op.get("name", ""),
                            input_dims=_freeze(op.get("dims")), input_types=_freeze(op.get("types"))))
    return sorted(out, key=lambda g: (g.start_ns, g.stream, g.name))


def _aten_ops(events: list[Any]) -> dict[int, dict[str, Any]]:
    """External id -> the innermost CPU op with that id (its name, and shapes if recorded)."""
    ops: dict[int, dict[str, Any]] = {}
    for e in events:
        if not isinstance(e, dict) or e.get("cat") != "cpu_op":
            continue
        args = e.get("args") or {}
        ext = args.get("External id")
        if isinstance(ext, int):
            ops[ext] = {"name": str(e.get("name", "")), "dims": args.get("Input Dims"), "types": args.get("Input type")}
    return ops


def _freeze(value: Any) -> tuple:
    if isinstance(value, list):
        return tuple(_freeze(v) if isinstance(v, list) else v for v in value)
    return ()


def _ns(us: Any) -> int:
    try:
        return int(round(float(us) * 1000))
    except (TypeError, ValueError):
        return 0


def _device_name(doc: Any) -> str:
    props = doc.get("deviceProperties") if isinstance(doc, dict) else None
    if isinstance(props, list) and props and isinstance(props[0], dict):
        return str(props[0].get("name", ""))
    return ""


# -- steps ---------------------------------------------------------------------------------------
def _split_steps(gpu: list[GpuEvent], events: list[Any]) -> tuple[tuple[tuple[GpuEvent, ...], ...], str]:
    marked = _profiler_steps(gpu, events)
    if marked:
        return marked, "ProfilerStep annotations"
    period = _period([g.name for g in gpu])
    if period < len(gpu):
        return tuple(tuple(gpu[i:i + period]) for i in range(0, len(gpu), period)), \
            f"repeating kernel sequence ({len(gpu) // period} identical iterations of {period} GPU events)"
    return (tuple(gpu),), "one step (no ProfilerStep annotations, no repeating kernel sequence)"


def _profiler_steps(gpu: list[GpuEvent], events: list[Any]) -> tuple[tuple[GpuEvent, ...], ...]:
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))) for e in events
                   if isinstance(e, dict) and e.get("ph") == "X" and str(e.get("name", "")).startswith("ProfilerStep#")
                   and e.get("cat") in ("user_annotation", "cpu_op", "python_function"))
    if not spans:
        return ()
    launches = {}
    for e in events:
        if isinstance(e, dict) and e.get("cat") in ("cuda_runtime", "cuda_driver"):
            corr = (e.get("args") or {}).get("correlation")
            if corr is not None:
                launches[corr] = float(e.get("ts", 0))
    steps: list[list[GpuEvent]] = [[] for _ in spans]
    for g in gpu:
        t = launches.get(g.correlation, g.start_ns / 1000)
        idx = next((i for i, (a, b) in enumerate(spans) if a <= t <= b), None)
        if idx is not None:
            steps[idx].append(g)
    return tuple(tuple(s) for s in steps if s)


def _period(names: list[str]) -> int:
    """The shortest p that divides len(names) such that names repeat every p (len(names) if none)."""
    n = len(names)
    for p in range(1, n // 2 + 1):
        if n % p == 0 and all(names[i] == names[i % p] for i in range(p, n)):
            return p
    return n


# -- summaries -----------------------------------------------------------------------------------
def class_times_ns(events: tuple[GpuEvent, ...] | list[GpuEvent]) -> dict[str, int]:
    """GPU time per class (the sum of event durations; concurrent streams each count)."""
    out: dict[str, int] = {}
    for g in events:
        out[g.op_class] = out.get(g.op_class, 0) + g.dur_ns
    return out


def unclassified_names(events: tuple[GpuEvent, ...], top: int = 5) -> list[tuple[str, int, float]]:
    """The unclassified kernels with the most time: (short name, ns, share of all GPU time)."""
    total = sum(g.dur_ns for g in events) or 1
    by: dict[str, int] = {}
    for g in events:
        if g.op_class == "unclassified":
            short = re.sub(r"\s+", " ", g.name)[:90]
            by[short] = by.get(short, 0) + g.dur_ns
    return [(n, ns, ns / total) for n, ns in sorted(by.items(), key=lambda kv: -kv[1])[:top]]
