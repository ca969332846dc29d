"""``moesim calibrate from-trace``: which of a profile's kernel classes a real trace can fill in.

A calibration profile prices ops from measured rows keyed by op class: ``gemm`` (by dtype),
``grouped_gemm_v``, ``attention`` (fwd / bwd) and ``memory`` rows of a ``kind`` and ``variant``
(``permute/scatter_add``, ``elementwise/add``...). A kernel class without rows falls back to the
kind's generic curve or the roofline. This module takes a PyTorch profiler trace of the user's
own run (:mod:`moesim.importers.kineto`), names the profile class of every kernel from the aten
op that launched it (:data:`ATEN_CLASSES`), and reports per class: kernels, GPU time, whether
the profile has rows for it, and for the classes it lacks, new rows fitted from the trace.

A row needs the kernel's size: bytes moved for a memory op, ``m, n, k`` for a GEMM. Kineto
records input shapes only under ``record_shapes=True``; a class whose kernels carry no shapes is
reported as missing and not fittable, with that fix. Rows are one per aten op call (its kernels'
time summed), ``nbytes`` = every input read once plus one output the size of the largest input
(the convention of moesim's memory rows: bytes read plus bytes written), marked
``source: trace``. :func:`fragment` writes them as a profile file carrying the target
profile's header, so ``moesim calibrate merge PROFILE FRAGMENT`` adds them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError
from moesim.importers.kineto import GpuEvent, KinetoTrace, load_kineto

# aten op -> (profile op, kind, variant); backward ops are their own classes.
ATEN_CLASSES: dict[str, tuple[str, str, str]] = {
    "aten::mm": ("gemm", "", ""), "aten::addmm": ("gemm", "", ""), "aten::bmm": ("gemm", "", ""),
    "aten::_scaled_mm": ("gemm", "", "fp8"), "aten::_grouped_mm": ("grouped_gemm_v", "", ""),
    "aten::_scaled_grouped_mm": ("grouped_gemm_v", "", "fp8"),
    "aten::_flash_attention_forward": ("attention", "", "fwd"),
    "aten::_flash_attention_backward": ("attention", "", "bwd"),
    "aten::_efficient_attention_forward": ("attention", "", "fwd"),
    "aten::_efficient_attention_backward": ("attention", "", "bwd"),
    "aten::_cudnn_attention_forward": ("attention", "", "fwd"),
    "aten::_cudnn_attention_backward": ("attention", "", "bwd"),
    "aten::add": ("memory", "elementwise", "add"), "aten::add_": ("memory", "elementwise", "add"),
    "aten::mul": ("memory", "elementwise", "mul"), "aten::mul_": ("memory", "elementwise", "mul"),
    "aten::silu": ("memory", "elementwise", "silu"), "aten::silu_backward": ("memory", "elementwise", "silu_backward"),
    "aten::sigmoid": ("memory", "elementwise", "sigmoid_fp32"), "aten::cumsum": ("memory", "elementwise", "cumsum"),
    "aten::sub": ("memory", "elementwise", "sub"), "aten::neg": ("memory", "elementwise", "neg"),
    "aten::div": ("memory", "elementwise", "div"), "aten::div_": ("memory", "elementwise", "div"),
    "aten::floor_divide": ("memory", "elementwise", "floor_divide"),
    "aten::remainder": ("memory", "elementwise", "remainder"), "aten::arange": ("memory", "elementwise", "arange"),
    "aten::sum": ("memory", "elementwise", "sum"),
    "aten::copy_": ("memory", "copy", "copy"), "aten::cat": ("memory", "copy", "cat"),
    "aten::fill_": ("memory", "copy", "zeros"), "aten::zero_": ("memory", "copy", "zeros"),
    "aten::_softmax": ("memory", "softmax", "softmax"),
    "aten::_softmax_backward_data": ("memory", "softmax", "softmax_backward"),
    "aten::_fused_rms_norm": ("memory", "norm", "rmsnorm"),
    "aten::_fused_rms_norm_backward": ("memory", "norm", "rmsnorm_backward"),
    "aten::native_layer_norm": ("memory", "norm", "layernorm"),
    "aten::native_layer_norm_backward": ("memory", "norm", "layernorm_backward"),
    "aten::gather": ("memory", "permute", "gather"), "aten::scatter_add_": ("memory", "permute", "scatter_add"),
    "aten::scatter_add": ("memory", "permute", "scatter_add"), "aten::scatter": ("memory", "permute", "scatter"),
    "aten::scatter_": ("memory", "permute", "scatter"), "aten::index_add_": ("memory", "permute", "index_add"),
    "aten::index_select": ("memory", "permute", "index_select"), "aten::index": ("memory", "permute", "index"),
    "aten::_index_put_impl_": ("memory", "permute", "index_put"),
    "aten::masked_select": ("memory", "permute", "masked_select"),
    "aten::sort": ("memory", "sort", "argsort"), "aten::argsort": ("memory", "sort", "argsort"),
    "aten::topk": ("memory", "topk", "topk"), "aten::histc": ("memory", "histogram", "histc"),
    "aten::bincount": ("memory", "histogram", "bincount"),
}
DTYPE_BYTES = {"c10::BFloat16": 2, "c10::Half": 2, "float": 4, "double": 8, "long int": 8, "int": 4, "bool": 1,
               "unsigned char": 1, "signed char": 1, "c10::Float8_e4m3fn": 1, "c10::Float8_e5m2": 1}
DTYPE_NAMES = {"c10::BFloat16": "bf16", "c10::Half": "fp16", "float": "fp32", "c10::Float8_e4m3fn": "fp8"}


@dataclass(frozen=True)
class TraceClass:
    """One profile class as the trace shows it."""

    key: tuple[str, str, str]
    kernels: int
    time_ns: int
    in_profile: bool
    rows: tuple[dict[str, Any], ...]
    why_not: str = ""

    @property
    def label(self) -> str:
        op, kind, variant = self.key
        return f"{op} {kind}/{variant}" if op == "memory" else (f"{op} {variant}".strip())


@dataclass(frozen=True)
class FromTrace:
    trace: KinetoTrace
    profile_path: str
    classes: tuple[TraceClass, ...]
    unmapped: tuple[tuple[str, int, int], ...]  # (aten op or kernel name, kernels, ns)

    @property
    def missing(self) -> tuple[TraceClass, ...]:
        return tuple(c for c in self.classes if not c.in_profile)

    @property
    def fitted_rows(self) -> list[dict[str, Any]]:
        return [r for c in self.missing for r in c.rows]


def profile_keys(profile: dict[str, Any]) -> set[tuple[str, str, str]]:
    """The classes a profile has rows for, in :data:`ATEN_CLASSES`' key form."""
    keys: set[tuple[str, str, str]] = set()
    for s in profile.get("samples", []):
        op = s.get("op")
        if op == "memory":
            keys.add(("memory", str(s.get("kind", "")), str(s.get("variant", ""))))
        elif op in ("gemm", "grouped_gemm_v"):
            keys.add((op, "", "fp8" if s.get("dtype") == "fp8" else ""))
        elif op == "attention":
            keys.add(("attention", "", str(s.get("direction", "fwd"))))
    return keys


