"""GPU memory probe: what one decoder layer keeps for backward under each recompute option.

One torchtitan-style decoder layer in plain PyTorch and bf16 (RMSNorm, GQA or MLA attention with RoPE
through ``F.scaled_dot_product_attention``, a SwiGLU FFN or a top-k MoE of balanced routing
whose expert outputs are scaled by the router scores in fp32, as torchtitan does) runs forward and
backward once per case. Recomputation is ``torch.utils.checkpoint`` (non-reentrant) over the
parts Megatron's ``--recompute-modules`` name:

* ``core_attn``: the SDPA call; ``mlp``: the dense FFN; ``moe``: the whole MoE block;
* ``mla_up_proj`` (MLA layers): the Q projection, KV up-projection and RoPE, with their
  consumer, the core attention (the up-projected Q, K, V are the discarded outputs);
* output-discarding modules (``layernorm``, ``moe_act``) free an output that the next op
  saves, so the checkpoint spans the op *and* its consumers: norm + the projections / router /
  token gather reading it; SwiGLU + the down projection;
* ``full``: the whole layer.

RMSNorm and SwiGLU are small autograd functions that save their inputs only (as the fused
Transformer Engine / Megatron kernels do); eager ``F.silu(g) * u`` would also keep ``silu(g)``.

Measured per case (CUDA, after one unmeasured warm-up per shape that allocates the cuBLAS and
attention workspaces): ``saved_bytes`` = ``torch.cuda.memory_allocated`` after the forward
minus before it (the layer output, which the next layer counts as its input, stands in for the
input this layer keeps), and ``peak_bytes`` = ``max_memory_allocated`` over forward + backward
minus the allocation before the forward. On CPU (``--device cpu``, tiny shapes, a smoke test)
the measure is the bytes of the distinct tensors autograd saves
(``torch.autograd.graph.saved_tensors_hooks``), plus the output; ``peak_bytes`` is not measured.

Run on a GPU (about a minute)::

    python3 -m lab.memory_probe --device cuda --out data/validation/memory/h100_layers.json

Compare with moesim: ``moesim.validate.memory`` (``python -m moesim.validate.memory FILE``).
Imports only torch and the standard library (the measurement machine has no simulator deps).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

DENSE_CASES = ("none", "core_attn", "layernorm", "mlp", "layernorm+mlp", "full")
MOE_CASES = ("none", "core_attn", "layernorm", "moe_act", "moe", "layernorm+moe_act", "full")


@dataclass(frozen=True)
class LayerShape:
    """One decoder layer's shape; ``num_experts`` 0 means a dense SwiGLU FFN."""

    name: str
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_hidden: int
    seq_len: int
    mbs: int = 1
    num_experts: int = 0
    top_k: int = 0
    kv_lora_rank: int = 0      # MLA (DeepSeek) when > 0: head_dim is the non-rotary Q/K width
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0


# Llama-3-8B layer (meta-llama/Meta-Llama-3-8B config.json) and Qwen3-30B-A3B layer
# (Qwen/Qwen3-30B-A3B config.json), 4K tokens: the layers of data/validation/runs' traces.
# MLA: one TP4 rank of DeepSeek-V3's first (dense) layer (config_671B.json: hidden 7168,
# q_lora 1536, kv_lora 512, 128 heads of 128 + 64 rope, v 128, FFN 18432): 32 heads, FFN 4608.
GPU_SHAPES = (LayerShape("llama3-8b-layer", 4096, 32, 8, 128, 14336, 4096),
              LayerShape("qwen3-30b-a3b-layer", 2048, 32, 4, 128, 768, 4096, num_experts=128, top_k=8),
              LayerShape("deepseek-v3-dense-layer-tp4-rank", 7168, 32, 32, 128, 4608, 4096, kv_lora_rank=512,
                         q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128))
# tiny-mla's V width equals Q/K's (16 + 8) so CPU SDPA runs its flash kernel, not the math one
# that keeps the scores.
CPU_SHAPES = (LayerShape("tiny-dense", 64, 4, 2, 16, 128, 32),
              LayerShape("tiny-moe", 64, 4, 2, 16, 32, 32, num_experts=8, top_k=2),
              LayerShape("tiny-mla", 64, 4, 4, 16, 128, 32, kv_lora_rank=32, q_lora_rank=48, qk_rope_head_dim=8,
                         v_head_dim=24))
