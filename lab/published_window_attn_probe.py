"""Sliding-window and sink attention at GPT-OSS's per-GPU shape, measured next to moesim's prices.

GPT-OSS 120B (TP 1): one 4K sequence, 64 query heads, 8 KV heads, head_dim 64; alternate layers
attend to a 128-token window (left 127, right 0), the others are full causal; every head has a
learned softmax sink. moesim prices the window layer from the causal grid at seq = 128 scaled by
FLOPs (the shipped :mod:`moesim.costs.calibrated` ``_attention_ns``), which is ~5x the full
causal layer's time; ``lab.layer_gap --window-attn-as-band`` prices it from the grid at seq =
4096 times the key tiles a block-skipping kernel visits. This probe measures which is right on
a real GPU, with whatever kernels the machine has (each optional, skipped with its import error):

* ``sdpa``: ``F.scaled_dot_product_attention(is_causal=True, enable_gqa=True)``, full causal (the
  profile's own kernel: the reference the band pricing scales);
* ``sdpa_band_mask``: the same with an explicit boolean band mask (a kernel that masks the whole
  S x S without skipping tiles: the upper bound);
* ``flex``: ``torch.nn.attention.flex_attention`` (compiled) with a causal / sliding-window
  ``BlockMask``: a block-sparse kernel that ships with torch and skips the 128 x 128 tiles the
  mask leaves empty, as FlashAttention's and cuDNN's window kernels do;
* ``flash_attn``: ``flash_attn_func(causal=True, window_size=(127, 0))`` and ``(-1, 0)``;
* ``te``: Transformer Engine ``DotProductAttention`` with ``window_size=(127, 0)`` / full causal
  and, where the installed version has it, ``softmax_type="learnable"`` (the sink kernel
  Megatron runs for GPT-OSS; TE disables FlashAttention for it and uses cuDNN's fused attention).

Each case is timed forward and backward with CUDA events (median of ``--repeats`` after a warm-up),
and printed with moesim's two prices of the same op. ``--smoke`` (or no CUDA): only the case list
and moesim's prices, no torch GPU work. Output: ``--out DIR/window_attn.json``.

Run: python -m lab.published_window_attn_probe --out /tmp/wa            (on an H100)
     python -m lab.published_window_attn_probe --smoke                  (anywhere)
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any, Callable

BATCH, HEADS, KV_HEADS, HEAD_DIM, SEQ, WINDOW = 1, 64, 8, 64, 4096, 128
CASES = (("full", 0), ("window", WINDOW))


def moesim_prices_ns() -> dict[str, dict[str, float]]:
    """moesim's forward / backward price of each case: shipped pricing and the band what-if."""
    from lab.layer_gap import _band_tiles
    from moesim.lowering.resolve import resolve_cost_model
    from moesim.ops import Attention

    cost = resolve_cost_model(None, "H100", None)
    out: dict[str, dict[str, float]] = {}
    for name, window in CASES:
        for backward in (False, True):
            op = Attention(batch=BATCH, heads=HEADS, kv_heads=KV_HEADS, seq_q=SEQ, seq_kv=window or SEQ,
                           head_dim=HEAD_DIM, causal=not window, backward=backward, name="attn.core")
            full = Attention(batch=BATCH, heads=HEADS, kv_heads=KV_HEADS, seq_q=SEQ, seq_kv=SEQ,
                             head_dim=HEAD_DIM, causal=True, backward=backward, name="attn.core")
            band = cost.compute_ns(full) * _band_tiles(SEQ, window or SEQ) / _band_tiles(SEQ, SEQ)
            out[f"{name}.{'bwd' if backward else 'fwd'}"] = {"shipped_ns": float(cost.compute_ns(op)),
                                                            "band_ns": float(band)}
    return out


def _time_ns(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e6)
    q = statistics.quantiles(times, n=4)
    return {"time_ns": statistics.median(times), "p25_ns": q[0], "p75_ns": q[2], "repeats": repeats}


def _fwd_bwd(forward: Callable[[], Any], leaves: list, repeats: int) -> dict[str, dict[str, float]]:
    """Forward timed alone; backward timed as repeated ``backward(retain_graph=True)`` of one output."""
    import torch

    fwd = _time_ns(forward, repeats)
    out = forward()
    grad = torch.randn_like(out)

    def backward() -> None:
        for t in leaves:
            t.grad = None
        out.backward(grad, retain_graph=True)
    return {"fwd": fwd, "bwd": _time_ns(backward, repeats)}


