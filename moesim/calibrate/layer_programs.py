"""The programs the layer validation runs, written the way users write them (torch only).

torchtitan's MoE block (router, ``argsort`` + ``gather`` permute, ``torch._grouped_mm`` or a
per-expert loop, ``scatter_add`` combine), Megatron-Core's unfused ``permute`` / ``unpermute``
with its fused-fc1 grouped MLP, and a Llama-style decoder layer; their shapes and weights.
``moesim.calibrate.layer_workloads`` chooses the cases, times them and describes them; the
programs here only compute. Like the runner, this imports no module that needs simpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from moesim.calibrate.kernels import rms_norm, rope

if TYPE_CHECKING:
    from moesim.calibrate.layer_cases import Case


# ---------------------------------------------------------------- shapes

@dataclass(frozen=True)
class MoEShape:
    """One MoE block's shape; ``shared_experts`` SwiGLU experts become one FFN of their total width."""

    name: str
    hidden: int
    num_experts: int
    top_k: int
    expert_ffn: int
    shared_experts: int = 0
    preset: str | None = None


@dataclass(frozen=True)
class DenseShape:
    """A Llama-style decoder layer's shape."""

    name: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    preset: str | None = None


# ---------------------------------------------------------------- weights


def _randn(shape: tuple[int, ...], device: str, seed: int, std: float) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return (torch.randn(shape, generator=g, device=device, dtype=torch.bfloat16) * std).requires_grad_()


class MoEWeights:
    """Router ``[E, H]``, experts ``w1``/``w3`` ``[E, F, H]`` and ``w2`` ``[E, H, F]`` (torchtitan's
    layout), optional shared SwiGLU FFN (``nn.Linear`` layout), and torchtitan's fp32
    ``tokens_per_expert`` buffer."""

    def __init__(self, s: MoEShape, device: str) -> None:
        e, h, f = s.num_experts, s.hidden, s.expert_ffn
        self.router = _randn((e, h), device, 1, 0.02)
        self.w1, self.w3 = _randn((e, f, h), device, 2, 0.02), _randn((e, f, h), device, 3, 0.02)
        self.w2 = _randn((e, h, f), device, 4, 0.02)
        fs = f * s.shared_experts
        self.shared = tuple(_randn(sh, device, 5 + i, 0.02) for i, sh in enumerate(((fs, h), (fs, h), (h, fs)))) \
            if fs else ()
        self.tokens_per_expert = torch.zeros(e, dtype=torch.float32, device=device)

        self._fc1: torch.Tensor | None = None

    @property
    def fc1(self) -> torch.Tensor:
        """Megatron's fused ``linear_fc1`` weight ``[E, 2F, H]`` (gate rows, then up rows)."""
        if self._fc1 is None:
            self._fc1 = torch.cat([self.w1, self.w3], dim=1).detach().requires_grad_()
        return self._fc1

    def params(self, fused_fc1: bool = False) -> list[torch.Tensor]:
        gate_up = [self.fc1] if fused_fc1 else [self.w1, self.w3]
        return [self.router, *gate_up, self.w2, *self.shared]


