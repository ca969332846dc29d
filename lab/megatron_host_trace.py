"""Where does the host time of an eager Megatron-style MoE forward (and a torchtitan loop forward) go?

The layer harness measures Megatron t1024 forwards at 1.35-2.13 ms where moesim simulates
~1.1 ms, on every file, while the GPU work is ~0.6 ms. This probe runs the harness's own weights,
routing and program (``moesim.calibrate.layer_programs.megatron_forward``'s statements, copied
here with a ``perf_counter_ns`` tick after each one), back to back under ``torch.no_grad()`` as the
harness's forward pass does, and records per statement the median host time over the steady
iterations (a tick costs ~0.1 us). For the loop forward: the counts ``.tolist()``, every expert
body and the ``cat``.

A second pass records a CUDA event at each tick instead, for the GPU's time between ticks (the
GPU's idle gaps after each device-to-host read show up there). Rounds are spread over
``--round-gap-s`` seconds (the host's speed state on the lent machines changes within seconds).

``python3 lab/megatron_host_trace.py --device cuda --out trace.json`` (``--device cpu``: smoke).
Nothing here feeds a prediction.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from moesim.calibrate.layer_programs import MoEWeights, _histc, shared_ffn
from moesim.calibrate.layer_cases import MOE_SHAPES, SMOKE_MOE, Case, plan_cases
from moesim.calibrate.layer_workloads import ROUTE_BIAS_BF16, ROUTE_BIAS_FP32, draw_routing, route_bias, sync

CASES = (
    "deepseek_v2_lite.megatron.grouped.scatter_add.t1024.uniform.fwd",
    "qwen3_30b_a3b.megatron.grouped.scatter_add.t1024.uniform.fwd",
    "qwen3_30b_a3b.megatron.grouped.scatter_add.t4096.uniform.fwd",
    "mixtral_8x7b.megatron.grouped.scatter_add.t1024.uniform.fwd",
    "qwen3_30b_a3b.torchtitan.loop.scatter_add.t1024.uniform.fwd",
    "deepseek_v2_lite.torchtitan.loop.scatter_add.t4096.uniform.fwd",
)
SMOKE = ("tiny_moe.megatron.grouped.scatter_add.t32.uniform.fwd", "tiny_moe.torchtitan.loop.scatter_add.t32.uniform.fwd")


class Ticks:
    """Host timestamps (and optionally CUDA events) after each labelled statement."""

    def __init__(self, events: bool) -> None:
        self.events = events
        self.labels: list[str] = []
        self.t: list[int] = []
        self.ev: list = []

    def start(self) -> None:
        self.labels, self.t, self.ev = ["start"], [time.perf_counter_ns()], []
        if self.events:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.ev = [e]

    def __call__(self, label: str) -> None:
        self.t.append(time.perf_counter_ns())
        self.labels.append(label)
        if self.events:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.ev.append(e)

    def host(self) -> list[float]:
        return [float(b - a) for a, b in zip(self.t, self.t[1:])]

    def gpu(self) -> list[float]:
        return [a.elapsed_time(b) * 1e6 for a, b in zip(self.ev, self.ev[1:])]


def megatron_ticked(w: MoEWeights, x, bias, k: int, tick: Ticks):
    """``layer_programs.megatron_forward`` (grouped experts, no smoke paths), a tick per statement."""
    t, h = x.shape
    tick.start()
    logits = F.linear(x, w.router); tick("router linear")
    top_vals, top_idx = torch.topk(logits + bias, k=k, dim=1); tick("add bias + topk")
    probs = torch.softmax(top_vals, dim=-1, dtype=torch.float32).type_as(logits); tick("softmax + type_as")
    routing_probs = torch.zeros_like(logits).scatter(1, top_idx, probs); tick("zeros_like + scatter probs")
    routing_map = torch.zeros_like(logits).int().scatter(1, top_idx, 1).bool(); tick("routing map (zeros,int,scatter,bool)")
    counts = routing_map.sum(dim=0); tick("sum(0)")
    counts.cpu(); tick("counts .cpu() SYNC")
    map_t = routing_map.T.contiguous(); tick("map.T.contiguous")
    sorted_idx = torch.arange(t, device=x.device).unsqueeze(0).expand(map_t.shape[0], -1).masked_select(map_t)
    tick("arange+unsqueeze+expand+masked_select SYNC")
    permuted = x.index_select(0, sorted_idx); tick("index_select")
    offs = torch.cumsum(counts, dim=0, dtype=torch.int32); tick("cumsum")
    fc1 = torch._grouped_mm(permuted, w.fc1.transpose(-2, -1), offs=offs); tick("fc1 transpose + grouped_mm")
    gate, up = torch.chunk(fc1, 2, dim=-1); tick("chunk")
    act = F.silu(gate) * up; tick("silu * up")
    y = torch._grouped_mm(act, w.w2.transpose(-2, -1), offs=offs); tick("fc2 transpose + grouped_mm")
    permuted_probs = routing_probs.T.contiguous().masked_select(map_t); tick("probs.T.contiguous+masked_select SYNC")
    y = y * permuted_probs.unsqueeze(-1); tick("unsqueeze + mul probs")
    out = torch.zeros((t, h), dtype=y.dtype, device=y.device); tick("zeros")
    out.scatter_add_(0, sorted_idx.unsqueeze(1).expand(-1, h), y); tick("unsqueeze+expand+scatter_add_")
    shared = shared_ffn(w, x); tick("shared ffn")
    if shared is not None:
        out = out + shared
        tick("add shared")
    return out


def loop_ticked(w: MoEWeights, x, bias, k: int, tick: Ticks):
    """torchtitan forward with the per-expert loop; ticks at the router, the sync, each body, cat."""
    t, h = x.shape
    e = w.router.shape[0]
    tick.start()
    scores = F.softmax(F.linear(x, w.router).float(), dim=1)
    _, sel = torch.topk(scores + bias, k=k, dim=-1, sorted=False)
    top = scores.gather(dim=1, index=sel)
    w.tokens_per_expert.add_(_histc(sel.view(-1), e, x.device.type != "cuda"))
    counts = _histc(sel.view(-1), e, x.device.type != "cuda")
    order = torch.argsort(sel.view(-1), stable=True)
    top_sorted = top.view(-1)[order]
    rows = (order // k).reshape(-1, 1).expand(-1, h)
    routed = torch.gather(x, dim=0, index=rows)
    routed = (routed.to(torch.float32) * top_sorted.reshape(-1, 1)).to(x.dtype); tick("router + permute")
    sizes = counts.tolist(); tick("counts .tolist() SYNC")
    total = sum(sizes)
    outs = []
    for ei, xe in enumerate(torch.split(routed[:total], split_size_or_sections=sizes, dim=0)):
        hh = F.silu(torch.matmul(xe, w.w1[ei].transpose(-2, -1)))
        hh = hh * torch.matmul(xe, w.w3[ei].transpose(-2, -1))
        outs.append(torch.matmul(hh, w.w2[ei].transpose(-2, -1)))
        tick("body")
    out = torch.cat(outs, dim=0)
    out = torch.vstack((out, out.new_zeros((routed.shape[0] - total, out.shape[-1])))); tick("cat + vstack")
    shared = shared_ffn(w, x)
    base = shared if shared is not None else torch.zeros_like(x)
    res = base.scatter_add(dim=0, index=rows, src=out); tick("shared + scatter_add")
    return res


def run_case(case: Case, device: str, iters: int, rounds: int, gap_s: float, smoke: bool) -> dict:
    shape = (SMOKE_MOE | MOE_SHAPES)[case.model]
    w = MoEWeights(shape, device)
    chosen, _ = draw_routing(shape, case.tokens, case.routing, case.zipf_s)
    titan = case.movement == "torchtitan"
    x = torch.randn((case.tokens, shape.hidden), device=device, dtype=torch.bfloat16)
    bias = route_bias(chosen, shape.num_experts, ROUTE_BIAS_FP32 if titan else ROUTE_BIAS_BF16,
                      torch.float32 if titan else torch.bfloat16, device)
    prog = loop_ticked if titan else megatron_ticked
    rec: dict = {"id": case.id}
    for mode in ("host", "gpu"):
        if mode == "gpu" and smoke:
            continue
        tick = Ticks(events=mode == "gpu")
        per_round = []
        for r in range(rounds):
            if r:
                time.sleep(gap_s)
            samples = []
            with torch.no_grad():
                for _ in range(3):
                    prog(w, x, bias, shape.top_k, tick)
                sync(device)
                t0 = time.perf_counter_ns()
                for _ in range(iters):
                    prog(w, x, bias, shape.top_k, tick)
                    if mode == "host":
                        samples.append(tick.host())
                    else:
                        sync(device)
                        samples.append(tick.gpu())
                sync(device)
                wall = (time.perf_counter_ns() - t0) / iters
            per_round.append({"wall_ns": round(wall, 1),
                              "median": np.median(np.array(samples), axis=0).round(1).tolist()})
        rec[mode] = {"labels": tick.labels[1:], "rounds": per_round}
        print(case.id, mode, [r["wall_ns"] for r in per_round], flush=True)
    return rec


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--round-gap-s", type=float, default=2.0)
    args = ap.parse_args()
    smoke = args.device != "cuda"
    cases = {c.id: c for c in plan_cases(smoke)}
    ids = SMOKE if smoke else CASES
    doc = {"device": torch.cuda.get_device_name() if not smoke else "cpu", "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cases": []}
    if not smoke:
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            a @ a
        sync(args.device)
    for cid in ids:
        doc["cases"].append(run_case(cases[cid], args.device, args.iters if not smoke else 3,
                                     args.rounds if not smoke else 1, args.round_gap_s, smoke))
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
