"""Router and token-movement kernels of an MoE layer, timed as frameworks launch them.

Section ``moe_kernels``: every variant of :mod:`moesim.costs.moe_kernels` (router fp32 softmax
and sigmoid, the bf16 <-> fp32 casts around them and around the probability weighting,
``torch.topk``, stable ``argsort`` of the flattened expert ids, ``histc`` and
``bincount`` of the ids, ``cumsum`` of the counts, the permute as torchtitan (``gather`` with an
expanded index) and Megatron (``index_select``, its routing-map build and ``masked_select``)
write it, the unpermute (``scatter_add_`` / ``index_add_`` of bf16 rows, atomics), the
probability weighting and the ``zeros_like`` of the output) over tokens 256..65536, experts
8..256, top-k 1..8 and hidden 1024..7168. Rows are ``memory`` rows (cold cache: the shared
:class:`~moesim.calibrate.timing.Timer` evicts L2 before each repeat) carrying the shape they
were measured at (``tokens``, ``experts``, ``top_k``, ``hidden``; 0 where the kernel does not
depend on it) and ``nbytes`` by :func:`moesim.costs.moe_kernels.moe_kernel_bytes`, the size the
calibrated curve is indexed by. Expert ids are uniform random top-k choices (distinct per token).

It also times the device-to-host copy of a small counts tensor that ``.tolist()`` forces (rows
``{"op": "sync", "variant": "idle" | "queued", "nbytes", "time_ns"}``): ``idle`` is the host
wall time of ``counts.tolist()`` with nothing queued (issue, copy, wake-up, list building);
``queued`` is the host wall time of [a GPU wait of ~50 us; ``counts.tolist()``] minus that
wait's own event-timed duration: the lag from the end of the queued work until the host holds
the values. ``--device cpu`` runs a tiny grid in seconds (host clock, no L2 flush).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from moesim.calibrate.section import Section
from moesim.calibrate.timing import BUSY_CYCLES_PER_NS, Budget, Timer, stats_from_ns, sync
from moesim.costs.moe_kernels import MOE_KERNEL_KINDS, moe_kernel_bytes

MAX_ROW_ELEMS = 2**30  # permute rows x hidden cap (2 GiB of bf16 per tensor)
SYNC_NUMELS = (8, 32, 128, 256, 2048, 16384)  # int64 counts: per expert, per (rank, expert)
SYNC_REPEATS = 40
SYNC_WAIT_NS = 50_000  # the queued GPU wait before .tolist()

# (tokens, experts, top_k, hidden) grids per variant family: (gpu, cpu smoke)
GRIDS: dict[str, dict[str, tuple[tuple[int, ...], ...]]] = {
    "permute": {"cuda": ((256, 2048, 16384, 65536), (128,), (1, 8), (1024, 2048, 4096, 7168)),
                "cpu": ((64, 256), (8,), (1, 2), (64,))},
    "score": {"cuda": ((256, 2048, 16384, 65536), (8, 32, 128, 256), (8,), (0,)),
              "cpu": ((64, 256), (8, 16), (2,), (0,))},
    "topk": {"cuda": ((256, 4096, 65536), (8, 64, 256), (1, 2, 8), (0,)),
             "cpu": ((64, 256), (8, 16), (1, 2), (0,))},
    "ids": {"cuda": ((256, 2048, 16384, 65536), (128,), (1, 2, 8), (0,)),
            "cpu": ((64, 256), (8,), (1, 2), (0,))},
    "hist": {"cuda": ((256, 4096, 65536), (8, 64, 256), (1, 8), (0,)),
             "cpu": ((64, 256), (8, 16), (2,), (0,))},
    "counts": {"cuda": ((4096,), (8, 32, 64, 128, 256), (8,), (0,)), "cpu": ((64,), (8, 16), (2,), (0,))},
    "map": {"cuda": ((256, 4096, 65536), (8, 64, 256), (2, 8), (0,)), "cpu": ((64, 256), (8, 16), (2,), (0,))},
    "fill": {"cuda": ((256, 2048, 16384, 65536), (0,), (0,), (1024, 2048, 4096, 7168)),
             "cpu": ((64, 256), (0,), (0,), (64,))},
    # casts: row widths of router logits (8..256) and of hidden rows (1024..7168), 256..524288 rows
    "cast": {"cuda": ((256, 4096, 65536, 524288), (0,), (0,), (8, 256, 1024, 4096)),
             "cpu": ((64, 256), (0,), (0,), (8, 64))},
    # eager RoPE programs: T tokens, "experts" = heads, "hidden" = head dim
    "rope": {"cuda": ((1024, 4096, 16384, 65536), (8, 32, 64), (1,), (64, 128)),
             "cpu": ((64,), (2,), (1,), (16,))},
    # eager GLU on fc1's halves: rows T k, half width h = the expert FFN width F (x is [T k, 2F])
    "glu": {"cuda": ((256, 2048, 16384, 65536), (0,), (1, 8), (768, 1536, 2048, 4096)),
            "cpu": ((64, 256), (0,), (1, 2), (64,))},
}
# variants in measuring order (the unpermute and permute first: they cost the most), and their grid
PLAN: tuple[tuple[str, str], ...] = (
    ("index_add", "permute"), ("scatter_add", "permute"), ("gather", "permute"), ("index_select", "permute"),
    ("prob_mul", "permute"), ("softmax_fp32", "score"), ("topk", "topk"), ("argsort", "ids"),
    ("histc", "hist"), ("bincount", "hist"), ("cumsum", "counts"), ("zeros", "fill"),
    ("cast_fp32", "cast"), ("cast_bf16", "cast"), ("sigmoid_fp32", "score"), ("routing_map", "map"),
    ("masked_select", "map"), ("prob_mul_fp32", "permute"), ("glu_silu", "glu"), ("glu_mul", "glu"),
    ("glu_silu_bwd", "glu"),
    *((f"rope_{form}{bwd}", "rope") for form in ("halves", "rotate_half", "complex") for bwd in ("", "_bwd")),
)
EAGER_VARIANTS = ("prob_mul", "prob_mul_fp32", "glu_silu", "glu_mul", "glu_silu_bwd",
                  *(v for v, family in PLAN if family == "rope"))
"""The variants PyTorch runs on its non-vectorized elementwise kernel (a broadcast or strided
operand) and the eager RoPE programs; section ``eager_kernels`` measures only these."""


def _ids(tokens: int, experts: int, top_k: int, device: str) -> torch.Tensor:
    """Uniform routing: ``top_k`` distinct expert ids per token, int64 [tokens, top_k]."""
    g = torch.Generator(device=device).manual_seed(tokens * 7 + experts)
    return torch.rand(tokens, experts, generator=g, device=device).topk(top_k, dim=-1).indices


def _rand(shape: tuple[int, ...], device: str, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(*shape, generator=g, device=device, dtype=dtype)


def _permute_kernel(variant: str, t: int, e: int, k: int, h: int, device: str) -> Callable[[], object]:
    """Token-row movement over ``t * k`` rows of width ``h`` (bf16)."""
    ids = _ids(t, e, k, device)
    token_of_row = torch.argsort(ids.view(-1), stable=True) // k  # token index of each expert-sorted row
    if variant in ("gather", "index_select"):
        x = _rand((t, h), device, torch.bfloat16, 1)
        if variant == "index_select":
            return lambda: x.index_select(0, token_of_row)
        expanded = token_of_row.view(-1, 1).expand(-1, h)
        return lambda: torch.gather(x, 0, expanded)
    y = _rand((t * k, h), device, torch.bfloat16, 2)
    if variant == "prob_mul":
        probs = torch.rand(t * k, device=device).to(torch.bfloat16)
        return lambda: y * probs.unsqueeze(-1)
    if variant == "prob_mul_fp32":   # torchtitan: routed.to(float32) * top_scores.reshape(-1, 1)
        y32, p32 = y.float(), torch.rand(t * k, device=device)
        return lambda: y32 * p32.reshape(-1, 1)
    out = torch.zeros(t, h, device=device, dtype=torch.bfloat16)
    if variant == "index_add":
        return lambda: out.index_add_(0, token_of_row, y)
    expanded = token_of_row.view(-1, 1).expand(-1, h)
    return lambda: out.scatter_add_(0, expanded, y)


def _glu_kernel(variant: str, t: int, k: int, f: int, device: str) -> Callable[[], object]:
    """Megatron's eager ``glu`` over ``t * k`` rows: ``torch.chunk`` of a bf16 [rows, 2f] fc1 output
    into strided halves, then ``F.silu(gate)``, ``a * up`` or ``silu``'s backward of the gate."""
    gate, up = torch.chunk(_rand((t * k, 2 * f), device, torch.bfloat16, 8), 2, dim=-1)
    other = _rand((t * k, f), device, torch.bfloat16, 9)   # the contiguous operand: silu(gate) or a grad
    if variant == "glu_silu":
        return lambda: F.silu(gate)
    if variant == "glu_mul":
        return lambda: other * up
    return lambda: torch.ops.aten.silu_backward(other, gate)


