"""What every validation prediction is made with: the cost model, the clock model, the engine.

:class:`ValidationContext` bundles the calibrated cost model (``CalibratedCostModel`` over a
shipped profile, roofline fallback), the :class:`~lab.legacy_validate.clocks.ClockModel`, the
network mode and the fabrics (two GPUs joined by NVLink; more on one NVSwitch board). It costs
single kernels (:class:`Kernel`: time at the case's clock state, FLOPs, whether it is a GEMM)
and builds engine simulations calibrated the way ``moesim run`` calibrates them: link
efficiency and overlap slowdown from the profile. Host costs come from the profile's host table:
each kernel names the eager call that issues it, scaled per rank by the session's in-process
host probe when it has one (:mod:`lab.legacy_validate.host_speed`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from moesim.costs.calibrated import CalibratedCostModel
from moesim.costs.profile import load_profile
from moesim.costs.roofline import make_cost_model
from moesim.engine import MODES, Simulation
from moesim.errors import ConfigError
from moesim.ops import Attention
from moesim.topology import load_topology
from lab.legacy_validate.host_speed import HostSpeed, build_host_speed, load_reference, session_probe_ns
from lab.legacy_validate.protocol_clocks import ProtocolClocks, load_protocol_clocks
from lab.legacy_validate.tensor_clock import TensorClockCap, fit_tensor_clock_cap, load_fit_rows
from lab.legacy_validate.clocks import (ClockModel, ReferenceClocks, load_clock_model, load_reference_samples,
                                    reference_clocks, scale_to_clock)
from lab.legacy_validate.kernel_probe import (ChainOverhead, MemoryClockShare, chain_overhead, load_kernel_probe,
                                          memory_clock_share)

TWO_GPU_FABRIC = "h200x2_nvlink"   # the measurement machine's pair: one NVLink hop
MANY_GPU_FABRIC = "dgx_h200"       # more GPUs: one NVSwitch board (up to 8)


LAUNCH_CALL = "launch"  # a kernel whose host call was not measured: the profile's launch figure


@dataclass(frozen=True)
class Kernel:
    """One GPU kernel of a validated workload: its time at the case's clock state, and the host
    call that issues it (``call``, a name in the profile's host table) with the share of that
    call's host time it accounts for (a composite call issues several kernels)."""

    name: str
    duration_ns: int
    flops: float = 0.0
    is_gemm: bool = False
    call: str = LAUNCH_CALL
    host_share: float = 1.0


@dataclass(frozen=True)
class ValidationContext:
    """Cost model, clock model and engine settings shared by every prediction of one run."""

    cost: CalibratedCostModel
    clock: ClockModel
    mode: str = "fluid"
    profile_name: str = "h200_sxm"
    ref_clocks: "ReferenceClocks | None" = None
    host_speed: "HostSpeed | None" = None
    chain: "ChainOverhead | None" = None
    memory_clock: "MemoryClockShare | None" = None
    protocol_clocks: "ProtocolClocks | None" = None
    tensor_cap: "TensorClockCap | None" = None
    _topologies: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def label(self) -> str:
        """What produced the predictions, repeated in every report."""
        return f"{self.cost.name}; engine mode {self.mode}"

    # -- kernels ------------------------------------------------------------------------------
    def gemm(self, name: str, m: int, n: int, k: int, layout: str, state: "str | float", call: str = LAUNCH_CALL,
             host_share: float = 1.0) -> Kernel:
        """A bf16 GEMM ``[m, k] x [k, n]`` with operand ``layout`` (fwd, bwd_data, bwd_weight);
        ``state``: a clock state, or the SM clock (MHz) the case recorded."""
        sustained = self.cost.gemm_ns(m, n, k, "bf16", layout)
        flops = 2.0 * m * n * k
        phi = min(1.0, flops / self.clock.peak_flops_per_ns / sustained) if sustained > 0 else 0.0
        return Kernel(name, _ns(self._at(sustained, flops, phi, "gemm", state)), flops, True, call, host_share)

    def _at(self, profile_ns: float, flops: float, phi: float, kind: str, state: "str | float") -> float:
        """A profile time at the case's clock: by the measured clock when the case has one and the
        reference clocks know ``kind``, else by the clock-state rule."""
        if isinstance(state, (int, float)):
            ref = self.ref_clocks.for_kind(kind) if self.ref_clocks is not None else None
            if ref is None:
                raise ConfigError("clock reference", f"no reference clock for {kind}",
                                  "add data/validation/clock_reference.json (lab.clock_reference)")
            return scale_to_clock(profile_ns, phi, ref, self.kernel_mhz(float(state), flops, profile_ns))
        return self.clock.scale_ns(profile_ns, flops, state, phi if kind == "attention" else None)

    def kernel_mhz(self, probed_mhz: float, flops: float, profile_ns: float) -> float:
        """The clock a kernel of ``flops`` (profile time ``profile_ns``) runs at where the probes
        around it read ``probed_mhz``: capped by its tensor activity (:mod:`lab.legacy_validate.tensor_clock`)."""
        if self.tensor_cap is None or flops <= 0 or profile_ns <= 0:
            return probed_mhz
        return self.tensor_cap.effective_mhz(probed_mhz, flops / self.clock.peak_flops_per_ns / profile_ns)

    def has_clock_reference(self) -> bool:
        return self.ref_clocks is not None and bool(self.ref_clocks.mhz)

    def memory(self, name: str, kind: str, variant: str, nbytes: float, call: str = LAUNCH_CALL,
               host_share: float = 1.0, cache: str = "cold", state: "str | float | None" = None) -> Kernel:
        """A memory-bound kernel moving ``nbytes`` (read + written), from its variant's curve;
        ``cache="warm"`` when its inputs were just written by the kernels before it. At ``state``
        (a clock state or the case's SM clock) its clock-bound share follows the clock like a
        GEMM's (run 9's :class:`~lab.legacy_validate.kernel_probe.MemoryClockShare`); without the probe
        or a state, memory ops are clock-independent."""
        profile_ns = float(self.cost.memory_ns(kind, nbytes, variant, cache))
        return Kernel(name, _ns(self.memory_at(profile_ns, variant, nbytes, cache, state)), call=call,
                      host_share=host_share)

    def memory_at(self, profile_ns: float, variant: str, nbytes: float, cache: str, state: "str | float | None") -> float:
        """A memory kernel's profile time at ``state``: scaled by its measured clock-bound share
        from the memory reference clock (numeric state) or by the boost rule (``boost``)."""
        if state is None or self.memory_clock is None:
            return profile_ns
        phi = self.memory_clock.share(variant, nbytes, cache)
        if isinstance(state, (int, float)):
            return scale_to_clock(profile_ns, phi, self.memory_clock.ref_mhz, float(state))
        return self.clock.scale_ns(profile_ns, 0.0, state, phi)

    # -- chains of kernels in one timed region ---------------------------------------------------
    def in_stream(self, kernels: "list[Kernel]") -> "list[Kernel]":
        """The kernels with their times inside a back-to-back chain (profile times are of kernels
        timed alone, each with the event region's fixed cost; run 9's
        :class:`~lab.legacy_validate.kernel_probe.ChainOverhead`). Unchanged without the probe."""
        if self.chain is None:
            return list(kernels)
        return [replace(k, duration_ns=_ns(self.chain.in_stream_ns(k.duration_ns))) for k in kernels]

    def region_ns(self) -> int:
        """The fixed cost of one CUDA-event timed region beyond its kernels' in-stream times."""
        return 0 if self.chain is None else _ns(self.chain.region_ns)

    def attention(self, name: str, op: Attention, state: "str | float") -> Kernel:
        """A flash-attention kernel (forward or backward): clock-bound except for its memory time
        (see :mod:`lab.legacy_validate.clocks`)."""
        sustained = float(self.cost.compute_ns(op))
        return Kernel(name, _ns(self._at(sustained, op.flops, self.attention_share(op, sustained), "attention", state)),
                      op.flops)

    def attention_share(self, op: Attention, profile_ns: float) -> float:
        """Flash attention's clock-bound share: all but its memory time at the measured bandwidth."""
        return 1.0 - op.bytes / max(self.cost.measured_hbm_gbps(), 1e-9) / profile_ns

    # -- host costs -----------------------------------------------------------------------------
    def launch_ns(self) -> int:
        """Host time per eager kernel launch (profile: back-to-back eager launches)."""
        return self.cost.launch_overhead_ns()

    def host_ns(self, call: str) -> int:
        """Host time of one eager call (the profile's host table; ``launch``: the launch figure)."""
        return self.launch_ns() if call == LAUNCH_CALL else self.cost.host_ns(call)

    def kernel_host_ns(self, kernel: Kernel) -> int:
        """Host time spent issuing ``kernel``: its share of its call's measured host time."""
        return max(1, int(round(kernel.host_share * self.host_ns(kernel.call))))

    def host_scales(self, extra: Any, num_ranks: int) -> list[float]:
        """Per rank, the factor on the host table's costs: the case's in-process probe over the
        profile's equivalent probe time (1 without a probe or a host reference)."""
        if self.host_speed is None:
            return [1.0] * num_ranks
        return [self.host_speed.table_scale(p) for p in session_probe_ns(extra, num_ranks, self.host_speed.mode)]

    def collective_host_scales(self, extra: Any, num_ranks: int) -> list[float]:
        """Per rank, the factor on the eager host interval of a collective (as :meth:`host_scales`)."""
        if self.host_speed is None:
            return [1.0] * num_ranks
        return [self.host_speed.collective_scale(p) for p in session_probe_ns(extra, num_ranks, self.host_speed.mode)]

    def collective_host_ns(self, op: str) -> int:
        """Host time of one eager PyTorch collective call beyond a kernel launch (profile:
        eager minus CUDA-graph time of small collectives)."""
        return self.cost.host_overhead_ns(op)

    # -- engine ---------------------------------------------------------------------------------
    def fabric_name(self, num_ranks: int) -> str:
        if num_ranks < 2:
            raise ConfigError("num_ranks", f"a multi-GPU case needs >= 2 ranks, got {num_ranks}")
        return TWO_GPU_FABRIC if num_ranks == 2 else MANY_GPU_FABRIC

    def topology(self, num_ranks: int) -> Any:
        name = self.fabric_name(num_ranks)
        if name not in self._topologies:
            self._topologies[name] = load_topology(name)
        topo = self._topologies[name]
        if topo.num_gpus < num_ranks:
            raise ConfigError("num_ranks", f"{num_ranks} ranks do not fit {name} ({topo.num_gpus} GPUs)",
                              "validate cases of at most 8 GPUs")
        return topo

    def link_kind(self, num_ranks: int) -> str:
        return self.topology(num_ranks).links[0].kind

    def simulation(self, num_ranks: int, overlap: bool) -> Simulation:
        """An engine run on the case's fabric, calibrated from the profile. ``overlap`` applies
        the profile's compute slowdown under concurrent NCCL traffic; cases whose GPU compute
        never overlaps communication pass False so the host-issue stream is not stretched."""
        topo = self.topology(num_ranks)
        kinds = {link.kind for link in topo.links}
        eff = {kind: self.cost.link_efficiency(kind) for kind in kinds}
        slowdown = self.cost.overlap_slowdown() if overlap else 1.0
        return Simulation(topo, mode=self.mode, link_efficiency=eff, overlap_slowdown=slowdown,
                          record_link_counters=False)

    def engine_label(self, num_ranks: int, overlap: bool) -> str:
        topo = self.topology(num_ranks)
        eff = self.cost.link_efficiency(self.link_kind(num_ranks))
        slow = f", overlap slowdown {self.cost.overlap_slowdown():.3f}" if overlap else ""
        return f"engine {self.mode} on {topo.name} (link efficiency {eff:.3f}{slow})"


def build_context(profile: str = "h200_sxm", mode: str = "fluid", power_probe: "str | None" = None,
                  clock_reference: "str | None" = None, host_reference: "str | None" = None,
                  kernel_probe: "str | None" = None, protocol_clocks: "str | None" = None,
                  tensor_clock_fit: "str | None" = None) -> ValidationContext:
    """The context for a profile name or path, a network mode, a power-probe file, the
    reference-clock file (``data/validation/clock_reference.json`` by default), the host
    reference (``data/validation/host_reference.json`` by default) and run 9's kernel probe
    (``data/validation/kernel_probe.json`` by default: region cost and memory clock shares) and the
    protocol clock table (``data/validation/protocol_clocks.json``: the clock of entries that
    recorded none) and run 22's boost probe (the tensor clock cap, :mod:`lab.legacy_validate.tensor_clock`)."""
    if mode not in MODES:
        raise ConfigError("--mode", f"unknown network mode {mode!r}", f"use one of: {', '.join(MODES)}")
    prof = load_profile(profile)
    cost = CalibratedCostModel(prof, fallback=make_cost_model(prof.device_kind))
    clock = load_clock_model(cost.measured_peak_flops("bf16") / 1e9, power_probe)
    ctx = ValidationContext(cost, clock, mode, profile)
    ctx = replace(ctx, host_speed=_host_speed(ctx, host_reference),
                  protocol_clocks=load_protocol_clocks(protocol_clocks))
    probe = load_kernel_probe(kernel_probe)
    region, floor = cost.kernel_region()
    if region > 0:  # the profile's region cost (what moesim run uses) wins over the probe file's alone
        rec = prof.extra.get("kernel_region") or {}
        ctx = replace(ctx, chain=ChainOverhead(region, floor, tuple(tuple(x) for x in rec.get("per_kind", ())),
                                               f"{prof.source} (kernel_region)"))
    elif probe is not None:
        ctx = replace(ctx, chain=chain_overhead(*probe))
    if probe is not None:
        ctx = replace(ctx, memory_clock=memory_clock_share(*probe))
    loaded = load_reference_samples(clock_reference)
    if loaded is None:
        return ctx
    samples, source = loaded
    ctx = replace(ctx, ref_clocks=reference_clocks(samples, lambda s: _profile_share(ctx, s), source))
    fit = load_fit_rows(tensor_clock_fit)
    gemm_ref = ctx.ref_clocks.for_kind("gemm") if ctx.ref_clocks is not None else None
    if fit is None or gemm_ref is None:
        return ctx
    return replace(ctx, tensor_cap=fit_tensor_clock_cap(fit[0], lambda r: _profile_share(ctx, {"op": "gemm", **r}),
                                                        gemm_ref, fit[1]))


def _host_speed(ctx: ValidationContext, path: "str | None") -> "HostSpeed | None":
    from lab.legacy_validate.collectives import host_interval_ns  # imports this module
    loaded = load_reference(path)
    if loaded is None:
        return None
    doc, source = loaded
    return build_host_speed(doc, ctx.cost.host_ns, ctx.cost.host_calls(), lambda op: host_interval_ns(ctx, op, 2),
                            source=source)


def _profile_share(ctx: ValidationContext, s: dict) -> tuple[float, float]:
    """The profile's time of a reference sample's shape and its clock-bound share."""
    if s["op"] == "gemm":
        t = float(ctx.cost.gemm_ns(s["m"], s["n"], s["k"], "bf16", s.get("layout", "fwd")))
        return t, min(1.0, 2.0 * s["m"] * s["n"] * s["k"] / ctx.clock.peak_flops_per_ns / t)
    op = Attention(batch=s["batch"], heads=s["heads"], kv_heads=s["heads"], seq_q=s["seq"], seq_kv=s["seq"],
                   head_dim=s["head_dim"], causal=True, dtype="bf16", backward=s["direction"] == "bwd")
    t = float(ctx.cost.compute_ns(op))
    return t, ctx.attention_share(op, t)


def _ns(x: float) -> int:
    return max(1, int(round(x)))
