"""Host (CPU issue) time of one eager call per op class, as in a training step.

Section ``host_classes``. For every class (:data:`CLASSES`) a chain of N same-class calls is
built, each call's output feeding the next (a class whose output cannot feed it, such as
``argsort`` of ids, repeats the call on fixed inputs); each call has its own parameters where a
model has them (a linear's weight, a norm's scale), as a model's layers do. Three host times are
taken, each with a long ``torch.cuda._sleep`` queued first so the GPU stays busy and the thread
never waits for it:

- ``plain``: the chain's forward under ``torch.no_grad()``;
- ``fwd``: the forward with autograd recording (inputs ``requires_grad``; graph nodes and saved
  tensors made, as a training forward does);
- ``bwd``: ``torch.autograd.backward`` of the chain's output: the backward's host time for one
  forward call of the class, every backward kernel of it included (a linear: dgrad, wgrad and its
  weight's gradient accumulation). Charge it once per forward call, not per backward kernel.

Per call = (median time of the chain of ``long`` calls - of ``short`` calls) / (long - short),
medians over rounds, so the fixed costs of a region (starting the autograd engine, the output's
grad) cancel; quartiles are those of the per-round differences. After every timed region the
GPU must still be busy (the sleep's end event not yet reached), else the sample is refused: a
host that waited for the GPU measured the GPU. That is also why ``bincount`` and
``masked_select`` (they synchronise to size their outputs) are not here; their cost is the
``sync`` rows of :mod:`moesim.calibrate.moe_kernels`.

``module_linear`` is the same chain through ``nn.Linear`` modules: minus ``linear``, it isolates
the ``nn.Module.__call__`` overhead of a module's forward (the framework glue a module call adds;
other Python between ops, e.g. shape arithmetic in user code, is not isolated and not measured).
Rows: ``{"op": "host_op", "call", "phase": "plain" | "fwd" | "bwd", "time_ns", ...}``. Shapes
are small (host cost barely depends on them); ``--device cpu`` runs a tiny version in seconds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from moesim.calibrate.section import Section
from moesim.calibrate.timing import BUSY_CYCLES_PER_NS, Budget, stats_from_ns

SLEEP_MARGIN = 4.0  # GPU sleep = margin x the estimated host time of the region
MIN_ESTIMATE_NS = 50_000.0
WARM_ESTIMATE_NS = 5e6  # the sizing pass's estimate: a 20 ms wait, longer than any chain's issue
PHASES = ("plain", "fwd", "bwd")
Tensor = torch.Tensor
Step = Callable[[Tensor, int], Tensor]


@dataclass(frozen=True)
class Sizes:
    """Shapes of one run (GPU or CPU smoke) and its chain lengths and rounds."""

    tokens: int
    hidden: int
    heads: int
    seq: int
    head_dim: int
    router_width: int
    groups: int
    short: int
    long: int
    long_multi: int  # chain length for classes of several kernels per call (queue depth)
    rounds: int


GPU_SIZES = Sizes(tokens=1024, hidden=1024, heads=8, seq=256, head_dim=128, router_width=64, groups=8,
                  short=4, long=36, long_multi=16, rounds=7)
CPU_SIZES = Sizes(tokens=32, hidden=64, heads=2, seq=16, head_dim=32, router_width=16, groups=2,
                  short=2, long=16, long_multi=10, rounds=5)


@dataclass(frozen=True)
class Chain:
    """A chain's input (a leaf), its step ``(y, i) -> y'`` and the parameters whose grads reset."""

    x0: Tensor
    step: Step
    params: tuple[Tensor, ...]
    backward: bool = True
    multi: bool = False


def _leaves(n: int, shape: tuple[int, ...], device: str, dtype: torch.dtype, scale: float = 0.02) -> list[Tensor]:
    g = torch.Generator(device=device).manual_seed(len(shape) * 100 + n)
    return [(torch.randn(*shape, generator=g, device=device, dtype=torch.float32) * scale).to(dtype).requires_grad_()
            for _ in range(n)]


def _x(shape: tuple[int, ...], device: str, dtype: torch.dtype) -> Tensor:
    return _leaves(1, shape, device, dtype, 1.0)[0]


def _dense(s: Sizes, n: int, device: str, dt: torch.dtype) -> dict[str, Chain]:
    """Linear algebra, norms and elementwise ops on [tokens, hidden] activations."""
    t, h = s.tokens, s.hidden
    w, m, a, nw = (_leaves(n, shape, device, dt) for shape in ((h, h), (t, h), (t, h), (h,)))
    modules = [torch.nn.Linear(h, h, bias=False, device=device, dtype=dt) for _ in range(n)]
    chains = {
        "linear": Chain(_x((t, h), device, dt), lambda y, i: F.linear(y, w[i]), tuple(w)),
        "module_linear": Chain(_x((t, h), device, dt), lambda y, i: modules[i](y),
                               tuple(p for mod in modules for p in mod.parameters())),
        "matmul": Chain(_x((t, h), device, dt), lambda y, i: torch.matmul(y, w[i]), tuple(w)),
        "rms_norm": Chain(_x((t, h), device, dt), lambda y, i: F.rms_norm(y, (h,), nw[i]), tuple(nw)),
        "silu": Chain(_x((t, h), device, dt), lambda y, i: F.silu(y), ()),
        "mul": Chain(_x((t, h), device, dt), lambda y, i: y * m[i], tuple(m)),
        "add": Chain(_x((t, h), device, dt), lambda y, i: y + a[i], tuple(a)),
        "cast": Chain(_x((t, h), device, dt), lambda y, i: y.float() if i % 2 == 0 else y.to(dt), ()),
        "cumsum": Chain(_x((t, h), device, torch.float32), lambda y, i: torch.cumsum(y, 0), ()),
        "cat": Chain(_x((t, h), device, dt), lambda y, i: torch.cat(y.chunk(2, dim=0)), (), multi=True),
        "view": Chain(_x((t, h), device, dt), lambda y, i: y.view(t, h // 8, 8) if i % 2 == 0 else y.view(t, h), ()),
        "split": Chain(_x((t, h), device, dt), lambda y, i: (y.split(t // 4), y)[1], (), backward=False),
        "zeros": Chain(_x((t, h), device, dt), lambda y, i: (torch.zeros(t, h, device=device, dtype=dt), y)[1], (),
                       backward=False),
    }
    return chains


def _router(s: Sizes, n: int, device: str, dt: torch.dtype) -> dict[str, Chain]:
    """Router scores, top-k and the integer work on expert ids ([tokens, router_width])."""
    t, e = s.tokens, s.router_width
    g = torch.Generator(device=device).manual_seed(5)
    ids = torch.rand(t, e, generator=g, device=device).topk(8 if e >= 8 else 2, dim=-1).indices.view(-1)
    hist_in = ids if device == "cuda" else ids.float()  # CPU histc takes floating inputs only
    f32 = torch.float32
    return {
        "softmax": Chain(_x((t, e), device, f32), lambda y, i: F.softmax(y.float(), dim=-1), ()),
        "sigmoid": Chain(_x((t, e), device, f32), lambda y, i: torch.sigmoid(y.float()), ()),
        "topk": Chain(_x((t, e), device, f32), lambda y, i: torch.topk(y, e, dim=-1).values, ()),
        "argsort": Chain(_x((t, e), device, f32), lambda y, i: (torch.argsort(ids, stable=True), y)[1], (),
                         backward=False),
        "histc": Chain(_x((t, e), device, f32), lambda y, i: (torch.histc(hist_in, bins=e, min=0, max=e), y)[1], (),
                       backward=False),
    }


def _movement(s: Sizes, device: str, dt: torch.dtype) -> dict[str, Chain]:
    """Token-row permutes and scatter-adds on [tokens, hidden] (a fixed row permutation)."""
    t, h = s.tokens, s.hidden
    g = torch.Generator(device=device).manual_seed(6)
    perm = torch.randperm(t, generator=g, device=device)
    expanded = perm.view(-1, 1).expand(-1, h)
    base = torch.zeros(t, h, device=device, dtype=dt)
    return {
        "gather": Chain(_x((t, h), device, dt), lambda y, i: torch.gather(y, 0, expanded), ()),
        "index_select": Chain(_x((t, h), device, dt), lambda y, i: y.index_select(0, perm), ()),
        "scatter_add": Chain(_x((t, h), device, dt), lambda y, i: torch.scatter_add(base, 0, expanded, y), ()),
        "index_add": Chain(_x((t, h), device, dt), lambda y, i: torch.index_add(base, 0, perm, y), ()),
    }


def _blocks(s: Sizes, n: int, device: str, dt: torch.dtype) -> dict[str, Chain]:
    """Attention, RoPE, grouped GEMM and the per-expert loop body."""
    t, h, f = s.tokens, s.hidden, s.hidden // 2
    kv = _leaves(2 * n, (1, s.heads, s.seq, s.head_dim), device, dt, 1.0)
    d = s.head_dim
    pos = torch.arange(t, device=device, dtype=torch.float32).view(t, 1, 1)
    freq = torch.arange(d // 2, device=device, dtype=torch.float32).repeat(2).view(1, 1, d)
    cos, sin = torch.cos(pos * freq).to(dt), torch.sin(pos * freq).to(dt)

    def rope(y: Tensor, i: int) -> Tensor:  # Llama's apply_rotary_emb with rotate_half
        x = y.view(t, h // d, d)
        rotated = torch.cat((-x[..., d // 2:], x[..., : d // 2]), dim=-1)
        return (x * cos + rotated * sin).view(t, h)

    w1, w3 = _leaves(n, (s.groups, f, h), device, dt), _leaves(n, (s.groups, f, h), device, dt)
    w2 = _leaves(n, (s.groups, h, f), device, dt)

    def expert_body(y: Tensor, i: int) -> Tensor:  # torchtitan's _run_experts_for_loop body
        e = i % s.groups
        hid = F.silu(torch.matmul(y, w1[i][e].transpose(-2, -1))) * torch.matmul(y, w3[i][e].transpose(-2, -1))
        return torch.matmul(hid, w2[i][e].transpose(-2, -1))

    wg = _leaves(n, (s.groups, h, h), device, dt)
    offs = torch.arange(t // s.groups, t + 1, t // s.groups, device=device, dtype=torch.int32)
    return {
        "sdpa": Chain(_x((1, s.heads, s.seq, s.head_dim), device, dt),
                      lambda y, i: F.scaled_dot_product_attention(y, kv[2 * i], kv[2 * i + 1], is_causal=True),
                      tuple(kv)),
        "rope": Chain(_x((t, h), device, dt), rope, (), multi=True),
        "expert_loop_body": Chain(_x((t // s.groups, h), device, dt), expert_body, (*w1, *w2, *w3), multi=True),
        "grouped_mm": Chain(_x((t, h), device, dt),
                            lambda y, i: torch._grouped_mm(y, wg[i].transpose(-2, -1), offs=offs), tuple(wg)),
    }


def classes(s: Sizes, device: str) -> dict[str, Chain]:
    """Every measured class, by call name."""
    dt = torch.bfloat16
    n = max(s.long, s.long_multi)
    return {**_dense(s, n, device, dt), **_router(s, n, device, dt), **_movement(s, device, dt),
            **_blocks(s, n, device, dt)}


CLASSES = ("linear", "module_linear", "matmul", "grouped_mm", "sdpa", "rms_norm", "silu", "mul", "add", "softmax",
           "sigmoid", "cast", "topk", "argsort", "histc", "gather", "index_select", "scatter_add", "index_add", "cat",
           "split", "view", "zeros", "rope", "cumsum", "expert_loop_body")


def _run(chain: Chain, n: int) -> Tensor:
    y = chain.x0
    for i in range(n):
        y = chain.step(y, i)
    return y


def _timed(fn: Callable[[], object], device: str, estimate_ns: float) -> float:
    """Host ns of ``fn`` with the GPU kept busy; refuses a sample where the GPU went idle first."""
    busy_end = None
    if device == "cuda":
        torch.cuda._sleep(int(SLEEP_MARGIN * max(estimate_ns, MIN_ESTIMATE_NS) * BUSY_CYCLES_PER_NS))
        busy_end = torch.cuda.Event()
        busy_end.record()
    t0 = time.perf_counter_ns()
    fn()
    dt = time.perf_counter_ns() - t0
    if busy_end is not None:
        idle = busy_end.query()
        torch.cuda.synchronize()
        if idle:
            raise RuntimeError("the GPU finished its queued wait before the host finished issuing "
                               "(the call synchronises, or the wait was too short): sample refused")
    return dt


def _phases(chain: Chain, n: int, device: str, est: dict[str, float]) -> dict[str, float]:
    """Host ns of the chain of ``n`` calls: plain forward, recorded forward, backward."""
    for p in chain.params + (chain.x0,):
        p.grad = None
    out: dict[str, float] = {}
    with torch.no_grad():
        out["plain"] = _timed(lambda: _run(chain, n), device, est["plain"])
    holder: dict[str, Tensor] = {}
    out["fwd"] = _timed(lambda: holder.update(y=_run(chain, n)), device, est["fwd"])
    if chain.backward:
        y = holder["y"]
        grad = torch.ones_like(y)
        out["bwd"] = _timed(lambda: torch.autograd.backward(y, grad), device, est["bwd"])
    return out


def _warm_up(chain: Chain, n: int, device: str) -> None:
    """One untimed pass of every phase (first-call costs: kernel selection, allocator growth)."""
    for p in chain.params + (chain.x0,):
        p.grad = None
    with torch.no_grad():
        _run(chain, n)
    y = _run(chain, n)
    if chain.backward:
        torch.autograd.backward(y, torch.ones_like(y))
    if device == "cuda":
        torch.cuda.synchronize()


def measure_class(name: str, chain: Chain, s: Sizes, device: str) -> list[dict]:
    """``host_op`` rows (one per phase) of one class (per-call time as the module docstring says)."""
    long = s.long_multi if chain.multi else s.long
    _warm_up(chain, long, device)
    est = {k: 2.0 * v for k, v in _phases(chain, long, device, dict.fromkeys(PHASES, WARM_ESTIMATE_NS)).items()}
    short_t: dict[str, list[float]] = {}
    long_t: dict[str, list[float]] = {}
    for _ in range(s.rounds):
        for n, into in ((s.short, short_t), (long, long_t)):
            for phase, ns in _phases(chain, n, device, est).items():
                into.setdefault(phase, []).append(ns)
    rows = []
    for phase in long_t:  # median of each chain length, then the difference (robust to one slow round)
        per_call = (float(np.median(long_t[phase])) - float(np.median(short_t[phase]))) / (long - s.short)
        pairs = zip(sorted(long_t[phase]), sorted(short_t[phase]))
        spread = [max(0.0, (a - b) / (long - s.short)) for a, b in pairs]
        if per_call <= 0:
            raise RuntimeError(f"{name} {phase}: no measurable host time per call ({per_call:.0f} ns)")
        st = stats_from_ns(spread)
        rows.append({"op": "host_op", "call": name, "phase": phase, "gpu_busy": device == "cuda",
                     "chain": [s.short, long], **st.fields(), "time_ns": round(per_call, 1)})
    return rows


# the rotation of the mixed chain: classes whose calls take and give [tokens, hidden] bf16
MIX_CLASSES = ("linear", "rms_norm", "silu", "mul", "add", "gather", "index_select", "scatter_add")


def mixed_chain(chains: dict[str, Chain]) -> Chain:
    """One chain whose calls rotate through :data:`MIX_CLASSES` (call i is class i mod k, with that
    class's parameters of index i // k): each call follows a call of another class, as in a model's
    program, where a chain of one class repeats the same dispatch path back to back."""
    k = len(MIX_CLASSES)
    members = [chains[name] for name in MIX_CLASSES]

    def step(y: Tensor, i: int) -> Tensor:
        return members[i % k].step(y, i // k)
    params = tuple(p for c in members for p in c.params)
    return Chain(members[0].x0, step, params)


def measure_mix(chains: dict[str, Chain], s: Sizes, device: str) -> list[dict]:
    """``host_mix`` rows: host time per call of the mixed chain (:func:`mixed_chain`), per phase,
    with the classes it rotates through; the cost model compares it with those classes' own
    ``host_op`` rows of the same profile."""
    rows = measure_class("mixed", mixed_chain(chains), s, device)
    return [{**r, "op": "host_mix", "classes": list(MIX_CLASSES)} for r in rows]


def measure_host_classes(timer: object, grid: object, device: str, budget: Budget) -> Section:
    """Host time per call of every class in :data:`CLASSES`, three phases each, and of a chain
    mixing several of them (:func:`measure_mix`)."""
    sec = Section("host_classes")
    s = GPU_SIZES if device == "cuda" else CPU_SIZES
    chains = classes(s, device)
    for name in CLASSES:
        sec.attempt(name, budget, lambda name=name: measure_class(name, chains[name], s, device))
    sec.attempt("mixed", budget, lambda: measure_mix(chains, s, device))
    return sec