def _tensors(layout: str):
    import torch

    def make(heads: int):
        shape = (BATCH, heads, SEQ, HEAD_DIM) if layout == "bhsd" else (BATCH, SEQ, heads, HEAD_DIM)
        return torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    return make(HEADS), make(KV_HEADS), make(KV_HEADS)


def _sdpa(window: int, mask: bool):
    import torch
    import torch.nn.functional as F

    q, k, v = _tensors("bhsd")
    if not mask:
        if window:
            return None
        return (lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)), [q, k, v]
    i = torch.arange(SEQ, device="cuda")
    band = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - (window or SEQ))
    kr, vr = k.repeat_interleave(HEADS // KV_HEADS, 1), v.repeat_interleave(HEADS // KV_HEADS, 1)
    return (lambda: F.scaled_dot_product_attention(q, kr, vr, attn_mask=band)), [q, k, v]


def _flex(window: int):
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    q, k, v = _tensors("bhsd")
    width = window or SEQ

    def band(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (kv_idx > q_idx - width)
    mask = create_block_mask(band, B=None, H=None, Q_LEN=SEQ, KV_LEN=SEQ, device="cuda")
    attn = torch.compile(flex_attention)
    return (lambda: attn(q, k, v, block_mask=mask, enable_gqa=True)), [q, k, v]


def _flash(window: int):
    from flash_attn import flash_attn_func

    q, k, v = _tensors("bshd")
    size = (window - 1, 0) if window else (-1, 0)
    return (lambda: flash_attn_func(q, k, v, causal=True, window_size=size)), [q, k, v]


def _te(window: int, sink: bool):
    import transformer_engine.pytorch as te

    kwargs: dict[str, Any] = {"num_gqa_groups": KV_HEADS, "attn_mask_type": "causal", "qkv_format": "bshd",
                              "window_size": (window - 1, 0) if window else (-1, 0)}
    if sink:
        kwargs["softmax_type"] = "learnable"   # TE >= 2.8; a TypeError names an older TE
    attn = te.DotProductAttention(HEADS, HEAD_DIM, **kwargs).cuda()
    q, k, v = _tensors("bshd")
    return (lambda: attn(q, k, v)), [q, k, v]


BACKENDS: dict[str, Callable[[int], Any]] = {
    "sdpa": lambda w: _sdpa(w, mask=False),
    "sdpa_band_mask": lambda w: _sdpa(w, mask=True),
    "flex": _flex,
    "flash_attn": _flash,
    "te": lambda w: _te(w, sink=False),
    "te_sink": lambda w: _te(w, sink=True),
}


def measure(repeats: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for backend, build in BACKENDS.items():
        for name, window in CASES:
            row: dict[str, Any] = {"backend": backend, "case": name, "window": window, "batch": BATCH,
                                   "heads": HEADS, "kv_heads": KV_HEADS, "seq": SEQ, "head_dim": HEAD_DIM}
            try:
                built = build(window)
                if built is None:
                    continue
                row.update(_fwd_bwd(built[0], built[1], repeats))
            except Exception as exc:   # a kernel this machine lacks: recorded, the rest go on
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="directory for window_attn.json")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="no GPU work: the cases and moesim's prices only")
    args = ap.parse_args()
    prices = moesim_prices_ns()
    for key, p in prices.items():
        print(f"moesim {key:12} shipped {p['shipped_ns'] / 1e6:7.3f} ms   band what-if {p['band_ns'] / 1e6:7.3f} ms")
    rows: list[dict[str, Any]] = []
    if not args.smoke:
        import torch
        if torch.cuda.is_available():
            rows = measure(args.repeats)
        else:
            print("no CUDA device: smoke mode")
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:15} {r['case']:7} skipped: {r['error']}")
            continue
        print(f"{r['backend']:15} {r['case']:7} fwd {r['fwd']['time_ns'] / 1e6:7.3f} ms  bwd {r['bwd']['time_ns'] / 1e6:7.3f} ms")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "window_attn.json").write_text(json.dumps({"moesim": prices, "measured": rows}, indent=1))
        print(f"wrote {args.out / 'window_attn.json'}")


if __name__ == "__main__":
    main()
