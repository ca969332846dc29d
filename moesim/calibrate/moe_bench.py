"""Validation workload: one expert-parallel MoE layer forward on several GPUs.

Each rank holds ``tokens_per_rank`` tokens of width ``hidden``; each token picks ``top_k``
distinct experts out of ``num_experts`` by seeded sampling without replacement from a uniform
or Zipf popularity (expert 0 hottest). The layer: permute token copies by destination rank and
local expert (``index_select``), dispatch ``all_to_all_single`` with uneven splits, regroup the
received rows by local expert, run each local expert's SwiGLU FFN in turn, undo the regroup,
combine ``all_to_all_single``, and scatter-add the weighted rows back (``index_add_``). Split
sizes are computed ahead (every rank derives every rank's routing from the seeds), so no count
exchange is timed. Placements: ``contiguous`` (experts ``r*E/R .. (r+1)*E/R - 1`` on rank ``r``)
and ``hot_split`` (expert ``e`` on rank ``e % R``, spreading the hottest experts).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from moesim.calibrate.clock_timer import ClockProbe
from moesim.calibrate.kernels import randn, swiglu_ffn
from moesim.calibrate.timing import sync

PHASES = ("permute", "dispatch", "experts", "combine", "unpermute")


@dataclass(frozen=True)
class MoEConfig:
    """One MoE-layer workload."""

    tokens_per_rank: int
    hidden: int
    ffn: int
    num_experts: int
    top_k: int
    routing: str  # "uniform" or "zipf"
    zipf_s: float
    placement: str  # "contiguous" or "hot_split"
    seed: int = 1234

    @property
    def name(self) -> str:
        return f"moe_t{self.tokens_per_rank}_{self.routing}_{self.placement}"


def popularity(cfg: MoEConfig) -> np.ndarray:
    """Per-expert sampling weight (sums to 1)."""
    if cfg.routing == "uniform":
        w = np.ones(cfg.num_experts)
    else:
        w = 1.0 / np.arange(1, cfg.num_experts + 1) ** cfg.zipf_s
    return w / w.sum()


def route(cfg: MoEConfig, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(expert ids [T, k], gate weights [T, k]) of one rank, by Gumbel top-k (no replacement)."""
    rng = np.random.default_rng(cfg.seed + rank)
    keys = np.log(popularity(cfg))[None, :] + rng.gumbel(size=(cfg.tokens_per_rank, cfg.num_experts))
    ids = np.argsort(-keys, axis=1)[:, : cfg.top_k]
    w = rng.random((cfg.tokens_per_rank, cfg.top_k)) + 0.1
    return ids, w / w.sum(axis=1, keepdims=True)


