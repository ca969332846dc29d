"""Where a cluster scenario's time per layer per microbatch goes: compute by op class, communication,
host and bubble, divided by (layers per GPU x microbatches).

Runs each scenario of an experiment file as ``python -m moesim run`` does (same engine and costs),
optionally with ``--set key=value`` overrides for every scenario (e.g. ``plan.num_microbatches=16``
to keep the run short), then prints, per scenario, in ms per layer per microbatch (mean over the
simulated GPUs): the step's parts (:func:`lab.published_breakdown.breakdown`) and the compute
stream split by op class (each span split over its kernels by the cost model's times, as
``moesim layer`` reports them) and by task category (forward, backward, weight_grad, expert,
optimizer). The figures include embedding, head and optimizer work spread over the layers.

Run: python -m lab.layer_gap experiments/published_qwen3_30b_a3b_h100.py --set plan.num_microbatches=16
(``--no-fp8-quantize``: without the FP8 quantize kernels, for a before/after in one tree;
``--fp8-grouped-bwd-as-fwd``: fp8 grouped dgrad/wgrad priced as the measured fp8 grouped forward;
``--window-attn-as-band``: a sliding-window attention priced from the measured causal grid at its
query length, scaled by the key tiles a block-skipping kernel visits, see :func:`_window_as_band`;
``--host-scale X``: every eager host time (per-op issue, sync copies, calls, collectives) times X,
e.g. the measured ratio of a harness's own host issue to the simulated host lane)
"""
from __future__ import annotations

import argparse

from lab.published_breakdown import breakdown
from moesim.experiment import load_experiment
from moesim.experiment.block import _span_classes
from moesim.experiment.runner import run_scenario
from moesim.lowering.resolve import resolve_cost_model
from moesim.workload.presets import get_model


def _per_layer_mb(scn) -> int:
    spec = scn.model if not isinstance(scn.model, str) else get_model(scn.model)
    return spec.num_layers // scn.plan.pp * scn.plan.num_microbatches


def _compute_split(rec, cost) -> tuple[dict[str, float], dict[str, float]]:
    classes: dict[str, float] = {}
    categories: dict[str, float] = {}
    ranks = {s.rank for s in rec.spans if s.stream == "compute"}
    for s in rec.spans:
        if s.stream != "compute":
            continue
        dur = s.end_ns - s.start_ns
        categories[s.category] = categories.get(s.category, 0.0) + dur / len(ranks)
        for name, ns in _span_classes(s, "host", dur, cost):
            classes[name] = classes.get(name, 0.0) + ns / len(ranks)
    return classes, categories


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--set", action="append", default=[], help="key=value override for every scenario")
    ap.add_argument("--no-fp8-quantize", action="store_true",
                    help="leave out the FP8 GEMMs' quantize kernels (moesim.lowering.fp8_quantize), for before/after")
    ap.add_argument("--fp8-grouped-bwd-as-fwd", action="store_true",
                    help="what-if: price fp8 grouped dgrad/wgrad (no measured rows: roofline fallback) as the "
                         "measured fp8 grouped forward of the same counts, n and k")
    ap.add_argument("--window-attn-as-band", action="store_true",
                    help="what-if: price a sliding-window attention (seq_kv = window < seq_q, non-causal) from the "
                         "causal grid at seq_q, scaled by the 128-wide key tiles a block-skipping kernel visits")
    ap.add_argument("--host-scale", type=float, default=None,
                    help="what-if: multiply every eager host time of the calibrated cost model by this factor")
    args = ap.parse_args()
    if args.host_scale is not None:
        _scale_host(args.host_scale)
    if args.window_attn_as_band:
        _window_as_band()
    if args.no_fp8_quantize:
        _without_quantize()
    if args.fp8_grouped_bwd_as_fwd:
        _grouped_bwd_as_fwd()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    for scn in load_experiment(args.file).scenarios:
        scn = scn.with_overrides(overrides) if overrides else scn
        result, rec = run_scenario(scn, force=True)
        cost = resolve_cost_model(scn.cost_model, _gpu_kind(scn), scn.profile)
        n = _per_layer_mb(scn)
        b = breakdown(rec, round(result.step_time_ms * 1e6))
        classes, categories = _compute_split(rec, cost)
        print(f"{scn.name}: {result.tokens_per_s_per_gpu:.0f} tokens/s/GPU, step {result.step_time_ms:.0f} ms; "
              f"per layer per microbatch ({n} of them per GPU), ms:")
        print("  step {:.3f} = compute {:.3f} + exposed comm {:.3f} + host-bound {:.3f} + bubble {:.3f}; "
              "comm busy {:.3f}".format(result.step_time_ms / n, b["compute"] / n, b["exposed_comm"] / n,
                                        b["host_bound"] / n, b["bubble"] / n, b["comm"] / n))
        hosts = [s for s in rec.spans if s.stream == "host"]
        host_ranks = max(1, len({s.rank for s in hosts}))
        print(f"  host thread busy {sum(s.end_ns - s.start_ns for s in hosts) / host_ranks / 1e6 / n:.3f} "
              "(eager host: issue time of what it launches plus the copy time after each sync)")
        print("  compute by category: " + ", ".join(f"{k} {v / 1e6 / n:.3f}" for k, v in
                                                     sorted(categories.items(), key=lambda kv: -kv[1])))
        print("  compute by op class: " + ", ".join(f"{k} {v / 1e6 / n:.3f}" for k, v in
                                                    sorted(classes.items(), key=lambda kv: -kv[1]) if v / 1e6 / n >= 0.005))