MLA_CASES = ("none", "core_attn", "mla_up_proj", "layernorm", "mla_up_proj+layernorm+mlp", "full")


class _RMSNorm(torch.autograd.Function):
    """RMSNorm saving its input and the fp32 reciprocal RMS, as fused kernels do."""

    @staticmethod
    def forward(ctx, x, weight, eps):  # type: ignore[override]
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return (xf * rstd).to(x.dtype) * weight

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, weight, rstd = ctx.saved_tensors
        xf, dyw = x.float(), (dy * weight).float()
        xhat = xf * rstd
        dx = rstd * (dyw - xhat * (dyw * xhat).mean(-1, keepdim=True))
        dw = (dy.float() * xhat).reshape(-1, x.shape[-1]).sum(0)
        return dx.to(x.dtype), dw.to(weight.dtype), None


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up saving only its input (gate and up), as fused kernels do."""

    @staticmethod
    def forward(ctx, gate_up):  # type: ignore[override]
        ctx.save_for_backward(gate_up)
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        (gate_up,) = ctx.saved_tensors
        gate, up = gate_up.float().chunk(2, dim=-1)
        sig = torch.sigmoid(gate)
        silu = gate * sig
        dgate = dy.float() * up * sig * (1 + gate * (1 - sig))
        return torch.cat([dgate, dy.float() * silu], dim=-1).to(gate_up.dtype)


def _norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return _RMSNorm.apply(x, w, 1e-6)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Layer(torch.nn.Module):
    """One torchtitan-style decoder layer with recompute switches named as Megatron's modules."""

    def __init__(self, s: LayerShape, modules: set[str], device: str, dtype: torch.dtype, repeat_kv: bool = False):
        super().__init__()
        self.s, self.modules_on, self.repeat_kv = s, modules, repeat_kv
        p = dict(device=device, dtype=dtype)
        h, d = s.hidden, s.head_dim
        self.attn_norm = torch.nn.Parameter(torch.ones(h, **p))
        self.mlp_norm = torch.nn.Parameter(torch.ones(h, **p))
        if s.kv_lora_rank:
            r, c = s.qk_rope_head_dim, s.kv_lora_rank
            self.wq_down = torch.nn.Parameter(torch.randn(h, s.q_lora_rank, **p) * h ** -0.5)
            self.q_norm = torch.nn.Parameter(torch.ones(s.q_lora_rank, **p))
            self.wq = torch.nn.Parameter(torch.randn(s.q_lora_rank, s.num_heads * (d + r), **p) * s.q_lora_rank ** -0.5)
            self.wkv_down = torch.nn.Parameter(torch.randn(h, c + r, **p) * h ** -0.5)
            self.kv_norm = torch.nn.Parameter(torch.ones(c, **p))
            self.wkv_up = torch.nn.Parameter(torch.randn(c, s.num_heads * (d + s.v_head_dim), **p) * c ** -0.5)
            d_rope = r
        else:
            self.wq = torch.nn.Parameter(torch.randn(h, s.num_heads * d, **p) * h ** -0.5)
            self.wk = torch.nn.Parameter(torch.randn(h, s.num_kv_heads * d, **p) * h ** -0.5)
            self.wv = torch.nn.Parameter(torch.randn(h, s.num_kv_heads * d, **p) * h ** -0.5)
            d_rope = d
        v_dim = s.v_head_dim or d
        self.wo = torch.nn.Parameter(torch.randn(s.num_heads * v_dim, h, **p) * (s.num_heads * v_dim) ** -0.5)
        if s.num_experts:
            self.router = torch.nn.Parameter(torch.randn(h, s.num_experts, **p) * h ** -0.5)
            self.w13 = torch.nn.Parameter(torch.randn(s.num_experts, h, 2 * s.ffn_hidden, **p) * h ** -0.5)
            self.w2 = torch.nn.Parameter(torch.randn(s.num_experts, s.ffn_hidden, h, **p) * s.ffn_hidden ** -0.5)
        else:
            self.w13 = torch.nn.Parameter(torch.randn(h, 2 * s.ffn_hidden, **p) * h ** -0.5)
            self.w2 = torch.nn.Parameter(torch.randn(s.ffn_hidden, h, **p) * s.ffn_hidden ** -0.5)
        pos = torch.arange(s.seq_len, device=device, dtype=torch.float32)[:, None]
        freq = pos * torch.pow(10000.0, -torch.arange(0, d_rope, 2, device=device, dtype=torch.float32) / d_rope)
        self.register_buffer("cos", torch.cat([freq.cos(), freq.cos()], -1).to(dtype), persistent=False)
        self.register_buffer("sin", torch.cat([freq.sin(), freq.sin()], -1).to(dtype), persistent=False)

    def _ckpt(self, module: str, fn: Callable, *args):
        return checkpoint(fn, *args, use_reentrant=False) if module in self.modules_on else fn(*args)

    # -- attention ----------------------------------------------------------------------
    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = _norm(x, self.attn_norm)
        return y @ self.wq, y @ self.wk, y @ self.wv  # separate projections, as torchtitan

    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.repeat_kv:  # K/V repeated to the query heads (torchtitan's repeat_kv), SDPA then keeps those
            groups = self.s.num_heads // self.s.num_kv_heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    # -- MLA (DeepSeek): norm -> q projection and KV down-projection -> latent RMSNorm ->
    # up-projection and RoPE (``mla_up_proj``) -> core attention -> output projection.
    def _mla_entry(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Norm and the two down-projections reading its output (``layernorm``'s span)."""
        y = _norm(x, self.attn_norm)
        return y @ self.wq_down, y @ self.wkv_down

    def _mla_up(self, y: torch.Tensor, c_kv: torch.Tensor, k_pe: torch.Tensor):
        s, b, t = self.s, y.shape[0], y.shape[1]
        d, r, hq = s.head_dim, s.qk_rope_head_dim, s.num_heads
        q = (y @ self.wq).view(b, t, hq, d + r)
        q_pe = _rope(q[..., d:], self.cos[:, None], self.sin[:, None])
        kv = (c_kv @ self.wkv_up).view(b, t, hq, d + s.v_head_dim)
        k_pe = _rope(k_pe.view(b, t, 1, r), self.cos[:, None], self.sin[:, None]).expand(b, t, hq, r)
        qh = torch.cat([q[..., :d], q_pe], dim=-1).transpose(1, 2)
        kh = torch.cat([kv[..., :d], k_pe], dim=-1).transpose(1, 2)
        v = kv[..., d:].transpose(1, 2).contiguous()  # Megatron makes q, k, v contiguous for TE
        return qh, kh, v

    def _mla_up_core(self, y: torch.Tensor, c_kv: torch.Tensor, k_pe: torch.Tensor) -> torch.Tensor:
        """Output-discarding ``mla_up_proj``: the up-projected Q, K, V are freed, so the
        checkpoint spans their consumer, the core attention."""
        return F.scaled_dot_product_attention(*self._mla_up(y, c_kv, k_pe), is_causal=True)

    def mla(self, x: torch.Tensor) -> torch.Tensor:
        s, b = self.s, x.shape[0]
        q_c, kv_down = self._ckpt("layernorm", self._mla_entry, x)
        y = _norm(q_c, self.q_norm)
        c_kv = _norm(kv_down[..., :s.kv_lora_rank], self.kv_norm)
        k_pe = kv_down[..., s.kv_lora_rank:]
        if "mla_up_proj" in self.modules_on:
            o = checkpoint(self._mla_up_core, y, c_kv, k_pe, use_reentrant=False)
        else:
            o = self._ckpt("core_attn", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                           *self._mla_up(y, c_kv, k_pe))
        return x + o.transpose(1, 2).reshape(b, s.seq_len, s.num_heads * s.v_head_dim) @ self.wo

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        if self.s.kv_lora_rank:
            return self.mla(x)
        s, b = self.s, x.shape[0]
        q, k, v = self._ckpt("layernorm", self._qkv, x)
        d, hq, hk = s.head_dim, s.num_heads, s.num_kv_heads
        q = _rope(q.view(b, s.seq_len, hq, d), self.cos[:, None], self.sin[:, None]).transpose(1, 2)
        k = _rope(k.view(b, s.seq_len, hk, d), self.cos[:, None], self.sin[:, None]).transpose(1, 2)
        v = v.reshape(b, s.seq_len, hk, d).transpose(1, 2)
        o = self._ckpt("core_attn", self._core, q, k, v)
        return x + o.transpose(1, 2).reshape(b, s.seq_len, hq * d) @ self.wo

    # -- FFN / MoE ------------------------------------------------------------------------
    def _dense(self, y: torch.Tensor) -> torch.Tensor:
        return _SwiGLU.apply(y @ self.w13) @ self.w2

    def _route(self, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router and the token gather: everything that reads the norm output."""
        y = y.reshape(-1, self.s.hidden)
        probs = torch.softmax((y @ self.router).float(), dim=-1)
        return probs, y.index_select(0, idx)

    def _moe_entry(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._route(_norm(x, self.mlp_norm), idx)

    def _experts_down(self, h13: torch.Tensor) -> torch.Tensor:
        return torch.bmm(_SwiGLU.apply(h13), self.w2)

    def _moe(self, x: torch.Tensor, normed: bool = False) -> torch.Tensor:
        """The MoE block on ``x`` (the layer's residual stream, or its norm output if ``normed``)."""
        s = self.s
        tokens = x.shape[0] * s.seq_len
        # Balanced routing (every expert gets tokens * k / E pairs), fixed so cases compare alike;
        # the router still runs and its probabilities weight the outputs (torchtitan).
        expert = (torch.arange(tokens * s.top_k, device=x.device) % s.num_experts).view(tokens, s.top_k)
        order = torch.argsort(expert.flatten(), stable=True)
        token_of_pair = torch.div(order, s.top_k, rounding_mode="floor")
        if normed:
            probs, routed = self._route(x, token_of_pair)
        elif "layernorm" in self.modules_on:
            probs, routed = checkpoint(self._moe_entry, x, token_of_pair, use_reentrant=False)
        else:
            probs, routed = self._moe_entry(x, token_of_pair)
        pair_probs = probs.gather(1, expert).flatten()[order]
        grouped = routed.view(s.num_experts, -1, s.hidden)
        h13 = torch.bmm(grouped, self.w13)
        out = self._ckpt("moe_act", self._experts_down, h13).reshape(-1, s.hidden)
        weighted = (out.float() * pair_probs[:, None]).to(out.dtype)
        index = token_of_pair.reshape(-1, 1).expand(-1, s.hidden)  # torchtitan's scatter_add combine
        return torch.zeros(tokens, s.hidden, device=x.device, dtype=x.dtype).scatter_add(0, index, weighted)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        if self.s.num_experts:
            if "moe" not in self.modules_on:
                return x + self._moe(x).view_as(x)
            if "layernorm" in self.modules_on:  # the checkpoint's input, the norm output, is discarded too
                return x + checkpoint(lambda t: self._moe(_norm(t, self.mlp_norm), True), x,
                                      use_reentrant=False).view_as(x)
            return x + checkpoint(lambda t: self._moe(t, True), _norm(x, self.mlp_norm), use_reentrant=False).view_as(x)
        norm, mlp = "layernorm" in self.modules_on, "mlp" in self.modules_on
        if norm and mlp:  # the MLP checkpoint's input, the norm output, is discarded too
            return x + checkpoint(lambda t: self._dense(_norm(t, self.mlp_norm)), x, use_reentrant=False)
        if norm:  # norm + fc1 (its consumer) under one checkpoint
            h13 = checkpoint(lambda t: _norm(t, self.mlp_norm) @ self.w13, x, use_reentrant=False)
            return x + _SwiGLU.apply(h13) @ self.w2
        return x + self._ckpt("mlp", self._dense, _norm(x, self.mlp_norm))

    def layer(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.attention(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if "full" in self.modules_on:
            return checkpoint(self.layer, x, use_reentrant=False)
        return self.layer(x)


def _saved_bytes_hooked(layer: Layer, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(output, bytes of the distinct storages autograd saves outside checkpoints, plus the output)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.requires_grad and isinstance(t, torch.nn.Parameter):
            return t
        st = t.untyped_storage()
        if t.data_ptr() != x.data_ptr() and not any(t is p for p in layer.parameters()) \
                and not (t is layer.cos or t is layer.sin):
            seen[(st.data_ptr(), st.nbytes())] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(x)
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    params |= {layer.cos.untyped_storage().data_ptr(), layer.sin.untyped_storage().data_ptr(), x.untyped_storage().data_ptr()}
    total = sum(n for (ptr, _), n in seen.items() if ptr not in params)
    return out, float(total + out.numel() * out.element_size())


def _no_math_sdpa(device: str):
    """On CUDA, SDPA may use flash, memory-efficient or cuDNN kernels but not the math one,
    which keeps the scores (a case it would need fails instead of measuring another thing)."""
    import contextlib

    if not device.startswith("cuda"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION])


def run_case(shape: LayerShape, case: str, device: str, dtype: torch.dtype, seed: int = 0,
             repeat_kv: bool = False) -> dict:
    """One forward + backward of ``shape`` with recompute ``case``; bytes as the module docstring says."""
    torch.manual_seed(seed)
    modules = set() if case == "none" else set(case.split("+"))
    layer = Layer(shape, modules, device, dtype, repeat_kv)
    x = torch.randn(shape.mbs, shape.seq_len, shape.hidden, device=device, dtype=dtype, requires_grad=True)
    row: dict = {"shape": shape.name, "case": case, "recompute_modules": sorted(modules), "kv_repeated": repeat_kv}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = layer(x)
        torch.cuda.synchronize()
        row["saved_bytes"] = float(torch.cuda.memory_allocated() - before)
        out.backward(torch.ones_like(out))
        torch.cuda.synchronize()
        row["peak_bytes"] = float(torch.cuda.max_memory_allocated() - before)
        row["measure"] = "torch.cuda.memory_allocated after forward - before; max_memory_allocated over fwd+bwd"
    else:
        out, saved = _saved_bytes_hooked(layer, x)
        row["saved_bytes"] = saved
        out.backward(torch.ones_like(out))
        row["peak_bytes"] = None
        row["measure"] = "saved_tensors_hooks: distinct saved storages + the output (CPU smoke)"
    row["finite"] = bool(math.isfinite(float(x.grad.float().sum())))
    return row


def _guarded(shape: LayerShape, case: str, device: str, dtype: torch.dtype) -> dict:
    """``run_case`` without the math SDPA kernel; a GQA layer no fused kernel takes with
    ``enable_gqa`` is retried with K/V repeated (``kv_repeated``); otherwise an error row."""
    try:
        with _no_math_sdpa(device):
            return run_case(shape, case, device, dtype)
    except RuntimeError as err:  # e.g. no fused SDPA kernel for these head counts / widths
        first = str(err)[:300]
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    if not shape.kv_lora_rank and shape.num_kv_heads < shape.num_heads:
        try:
            with _no_math_sdpa(device):
                return {**run_case(shape, case, device, dtype, repeat_kv=True), "enable_gqa_error": first}
        except RuntimeError as err:
            first = f"{first} | with repeated K/V: {str(err)[:300]}"
    return {"shape": shape.name, "case": case, "error": first}


def run(device: str, shapes: tuple[LayerShape, ...]) -> dict:
    """Every case of every shape, with provenance."""
    dtype = torch.bfloat16
    rows = []
    for shape in shapes:
        if device.startswith("cuda"):  # cuBLAS / SDPA workspaces come from the caching allocator: allocate them first
            _guarded(shape, "none", device, dtype)
            torch.cuda.empty_cache()
        for case in (MOE_CASES if shape.num_experts else MLA_CASES if shape.kv_lora_rank else DENSE_CASES):
            t0 = time.perf_counter()
            row = _guarded(shape, case, device, dtype)
            rows.append({**row, "wall_s": round(time.perf_counter() - t0, 3)})
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return {"kind": "moesim.memory_probe", "version": 1, "provenance": _provenance(device),
            "shapes": [asdict(s) for s in shapes], "dtype": "bf16", "results": rows}


def _provenance(device: str) -> dict:
    if device.startswith("cuda"):
        from moesim.calibrate.provenance import collect

        return collect(device, torch.cuda.device_count())
    import platform
    import sys

    return {"device": "cpu", "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "command": " ".join(sys.argv)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (full shapes) or cpu (tiny shapes, smoke)")
    ap.add_argument("--out", default="", help="write the JSON here (default: print it)")
    args = ap.parse_args(argv)
    shapes = CPU_SHAPES if args.device == "cpu" else GPU_SHAPES
    result = run(args.device, shapes)
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