class DenseLayer:
    """``lab/eager_probe.py``'s decoder layer with its shape as a parameter."""

    def __init__(self, s: DenseShape, device: str) -> None:
        q_out = (s.heads + 2 * s.kv_heads) * s.head_dim
        self.s = s
        self.wqkv, self.wo = _randn((q_out, s.hidden), device, 1, 0.02), _randn((s.hidden, s.heads * s.head_dim), device, 2, 0.02)
        self.wg, self.wu = _randn((s.ffn, s.hidden), device, 3, 0.02), _randn((s.ffn, s.hidden), device, 4, 0.02)
        self.wd = _randn((s.hidden, s.ffn), device, 5, 0.02)
        self.n1 = torch.ones(s.hidden, device=device, dtype=torch.bfloat16, requires_grad=True)
        self.n2 = torch.ones(s.hidden, device=device, dtype=torch.bfloat16, requires_grad=True)

    def params(self) -> list[torch.Tensor]:
        return [self.wqkv, self.wo, self.wg, self.wu, self.wd, self.n1, self.n2]

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        s, t = self.s, x.shape[1]
        qkv = F.linear(rms_norm(x, self.n1), self.wqkv)
        q, k, v = qkv.split((s.heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim), dim=-1)
        q = rope(q.view(1, t, s.heads, s.head_dim).transpose(1, 2), cos, sin)
        k = rope(k.view(1, t, s.kv_heads, s.head_dim).transpose(1, 2), cos, sin)
        v = v.view(1, t, s.kv_heads, s.head_dim).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + F.linear(a.transpose(1, 2).reshape(1, t, s.heads * s.head_dim), self.wo)
        h = rms_norm(x, self.n2)
        return x + F.linear(F.silu(F.linear(h, self.wg)) * F.linear(h, self.wu), self.wd)


# ---------------------------------------------------------------- MoE programs


def _gmm(x: torch.Tensor, w_t: torch.Tensor, offs: torch.Tensor, emulate: bool) -> torch.Tensor:
    """``torch._grouped_mm(x, w_t, offs=offs)``; ``emulate`` (CPU smoke only) runs a differentiable
    per-group loop instead, since the CPU build has no grouped-mm backward."""
    if not emulate:
        return torch._grouped_mm(x, w_t, offs=offs)
    ends = offs.tolist()
    starts = [0, *ends[:-1]]
    return torch.cat([x[a:b] @ w_t[g] for g, (a, b) in enumerate(zip(starts, ends))])


def grouped_experts(w: MoEWeights, x: torch.Tensor, counts: torch.Tensor, emulate: bool) -> torch.Tensor:
    """torchtitan ``_run_experts_grouped_mm``."""
    offs = torch.cumsum(counts, dim=0, dtype=torch.int32)
    h = F.silu(_gmm(x, w.w1.transpose(-2, -1), offs, emulate))
    h = h * _gmm(x, w.w3.transpose(-2, -1), offs, emulate)
    return _gmm(h, w.w2.transpose(-2, -1), offs, emulate)


def megatron_experts(w: MoEWeights, x: torch.Tensor, counts: torch.Tensor, emulate: bool) -> torch.Tensor:
    """Megatron-Core's grouped MLP: ``linear_fc1`` (gate and up in one grouped GEMM of width 2F),
    the GLU (``chunk``, silu, mul), ``linear_fc2``."""
    offs = torch.cumsum(counts, dim=0, dtype=torch.int32)
    gate, up = torch.chunk(_gmm(x, w.fc1.transpose(-2, -1), offs, emulate), 2, dim=-1)
    return _gmm(F.silu(gate) * up, w.w2.transpose(-2, -1), offs, emulate)


