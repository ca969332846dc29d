"""Host time of an eager PyTorch transformer layer, per kernel it launches.

``Scenario.host = "eager"`` (:mod:`moesim.lowering.host`) charges each kernel moesim counts the
profile's back-to-back eager launch cost. Real programs spend more host time per kernel (Python,
the dispatcher, autograd, allocator). This probe measures it on a Llama-style decoder layer
(RMSNorm, fused QKV projection with grouped KV heads, rotary embedding, causal flash attention,
output projection, residual, RMSNorm, SwiGLU MLP, residual; bf16, weights with gradients), forward
plus backward, at several token counts:

* ``host_ns``: the host thread's time to issue one forward and backward while the GPU is kept
  busy by a long spin queued first (so the host never waits for the GPU): median of repeats;
* ``gpu_ns``: the GPU time of the same step (CUDA events, host ahead);
* ``cuda_kernels``: kernels the step launched (``torch.profiler``, CUDA kernel events);
* ``launch_ns``: back-to-back launches of a tiny kernel in the same process (the profile's figure);
* ``eager_ns``: the step as eager PyTorch runs it (GPU idle when the host starts issuing);
* with ``--stack L``: the same for L stacked layers (``stack_rows``), to check how a simulated
  eager host composes with the GPU over a step (lab/legacy_validate/ACCURACY_NOTEBOOK.md).

``python3 -m lab.eager_probe --out eager_probe.json``
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from moesim.calibrate import kernels, provenance
from moesim.calibrate.kernels import rms_norm, rope

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN = 4096, 32, 8, 128, 14336
TOKENS = (128, 512, 2048, 8192)  # 2048: host and GPU time about equal per layer
SPIN_CYCLES = 400_000_000  # ~0.2 s of GPU spin: the host issues a whole step behind it


class Layer:
    """The decoder layer's weights and one forward (``[1, tokens, HIDDEN]`` in, same out)."""

    def __init__(self, device: str) -> None:
        def w(*shape: int, seed: int) -> torch.Tensor:
            n = 1
            for s in shape:
                n *= s
            return (kernels.randn(n, device, seed).view(*shape) * 0.02).requires_grad_()
        q_out = (HEADS + 2 * KV_HEADS) * HEAD_DIM
        self.wqkv, self.wo = w(q_out, HIDDEN, seed=1), w(HIDDEN, HEADS * HEAD_DIM, seed=2)
        self.wg, self.wu, self.wd = w(FFN, HIDDEN, seed=3), w(FFN, HIDDEN, seed=4), w(HIDDEN, FFN, seed=5)
        self.n1 = torch.ones(HIDDEN, device=device, dtype=torch.bfloat16, requires_grad=True)
        self.n2 = torch.ones(HIDDEN, device=device, dtype=torch.bfloat16, requires_grad=True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        qkv = F.linear(rms_norm(x, self.n1), self.wqkv)
        q, k, v = qkv.split((HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM), dim=-1)
        q = rope(q.view(1, t, HEADS, HEAD_DIM).transpose(1, 2), cos, sin)
        k = rope(k.view(1, t, KV_HEADS, HEAD_DIM).transpose(1, 2), cos, sin)
        v = v.view(1, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + F.linear(a.transpose(1, 2).reshape(1, t, HEADS * HEAD_DIM), self.wo)
        h = rms_norm(x, self.n2)
        return x + F.linear(F.silu(F.linear(h, self.wg)) * F.linear(h, self.wu), self.wd)


def _step(layers: "list[Layer]", x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dy: torch.Tensor) -> None:
    y = x
    for layer in layers:
        y = layer.forward(y, cos, sin)
    y.backward(dy)


def measure(tokens: int, repeats: int, num_layers: int = 1) -> dict:
    """One row: ``num_layers`` stacked layers' forward + backward at ``tokens``. Besides the
    host and GPU times, ``eager_ns``: the step as eager PyTorch runs it, the GPU idle when the
    host starts issuing (CUDA events around it, median)."""
    dev = "cuda"
    layers = [Layer(dev) for _ in range(num_layers)]
    x = kernels.randn(tokens * HIDDEN, dev, 7).view(1, tokens, HIDDEN).requires_grad_()
    dy = kernels.randn(tokens * HIDDEN, dev, 8).view(1, tokens, HIDDEN)
    ang = torch.arange(tokens, device=dev, dtype=torch.float32)[:, None] * torch.arange(HEAD_DIM // 2, device=dev)[None] * 1e-3
    cos, sin = ang.cos().to(torch.bfloat16), ang.sin().to(torch.bfloat16)
    for _ in range(3):
        _step(layers, x, cos, sin, dy)
    torch.cuda.synchronize()
    host = []
    for _ in range(repeats):
        torch.cuda._sleep(SPIN_CYCLES)
        t0 = time.perf_counter_ns()
        _step(layers, x, cos, sin, dy)
        host.append(time.perf_counter_ns() - t0)
        torch.cuda.synchronize()

    def timed(lead_cycles: int) -> list[float]:
        out = []
        for _ in range(repeats):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            if lead_cycles:
                torch.cuda._sleep(lead_cycles)
            s.record()
            _step(layers, x, cos, sin, dy)
            e.record()
            torch.cuda.synchronize()
            out.append(s.elapsed_time(e) * 1e6)
        return out
    gpu = timed(SPIN_CYCLES // 20 * num_layers)   # host ahead: the GPU's own time
    eager = timed(0)                               # GPU idle as the host starts: eager PyTorch
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        _step(layers, x, cos, sin, dy)
        torch.cuda.synchronize()
    launched = sum(1 for ev in prof.events() if ev.device_type == torch.autograd.DeviceType.CUDA)
    return {"tokens": tokens, "layers": num_layers, "host_ns": statistics.median(host), "host_ns_all": host,
            "gpu_ns": statistics.median(gpu), "eager_ns": statistics.median(eager), "eager_ns_all": eager,
            "cuda_kernels": launched}


def launch_ns(count: int = 200) -> float:
    """Host time per back-to-back launch of a one-element add, the GPU kept busy; ``count`` well
    under the CUDA launch queue's depth (about 1,000: past it the host waits for the GPU)."""
    a = torch.zeros(1, device="cuda")
    torch.cuda._sleep(SPIN_CYCLES)
    t0 = time.perf_counter_ns()
    for _ in range(count):
        a.add_(1.0)
    dt = time.perf_counter_ns() - t0
    torch.cuda.synchronize()
    return dt / count


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("eager_probe.json"))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--stack", type=int, default=0, help="also time this many stacked layers at each token count")
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="comma-separated token counts")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    doc = {**provenance.collect("cuda", 1), "layer": {"hidden": HIDDEN, "heads": HEADS, "kv_heads": KV_HEADS,
                                                      "head_dim": HEAD_DIM, "ffn": FFN},
           "launch_ns": [launch_ns() for _ in range(3)], "rows": []}
    for tokens in (int(t) for t in args.tokens.split(",")):
        for num_layers in (1, args.stack) if args.stack > 1 else (1,):
            row = measure(tokens, args.repeats, num_layers)
            doc.setdefault("rows" if num_layers == 1 else "stack_rows", []).append(row)
            print(f"tokens {tokens:6d} x{num_layers}: host {row['host_ns'] / 1e3:8.1f} us  gpu {row['gpu_ns'] / 1e3:8.1f} us  "
                  f"eager {row['eager_ns'] / 1e3:8.1f} us  kernels {row['cuda_kernels']:4d}  "
                  f"host/kernel {row['host_ns'] / max(row['cuda_kernels'], 1) / 1e3:6.2f} us", flush=True)
    doc["launch_ns"] += [launch_ns() for _ in range(3)]
    print(f"back-to-back launch: {statistics.median(doc['launch_ns']) / 1e3:.2f} us", flush=True)
    args.out.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
