"""The MoE layer as frameworks execute it: router, token movement and expert kernels by name.

Two choices of a scenario (``MoEOptions.experts`` and ``MoEOptions.token_movement``, checked
by :func:`check_exec`) decide which kernels one MoE layer launches:

* ``token_movement`` -- the router and the permute / unpermute around the experts
  (:mod:`moesim.workload.token_movement`);

* ``experts`` -- how the local experts of one GPU run:

  - ``"grouped"``: one kernel per projection over *all* local experts
    (:class:`~moesim.ops.GroupedGemm`, costed on the GPU's whole count vector); torchtitan
    runs w1 and w3 as two grouped GEMMs plus ``silu`` and ``mul``, Megatron's TE GroupedMLP
    fuses gate and up into one fc1 and one SwiGLU kernel;
  - ``"loop"``: one kernel chain per expert with tokens (torchtitan's for-loop, Megatron's
    SequentialMLP), after the device-to-host copy of the counts (``.tolist()``), then a ``cat``;
    its backward runs the experts as autograd does (:func:`expert_tasks`, phase ``"BW"``);
  - ``"padded"``: every expert padded to its capacity (Megatron's capacity factor with
    ``moe_pad_expert_input_to_capacity``; tokens over capacity are dropped by the routing),
    grouped kernels on the padded counts.

Sizes: every :class:`~moesim.ops.MemoryOp` here carries ``bytes`` = bytes read plus bytes
written by that kernel (each input read once, each output written once; index tensors are
counted where the kernel reads them per row, not per element). That is the axis a measured
curve of the kind / variant is indexed by (``nbytes`` of a ``memory`` profile row).
Programs are lists in launch order; the lowering (:mod:`moesim.lowering.moe_exchange`) turns
:func:`expert_tasks` into engine tasks.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

from moesim.errors import ConfigError
from moesim.ops import DTYPE_BYTES, ComputeOp, Gemm, GroupedGemm, MemoryOp
from moesim.workload.common import eager_swiglu_ops
from moesim.workload.token_movement import check_movement, mem_op as _mem

EXPERT_MODES = ("grouped", "loop", "padded")
PHASES = ("F", "B", "W", "BW")   # BW: input and weight gradients in one backward (not split)
FRAMEWORK_LAYER_CLASS = "megatron_moe_layer"   # host_op class: Megatron's MoELayer beyond its kernels' calls
MEGATRON_BODY_CLASS = "megatron_expert_mlp"    # host_op class: one SequentialMLP expert module call
TITAN_BODY_CLASS = "expert_loop_body"          # host_op class: one torchtitan per-expert loop body
COUNT_BYTES = 4  # one int32 count per local expert copied to the host (``tokens_per_expert.tolist()``)


# How grouped experts' GEMMs are issued (MoEOptions.grouped_gemm): one torch._grouped_mm kernel, or
# Transformer Engine's per-expert cuBLAS GEMMs over 4 streams (GroupedGemm.impl "te")
GROUPED_GEMMS = ("torch", "te")


def check_exec(experts: str, token_movement: str, capacity_factor: "float | None", *,
               need_capacity: bool = True, grouped_gemm: str = "torch") -> None:
    """ConfigError (naming the ``moe.`` field and the valid values) unless the three agree and
    ``grouped_gemm`` is one of :data:`GROUPED_GEMMS`. ``need_capacity=False`` lets ``"padded"``
    wait for its capacity factor (a scenario set field by field, ``--set moe.experts=padded --set
    moe.capacity_factor=1.25``); the build needs it."""
    if not isinstance(grouped_gemm, str) or grouped_gemm not in GROUPED_GEMMS:
        raise ConfigError("moe.grouped_gemm", f"unknown grouped GEMM {grouped_gemm!r}",
                          f"use one of: {', '.join(GROUPED_GEMMS)} (te: Transformer Engine's, Megatron-Core)")
    if not isinstance(experts, str) or experts not in EXPERT_MODES:
        raise ConfigError("moe.experts", f"unknown expert mode {experts!r}", f"use one of: {', '.join(EXPERT_MODES)}")
    check_movement(token_movement)
    if experts == "padded":
        if capacity_factor is None and not need_capacity:
            return
        if capacity_factor is None:
            raise ConfigError("moe.capacity_factor", "experts='padded' pads every expert to its capacity and needs "
                              "a capacity factor", "give e.g. moe.capacity_factor=1.25")
        if isinstance(capacity_factor, bool) or not isinstance(capacity_factor, (int, float)) \
                or not math.isfinite(capacity_factor) or capacity_factor <= 0:
            raise ConfigError("moe.capacity_factor", f"must be a finite number > 0, got {capacity_factor!r}",
                              "give e.g. 1.0 or 1.25")
    elif capacity_factor is not None:
        raise ConfigError("moe.capacity_factor", f"is only used by experts='padded', not {experts!r}",
                          "leave it out, or set moe.experts='padded' (dropping without padding: "
                          "moe.routing.capacity_factor)")


def capacity(capacity_factor: float, tokens: int, top_k: int, num_experts: int) -> int:
    """Rows one expert is padded to per source rank: ``ceil(cf * tokens * top_k / num_experts)``
    (Megatron's capacity, :func:`moesim.moe.routing.expert_capacity`)."""
    from moesim.moe.routing import expert_capacity

    return int(expert_capacity(tokens * top_k / num_experts, capacity_factor))


# -- experts --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpertTask:
    """One engine task of a GPU's expert work: its kernels in launch order.

    ``expert`` is the expert of a loop chain (None for grouped kernels over all local experts);
    ``host_sync`` marks the device-to-host copy of ``sync_bytes`` of counts (no kernels: the
    lowering prices the copy and the eager host waits for it). ``body``: the ops of the whole
    loop body this task is part of, in its pass (the forward chain; or the backward's B chain,
    W chain and torchtitan's select share together), and ``body_class`` the measured host class of
    such a body (``host_op`` ``expert_loop_body``: torchtitan's; ``megatron_expert_mlp``:
    Megatron's ``SequentialMLP`` expert call), so an eager host can price the body by that class
    and this task by its per-op share of it (:meth:`moesim.lowering.host.HostPricing.compute_ns`);
    a ``body_class`` without ``body`` is an expert called on no tokens (Megatron calls every
    local expert's module): the class's whole time, launching nothing."""

    name: str
    ops: tuple[ComputeOp, ...]
    tokens: int
    expert: "int | None" = None
    host_sync: bool = False
    sync_bytes: int = 0
    body: tuple[ComputeOp, ...] = ()
    body_class: str = ""

    @property
    def flops(self) -> float:
        return sum(op.flops for op in self.ops)


def loop_body_class(token_movement: str) -> str:
    """The measured host class of one per-expert loop body: torchtitan's ``_run_experts_for_loop``
    body, or Megatron-Core's ``SequentialMLP`` expert module call (the fused movement is Megatron's
    with Transformer Engine's permute: the same ``SequentialMLP``)."""
    return TITAN_BODY_CLASS if token_movement == "torchtitan" else MEGATRON_BODY_CLASS


def _fused_fc1(token_movement: str, activation: str) -> bool:
    """Megatron / TE run gate and up as one fc1; torchtitan as two GEMMs (w1, w3)."""
    return activation == "swiglu" and token_movement != "torchtitan"


def expert_projections(spec, token_movement: str) -> list[tuple[str, int, int]]:
    """(name, n, k) of each forward GEMM of one expert, in launch order; activations between (one
    weight tensor each: torchtitan's w1 / w3 / w2, Megatron's fc1 / fc2)."""
    h, f = spec.hidden, spec.expert_ffn_hidden
    if spec.activation != "swiglu":
        return [("expert.up", f, h), ("expert.down", h, f)]
    if _fused_fc1(token_movement, spec.activation):
        return [("expert.fc1", 2 * f, h), ("expert.fc2", h, f)]
    return [("expert.w1", f, h), ("expert.w3", f, h), ("expert.w2", h, f)]


def _eager_glu(spec) -> bool:
    """A fused fc1's SwiGLU as Megatron runs it without ``bias_activation_fusion``
    (``--no-bias-swiglu-fusion``: ``glu`` = ``chunk``, ``F.silu`` of the gate half, ``*`` the up
    half: two kernels each way plus the ``cat`` of the halves' grads), the spec's
    ``activation_fusion`` False; True keeps the one fused (weighted) SwiGLU kernel."""
    return spec.activation == "swiglu" and not getattr(spec, "activation_fusion", True)


def framework_modules_run(framework_modules: bool, token_movement: str) -> bool:
    """Whether Megatron-Core's modules run around the kernels (``MoEOptions.framework_modules``):
    never with torchtitan's movement, which is plain torch calls."""
    return bool(framework_modules) and token_movement != "torchtitan"


def experts_fuse_activation(spec, framework_modules: bool, experts: str) -> bool:
    """Whether the routed experts' SwiGLU is one fused kernel: Megatron-Core's GroupedMLP (its
    modules, ``experts`` grouped or padded) jit-fuses it (``activation_func_with_probs``) whatever
    ``bias_activation_fusion`` says; its SequentialMLP and plain torch calls follow the spec's
    ``activation_fusion`` (eager: :func:`eager_glu_ops`)."""
    return bool(getattr(spec, "activation_fusion", True)) or (framework_modules and experts != "loop")


def expert_spec(spec, framework_modules: bool, experts: str):
    """``spec`` as the routed experts' kernel chains read it (:func:`experts_fuse_activation`)."""
    fused = experts_fuse_activation(spec, framework_modules, experts)
    return spec if fused == getattr(spec, "activation_fusion", True) else dataclasses.replace(spec, activation_fusion=fused)


def eager_glu_ops(elem_bytes: float, elems: float, prefix: str, backward: bool = False) -> list[MemoryOp]:
    """Megatron's eager ``glu`` on a fused fc1's output: ``torch.chunk`` leaves the gate and up halves
    strided, so PyTorch runs its non-vectorized elementwise kernel (the ``glu_*`` variants of
    :mod:`moesim.costs.moe_kernels`, measured on exactly these views): forward ``silu(gate)``
    then ``a * up``; backward the multiply's two gradients (``g * up`` strided, ``g * a``
    contiguous) and ``silu``'s backward of the strided gate."""
    b = elem_bytes * elems
    if backward:
        return [MemoryOp("elementwise", 3 * b, f"{prefix}.mul.bwd", "glu_mul"),
                MemoryOp("elementwise", 3 * b, f"{prefix}.mul.bwd.a"),
                MemoryOp("elementwise", 3 * b, f"{prefix}.silu.bwd", "glu_silu_bwd")]
    return [MemoryOp("elementwise", 2 * b, f"{prefix}.silu", "glu_silu"),
            MemoryOp("elementwise", 3 * b, f"{prefix}.mul", "glu_mul")]


GemmMaker = Callable[[str, int, int, str], ComputeOp]  # (name, n, k, layout) -> one GEMM kernel


def _chain(spec, rows: int, token_movement: str, phase: str, gemm: GemmMaker,
           recompute_act: bool = False) -> list[ComputeOp]:
    """One FFN's kernels over ``rows`` token rows in ``phase`` (F, B input grad, W weight grad);
    ``recompute_act`` (Megatron's ``--recompute-modules moe_act``): B first re-runs the forward's
    activation kernels, whose output the forward did not keep."""
    if phase == "BW":
        raise ConfigError("phase", "a kernel chain is one of F, B, W; BW is an order of B and W tasks",
                          "ask expert_tasks for phase BW, or for B and W chains separately")
    e, f, h = float(DTYPE_BYTES[spec.dtype]), spec.expert_ffn_hidden, spec.hidden
    proj = expert_projections(spec, token_movement)
    if phase == "W":
        return [gemm(f"{name}.wgrad", n, k, "wgrad") for name, n, k in proj]
    act = spec.activation
    if phase == "F":
        fwd = [gemm(name, n, k, "fwd") for name, n, k in proj]
        if len(proj) == 3:   # torchtitan: silu(w1 x) * (w3 x)
            silu, mul = eager_swiglu_ops(e, rows * f, "expert")
            return [fwd[0], silu, fwd[1], mul, fwd[2]]
        if _eager_glu(spec):
            return [fwd[0], *eager_glu_ops(e, rows * f, "expert"), fwd[1]]
        act_bytes = (3 if act == "swiglu" else 2) * e * rows * f
        return [fwd[0], _mem("elementwise", act_bytes, f"expert.{act}"), fwd[1]]
    dg = [gemm(f"{name}.dgrad", k, n, "dgrad") for name, n, k in reversed(proj)]
    again = [_mem(op.kind, op.bytes, f"{op.name}.recompute", op.variant)
             for op in _chain(spec, rows, token_movement, "F", gemm) if isinstance(op, MemoryOp)] if recompute_act else []
    if len(proj) == 3:
        return [*again, dg[0], *eager_swiglu_ops(e, rows * f, "expert", backward=True), dg[1], dg[2],
                _mem("elementwise", 3 * e * rows * h, "expert.dx_add.bwd")]
    if _eager_glu(spec):   # chunk's backward concatenates the two halves' grads into [rows, 2F]
        return [*again, dg[0], *eager_glu_ops(e, rows * f, "expert", backward=True),
                _mem("copy", 4 * e * rows * f, "expert.glu_cat.bwd"), dg[1]]
    act_bytes = (5 if act == "swiglu" else 3) * e * rows * f
    return [*again, dg[0], _mem("elementwise", act_bytes, f"expert.{act}.bwd"), dg[1]]


def _grouped_maker(spec, counts: tuple[int, ...]) -> GemmMaker:
    return lambda name, n, k, layout: GroupedGemm(counts, n, k, dtype=spec.linear_dtype, layout=layout, name=name)


def _dense_maker(spec, rows: int) -> GemmMaker:
    def make(name: str, n: int, k: int, layout: str) -> Gemm:
        if layout == "wgrad":   # dW[k, n] = x[rows, k]^T dy[rows, n]
            return Gemm(m=k, n=n, k=rows, dtype=spec.linear_dtype, name=name)
        return Gemm(m=rows, n=n, k=k, dtype=spec.linear_dtype, name=name)
    return make


def grouped_ops(spec, counts: Sequence[int], phase: str, token_movement: str = "torchtitan",
                recompute_act: bool = False) -> list[ComputeOp]:
    """The grouped kernels of one GPU's local experts (``counts[g]`` rows for expert g)."""
    vec = _counts(counts)
    return _chain(spec, sum(vec), token_movement, _phase(phase), _grouped_maker(spec, vec), recompute_act)


def kernel_ops(spec, rows: Sequence[int], phase: str, token_movement: str = "torchtitan",
               recompute_act: bool = False, framework: bool = False) -> list[ComputeOp]:
    """The grouped kernels of one GPU's experts in ``phase``, one task each in grouped / padded
    mode (``rows``: the counts, or the padded counts); BW is B's kernels then W's. The forward
    starts with the groups' end rows, ``torch.cumsum`` of the counts (torchtitan's
    ``_run_experts_grouped_mm``, Megatron's ``GroupedMLP``); the backward reuses them. With
    Megatron-Core's modules (``framework``): fc2's bias where ``spec.expert_linear_bias``
    (:func:`fc2_bias_ops`), after the forward's GEMMs and before the backward's; in FP8, TE's row
    padding around them (:func:`fp8_padding_ops`)."""
    ph = _phase(phase)
    offsets = [_mem("elementwise", 16.0 * len(rows), "experts.offsets", "cumsum")] if ph == "F" else []
    ops = offsets + [op for p in (("B", "W") if phase == "BW" else (ph,))
                     for op in grouped_ops(spec, rows, p, token_movement, recompute_act)]
    megatron = framework and token_movement != "torchtitan"
    bias = megatron and getattr(spec, "expert_linear_bias", False)
    pad_in, pad_out = fp8_padding_ops(spec, rows, ph) if megatron else ([], [])
    if ph == "F":
        return pad_in + ops + (fc2_bias_ops(spec, rows, "F") if bias else []) + pad_out
    if phase == "W":
        return ops
    # backward: the unpadding's gradient, fc2's bias, the GEMMs, the padding's gradient
    return pad_out + (fc2_bias_ops(spec, rows, "B") if bias else []) + ops + pad_in


FP8_ALIGN = 16   # Transformer Engine's row alignment for FP8 grouped GEMMs (32 only for MXFP8 / NVFP4)


def fp8_padding_ops(spec, rows: Sequence[int], phase: str) -> tuple[list[MemoryOp], list[MemoryOp]]:
    """Megatron-Core ``TEGroupedMLP`` in FP8 (``Fp8Padding`` / ``Fp8Unpadding``): when a local
    expert's row count is not a multiple of 16, the input rows (and their probabilities) are copied
    into a padded buffer before fc1 (``tex.fused_multi_row_padding``) and the output copied back
    after fc2; each copy's backward is the reverse copy of the gradient. Returns (the input
    padding's ops, the output unpadding's ops) of ``phase``: :func:`kernel_ops` runs them before
    and after the experts forward, in reverse backward. Nothing when every count is aligned
    (Megatron's ``--moe-router-padding-for-quantization`` pads the routing map instead) or the
    GEMMs are not FP8. The padded rows' GEMM work (under 16 rows per expert) is not added."""
    if getattr(spec, "linear_dtype", spec.dtype) != "fp8" or not any(int(n) % FP8_ALIGN for n in rows):
        return [], []
    e, h = float(DTYPE_BYTES[spec.dtype]), spec.hidden
    rows_in = float(sum(rows))
    rows_pad = float(sum(-(-int(n) // FP8_ALIGN) * FP8_ALIGN for n in rows))
    moved = rows_in + rows_pad   # read one layout, write the other
    if phase == "F":
        e_in = float(DTYPE_BYTES["fp8"]) if getattr(spec, "dispatch_dtype", "bf16") == "fp8" else e
        return ([_mem("copy", e_in * moved * h, "experts.fp8_pad"), _mem("copy", 4 * moved, "experts.fp8_pad.probs")],
                [_mem("copy", e * moved * h, "experts.fp8_unpad")])
    # backward: the output's unpadding first (its gradient padded), the input's padding last
    return ([_mem("copy", e * moved * h, "experts.fp8_pad.bwd")],
            [_mem("copy", e * moved * h, "experts.fp8_unpad.bwd")])


def fc2_bias_ops(spec, rows: Sequence[int], phase: str) -> list[MemoryOp]:
    """Megatron-Core ``TEGroupedMLP._apply_bias``: fc2's bias (returned apart, ``skip_bias_add``)
    added per local expert and weighted by each row's routing probability,
    ``torch.cat([t + b * p for t, b, p in zip(split(out), biases, split(probs))])``, in the
    activations' dtype (a bf16 router's probabilities). Forward, per expert with rows: ``b * p``
    (writes [n, h]) and the add (reads two [n, h], writes one); then the ``cat`` of all rows.
    Backward (input gradients; ``cat``'s and the add's are views): per expert, from the last,
    ``b``'s gradient (``g * p`` summed over rows) and ``p``'s (``g * b`` summed over h), each a
    multiply and a reduction. Experts without rows contribute empty kernels, not priced."""
    e, h = float(DTYPE_BYTES[spec.dtype]), spec.hidden
    if phase == "F":
        ops = [op for i, n in enumerate(rows) if n > 0
               for op in (_mem("elementwise", e * n * h, f"expert.fc2_bias{i}.mul", "mul"),
                          _mem("elementwise", 3 * e * n * h, f"expert.fc2_bias{i}.add", "add"))]
        return ops + [_mem("copy", 2 * e * sum(rows) * h, "expert.fc2_bias.cat")]
    return [op for i, n in reversed(list(enumerate(rows))) if n > 0
            for op in (_mem("elementwise", 2 * e * n * h, f"expert.fc2_bias{i}.bwd.grad_b", "mul"),
                       _mem("elementwise", e * n * h, f"expert.fc2_bias{i}.bwd.grad_b.sum"),
                       _mem("elementwise", 2 * e * n * h, f"expert.fc2_bias{i}.bwd.grad_p", "mul"),
                       _mem("elementwise", e * n * h, f"expert.fc2_bias{i}.bwd.grad_p.sum"))]


def loop_chain_ops(spec, rows: int, phase: str, token_movement: str = "torchtitan",
                   recompute_act: bool = False) -> list[ComputeOp]:
    """One expert's kernel chain on ``rows`` tokens (``torch.matmul`` per projection)."""
    return _chain(spec, rows, token_movement, _phase(phase), _dense_maker(spec, rows), recompute_act)


def stacked_select_backward_ops(spec, num_experts: int) -> list[ComputeOp]:
    """What autograd adds when a per-expert loop indexes stacked weights (torchtitan's
    ``_run_experts_for_loop`` uses ``w1[e]`` of one ``[E, F, H]`` parameter): the backward of each
    ``select`` is a zero-filled gradient of the WHOLE stacked tensor with the expert's slice
    copied in, and the E contributions are summed into one buffer (E - 1 full-size adds) before
    ``.grad`` receives it. Per projection: E fills of the full tensor, E slice copies and E - 1
    adds of it; the experts' own wgrad GEMMs are in their chains. Zero-token experts take part too
    (``torch.split`` yields empty chunks that still enter the graph). All E experts' shares
    (:func:`select_backward_share`) in one list, the first without its add."""
    return [op for i in range(num_experts) for op in select_backward_share(spec, num_experts, first=i == 0)]


def select_backward_share(spec, num_experts: int, first: bool) -> list[ComputeOp]:
    """One expert's share of :func:`stacked_select_backward_ops`, per projection in autograd's
    order (w2, w3, w1: the reverse of the forward): the zeros of the whole stacked tensor, the
    slice copy, and the add into the gradient buffer of that parameter (``first``: the first
    contribution the buffer receives is stored, not added)."""
    e = float(DTYPE_BYTES[spec.dtype])
    ops: list[ComputeOp] = []
    for name, n, k in reversed(expert_projections(spec, "torchtitan")):
        full, one = e * num_experts * n * k, e * n * k
        ops += [_mem("copy", full, f"{name}.select_bwd.zeros", "zeros"),
                _mem("copy", 2 * one, f"{name}.select_bwd.slice_copy")]
        if not first:
            ops.append(_mem("elementwise", 3 * full, f"{name}.select_bwd.sum", "add"))
    return ops


def empty_wgrad_ops(spec, token_movement: str = "torchtitan") -> list[ComputeOp]:
    """The weight gradient of an expert with no tokens: ``x_e.t() @ dy_e`` with an inner
    dimension of 0 launches no GEMM, but its ``[k, n]`` result is filled with zeros
    (``result.zero_()`` in ATen's CUDA ``addmm``), one fill per projection. The empty input
    gradient (an ``[0, h]`` result) and the empty activations launch nothing."""
    e = float(DTYPE_BYTES[spec.dtype])
    return [_mem("copy", e * n * k, f"{name}.wgrad.zeros", "zeros")
            for name, n, k in reversed(expert_projections(spec, token_movement))]


def padded_counts(counts: Sequence[int], rows_per_expert: int) -> tuple[int, ...]:
    """Every local expert at ``rows_per_expert`` rows (its capacity over all source ranks);
    a count above it is an error (the routing drops tokens over capacity before this)."""
    vec = _counts(counts)
    over = [c for c in vec if c > rows_per_expert]
    if over:
        raise ConfigError("moe.capacity_factor", f"an expert holds {max(over)} tokens, above its padded capacity "
                          f"{rows_per_expert}", "drop tokens over capacity in the routing (experts='padded' does)")
    return tuple(rows_per_expert for _ in vec)


def expert_tasks(spec, counts: Sequence[int], phase: str, experts: str = "grouped",
                 token_movement: str = "torchtitan", experts_ids: "Sequence[int] | None" = None,
                 padded_rows: int = 0, recompute_act: bool = False, framework: bool = True) -> list[ExpertTask]:
    """One GPU's expert work in ``phase`` as engine tasks, in stream order.

    ``counts``: tokens of each local expert (zeros included; ``experts_ids`` names them, default
    0..n-1). ``phase`` F (forward), B (input gradients), W (weight gradients) or BW (a backward
    not split into B and W: both, in the order autograd runs them).

    grouped / padded: one task per kernel (each GEMM over all local experts; BW is B's kernels
    then W's); padded uses ``padded_rows`` rows per expert.

    loop: forward starts with the counts' copy to the host (a ``host_sync`` task), then one task
    per expert with tokens, then a ``cat`` of the outputs. Megatron's ``SequentialMLP`` calls the
    module of every local expert, those without tokens too: a kernel-less task each (its host
    time, class ``megatron_expert_mlp``; in the backward, its weight gradients' zero fills).
    ``framework=False`` (Megatron's kernels issued by plain torch calls, ``MoEOptions.framework_modules``):
    no module class, no calls of empty experts; the per-op host costs. The backward follows autograd's ready
    queue, which runs the node created last first: expert by expert from the last one, each
    expert's whole backward before the previous expert's (:func:`_loop_backward`); B and BW end
    with the ``cat`` that is ``torch.split``'s backward. ``recompute_act``: each B chain starts
    by re-running its forward activation (``moe_act`` recompute)."""
    check_exec(experts, token_movement, 1.0 if experts == "padded" else None)
    vec, phase = _counts(counts), _phase(phase)
    ids = list(experts_ids) if experts_ids is not None else list(range(len(vec)))
    if experts != "loop":
        rows = padded_counts(vec, padded_rows) if experts == "padded" else vec
        return [ExpertTask(op.name, (op,), sum(rows))
                for op in kernel_ops(spec, rows, phase, token_movement, recompute_act, framework)]
    tasks: list[ExpertTask] = []
    cls = loop_body_class(token_movement) if framework or token_movement == "torchtitan" else ""
    if phase == "F":
        tasks.append(ExpertTask("experts.counts_to_host", (), 0, host_sync=True, sync_bytes=COUNT_BYTES * len(vec)))
        for eid, n in zip(ids, vec):
            if n > 0:
                chain = tuple(loop_chain_ops(spec, n, "F", token_movement))
                tasks.append(ExpertTask(f"expert{eid}", chain, n, expert=eid, body=chain, body_class=cls))
            elif token_movement != "torchtitan" and cls:
                tasks.append(ExpertTask(f"expert{eid}.empty", (), 0, expert=eid, body_class=cls))
    else:
        tasks += _loop_backward(spec, vec, ids, phase, token_movement, recompute_act, cls)
    total = sum(vec)
    if phase != "W" and total:
        e = float(DTYPE_BYTES[spec.dtype])
        name = "experts.cat" if phase == "F" else "experts.cat.bwd"
        tasks.append(ExpertTask(name, (_mem("copy", 2 * e * total * spec.hidden, name),), total))
    return tasks


def _loop_backward(spec, vec: tuple[int, ...], ids: list[int], phase: str,
                   token_movement: str, recompute_act: bool = False, cls: str = "") -> list[ExpertTask]:
    """A loop's backward tasks in autograd's order: the experts from the last to the first.

    Each expert's nodes (its ``MmBackward``, ``Mul``/``Silu`` backward, and with torchtitan's
    stacked weights its three ``SelectBackward`` and the add of their result into the stacked
    parameter's gradient buffer) were created after every node of the experts before it, so the
    ready queue (highest sequence number first) finishes expert e before it starts expert e - 1.
    Per expert, as tasks: its B chain (``expert{e}``), its W chain (``expert{e}.wgrad``) and its
    select-backward share (``expert{e}.select_bwd``: zeros of the whole stacked tensor, the slice
    copy, the add except for the first contribution; torchtitan only, Megatron's SequentialMLP
    holds one parameter per expert). Inside one expert autograd interleaves these per projection
    (one ``MmBackward`` computes a projection's input and weight gradient, its select backward
    follows); the tasks keep the same kernels on the same stream, grouped by kind.

    An expert without tokens has an empty chunk that still enters the graph: no B kernels, its
    weight gradients are zero fills (:func:`empty_wgrad_ops`), its select share as any expert's.
    The host time of torchtitan's kernel-less empty ops (the dispatch of an ``mm`` or ``silu`` on
    zero rows) is not priced; Megatron's empty expert module costs its measured backward call
    (``megatron_expert_mlp``, in B or BW, not again in a deferred W).

    ``phase`` B (a split backward: input gradients only) keeps the B chains; W (the deferred weight
    gradients: zero-bubble's W) the W chains and select shares, in the same expert order, which
    assumes the deferred pass replays autograd's per-expert order."""
    stacked = token_movement == "torchtitan"
    num = len(vec)
    tasks: list[ExpertTask] = []
    first = True
    for eid, n in reversed(list(zip(ids, vec))):
        grads = tuple(loop_chain_ops(spec, n, "B", token_movement, recompute_act)) if n > 0 else ()
        wgrads = tuple(loop_chain_ops(spec, n, "W", token_movement) if n > 0 else empty_wgrad_ops(spec, token_movement))
        if n == 0 and not stacked:   # Megatron: the empty module's backward call, its zero fills
            ops = wgrads if phase != "B" else ()
            if ops or cls:
                tasks.append(ExpertTask(f"expert{eid}.empty", ops, 0, expert=eid,
                                        body_class=cls if phase != "W" else ""))
            continue
        share = tuple(select_backward_share(spec, num, first)) if stacked else ()
        first = first and not (stacked and phase != "B")
        parts = [(f"expert{eid}", grads) if phase in ("B", "BW") and grads else None,
                 (f"expert{eid}.wgrad", wgrads) if phase != "B" and wgrads else None,
                 (f"expert{eid}.select_bwd", share) if phase != "B" and share else None]
        # the measured body is an expert with tokens, all of it
        body = (*grads, *wgrads, *share) if n > 0 else ()
        tasks += [ExpertTask(name, ops, n, expert=eid, body=body, body_class=cls if body else "")
                  for name, ops in filter(None, parts)]
    return tasks


def _counts(counts: Sequence[int]) -> tuple[int, ...]:
    vec = tuple(int(c) for c in counts)
    if not vec or any(c < 0 for c in vec) or any(int(c) != c for c in counts):
        raise ConfigError("counts", f"need one whole number >= 0 per local expert, got {list(counts)!r}",
                          "pass the tokens each local expert receives")
    return vec


def _phase(phase: str) -> str:
    if phase not in PHASES:
        raise ConfigError("phase", f"unknown phase {phase!r}", f"use one of: {', '.join(PHASES)}")
    return phase
