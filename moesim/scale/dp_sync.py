"""The reduced engine's data-parallel phases (:mod:`moesim.scale.reduced`, reduction 4): per lane,
ZeRO-1's reduce-scatter of each model chunk's gradients after its last backward (dense:
hierarchical over the dp GPUs, NVSwitch inside the node then one ring per rail; routed experts:
a ring over the expert-data-parallel GPUs, ``ParallelPlan.expert_dp``: dp / ep, folded tp dp /
ep), the optimizer on the GPU's shard and the all-gather of the updated bf16 parameters, each
one phase event on the lane's NIC; without ZeRO an all-reduce of the same bytes and the optimizer
on every parameter.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moesim.lowering.moe_costs import MoEStageTable
from moesim.lowering.overlap import grad_reduce_overlap
from moesim.lowering.pipeline import Grid
from moesim.lowering.stage_costs import ADAM_BYTES_PER_PARAM
from moesim.ops import MemoryOp
from moesim.scale.lanes import LaneLink

PARAM_BYTES = 2   # bf16 parameters gathered after the ZeRO-1 optimizer step


def zero1_sync(scn: Any, table: MoEStageTable, cost: Any, link: LaneLink, grid: Grid, per_node: int,
               nvswitch_gbps: float, info: dict) -> tuple[Callable, "Callable | None"]:
    """Data-parallel sync per lane, as a ``gradient_sync`` for :func:`lower_pipeline`. ZeRO-1 (the
    scenario's ``memory`` shards the optimizer: zero_stage >= 1 or a distributed optimizer): per
    model chunk after its last backward a reduce-scatter of its gradients (dense: hierarchical
    over dp GPUs; experts: over the ``plan.expert_dp`` expert-data-parallel GPUs), then the
    optimizer on this GPU's shard and the all-gather of the updated bf16 parameters; with
    ``--overlap-param-gather`` that all-gather is the previous step's, issued per model chunk at
    the start of the step on ``comm.dp``, and the chunk's first forward waits for its own (as the
    full run lowers it).
    Without ZeRO: an all-reduce of the gradients (reduce-scatter + all-gather of the same bytes)
    and the optimizer on every parameter, as the full run does. With TP each GPU of the lane's TP
    group runs its own DP group's phases (the dp GPUs of its TP index: ``per_node / tp`` of them
    per node). Returns ``(gradient_sync, param_gather)``, the second None unless the gather is
    overlapped (:func:`moesim.lowering.pipeline.lower_pipeline`)."""
    plan = scn.plan
    zero = scn.memory.effective_zero_stage >= 1
    passes = 1 if zero else 2   # an all-reduce is a reduce-scatter plus an all-gather
    dp, edp = plan.dp, plan.expert_dp
    inside = min(dp, per_node // plan.tp)
    nodes = dp // inside
    nic = min(link.capacity.values())
    step_nvs = cost.collective_step_latency_ns("reduce_scatter", inside, "nvswitch") if inside > 1 else 0
    step_nic = cost.collective_step_latency_ns("reduce_scatter", nodes, "ib") if nodes > 1 else 0
    step_edp = cost.collective_step_latency_ns("reduce_scatter", edp, "ib") if edp > 1 else 0

    def hier(nbytes: float) -> tuple[int, float]:
        """Hierarchical ring reduce-scatter (and all-gather): time and per-GPU NIC bytes."""
        intra = (inside - 1) / inside * nbytes / nvswitch_gbps + (inside - 1) * step_nvs
        cross = (nodes - 1) / nodes * nbytes / inside
        return int(intra + cross / nic + (nodes - 1) * step_nic), cross

    def flat(nbytes: float) -> tuple[int, float]:
        """Ring reduce-scatter over the expert-data-parallel GPUs (one per EP group, other nodes)."""
        if edp < 2:
            return 0, 0.0
        cross = (edp - 1) / edp * nbytes
        return int(cross / nic + (edp - 1) * step_edp), cross

    def chunk_params(p: int, chunk: int) -> tuple[float, float]:
        """(dense, routed-expert) parameters of one model chunk on one GPU of pipeline rank p."""
        grads, experts = table.grad_bytes(p, chunk), table.expert_grad_bytes(p, chunk)
        return max(0.0, grads - experts) / plan.grad_dtype_bytes, experts / plan.grad_dtype_bytes

    overlap_gather = zero and bool(scn.overlap.overlap_param_gather)

    def all_gather(sim, lane: int, dense: float, experts: float, name: str, deps: list, args: dict,
                   record_as: str | None):
        """The all-gather of ``dense`` and ``experts`` updated bf16 parameters on ``lane``'s comm.dp
        (its time recorded under ``record_as`` in the DP figures, where given)."""
        (d_ns, d_nic), (e_ns, e_nic) = hier(dense * PARAM_BYTES), flat(experts * PARAM_BYTES)
        if record_as is not None:
            info["all_gather_ms"][record_as] = round((d_ns + e_ns) / 1e6, 3)
        return link.phase(sim, lane, d_ns + e_ns, d_nic + e_nic, d_nic + e_nic, name, stream="comm.dp",
                          category="all_gather", deps=deps, args={**args, "bytes": (dense + experts) * PARAM_BYTES})

    def gather(sim, firsts) -> int:
        added = 0
        for (_d, p, chunk), tasks in sorted(firsts.items(), key=lambda kv: kv[0]):
            dense, experts = chunk_params(p, chunk)
            for t, first in enumerate(tasks):
                sim.add_dep(first, all_gather(sim, grid.gpu(t, 0, p), dense, experts, f"dp:all_gather.params.c{chunk}",
                                              [], {"pp_rank": p, "chunk": chunk, "overlapped": True},
                                              f"rank{p}.chunk{chunk}" if t == 0 else None))
                added += 1
        return added

    def sync(sim, last_backward, finished) -> int:
        added = 0
        for p, t in ((p, t) for p in range(grid.pp) for t in range(grid.tp)):
            lane, record = grid.gpu(t, 0, p), t == 0
            tail = []
            # reduce-scatters queue on comm.dp in the order their chunks finish the backward
            chunks = sorted((c for (_d, q, c) in last_backward if q == p),
                            key=lambda c: max(t.id for t in last_backward[(0, p, c)]))
            dense_params = expert_params = 0.0
            for chunk in chunks:
                grads = table.grad_bytes(p, chunk)
                dense, experts = chunk_params(p, chunk)
                dense_params += dense
                expert_params += experts
                (d_ns, d_nic), (e_ns, e_nic) = hier(dense * plan.grad_dtype_bytes), flat(experts * plan.grad_dtype_bytes)
                ns, nic_bytes = passes * (d_ns + e_ns), passes * (d_nic + e_nic)
                op = "reduce_scatter" if zero else "all_reduce"
                overlapped = grad_reduce_overlap(scn.overlap, plan.dp_overlap)   # --overlap-grad-reduce
                deps = last_backward[(0, p, chunk)] if overlapped else finished.get((0, p, 0), [])
                tail.append(link.phase(sim, lane, ns, nic_bytes, nic_bytes, f"dp:{op}.c{chunk}", stream="comm.dp",
                                       category=op, deps=deps, args={"chunk": chunk, "pp_rank": p, "bytes": grads}))
                if record:
                    info[f"{op}_ms"][f"rank{p}.chunk{chunk}"] = round(ns / 1e6, 3)
                added += 1
            shard = dense_params / dp + expert_params / edp if zero else dense_params + expert_params
            opt = sim.compute(lane, cost.compute_ns(MemoryOp("elementwise", ADAM_BYTES_PER_PARAM * shard, "adam")),
                              "optimizer", category="optimizer", deps=tail + finished.get((0, p, 0), []),
                              args={"pp_rank": p, **({"tp": t} if grid.tp > 1 else {})})
            if not zero or overlap_gather:   # overlapped: the next step's prologue gathers them
                continue
            all_gather(sim, lane, dense_params, expert_params, "dp:all_gather.params", [opt], {"pp_rank": p},
                       f"rank{p}" if record else None)
            added += 1
        return added

    return sync, (gather if overlap_gather else None)