def from_trace(trace_path: str | Path, profile: str | Path | None = None, *, salvage: bool = False) -> FromTrace:
    """The report (see the module docstring) for ``trace_path`` against ``profile`` (a path or a
    shipped name; None: the shipped profile of the trace's GPU)."""
    from moesim.costs.profile import resolve_profile_path

    trace = load_kineto(trace_path, salvage=salvage)
    path = resolve_profile_path(profile or _profile_for(trace.device_name))
    doc = _read_profile(path)
    if trace.device_name and doc.get("device") and trace.device_name != doc["device"]:
        raise ConfigError("--profile", f"profile {path.name} is of {doc['device']!r}, the trace of "
                          f"{trace.device_name!r}", "give the profile of the GPU the trace ran on")
    have = profile_keys(doc)
    groups, unmapped = _group(trace.events)
    classes = tuple(_trace_class(key, calls, key in have) for key, calls in
                    sorted(groups.items(), key=lambda kv: -sum(g.dur_ns for c in kv[1] for g in c)))
    return FromTrace(trace, str(path), classes, tuple(unmapped))


def fragment(result: FromTrace) -> dict[str, Any]:
    """The fitted rows as a profile file with the target profile's header (for ``calibrate merge``)."""
    doc = _read_profile(Path(result.profile_path))
    head = {k: doc[k] for k in ("schema_version", "device", "driver", "cuda", "nccl", "torch", "gpu_count",
                                "gpu_memory_bytes", "sm_count") if k in doc}
    run = {"date": doc.get("date", ""), "command": f"moesim calibrate from-trace {result.trace.path}",
           "gpu_count": doc.get("gpu_count", 1), "gpu_topology": "", "mode": "trace", "environment": {}}
    return {**head, "date": doc.get("date", ""), "command": run["command"], "gpu_topology": "",
            "notes": "rows fitted from a PyTorch profiler trace: one row per aten op call, its kernels' time summed",
            "runs": [run], "errors": [], "borrowed": [], "samples": [{**r, "run": 0} for r in result.fitted_rows]}