def _rope_program(variant: str, t: int, heads: int, d: int, device: str) -> Callable[[], object]:
    """One eager RoPE form (``rope_<form>[_bwd]``) on a query tensor of ``heads`` heads: the
    strided [1, heads, t, d] view of a fused QKV output (``complex``: [1, t, heads, d], torchtitan's
    layout before the transpose); ``_bwd`` times autograd's backward of one stored forward."""
    form = variant[len("rope_"):].removesuffix("_bwd")
    backward = variant.endswith("_bwd")
    angles = torch.outer(torch.arange(t, device=device, dtype=torch.float32),
                         1.0 / 10000.0 ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
    if form == "complex":
        x = _rand((1, t, heads, d), device, torch.bfloat16, 11).requires_grad_(backward)
        freqs = torch.polar(torch.ones_like(angles), angles).view(1, t, 1, d // 2)
        leaf = x

        def fwd() -> torch.Tensor:
            xc = torch.view_as_complex(x.float().reshape(1, t, heads, d // 2, 2))
            return torch.view_as_real(xc * freqs).flatten(3).type_as(x)
    else:
        qkv = _rand((t, 2 * heads * d), device, torch.bfloat16, 12).requires_grad_(backward)
        leaf = qkv
        cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)   # [t, d/2]

        def q() -> torch.Tensor:
            return qkv[:, :heads * d].view(1, t, heads, d).transpose(1, 2)

        if form == "halves":
            def fwd() -> torch.Tensor:
                a, b = q().chunk(2, dim=-1)
                return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
        else:   # Hugging Face: q * cos + rotate_half(q) * sin, cos / sin [1, 1, t, d]
            cos2, sin2 = torch.cat((cos, cos), -1)[None, None], torch.cat((sin, sin), -1)[None, None]

            def fwd() -> torch.Tensor:
                x = q()
                return x * cos2 + torch.cat((-x[..., d // 2:], x[..., :d // 2]), dim=-1) * sin2
    if not backward:
        return fwd
    out = fwd()
    grad = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, leaf, grad, retain_graph=True)


def _router_kernel(variant: str, t: int, e: int, k: int, device: str) -> Callable[[], object]:
    """Router scores, top-k, and the integer work on expert ids."""
    if variant in ("softmax_fp32", "sigmoid_fp32"):
        scores = _rand((t, e), device, torch.float32, 3)  # logits.float(): the cast is its own row
        if variant == "softmax_fp32":
            return lambda: F.softmax(scores, dim=-1)
        return lambda: torch.sigmoid(scores)
    if variant == "topk":
        scores = torch.softmax(_rand((t, e), device, torch.float32, 4), dim=-1)
        return lambda: torch.topk(scores, k, dim=-1)
    ids = _ids(t, e, k, device)
    flat = ids.view(-1)
    if variant == "argsort":
        return lambda: torch.argsort(flat, stable=True)
    if variant == "histc":
        src = flat if device == "cuda" else flat.float()  # CPU histc takes floating inputs only
        return lambda: torch.histc(src, bins=e, min=0, max=e)
    if variant == "bincount":
        return lambda: torch.bincount(flat, minlength=e)
    if variant == "cumsum":
        counts = torch.bincount(flat, minlength=e)
        return lambda: torch.cumsum(counts, 0)
    if variant == "routing_map":
        logits = _rand((t, e), device, torch.float32, 5)
        return lambda: torch.zeros_like(logits).int().scatter(1, ids, 1).bool()
    routing_map = torch.zeros(t, e, device=device, dtype=torch.int32).scatter(1, ids, 1).bool()
    token_indices = torch.arange(t, device=device).unsqueeze(0).expand(e, -1)
    return lambda: token_indices.masked_select(routing_map.T.contiguous())


def _kernel(variant: str, t: int, e: int, k: int, h: int, device: str) -> Callable[[], object]:
    if variant in ("gather", "index_select", "scatter_add", "index_add", "prob_mul", "prob_mul_fp32"):
        return _permute_kernel(variant, t, e, k, h, device)
    if variant.startswith("glu_"):
        return _glu_kernel(variant, t, k, h, device)
    if variant.startswith("rope_"):
        return _rope_program(variant, t, e, h, device)
    if variant == "zeros":
        out = torch.empty(t, h, device=device, dtype=torch.bfloat16)
        return lambda: torch.zeros_like(out)
    if variant == "cast_fp32":
        x = _rand((t, h), device, torch.bfloat16, 6)
        return lambda: x.float()
    if variant == "cast_bf16":
        x = _rand((t, h), device, torch.float32, 7)
        return lambda: x.to(torch.bfloat16)
    return _router_kernel(variant, t, e, k, device)


def _shapes(family: str, device: str) -> list[tuple[int, int, int, int]]:
    tokens, experts, top_ks, hiddens = GRIDS[family]["cuda" if device == "cuda" else "cpu"]
    width = 2 if family == "glu" else 1   # the glu family's input is [rows, 2h]
    out = []
    for t in tokens:
        for e in experts:
            for k in top_ks:
                for h in hiddens:
                    if (e and k > e) or t * max(k, 1) * max(h, 1) * width > MAX_ROW_ELEMS:
                        continue
                    out.append((t, e, k, h))
    return out


def _row(variant: str, t: int, e: int, k: int, h: int, stats: dict) -> dict:
    nbytes = moe_kernel_bytes(variant, max(t, 1), max(e, 1), max(k, 1), max(h, 1))
    dtype = "fp32" if variant == "prob_mul_fp32" else "bf16"
    return {"op": "memory", "kind": MOE_KERNEL_KINDS[variant], "variant": variant, "dtype": dtype, "cache": "cold",
            "nbytes": nbytes, "tokens": t, "experts": e, "top_k": k, "hidden": h, **stats}


def measure_moe_kernels(timer: Timer, grid: object, device: str, budget: Budget) -> Section:
    """The counts-to-host sync rows (first: on an idle GPU, a second in all), then every
    variant of :data:`PLAN` over its grid."""
    sec = Section("moe_kernels")
    for numel in SYNC_NUMELS:
        sec.attempt(f"sync {numel}", budget, lambda numel=numel: sync_rows(numel, device))
    return _measure_variants(sec, timer, device, budget, PLAN)


def measure_eager_kernels(timer: Timer, grid: object, device: str, budget: Budget) -> Section:
    """Section ``eager_kernels``: only the :data:`EAGER_VARIANTS` (rows as ``moe_kernels`` writes them)."""
    plan = tuple((v, f) for v, f in PLAN if v in EAGER_VARIANTS)
    return _measure_variants(Section("eager_kernels"), timer, device, budget, plan)


def _measure_variants(sec: Section, timer: Timer, device: str, budget: Budget,
                      plan: tuple[tuple[str, str], ...]) -> Section:
    for variant, family in plan:
        for t, e, k, h in _shapes(family, device):
            def one(variant: str = variant, t: int = t, e: int = e, k: int = k, h: int = h) -> dict:
                fn = _kernel(variant, t, e, k, h, device)
                return _row(variant, t, e, k, h, timer.time(fn).fields())
            sec.attempt(f"{variant} T={t} E={e} k={k} h={h}", budget, one)
    return sec


def sync_rows(numel: int, device: str) -> list[dict]:
    """``idle`` and (on a GPU) ``queued`` rows for ``.tolist()`` of ``numel`` int64 counts."""
    counts = torch.randint(0, 4096, (numel,), device=device)
    for _ in range(5):
        counts.tolist()
    idle = []
    for _ in range(SYNC_REPEATS):
        sync(device)
        t0 = time.perf_counter_ns()
        counts.tolist()
        idle.append(time.perf_counter_ns() - t0)
    base = {"op": "sync", "call": "tolist", "nbytes": numel * 8, "numel": numel}
    rows = [{**base, "variant": "idle", **stats_from_ns(idle).fields()}]
    if device == "cuda":
        rows.append({**base, "variant": "queued", **stats_from_ns(_queued_lags(counts)).fields()})
    return rows


def _queued_lags(counts: torch.Tensor) -> list[float]:
    """Host wall time of [GPU wait; counts.tolist()] minus the wait's event-timed duration."""
    lags = []
    for _ in range(SYNC_REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        t0 = time.perf_counter_ns()
        start.record()
        torch.cuda._sleep(int(SYNC_WAIT_NS * BUSY_CYCLES_PER_NS))
        end.record()
        counts.tolist()
        wall = time.perf_counter_ns() - t0
        lags.append(max(1.0, wall - start.elapsed_time(end) * 1e6))
    return lags

