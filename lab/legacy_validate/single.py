"""Single-GPU kernels (GEMM, SwiGLU expert FFN, attention, memory ops) predicted by the cost model.

Each entry was timed with CUDA events around the op, repeated after an L2-evicting write; that
write keeps the GPU busy while the host issues the op's kernels, so no launch cost is in the
measured time and none is predicted. GEMMs use the measured operand layout (``fwd``: the
nn.Linear layout the entry ran); the SwiGLU FFN is the five kernels it ran (gate and up GEMMs,
silu, mul, down GEMM); memory ops use their variant's curve. The clock state follows
:meth:`~lab.legacy_validate.clocks.ClockModel.state_for` over the entry's repeats (each after its
L2-evicting write), run back to back; an entry that recorded the SM clock of its repeats
(``measured.clock.sm_mhz``) is predicted at that clock instead (:mod:`lab.legacy_validate.clocks`).
"""
from __future__ import annotations

from typing import Callable

from moesim.ops import Attention
from lab.legacy_validate.clocks import recorded_clock_mhz
from lab.legacy_validate.context import LAUNCH_CALL, Kernel, ValidationContext
from moesim.validate.measurements import Measurement
from lab.legacy_validate.prediction import Prediction

# Timer in moesim/calibrate/timing.py: 2 warm-up calls plus 1 estimating call before the repeats.
TIMER_UNTIMED_CALLS = 3
L2_FLUSH_BYTES = 256 * 2**20  # written before every repeat (timing.L2_FLUSH_BYTES)
SWIGLU_KERNELS = 5


def gemm_kernels(ctx: ValidationContext, d: dict, state: "str | float") -> list[Kernel]:
    return [ctx.gemm("gemm", d["m"], d["n"], d["k"], "fwd", state)]


def swiglu_kernels(ctx: ValidationContext, tokens: int, hidden: int, ffn: int, state: "str | float",
                   prefix: str = "swiglu", call: str = LAUNCH_CALL) -> list[Kernel]:
    """The kernels of ``mm(silu(mm(x, wg^T)) * mm(x, wu^T), wd^T)`` in issue order; ``call``: the
    host call that issues all five (each kernel carries a fifth of its host time). ``silu`` and
    ``mul`` read what the GEMMs just wrote: their warm-cache curves."""
    t, h, f = tokens, hidden, ffn
    share = 1.0 / SWIGLU_KERNELS if call != LAUNCH_CALL else 1.0
    return [
        ctx.gemm(f"{prefix}.gate", t, f, h, "fwd", state, call, share),
        ctx.memory(f"{prefix}.silu", "elementwise", "silu", 4.0 * t * f, call, share, "warm", state),  # read + write bf16
        ctx.gemm(f"{prefix}.up", t, f, h, "fwd", state, call, share),
        ctx.memory(f"{prefix}.mul", "elementwise", "mul", 6.0 * t * f, call, share, "warm", state),    # 2 reads + 1 write
        ctx.gemm(f"{prefix}.down", t, h, f, "fwd", state, call, share),
    ]


def _swiglu(ctx: ValidationContext, d: dict, state: "str | float") -> list[Kernel]:
    return swiglu_kernels(ctx, d["tokens"], d["hidden"], d["ffn"], state)


def _attention(ctx: ValidationContext, d: dict, state: "str | float") -> list[Kernel]:
    op = Attention(batch=d["batch"], heads=d["heads"], kv_heads=d["kv_heads"], seq_q=d["seq_q"], seq_kv=d["seq_kv"],
                   head_dim=d["head_dim"], causal=bool(d["causal"]), dtype=d.get("dtype", "bf16"),
                   backward=bool(d["backward"]))
    return [ctx.attention("attention", op, state)]


def _memory(ctx: ValidationContext, d: dict, state: "str | float") -> list[Kernel]:
    return [ctx.memory(d["variant"], d["kind"], d["variant"], float(d["nbytes"]), state=state)]


BUILDERS: dict[str, Callable[[ValidationContext, dict, "str | float"], list[Kernel]]] = {
    "gemm": gemm_kernels, "swiglu_ffn": _swiglu, "attention": _attention, "memory": _memory,
}


def predict_single(ctx: ValidationContext, case: Measurement) -> Prediction:
    """Predict a single-GPU entry from the cost model at the entry's clock state."""
    build = BUILDERS[case.kind]
    d = dict(case.description)
    mhz, clock_from = recorded_clock_mhz(case), "recorded"
    if mhz is None and ctx.protocol_clocks is not None:
        mhz, clock_from = ctx.protocol_clocks.for_case(case.kind, case.thermal), "protocol table"
    if mhz is not None and ctx.has_clock_reference():
        kernels, state = build(ctx, d, mhz), f"{mhz:.0f} MHz"
    else:
        boost = build(ctx, d, "boost")
        state = ctx.clock.state_for(case.thermal, [_timeline(boost)], _period_ns(ctx, boost),
                                    case.repeats + TIMER_UNTIMED_CALLS)
        kernels = boost if state == "boost" else build(ctx, d, state)
    if len(kernels) > 1 and ctx.chain is not None:  # one timed region of a chain: in-stream times plus the region cost once
        kernels = ctx.in_stream(kernels) + [Kernel("event_region", ctx.region_ns())]
    total = float(sum(k.duration_ns for k in kernels))
    return Prediction(
        case.case_id, case.kind, case.thermal, case.measured_ns, total,
        method=f"cost model ({ctx.cost.name}), {len(kernels)} kernel(s)"
               + (f"; clock: {clock_from}" if state.endswith("MHz") else ""), clock_state=state,
        components={k.name: float(k.duration_ns) for k in kernels},
    )


def _timeline(kernels: list[Kernel]) -> list[tuple[float, float, float]]:
    out, t = [], 0.0
    for k in kernels:
        out.append((t, t + k.duration_ns, k.flops))
        t += k.duration_ns
    return out


def _period_ns(ctx: ValidationContext, kernels: list[Kernel]) -> float:
    """One repeat: the L2-evicting write, then the op (timing.Timer)."""
    return ctx.cost.memory_ns("copy", float(L2_FLUSH_BYTES), "copy") + sum(k.duration_ns for k in kernels)