def _without_quantize() -> None:
    """Price FP8 GEMMs without their quantize kernels (as moesim did before fp8_quantize)."""
    from moesim.lowering import moe_costs, stage_costs

    def plain(program, act_bytes, skip=frozenset()):
        return list(program)
    stage_costs.with_quantize = plain
    moe_costs.with_quantize = plain


def _grouped_bwd_as_fwd() -> None:
    """fp8 grouped dgrad / wgrad priced as the measured fp8 grouped forward of the same shape."""
    import dataclasses

    from moesim.costs import calibrated
    from moesim.ops import GroupedGemm

    original = calibrated.CalibratedCostModel._compute

    def compute(self, op):
        if isinstance(op, GroupedGemm) and op.dtype == "fp8" and op.layout != "fwd":
            op = dataclasses.replace(op, layout="fwd")
        return original(self, op)
    calibrated.CalibratedCostModel._compute = compute


def _scale_host(factor: float) -> None:
    """Every host figure of the calibrated cost model times ``factor`` (what-if, this process only)."""
    from moesim.costs import calibrated

    for name in ("host_op_ns", "sync_ns", "host_ns", "module_call_ns", "host_overhead_ns"):
        original = getattr(calibrated.CalibratedCostModel, name)

        def scaled(self, *a, _original=original, **k):
            return max(1, int(round(_original(self, *a, **k) * factor)))
        setattr(calibrated.CalibratedCostModel, name, scaled)


TILE = 128   # FlashAttention-style query / key tile on H100 (FA2/FA3 and cuDNN use 128-row tiles here)


def _band_tiles(seq: int, window: int, tile: int = TILE) -> float:
    """Key tiles a block-skipping kernel visits over all query tiles for a band of ``window`` keys
    ending at each query (a tile partly inside the band is computed whole)."""
    q_tiles = -(-seq // tile)
    visited = 0
    for qt in range(q_tiles):
        first_key = max(0, qt * tile - (window - 1))
        last_key = min(seq - 1, (qt + 1) * tile - 1)
        visited += last_key // tile - first_key // tile + 1
    return float(visited)


def _window_as_band() -> None:
    """A sliding-window attention op (``seq_kv`` = window < ``seq_q``, non-causal, as
    moesim.workload.transformer builds it) priced as the measured causal kernel of the same batch,
    heads and ``seq_q``, times (key tiles the band visits) / (key tiles the causal kernel visits).
    The shipped pricing looks the op up at ``seq_kv`` (a 128-token causal kernel, launch-bound)
    and scales that time by FLOPs to S x W, which is ~30x the causal S x S kernel's time per FLOP."""
    import dataclasses

    from moesim.costs import calibrated
    from moesim.ops import Attention

    original = calibrated.CalibratedCostModel._attention_ns

    def attention_ns(self, op):
        if isinstance(op, Attention) and not op.causal and op.seq_kv < op.seq_q:
            full = dataclasses.replace(op, seq_kv=op.seq_q, causal=True)
            return original(self, full) * _band_tiles(op.seq_q, op.seq_kv) / _band_tiles(op.seq_q, op.seq_q)
        return original(self, op)
    calibrated.CalibratedCostModel._attention_ns = attention_ns


def _gpu_kind(scn) -> str:
    from moesim.topology import load_topology

    topo = load_topology(scn.topology)
    return topo.gpu_kind if hasattr(topo, "gpu_kind") else "H100"


if __name__ == "__main__":
    main()