# -- internals -----------------------------------------------------------------------------------
def _profile_for(device: str) -> str:
    low = device.lower()
    if "h100" in low:
        return "h100_sxm"
    if "h200" in low:
        return "h200_sxm"
    raise ConfigError("--profile", f"no shipped profile for the trace's GPU {device or '(unnamed)'!r}",
                      "give --profile PATH|NAME")


def _read_profile(path: Path) -> dict[str, Any]:
    import json

    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError("--profile", f"cannot read {path} ({err})") from None
    if not isinstance(doc, dict):
        raise ConfigError("--profile", f"{path} is not a profile (a JSON object)")
    return doc


def _group(events: tuple[GpuEvent, ...]) -> tuple[dict[tuple[str, str, str], list[list[GpuEvent]]], list]:
    """Kernels by profile class, as calls (the kernels of one aten op call); and the unmapped."""
    calls: dict[tuple[str, str, str], dict[int, list[GpuEvent]]] = {}
    unmapped: dict[str, list[int]] = {}
    for g in events:
        key = ATEN_CLASSES.get(g.aten_op)
        if key is None:
            name = g.aten_op or f"(no aten op) {g.name[:60]}"
            entry = unmapped.setdefault(name, [0, 0])
            entry[0] += 1
            entry[1] += g.dur_ns
            continue
        calls.setdefault(key, {}).setdefault(g.external_id if g.external_id is not None else id(g), []).append(g)
    groups = {k: list(v.values()) for k, v in calls.items()}
    return groups, sorted(((n, c, t) for n, (c, t) in unmapped.items()), key=lambda x: -x[2])


def _trace_class(key: tuple[str, str, str], calls: list[list[GpuEvent]], in_profile: bool) -> TraceClass:
    kernels = sum(len(c) for c in calls)
    time_ns = sum(g.dur_ns for c in calls for g in c)
    if in_profile:
        return TraceClass(key, kernels, time_ns, True, ())
    rows = tuple(r for r in (_row(key, c) for c in calls) if r is not None)
    if rows:
        return TraceClass(key, kernels, time_ns, False, rows)
    if not any(c[0].input_dims for c in calls):
        why = "the trace recorded no input shapes (profile with torch.profiler.profile(record_shapes=True))"
    else:
        why = "no moesim row form for this op's shapes" if key[0] not in ("memory", "gemm") else \
            "shapes recorded but not readable"
    return TraceClass(key, kernels, time_ns, False, (), why)


def _row(key: tuple[str, str, str], call: list[GpuEvent]) -> dict[str, Any] | None:
    first = call[0]
    sizes = [(_numel(d), t) for d, t in zip(first.input_dims, first.input_types) if isinstance(d, tuple)]
    sizes = [(n, t) for n, t in sizes if n and t in DTYPE_BYTES]
    if not sizes:
        return None
    time_ns = float(sum(g.dur_ns for g in call))
    op, kind, variant = key
    if op == "memory":
        read = sum(n * DTYPE_BYTES[t] for n, t in sizes)
        largest = max(n * DTYPE_BYTES[t] for n, t in sizes)
        return {"op": "memory", "kind": kind, "variant": variant, "dtype": DTYPE_NAMES.get(sizes[0][1], "bf16"),
                "cache": "cold", "nbytes": int(read + largest), "time_ns": time_ns, "repeats": 1, "source": "trace"}
    if op == "gemm" and len(first.input_dims) >= 2:
        a, b = first.input_dims[-2], first.input_dims[-1]
        if len(a) == 2 and len(b) == 2 and a[1] == b[0]:
            return {"op": "gemm", "layout": "fwd", "dtype": "fp8" if variant == "fp8" else "bf16", "m": a[0], "n": b[1],
                    "k": a[1], "time_ns": time_ns, "repeats": 1, "source": "trace"}
    return None


def _numel(dims: tuple) -> int:
    return math.prod(int(x) for x in dims) if dims and all(isinstance(x, int) for x in dims) else 0