def loop_experts(w: MoEWeights, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """torchtitan ``_run_experts_for_loop`` (``.tolist()`` is a device-to-host sync)."""
    sizes = counts.tolist()
    total = sum(sizes)
    outs = []
    for e, xe in enumerate(torch.split(x[:total], split_size_or_sections=sizes, dim=0)):
        h = F.silu(torch.matmul(xe, w.w1[e].transpose(-2, -1)))
        h = h * torch.matmul(xe, w.w3[e].transpose(-2, -1))
        outs.append(torch.matmul(h, w.w2[e].transpose(-2, -1)))
    out = torch.cat(outs, dim=0)
    return torch.vstack((out, out.new_zeros((x.shape[0] - total, out.shape[-1]))))


def shared_ffn(w: MoEWeights, x: torch.Tensor) -> torch.Tensor | None:
    if not w.shared:
        return None
    g, u, d = w.shared
    return F.linear(F.silu(F.linear(x, g)) * F.linear(x, u), d)


def _histc(idx: torch.Tensor, bins: int, smoke: bool) -> torch.Tensor:
    if smoke:  # CPU histc has no integer kernel
        return torch.histc(idx.float(), bins=bins, min=0, max=bins).long()
    return torch.histc(idx, bins=bins, min=0, max=bins)


def titan_forward(w: MoEWeights, x: torch.Tensor, bias: torch.Tensor, k: int, case: Case, smoke: bool) -> torch.Tensor:
    """torchtitan's MoE forward (router, reorderer, experts, shared expert, combine)."""
    t, h = x.shape
    e = w.router.shape[0]
    scores = F.softmax(F.linear(x, w.router).float(), dim=1)
    _, sel = torch.topk(scores + bias, k=k, dim=-1, sorted=False)
    top = scores.gather(dim=1, index=sel)
    with torch.no_grad():
        w.tokens_per_expert.add_(_histc(sel.view(-1), e, smoke))
    counts = _histc(sel.view(-1), e, smoke)
    order = torch.argsort(sel.view(-1), stable=True)
    top_sorted = top.view(-1)[order]
    rows = (order // k).reshape(-1, 1).expand(-1, h)
    routed = torch.gather(x, dim=0, index=rows)
    routed = (routed.to(torch.float32) * top_sorted.reshape(-1, 1)).to(x.dtype)
    if case.experts == "loop":
        y = loop_experts(w, routed, counts)
    else:
        y = grouped_experts(w, routed, counts, emulate=smoke and torch.is_grad_enabled())
    shared = shared_ffn(w, x)
    if case.combine == "index_put_sum":
        buf = torch.zeros((t * k, h), dtype=y.dtype, device=y.device)
        buf[order] = y
        out = buf.reshape(-1, k, h).sum(dim=1)
        return out if shared is None else shared + out
    base = shared if shared is not None else torch.zeros_like(x)
    return base.scatter_add(dim=0, index=rows, src=y)


def megatron_forward(w: MoEWeights, x: torch.Tensor, bias: torch.Tensor, k: int, case: Case, smoke: bool) -> torch.Tensor:
    """Megatron-Core's router, unfused ``permute``/``unpermute`` and grouped experts."""
    t, h = x.shape
    logits = F.linear(x, w.router)
    top_vals, top_idx = torch.topk(logits + bias, k=k, dim=1)
    probs = torch.softmax(top_vals, dim=-1, dtype=torch.float32).type_as(logits)
    routing_probs = torch.zeros_like(logits).scatter(1, top_idx, probs)
    routing_map = torch.zeros_like(logits).int().scatter(1, top_idx, 1).bool()
    counts = routing_map.sum(dim=0)
    counts.cpu()  # the all-gather dispatcher's tokens_per_expert to host
    map_t = routing_map.T.contiguous()
    sorted_idx = torch.arange(t, device=x.device).unsqueeze(0).expand(map_t.shape[0], -1).masked_select(map_t)
    permuted = x.index_select(0, sorted_idx)
    y = megatron_experts(w, permuted, counts, emulate=smoke and torch.is_grad_enabled())
    permuted_probs = routing_probs.T.contiguous().masked_select(map_t)
    y = y * permuted_probs.unsqueeze(-1)
    out = torch.zeros((t, h), dtype=y.dtype, device=y.device)
    out.scatter_add_(0, sorted_idx.unsqueeze(1).expand(-1, h), y)
    shared = shared_ffn(w, x)
    return out if shared is None else out + shared


def check_routing(w: MoEWeights, x: torch.Tensor, bias: torch.Tensor, case: Case, k: int, want: list[int]) -> None:
    """The routing the program will take equals the drawn one (checked once, outside timing)."""
    with torch.no_grad():
        logits = F.linear(x, w.router)
        choice = logits + bias if case.movement == "megatron" else F.softmax(logits.float(), dim=1) + bias
        sel = torch.topk(choice, k=k, dim=-1).indices
        got = torch.bincount(sel.view(-1), minlength=len(want)).tolist()
    if got != want:
        raise RuntimeError(f"routing bias failed: counts {got[:8]}... differ from the draw {want[:8]}...")
