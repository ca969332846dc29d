"""Validation workload: a pipeline of MLP blocks run under GPipe, 1F1B and interleaved 1F1B.

Every rank holds ``num_chunks`` chunks (one for GPipe and 1F1B) of ``blocks_per_chunk`` blocks,
each block ``Linear(h, f) -> GELU -> Linear(f, h)`` without bias, bf16. Activations go forward
and gradients backward by NCCL send/recv; every (pipeline edge, direction) has its own process
group, so its messages match in microbatch order whatever the rank's action order (no
deadlock). Stage 0's input needs no gradient; the last stage's backward starts from a fixed
random output gradient. Weight gradients accumulate over microbatches. A step is timed from a
barrier to the moment every rank's GPU has finished (maximum over ranks of host wall time);
isolated per-chunk forward and backward times are recorded beside it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from moesim.calibrate.kernels import randn
from moesim.calibrate.pipeline_orders import Action, format_action, orders_for
from moesim.calibrate.timing import sync


@dataclass(frozen=True)
class PipelineConfig:
    """One pipeline workload."""

    name: str
    hidden: int
    ffn: int
    num_blocks: int
    tokens_per_microbatch: int
    num_microbatches: int


def _block_chunk(cfg: PipelineConfig, blocks: int, device: str, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for _ in range(blocks):
        layers += [torch.nn.Linear(cfg.hidden, cfg.ffn, bias=False), torch.nn.GELU(),
                   torch.nn.Linear(cfg.ffn, cfg.hidden, bias=False)]
    return torch.nn.Sequential(*layers).to(device=device, dtype=torch.bfloat16)


class PipelineRank:
    """One rank's chunks, its edge groups and the executor of an action order."""

    def __init__(self, cfg: PipelineConfig, rank: int, world: int, num_chunks: int, device: str) -> None:
        assert cfg.num_blocks % (world * num_chunks) == 0, "blocks must split evenly over stages"
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.num_stages = world * num_chunks
        per = cfg.num_blocks // self.num_stages
        self.chunks = {s: _block_chunk(cfg, per, device, 100 + s) for s in range(rank, self.num_stages, world)}
        self.groups = {}
        for s in range(self.num_stages - 1):  # every rank creates every group, in the same order
            for direction in ("f", "b"):
                self.groups[(s, direction)] = dist.new_group([s % world, (s + 1) % world])
        self._warm_groups()
        shape = (cfg.tokens_per_microbatch, cfg.hidden)
        self.inputs = [randn(shape[0] * shape[1], device, 200 + m).view(shape) for m in range(cfg.num_microbatches)]
        self.dout = randn(shape[0] * shape[1], device, 300).view(shape)

    def _warm_groups(self) -> None:
        """Create every group's communicator in one agreed order (lazy creation could deadlock)."""
        for (s, _), g in self.groups.items():
            members = (s % self.world, (s + 1) % self.world)
            if self.rank not in members:
                continue
            peer = members[1] if self.rank == members[0] else members[0]
            t, r = torch.ones(1, device=self.device), torch.empty(1, device=self.device)
            dist.all_reduce(t, group=g)
            ops = [dist.P2POp(dist.isend, t, peer, group=g), dist.P2POp(dist.irecv, r, peer, group=g)]
            for w in dist.batch_isend_irecv(ops):
                w.wait()

    def _peer(self, stage: int) -> int:
        return stage % self.world

    def run_step(self, order: list[Action]) -> None:
        """Execute one training step's actions (no optimizer step)."""
        for chunk in self.chunks.values():
            for p in chunk.parameters():
                p.grad = None
        saved: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        pending: list = []
        shape = (self.cfg.tokens_per_microbatch, self.cfg.hidden)
        for kind, stage, mb in order:
            if kind == "F":
                if stage == 0:
                    x = self.inputs[mb]
                else:
                    x = torch.empty(shape, device=self.device, dtype=torch.bfloat16)
                    dist.irecv(x, self._peer(stage - 1), group=self.groups[(stage - 1, "f")]).wait()
                    x.requires_grad_()
                y = self.chunks[stage](x)
                saved[(stage, mb)] = (x, y)
                if stage < self.num_stages - 1:
                    out = y.detach()
                    pending.append((dist.isend(out, self._peer(stage + 1), group=self.groups[(stage, "f")]), out))
            else:
                x, y = saved.pop((stage, mb))
                if stage == self.num_stages - 1:
                    gy = self.dout
                else:
                    gy = torch.empty(shape, device=self.device, dtype=torch.bfloat16)
                    dist.irecv(gy, self._peer(stage + 1), group=self.groups[(stage, "b")]).wait()
                torch.autograd.backward(y, gy)
                if stage > 0:
                    pending.append((dist.isend(x.grad, self._peer(stage - 1), group=self.groups[(stage - 1, "b")]), x.grad))
        for work, _ in pending:
            work.wait()

    def isolated_chunk_times(self, repeats: int = 5) -> dict[str, list[float]]:
        """Forward and backward time (ns) of each local chunk alone on this GPU."""
        out: dict[str, list[float]] = {}
        x = self.inputs[0].detach().clone().requires_grad_()
        for stage, chunk in self.chunks.items():
            fwd, bwd = [], []
            for _ in range(repeats + 1):
                sync(self.device)
                t0 = time.perf_counter_ns()
                y = chunk(x)
                sync(self.device)
                t1 = time.perf_counter_ns()
                torch.autograd.backward(y, self.dout)
                sync(self.device)
                fwd.append(t1 - t0)
                bwd.append(time.perf_counter_ns() - t1)
            out[f"stage{stage}_fwd"], out[f"stage{stage}_bwd"] = fwd[1:], bwd[1:]
        for p in (q for c in self.chunks.values() for q in c.parameters()):
            p.grad = None
        return out



