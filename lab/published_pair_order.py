"""Megatron's combined-1F1B layer order, timed by hand from per-layer segment times.

Megatron-LM (``megatron/core/models/common/model_chunk_schedule_plan.py`` at d98e8a6,
``TransformerLayerSchedulePlan.run``) runs one forward layer ``f`` and one backward layer ``b`` of a
pair as::

    comm stream:    combine_bwd(b)  | dispatch(f) -> dispatch_bwd(b) | combine(f)
    compute stream: attn(f)         | mlp_bwd(b) -> mlp_dw(b) -> mlp(f) | attn_bwd(b)

each node waiting for its inputs (one comm stream and one compute stream, both in order). Across
layers the backward's gradient flows from ``attn_bwd`` of one layer into ``combine_bwd`` of the
next, and the forward's activation from ``combine`` into the next ``attn``. :func:`megatron_period`
runs that recurrence over ``layers`` pairs and returns the steady-state time per pair and the
compute stream's idle time in it (the exposed all-to-all). Inputs are per layer per microbatch,
e.g. from ``python -m lab.layer_gap FILE`` (compute by category: forward = attn(f), backward =
attn_bwd(b), expert split three ways into mlp(f), mlp_bwd(b), mlp_dw(b); comm busy / 4 per
all-to-all).

Run: python -m lab.published_pair_order --attn-f 1.47 --attn-b 2.57 --mlp 1.37 --a2a 1.24
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Segments:
    """Per-layer times (any unit): the forward's pre-dispatch part, the backward's post-combine
    part, each expert phase (forward, input grad, weight grad) and one all-to-all."""

    attn_f: float
    attn_b: float
    mlp_f: float
    mlp_b: float
    mlp_dw: float
    a2a: float


def megatron_period(seg: Segments, layers: int = 64) -> tuple[float, float]:
    """Steady-state time per layer pair and the compute stream's idle time per pair (the last
    half of ``layers`` pairs, averaged)."""
    comp = comm = 0.0            # when each stream is free
    f_ready = b_ready = 0.0      # the forward activation / backward gradient entering the layer
    idle, marks = 0.0, []
    for i in range(layers):
        def run_comp(start: float, dur: float) -> float:
            nonlocal comp, idle
            begin = max(comp, start)
            idle_here = begin - comp
            comp = begin + dur
            return idle_here
        def run_comm(start: float, dur: float) -> float:
            nonlocal comm
            comm = max(comm, start) + dur
            return comm
        gap = 0.0
        combine_bwd = run_comm(b_ready, seg.a2a)
        gap += run_comp(f_ready, seg.attn_f)
        attn_f_end = comp
        gap += run_comp(combine_bwd, seg.mlp_b)
        mlp_b_end = comp
        dispatch = run_comm(attn_f_end, seg.a2a)
        gap += run_comp(0.0, seg.mlp_dw)
        dispatch_bwd = run_comm(mlp_b_end, seg.a2a)
        gap += run_comp(dispatch, seg.mlp_f)
        combine = run_comm(comp, seg.a2a)
        gap += run_comp(dispatch_bwd, seg.attn_b)
        f_ready, b_ready = combine, comp
        marks.append(comp)
        if i >= layers // 2:
            idle += gap
    half = layers - layers // 2
    return (marks[-1] - marks[layers // 2 - 1]) / half, idle / half


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attn-f", type=float, required=True, help="forward pre-dispatch compute per layer")
    ap.add_argument("--attn-b", type=float, required=True, help="backward post-combine compute per layer")
    ap.add_argument("--mlp", type=float, required=True, help="each expert phase (fwd, dgrad, wgrad) per layer")
    ap.add_argument("--a2a", type=float, required=True, help="one all-to-all")
    args = ap.parse_args()
    seg = Segments(args.attn_f, args.attn_b, args.mlp, args.mlp, args.mlp, args.a2a)
    period, idle = megatron_period(seg)
    compute = seg.attn_f + seg.attn_b + seg.mlp_f + seg.mlp_b + seg.mlp_dw
    print(f"Megatron's order: {period:.3f} per layer pair (compute {compute:.3f}, all-to-all {4 * seg.a2a:.3f}); "
          f"compute idle {idle:.3f} per pair")


if __name__ == "__main__":
    main()
