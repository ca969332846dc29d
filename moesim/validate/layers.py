"""Layer and block workloads predicted through ``moesim layer``'s own path (no predictor of its own).

A layer-workloads file (format ``moesim.layer_workloads/1``, written by
:mod:`moesim.calibrate.layer_workloads`) holds one entry per timed workload: a complete
``workload`` description (shape, program, pass, routing generator and counts) and its
``measured`` per-iteration time. For each entry this module builds the block
:class:`~moesim.experiment.scenario.Scenario` that describes it
(:func:`~moesim.experiment.block.block_scenario`) and runs
:func:`~moesim.experiment.block.simulate_block`, the same build, lowering and engine as
``moesim run``:

* the model shape becomes a one-layer :class:`~moesim.workload.moe.MoESpec` (``moe_block``) or
  :class:`~moesim.workload.transformer.TransformerSpec` (``decoder``);
* routing is the entry's own :class:`~moesim.moe.routing.RoutingConfig` at step 0 (the harness
  drew its counts with that generator); :func:`routing_config` refuses an entry whose stored
  counts that config does not reproduce;
* ``experts`` and ``token_movement`` come from the entry (``framework_modules`` where the entry ran a
  framework's own module, ``workload.framework``; moesim's harness programs issue the same kernels by
  plain torch calls), ``host="eager"`` (the harness runs eager
  PyTorch), the GPU from the file's provenance device, and ``iterations`` equal to the
  iterations the harness ran back to back between its two CUDA events (the timed region, which
  starts on an idle GPU). The GPU's clock under the program's own load is a setting: compute-bound
  kernels are priced with ``gpu_clock="duty"`` where the profile measured what a burst runs at and
  how GEMM time grows with the share of time in GEMMs (its ``clock`` rows' burst times and its
  ``duty`` rows, :mod:`moesim.costs.clock`), ``"boost"`` where it has only the burst times, and
  at the profile's sustained rows otherwise (each case says so). Iterations after the first are the block's later microbatches, fresh
  draws of the same routing distribution where the harness repeats one draw: on four shapes
  (qwen3 1024/4096 tokens, mixtral, deepseek-v2-lite loop; zipf 1.0) replaying the entry's counts
  in every microbatch through a routing trace changed the time per iteration by at most 0.01%.

Nothing measured in a case (clock, host speed) is fed; only the description is read, and nothing
is cached between calls.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from moesim.errors import ConfigError
from moesim.validate.compare import Comparison

FORMAT = "moesim.layer_workloads/1"   # moesim.calibrate.layer_workloads.FORMAT (that module needs torch)
SMALL_NS = 1_000_000                  # entries faster than 1 ms are reported apart (the harness flags them)
GPUS = ("H200", "H100")
PLACEHOLDER_VOCAB = 128               # a block has no embedding or head (edges=False): the vocabulary is unused


@dataclass(frozen=True)
class LayerEntry:
    """One timed workload of a layer-workloads file."""

    case_id: str
    workload: Mapping[str, Any]
    measured_ns: float
    iterations: int
    small: bool
    host_issue_ns: "float | None" = None   # host time of issuing one iteration (sync-free cases)
    host_protocol: str = "steady"           # "steady" (host_steady_ns) or "after_sync" (older host_issue_ns)

    @property
    def kind(self) -> str:
        return str(self.workload["kind"])

    @property
    def passes(self) -> str:
        return str(self.workload["pass"])

    @property
    def workload_class(self) -> str:
        """``dense``, ``torchtitan grouped``, ``torchtitan loop``, ``megatron grouped``; a combine other
        than scatter_add is named (``torchtitan grouped, index_put_sum``); a framework's own module
        (``workload.framework``) is named by it (``megatron-core grouped``)."""
        w = self.workload
        if self.kind == "dense_layer":
            return "dense"
        name = f"{_framework(w).get('name') or w['token_movement']} {w['experts']}"
        return name if w.get("combine", "scatter_add") == "scatter_add" else f"{name}, {w['combine']}"


@dataclass(frozen=True)
class LayerFile:
    """A loaded layer-workloads file: its GPU (from the provenance device) and its entries."""

    path: str
    device: str
    gpu: str
    entries: tuple[LayerEntry, ...]
    skipped: int = 0
    provenance: Mapping[str, Any] = field(default_factory=dict)


# -- loading -------------------------------------------------------------------------------------
def load_layer_file(path: "str | Path", gpu: "str | None" = None) -> LayerFile:
    """Read and check a layer-workloads file. ``gpu`` (H200 or H100) overrides the provenance
    device; a file measured on something else (the CPU smoke) needs it."""
    p = Path(path)
    src = str(p)
    if not p.is_file():
        raise ConfigError("--layers", f"no layer-workloads file at {p}",
                          "pass a file written by python3 -m moesim.calibrate.layer_workloads")
    try:
        doc = json.loads(p.read_text())
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5,000-digit number, lists nested 10^5 deep
        raise ConfigError("--layers", f"not valid JSON ({str(exc)[:120]})", source=src) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError("format", f"{got!r} is not {FORMAT!r}",
                          "pass a file written by python3 -m moesim.calibrate.layer_workloads", source=src)
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise ConfigError("entries", "missing or not a list", source=src)
    prov = doc.get("provenance") if isinstance(doc.get("provenance"), dict) else {}
    device = str(prov.get("device", ""))
    return LayerFile(src, device, _gpu_of(device, gpu, src), tuple(_entry(e, i, src) for i, e in enumerate(entries)),
                     len(doc.get("skipped") or ()), prov)


def _gpu_of(device: str, override: "str | None", src: str) -> str:
    if override is not None:
        if override.upper() not in GPUS:
            raise ConfigError("--gpu", f"unknown GPU {override!r}", f"use one of: {', '.join(GPUS)}")
        return override.upper()
    found = [g for g in GPUS if g in device.upper()]
    if not found:
        raise ConfigError("provenance.device", f"{device!r} is not an H200 or H100",
                          "predict it as one GPU kind with --gpu H200 or --gpu H100 (e.g. a CPU smoke file)", source=src)
    return found[0]


REQUIRED_WORKLOAD = {"dense_layer": ("kind", "tokens", "seq", "batch", "pass", "model"),
                     "moe_block": ("kind", "tokens", "seq", "batch", "pass", "model", "experts", "token_movement",
                                   "routing")}
REQUIRED_MODEL = {"dense_layer": ("name", "hidden", "heads", "kv_heads", "head_dim", "ffn"),
                  "moe_block": ("name", "hidden", "num_experts", "top_k", "expert_ffn", "shared_experts")}


def _entry(e: Any, index: int, src: str) -> LayerEntry:
    where = f"entries[{index}]"
    if not isinstance(e, dict):
        raise ConfigError(where, "must be an object", source=src)
    for key in ("id", "workload", "measured"):
        if key not in e:
            raise ConfigError(f"{where}.{key}", "missing", "use a file written by moesim.calibrate.layer_workloads",
                              source=src)
    w, m = e["workload"], e["measured"]
    kind = w.get("kind") if isinstance(w, dict) else None
    if kind not in REQUIRED_WORKLOAD:
        raise ConfigError(f"{where}.workload.kind", f"unknown kind {kind!r}",
                          f"use one of: {', '.join(REQUIRED_WORKLOAD)}", source=src)
    for key in REQUIRED_WORKLOAD[kind]:
        if key not in w:
            raise ConfigError(f"{where}.workload.{key}", "missing", source=src)
    for key in REQUIRED_MODEL[kind]:
        if not isinstance(w["model"], dict) or key not in w["model"]:
            raise ConfigError(f"{where}.workload.model.{key}", "missing", source=src)
    time_ns = m.get("time_ns") if isinstance(m, dict) else None
    if isinstance(time_ns, bool) or not isinstance(time_ns, (int, float)) or not time_ns > 0:
        raise ConfigError(f"{where}.measured.time_ns", f"must be a number > 0, got {time_ns!r}", source=src)
    iters = m.get("iterations")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ConfigError(f"{where}.measured.iterations", f"must be an integer >= 1, got {iters!r}", source=src)
    key = "host_steady_ns" if "host_steady_ns" in m else "host_issue_ns"
    host_ns = m.get(key)
    if host_ns is not None and (isinstance(host_ns, bool) or not isinstance(host_ns, (int, float)) or not host_ns > 0):
        raise ConfigError(f"{where}.measured.{key}", f"must be a number > 0, got {host_ns!r}", source=src)
    return LayerEntry(str(e["id"]), w, float(time_ns), iters, bool(e.get("small", time_ns < SMALL_NS)),
                      None if host_ns is None else float(host_ns),
                      "steady" if key == "host_steady_ns" else "after_sync")


# -- the scenario ----------------------------------------------------------------------------------

def _attention_backend(workload: dict) -> str:
    """The SDPA backend a dense entry's program used: ``"flash"`` where it forced
    FlashAttention-2 (its record says ``backend: "flash (sdpa_kernel ...)"``), else ``"default"``."""
    backend = str((workload.get("attention") or {}).get("backend", ""))
    return "flash" if backend.startswith("flash") else "default"

def model_spec(entry: LayerEntry) -> Any:
    """The one-layer model the entry ran, as a spec (no preset: the entry's own shape fields)."""
    from moesim.workload.moe import MoESpec
    from moesim.workload.transformer import TransformerSpec

    m, seq = entry.workload["model"], int(entry.workload["seq"])
    if entry.kind == "dense_layer":
        return TransformerSpec(name=str(m["name"]), num_layers=1, hidden=int(m["hidden"]), num_heads=int(m["heads"]),
                               num_kv_heads=int(m["kv_heads"]), head_dim=int(m["head_dim"]), ffn_hidden=int(m["ffn"]),
                               vocab=PLACEHOLDER_VOCAB, seq_len=seq, dtype=entry.workload.get("dtype", "bf16"),
                               attention_enable_gqa=bool((entry.workload.get("attention") or {}).get("enable_gqa")),
                               attention_backend=_attention_backend(entry.workload),
                               activation_fusion=False,   # the harness's MLP: F.silu(gate(x)) * up(x)
                               rope_impl="halves")        # its RoPE: chunk, 4 mul, sub, add, cat
    router = entry.workload.get("router") or {}
    # the torchtitan harness's [T, E] routing bias stands where torchtitan's expert_bias [E] does
    # (add before top-k, gather of the unbiased scores, tokens_per_expert.add_): the same calls
    titan_bias = bool(router.get("routing_bias")) and entry.workload.get("token_movement") == "torchtitan"
    return MoESpec(name=str(m["name"]), num_layers=1, hidden=int(m["hidden"]), num_heads=1, num_kv_heads=1,
                   head_dim=int(m["hidden"]), ffn_hidden=int(m["expert_ffn"]), vocab=PLACEHOLDER_VOCAB, seq_len=seq,
                   dtype=entry.workload.get("dtype", "bf16"), num_experts=int(m["num_experts"]), top_k=int(m["top_k"]),
                   expert_ffn_hidden=int(m["expert_ffn"]), num_shared_experts=int(m["shared_experts"]),
                   shared_expert_ffn_hidden=int(m["expert_ffn"]), score_func=router.get("score_func", "softmax"),
                   expert_bias=titan_bias,
                   # shared experts: the harness's F.silu * mul, or Megatron-Core's own fusion setting
                   activation_fusion=bool(_framework(entry.workload).get("bias_activation_fusion", False)))


def routing_config(entry: LayerEntry, spec: Any) -> Any:
    """The entry's RoutingConfig, checked to reproduce the stored per-expert counts exactly
    (``generate_counts(config, spec, ep=1, 1 layer, 1 microbatch, step 0)``); ConfigError otherwise."""
    from moesim.moe.routing import RoutingConfig, generate_counts

    r = entry.workload["routing"]
    where = f"{entry.case_id}: workload.routing"
    if not isinstance(r, dict) or not isinstance(r.get("config"), dict) or "counts" not in r:
        raise ConfigError(f"{where}.config", "missing (the generator config and its counts are needed)",
                          "measure again with moesim.calibrate.layer_workloads")
    try:
        cfg = RoutingConfig(**r["config"])
    except TypeError as exc:
        raise ConfigError(f"{where}.config", f"not a RoutingConfig ({exc})") from None
    stored = r["counts"]
    tokens, k = int(entry.workload["tokens"]), spec.top_k
    if not isinstance(stored, list) or len(stored) != spec.num_experts or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in stored):
        raise ConfigError(f"{where}.counts", f"need {spec.num_experts} whole numbers >= 0, got {stored!r}"[:200])
    if sum(stored) != tokens * k:
        raise ConfigError(f"{where}.counts", f"sum to {sum(stored)}, not tokens x top_k = {tokens * k}")
    drawn = generate_counts(cfg, spec, 1, 1, 1, 0)[0, 0, 0]
    if not np.array_equal(drawn, np.asarray(stored)):
        raise ConfigError(f"{where}.counts", "are not what its config draws "
                          f"(first experts: stored {stored[:6]}, drawn {drawn[:6].tolist()})",
                          "the entry cannot be described by moesim's routing; measure it again")
    return cfg