def time_pipeline(cfg: PipelineConfig, schedule: str, rank: int, world: int, device: str,
                  warmup: int = 1, repeats: int = 3) -> dict:
    """Raw step wall times (ns) of one schedule on this rank, plus the orders that ran."""
    num_chunks = 2 if schedule == "interleaved" else 1
    runner = PipelineRank(cfg, rank, world, num_chunks, device)
    orders = orders_for(schedule, world, cfg.num_microbatches, num_chunks)
    steps = []
    for i in range(warmup + repeats):
        dist.barrier()
        sync(device)
        t0 = time.perf_counter_ns()
        runner.run_step(orders[rank])
        sync(device)
        if i >= warmup:
            steps.append(float(time.perf_counter_ns() - t0))
    isolated = runner.isolated_chunk_times()
    del runner
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"step_ns": steps, "isolated_ns": isolated,
            "orders": [[format_action(a) for a in o] for o in orders], "num_chunks": num_chunks}


def pipeline_entry(cfg: PipelineConfig, schedule: str, per_rank: list[dict], world: int) -> dict:
    """One validation entry from all ranks' raw results (step time = max over ranks per step)."""
    steps = np.max(np.array([r["step_ns"] for r in per_rank]), axis=0)
    p25, med, p75 = np.percentile(steps, [25, 50, 75])
    isolated = {k: float(np.median(v)) for r in per_rank for k, v in r["isolated_ns"].items()}
    num_chunks = per_rank[0]["num_chunks"]
    return {
        "id": f"pipeline_{cfg.name}_{schedule}",
        "kind": "pipeline",
        "description": {
            "schedule": schedule, "num_ranks": world, "num_chunks_per_rank": num_chunks,
            "num_stages": world * num_chunks, "stage_of_rank": "virtual stage s runs on rank s % num_ranks",
            "num_microbatches": cfg.num_microbatches, "tokens_per_microbatch": cfg.tokens_per_microbatch,
            "hidden": cfg.hidden, "ffn": cfg.ffn, "num_blocks": cfg.num_blocks,
            "blocks_per_stage": cfg.num_blocks // (world * num_chunks),
            "block": "Linear(hidden, ffn, bias=False) -> GELU(exact) -> Linear(ffn, hidden, bias=False)",
            "dtype": "bf16", "activation_bytes_per_message": cfg.tokens_per_microbatch * cfg.hidden * 2,
            "stage0_input_requires_grad": False, "last_stage_grad": "fixed random tensor, no loss op",
            "optimizer_step": False, "weight_grads": "accumulated over microbatches, reset to None per step",
            "p2p": "NCCL isend/irecv, one process group per (edge, direction)",
            "orders": per_rank[0]["orders"],
        },
        "measured": {"time_ns": round(float(med), 1), "p25_ns": round(float(p25), 1), "p75_ns": round(float(p75), 1),
                     "min_ns": round(float(steps.min()), 1), "max_ns": round(float(steps.max()), 1),
                     "repeats": int(steps.size), "timing": "host wall time from a barrier to GPU idle, max over ranks",
                     "isolated_stage_ns": {k: round(v, 1) for k, v in sorted(isolated.items())}},
    }


def pipeline_check_worker(rank: int, world: int, device: str, cfg: dict) -> dict:
    """Relative error of each schedule's weight gradients against the same model run on one rank."""
    pc: PipelineConfig = cfg["pipeline"]
    errs = {}
    for schedule in cfg.get("schedules", ("gpipe", "1f1b", "interleaved")):
        num_chunks = 2 if schedule == "interleaved" else 1
        runner = PipelineRank(pc, rank, world, num_chunks, device)
        runner.run_step(orders_for(schedule, world, pc.num_microbatches, num_chunks)[rank])
        stages = world * num_chunks
        full = [_block_chunk(pc, pc.num_blocks // stages, device, 100 + s) for s in range(stages)]
        for mb in range(pc.num_microbatches):
            y = runner.inputs[mb]
            for chunk in full:
                y = chunk(y)
            torch.autograd.backward(y, runner.dout)
        worst = 0.0
        for s, chunk in runner.chunks.items():
            for p, q in zip(chunk.parameters(), full[s].parameters()):
                worst = max(worst, float((p.grad.float() - q.grad.float()).norm() / q.grad.float().norm()))
        errs[schedule] = worst
    return errs