def placement(cfg: MoEConfig, world: int) -> list[int]:
    """Rank of each expert."""
    per = cfg.num_experts // world
    if cfg.placement == "contiguous":
        return [e // per for e in range(cfg.num_experts)]
    return [e % world for e in range(cfg.num_experts)]


def local_experts(cfg: MoEConfig, world: int, rank: int) -> list[int]:
    return [e for e, r in enumerate(placement(cfg, world)) if r == rank]


def counts_matrix(cfg: MoEConfig, world: int) -> np.ndarray:
    """``counts[src, dst, local]``: token copies rank src sends to local expert ``local`` of dst."""
    place = placement(cfg, world)
    local_idx = {e: local_experts(cfg, world, place[e]).index(e) for e in range(cfg.num_experts)}
    per = cfg.num_experts // world
    counts = np.zeros((world, world, per), dtype=np.int64)
    for src in range(world):
        ids, _ = route(cfg, src)
        for e, c in zip(*np.unique(ids, return_counts=True)):
            counts[src, place[e], local_idx[int(e)]] += c
    return counts


class MoELayer:
    """Precomputed index plans and expert weights of one rank."""

    def __init__(self, cfg: MoEConfig, rank: int, world: int, device: str) -> None:
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        place = placement(cfg, world)
        mine = local_experts(cfg, world, rank)
        ids, w = route(cfg, rank)
        tok = np.repeat(np.arange(cfg.tokens_per_rank), cfg.top_k)
        flat = ids.reshape(-1)
        local_of = {e: local_experts(cfg, world, place[e]).index(e) for e in range(cfg.num_experts)}
        key = np.array([place[e] * cfg.num_experts + local_of[e] for e in flat])
        order = np.argsort(key, kind="stable")
        self.counts = counts_matrix(cfg, world)
        self.send = [int(x) for x in self.counts[rank].sum(axis=1)]
        self.recv = [int(x) for x in self.counts[:, rank].sum(axis=1)]
        self.tok = torch.tensor(tok[order], device=device)
        self.gate = torch.tensor(w.reshape(-1)[order], device=device, dtype=torch.bfloat16)[:, None]
        regroup = self._regroup_index()
        self.regroup = torch.tensor(regroup, device=device)
        self.ungroup = torch.tensor(np.argsort(regroup), device=device)
        self.expert_rows = [int(x) for x in self.counts[:, rank].sum(axis=0)]
        h, f = cfg.hidden, cfg.ffn
        self.weights = [tuple(randn(f * h, device, 500 + 3 * e + j).view(*(f, h) if j < 2 else (h, f)) * 0.02
                              for j in range(3)) for e in mine]
        self.x = randn(cfg.tokens_per_rank * h, device, 400 + rank).view(cfg.tokens_per_rank, h)

    def _regroup_index(self) -> np.ndarray:
        """Rows of the receive buffer ordered by local expert, then by source rank."""
        c = self.counts[:, self.rank]  # [src, local]
        starts = np.concatenate([[0], np.cumsum(c.reshape(-1))[:-1]]).reshape(c.shape)
        return np.concatenate([np.arange(starts[s, l], starts[s, l] + c[s, l])
                               for l in range(c.shape[1]) for s in range(c.shape[0])]).astype(np.int64)

    def forward(self, marks: "list | None" = None) -> torch.Tensor:
        """One layer forward; ``marks`` (CUDA events) are recorded after each phase if given."""
        h = self.cfg.hidden
        xs = self.x.index_select(0, self.tok)
        _mark(marks, 0)
        recv = torch.empty(sum(self.recv), h, device=self.device, dtype=torch.bfloat16)
        dist.all_to_all_single(recv, xs, output_split_sizes=self.recv, input_split_sizes=self.send)
        _mark(marks, 1)
        grouped = recv.index_select(0, self.regroup)
        outs, start = [], 0
        for rows, (wg, wu, wd) in zip(self.expert_rows, self.weights):
            if rows:
                outs.append(swiglu_ffn(grouped[start:start + rows], wg, wu, wd))
            start += rows
        y = torch.cat(outs).index_select(0, self.ungroup) if outs else grouped
        _mark(marks, 2)
        back = torch.empty(sum(self.send), h, device=self.device, dtype=torch.bfloat16)
        dist.all_to_all_single(back, y, output_split_sizes=self.send, input_split_sizes=self.recv)
        _mark(marks, 3)
        out = torch.zeros(self.cfg.tokens_per_rank, h, device=self.device, dtype=torch.bfloat16)
        out.index_add_(0, self.tok, back * self.gate)
        _mark(marks, 4)
        return out


def _mark(marks: "list | None", i: int) -> None:
    if marks is not None:
        marks[i].record()


def time_moe(cfg: MoEConfig, rank: int, world: int, device: str, warmup: int = 3, repeats: int = 10,
             telemetry: bool = False) -> dict:
    """Raw per-repeat layer times and per-phase times (ns) on this rank.

    ``telemetry`` (GPUs) also records, per repeat and outside the timed region, the SM clock right
    after the layer's last kernel (a clock probe queued behind it, ``clock_timer.ClockProbe``) and
    the host time the forward took to issue (start event to the return of ``forward``)."""
    layer = MoELayer(cfg, rank, world, device)
    for _ in range(warmup):
        layer.forward()
    total, phases = [], {p: [] for p in PHASES}
    clock_mhz: list[float] = []
    issue_ns: list[float] = []
    for _ in range(repeats):
        dist.barrier()
        sync(device)
        if device == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            marks = [torch.cuda.Event(enable_timing=True) for _ in PHASES]
            t0 = time.perf_counter_ns()
            start.record()
            layer.forward(marks)
            if telemetry:
                issue_ns.append(float(time.perf_counter_ns() - t0))
                probe = ClockProbe()  # queued behind the last kernel: the clock as the layer ends
            torch.cuda.synchronize()
            if telemetry:
                clock_mhz.append(probe.mhz())
            bounds = [start] + marks
            for p, a, b in zip(PHASES, bounds, bounds[1:]):
                phases[p].append(a.elapsed_time(b) * 1e6)
            total.append(start.elapsed_time(marks[-1]) * 1e6)
        else:
            t0 = time.perf_counter_ns()
            layer.forward()
            total.append(float(time.perf_counter_ns() - t0))
    out = {"layer_ns": total, "phase_ns": phases, "counts": layer.counts.tolist(),
           "expert_rows": layer.expert_rows, "local_experts": local_experts(cfg, world, rank)}
    if telemetry and clock_mhz:
        out["clock_mhz"], out["issue_ns"] = clock_mhz, issue_ns
    return out



def moe_entry(cfg: MoEConfig, per_rank: list[dict], world: int) -> dict:
    """One validation entry from all ranks' raw results (layer time = max over ranks per repeat)."""
    layer = np.max(np.array([r["layer_ns"] for r in per_rank]), axis=0)
    p25, med, p75 = np.percentile(layer, [25, 50, 75])
    return {
        "id": cfg.name,
        "kind": "moe_layer",
        "description": {
            "num_ranks": world, "tokens_per_rank": cfg.tokens_per_rank, "hidden": cfg.hidden, "ffn": cfg.ffn,
            "num_experts": cfg.num_experts, "top_k": cfg.top_k, "routing": cfg.routing,
            "zipf_s": cfg.zipf_s if cfg.routing == "zipf" else None, "popularity": [round(float(x), 5) for x in popularity(cfg)],
            "placement": cfg.placement, "expert_rank": placement(cfg, world), "seed": cfg.seed, "dtype": "bf16",
            "expert": "SwiGLU: (silu(x wg^T) * (x wu^T)) wd^T, experts run one after another",
            "counts_src_dst_local": per_rank[0]["counts"],
            "tokens_per_local_expert": {str(r): pr["expert_rows"] for r, pr in enumerate(per_rank)},
            "local_experts": {str(r): pr["local_experts"] for r, pr in enumerate(per_rank)},
            "phases": list(PHASES), "count_exchange_timed": False,
        },
        "measured": {
            "time_ns": round(float(med), 1), "p25_ns": round(float(p25), 1), "p75_ns": round(float(p75), 1),
            "min_ns": round(float(layer.min()), 1), "max_ns": round(float(layer.max()), 1), "repeats": int(layer.size),
            "timing": "CUDA events per rank after a barrier; max over ranks per repeat; median",
            "phase_median_ns": {str(r): {p: round(float(np.median(v)), 1) for p, v in pr["phase_ns"].items() if v}
                                for r, pr in enumerate(per_rank)},
            **_telemetry(per_rank),
        },
    }


def _telemetry(per_rank: list[dict]) -> dict:
    """Per rank, the median SM clock as the layer ended and the median host issue time of a
    forward, with the raw per-repeat values (empty when not recorded)."""
    if not all(r.get("clock_mhz") for r in per_rank):
        return {}
    return {"clock": {"sm_mhz_per_rank": [round(float(np.median(r["clock_mhz"])), 1) for r in per_rank],
                      "per_repeat_mhz": [[round(x, 1) for x in r["clock_mhz"]] for r in per_rank],
                      "method": "clock probe (two torch.cuda._sleep spins) queued right after the layer's last "
                                "kernel, every repeat"},
            "host_issue_ns": {"median_per_rank": [round(float(np.median(r["issue_ns"])), 1) for r in per_rank],
                              "per_repeat": [[round(x, 1) for x in r["issue_ns"]] for r in per_rank],
                              "method": "perf_counter from the start event's record to the return of forward"}}


def reference_forward(cfg: MoEConfig, rank: int, world: int, device: str) -> torch.Tensor:
    """The same layer computed densely on one rank (every expert's weights rebuilt from seeds)."""
    layer_x = randn(cfg.tokens_per_rank * cfg.hidden, device, 400 + rank).view(cfg.tokens_per_rank, cfg.hidden)
    ids, w = route(cfg, rank)
    h, f = cfg.hidden, cfg.ffn
    out = torch.zeros(cfg.tokens_per_rank, h, device=device, dtype=torch.float32)
    for e in range(cfg.num_experts):
        wg, wu, wd = (randn(f * h, device, 500 + 3 * e + j).view(*(f, h) if j < 2 else (h, f)) * 0.02 for j in range(3))
        tok, slot = np.nonzero(ids == e)
        if tok.size == 0:
            continue
        t = torch.tensor(tok, device=device)
        gate = torch.tensor(w[tok, slot], device=device, dtype=torch.float32)[:, None]
        out.index_add_(0, t, swiglu_ffn(layer_x[t], wg, wu, wd).float() * gate)
    return out


def moe_check_worker(rank: int, world: int, device: str, cfg: dict) -> dict:
    """Relative error of the expert-parallel layer against :func:`reference_forward`, per config."""
    errs = {}
    for mc in cfg["moe"]:
        got = MoELayer(mc, rank, world, device).forward().float()
        ref = reference_forward(mc, rank, world, device)
        errs[mc.name] = float((got - ref).norm() / ref.norm().clamp_min(1e-30))
    return errs