def entry_scenario(entry: LayerEntry, gpu: str, cost_model: str = "auto") -> Any:
    """The block Scenario describing ``entry`` on ``gpu`` (see the module docstring)."""
    from moesim.experiment.block import block_scenario
    from moesim.experiment.scenario import MoEOptions

    w, spec = entry.workload, model_spec(entry)
    batch, seq, tokens = int(w["batch"]), int(w["seq"]), int(w["tokens"])
    if batch * seq != tokens:
        raise ConfigError(f"{entry.case_id}: workload.tokens", f"{tokens} is not batch x seq = {batch} x {seq}")
    moe = None
    if entry.kind == "moe_block":
        # moesim's harness issues Megatron's kernels by plain torch calls; a framework's own module
        # (``workload.framework``) runs its Python around them
        moe = MoEOptions(routing=routing_config(entry, spec), experts=str(w["experts"]),
                         token_movement=str(w["token_movement"]), stats_step=0, step=0,
                         framework_modules=isinstance(w.get("framework"), Mapping))
    scn = block_scenario(spec, layer="decoder" if entry.kind == "dense_layer" else "moe_block", tokens=tokens,
                         seq_len=seq, passes=entry.passes, ranks=1, gpu=gpu, host="eager",
                         iterations=entry.iterations, moe=moe, cost_model=cost_model, name=entry.case_id,
                         grads="kept" if (w.get("grad") or {}).get("mode") == "accumulate" else "fresh")
    return dataclasses.replace(scn, gpu_clock=protocol_clock(gpu, cost_model))


BURST_NOTE = ("a burst on a cool GPU priced at the profile's sustained rows (its clock rows hold no burst times: "
              "moesim calibrate run --sections clock)")


def protocol_clock(gpu: str, cost_model: str = "auto") -> str:
    """The ``gpu_clock`` the harness's timed bursts are priced with on ``gpu``'s cost model:
    ``"duty"`` where its profile holds burst times and GEMM-duty rows, ``"boost"`` with burst times
    only, else ``"sustained"`` (the roofline or a profile without them)."""
    from moesim.costs.clock import burst_rows
    from moesim.lowering.resolve import resolved_profile

    profile = resolved_profile(cost_model, gpu)
    if profile is None or not burst_rows(profile.select("clock")):
        return "sustained"
    return "duty" if profile.select("duty") else "boost"


def _framework(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    """What a framework's own module ran (``workload.framework``; empty for moesim's harness)."""
    framework = workload.get("framework")
    return framework if isinstance(framework, Mapping) else {}


def unmodelled(entry: LayerEntry) -> str:
    """What the entry ran that the product's vocabulary does not describe (empty when all of it is)."""
    w = entry.workload
    notes = []
    if w.get("combine", "scatter_add") not in ("", "scatter_add"):
        notes.append(f"combine {w['combine']} priced as scatter_add")
    program = " ".join(str(x) for x in w.get("program") or ())
    if entry.kind == "moe_block" and w.get("token_movement") == "megatron":
        if "fc1" not in program:   # harness files written before it ran Megatron's fused fc1
            notes.append("harness runs 3 grouped GEMMs (w1, w3, w2); moe.token_movement='megatron' prices a fused fc1")
    if entry.kind == "moe_block" and w.get("token_movement") == "megatron" and (w.get("router") or {}).get("routing_bias"):
        notes.append("the routing-forcing bias added to the logits (one add over [T, E]) is not priced")
    framework = _framework(w)
    if framework.get("name") == "megatron-core" and w.get("experts") == "loop" \
            and not framework.get("bias_activation_fusion", False):
        notes.append("Megatron's expert MLP ran its GLU and probs multiply unfused (bias_activation_fusion off); "
                     "moesim prices the fused weighted SwiGLU")
    if _attention_backend(w) == "flash":   # files before the harness left SDPA its default backend
        notes.append("SDPA held to FlashAttention-2 (sdpa_kernel FLASH_ATTENTION): model.attention_backend='flash'")
    if w.get("smoke_substitutions"):
        notes.append("CPU smoke stand-ins")
    return "; ".join(notes)


def predict_entry(entry: LayerEntry, gpu: str, cost_model: str = "auto") -> Comparison:
    """Simulate the entry's block and compare its time per iteration with the measured one."""
    return predict_entry_cases(entry, gpu, cost_model)[0]


HOST_ISSUE_NOTES = {
    "steady": "host time of issuing one iteration in steady state (behind queued GPU work) vs the simulated "
              "host thread's issue",
    "after_sync": "host time of issuing the first iteration after a sync (older protocol: up to 2x the steady "
                  "time) vs the simulated host thread's issue plus the host model's after-sync curve",
}
HOST_ISSUE_CLASSES = {"steady": "host issue", "after_sync": "host issue after a sync"}


def predict_entry_cases(entry: LayerEntry, gpu: str, cost_model: str = "auto") -> list[Comparison]:
    """The entry's comparison, and where the file timed it (``host_steady_ns``, a program without a
    device-to-host read) a second one of class ``host issue: <class>``: the measured host time of
    issuing one iteration in steady state against the simulated host thread's issue time per
    iteration (its ``issue`` tasks; no sync waits in such a program), the host model's own check.
    Older files timed the first iteration after a sync (``host_issue_ns``): class ``host issue
    after a sync: <class>``."""
    from moesim.engine.sim import HOST_STREAM
    from moesim.experiment.block import simulate_block

    result = simulate_block(entry_scenario(entry, gpu, cost_model))
    main = _comparison(entry, gpu, result, result.host_band)
    if entry.host_issue_ns is None or result.recorder is None:
        return [main]
    issue_ns = sum(sp.end_ns - sp.start_ns for sp in result.recorder.spans
                   if sp.stream == HOST_STREAM and sp.name.startswith("issue ")) / max(1, entry.iterations)
    if issue_ns <= 0:
        return [main]
    if entry.host_protocol == "after_sync" and result.host_pricing is not None:   # the iteration follows a
        issue_ns += result.host_pricing.after_sync_extra(0.0, issue_ns)            # read: the run's after-sync curve
    host = Comparison(case_id=entry.case_id, workload_class=f"{HOST_ISSUE_CLASSES[entry.host_protocol]}: "
                      f"{entry.workload_class}", passes=entry.passes, gpu=gpu, measured_ns=entry.host_issue_ns,
                      predicted_ns=float(issue_ns), small=False, cost_model=result.cost_model,
                      notes=HOST_ISSUE_NOTES[entry.host_protocol], band=_issue_band(result.host_issue, issue_ns))
    return [main, host]


def _issue_band(rec: Mapping[str, Any], issue_ns: float) -> "tuple[float, float] | None":
    """The simulated host issue at the profile's fastest and slowest host runs: every issue time
    scales by the run's speed (a program without device-to-host reads)."""
    from moesim.analysis.host_issue import speed_span

    span = speed_span(rec)
    return None if span is None else (issue_ns * span[0], issue_ns * span[1])


def _comparison(entry: LayerEntry, gpu: str, result: Any, band: "tuple[float, float] | None" = None) -> Comparison:
    fallbacks = tuple(c.name for c in result.op_classes
                      if "fallback" in c.provenance or "stand-in" in c.provenance or c.provenance == "mixed")
    priced_sustained = result.calibrated and result.scenario.gpu_clock == "sustained"
    notes = "; ".join(n for n in (unmodelled(entry), BURST_NOTE if priced_sustained else "") if n)
    return Comparison(case_id=entry.case_id, workload_class=entry.workload_class, passes=entry.passes, gpu=gpu,
                      measured_ns=entry.measured_ns, predicted_ns=float(result.time_per_iteration_ns),
                      small=entry.small, cost_model=result.cost_model, notes=notes, fallbacks=fallbacks, band=band)


def predict_file(layer_file: LayerFile, cost_model: str = "auto") -> list[Comparison]:
    """Every entry of a loaded file, in file order."""
    return [predict_entry(e, layer_file.gpu, cost_model) for e in layer_file.entries]
