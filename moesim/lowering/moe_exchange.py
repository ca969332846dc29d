"""Lower one MoE exchange (dispatch, expert queues, combine) into engine tasks.

For one EP group (``ep`` GPUs of one pipeline rank: consecutive DP replicas of one TP index, or
whole TP groups with the folded layout, :func:`~moesim.workload.parallel.ep_group_members`) and
one (layer, microbatch), given the routed token counts ``tokens[src, dst]`` (tokens that EP rank
``src`` sends to GPU ``dst``) and each GPU's per-expert token counts:

1. *dispatch*: GPU ``dst`` receives on its ``comm.ep`` stream (``comm.ep.bwd`` backward), one task whose flows come from
   every source with tokens for it; it starts once those sources have routed their tokens;
2. *shared experts* run on every GPU meanwhile (compute stream);
3. *experts*, started once the dispatch to ``dst`` has arrived, as the table's ``experts`` mode
   runs them (:meth:`~moesim.lowering.moe_costs.MoEStageTable.expert_tasks`): ``"grouped"`` /
   ``"padded"``, one task per kernel over all of ``dst``'s local experts, a grouped GEMM priced
   on the whole count vector (a hot expert shows through the kernel's tiles); ``"loop"``, the
   counts' copy to the host, one task per expert with tokens, a ``cat``; its backward expert by
   expert from the last, each expert's input and weight gradients and (torchtitan's stacked
   weights) its select-backward share together, as autograd runs them. A table without
   ``expert_tasks`` (tests' fakes) gets one task per expert slot priced by ``expert_ns``;
4. *combine*: GPU ``src`` receives its tokens back from every GPU that computed some, once
   those GPUs' experts are done; the rest of the layer on ``src`` waits for that.

So a hot expert delays exactly the GPUs whose tokens it holds. Backward mirrors it with
gradients; W runs the expert weight-gradient tasks only. With ``experts="padded"`` every source
sends each expert exactly its capacity (``tokens[i, j]`` = capacity x experts on ``j``).

Args of expert tasks (category ``"expert"``), read by the host model (:mod:`moesim.lowering.host`)
and reports: ``"ops"`` the tuple of :mod:`moesim.ops` records the task issues, in order;
``"kernels"`` their count; ``"host_phase"`` ``"fwd"`` or ``"bwd"``; ``"flops"``; ``"tokens"``
(rows computed: padded rows in padded mode); ``"expert"`` (loop: the expert of a chain or a
select-backward share, priced by the host model as a repeated loop body; absent for grouped
kernels and the ``cat``); ``"experts_mode"``. The counts' device-to-host copy of a loop forward is a task with
``"host_sync": True``, ``"sync_bytes"`` (4 per local expert), no ops and ``"kernels": 0``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from moesim.engine import Simulation, Task
from moesim.lowering.host import expert_task_args
from moesim.lowering.moe_costs import Exchange, MoEStageTable
from moesim.lowering.pipeline import Grid
from moesim.schedules.model import Action
from moesim.workload.parallel import ep_group_members


def exchange_units(routing, plan: "ExchangePlan", layer: int) -> np.ndarray:
    """Token copies between the group's GPUs for ``plan``'s dispatch: the pair counts for a plain
    all-to-all, the two-hop DeepEP copies when the routing carries per-layer copy factors."""
    copies = getattr(routing, "copies", None) or {}
    if layer not in copies:
        return plan.tokens.astype(float)
    from moesim.moe.deepep import two_hop_units

    # plans are cached by the routing source, so one two-hop matrix per (layer, plan) object
    cache = routing.__dict__.setdefault("_two_hop_units", {})
    key = (layer, id(plan))
    if key not in cache:
        per_gpu, per_node = copies[layer]
        cache[key] = (plan, two_hop_units(plan.tokens, per_gpu, per_node, routing.host_of))
    return cache[key][1]


def ep_stream(phase: str) -> str:
    """Forward exchanges on ``comm.ep``, backward ones on ``comm.ep.bwd``: the two halves of a
    DualPipe F&B pair communicate independently (DeepEP runs each on its own SMs), so one
    microbatch's combine never queues behind the other's dispatch."""
    return "comm.ep" if phase == "F" else "comm.ep.bwd"


@dataclass(frozen=True)
class ExchangePlan:
    """Routing of one (EP group, layer, microbatch) onto GPUs.

    ``tokens[i, j]``: tokens EP rank i sends to EP rank j (its own share stays local);
    ``experts[j]``: ((expert, tokens), ...) computed on EP rank j, in slot order;
    ``dropped``: tokens dropped by the capacity factor.
    """

    tokens: np.ndarray
    experts: tuple[tuple[tuple[int, int], ...], ...]
    dropped: int = 0


class RoutingSource(Protocol):
    def plan(self, tp: int, group: int, layer: int, microbatch: int) -> ExchangePlan:
        """The exchange plan of EP group ``group`` at TP index ``tp``."""
        ...


@dataclass
class ExchangeStats:
    """What the exchanges moved and computed, for reports (forward passes only)."""

    expert_tokens: dict[int, dict[int, int]] = field(default_factory=dict)  # layer -> expert -> tokens
    gpu_tokens: dict[int, int] = field(default_factory=dict)                # rank -> tokens computed
    cross_node_bytes: float = 0.0
    total_bytes: float = 0.0
    dropped_tokens: int = 0


class MoEExchangeLowering:
    """The :class:`~moesim.lowering.pipeline.ExchangeLowering` for MoE layers."""

    def __init__(self, table: MoEStageTable, routing: RoutingSource, ep: int, host_of,
                 layout: str = "strided") -> None:
        self.table, self.routing, self.ep, self.host_of, self.layout = table, routing, ep, host_of, layout
        self.stats = ExchangeStats()

    def lower(self, sim: Simulation, seg: Exchange, a: Action, ctx: dict, p: int, grid: Grid, ready: dict) -> None:
        for t, k, keys in ep_group_members(grid.tp, grid.dp, self.ep, self.layout):
            gpus = [grid.gpu(tt, d, p) for d, tt in keys]
            plan = self.routing.plan(t, k, seg.layer, a.microbatch)
            if seg.phase == "W":
                self._experts(sim, seg, "W", ctx, gpus, plan, keys, ready, after={})
            elif seg.layer in (getattr(self.routing, "copies", None) or {}):
                self._two_hop(sim, seg, ctx, gpus, plan, keys, ready)
            else:
                self._exchange(sim, seg, ctx, gpus, plan, keys, ready)

    def _exchange(self, sim, seg: Exchange, ctx: dict, gpus: list[int], plan: ExchangePlan, keys, ready) -> None:
        out_b, back_b = self.table.bytes_per_token(seg.phase)
        first, second = ("dispatch", "combine") if seg.phase == "F" else ("combine.bwd", "dispatch.bwd")
        n = len(gpus)
        tok = self._tokens(plan)
        stream = ep_stream(seg.phase)
        args = {**ctx["args"], "layer": seg.layer}
        if n == 1:   # an expert-parallel group of one: no all-to-all is called, nothing for a host to issue
            args["calls"] = 0
        inbound = {}
        for j in range(n):
            flows = [(gpus[i], gpus[j], float(tok[i, j]) * out_b) for i in range(n) if i != j and tok[i, j] > 0]
            deps = [ready[keys[i]][-1] for i in range(n) if i == j or tok[i, j] > 0]
            inbound[j] = sim.comm([(gpus[j], stream)], [flows] if flows else [], f"{first}.L{seg.layer}.{ctx['name']}",
                                  category="all_to_all", deps=deps, args={**args, "bytes": sum(f[2] for f in flows)})
            self._count_bytes(flows, seg.phase)
        _shared_experts(sim, seg, ctx, gpus, keys, ready, args)
        last = self._all_experts(sim, seg, ctx, gpus, plan, keys, ready, inbound)
        for i in range(n):
            flows = [(gpus[j], gpus[i], float(tok[i, j]) * back_b) for j in range(n) if j != i and tok[i, j] > 0]
            deps = [last[j] for j in range(n) if j == i or tok[i, j] > 0] + ready[keys[i]]
            ready[keys[i]] = [sim.comm([(gpus[i], stream)], [flows] if flows else [],
                                       f"{second}.L{seg.layer}.{ctx['name']}", category="all_to_all", deps=deps,
                                       args={**args, "bytes": sum(f[2] for f in flows)})]
            self._count_bytes(flows, seg.phase)
        if seg.phase == "F":
            self.stats.dropped_tokens += plan.dropped

    def _two_hop(self, sim, seg: Exchange, ctx: dict, gpus: list[int], plan: ExchangePlan, keys, ready) -> None:
        """DeepEP dispatch and combine: each one task over the whole group (its flows are the two
        hops, carried concurrently as DeepEP pipelines them), experts in between."""
        out_b, back_b = self.table.bytes_per_token(seg.phase)
        first, second = ("dispatch", "combine") if seg.phase == "F" else ("combine.bwd", "dispatch.bwd")
        units = exchange_units(self.routing, plan, seg.layer)
        n = len(gpus)
        stream = ep_stream(seg.phase)
        streams = [(g, stream) for g in gpus]
        args = {**ctx["args"], "layer": seg.layer, "dispatcher": "deepep"}

        def phase(unit_bytes: float, transpose: bool) -> list:
            m = units.T if transpose else units
            flows = [(gpus[a], gpus[b], float(m[a, b]) * unit_bytes) for a in range(n) for b in range(n)
                     if a != b and m[a, b] > 0]
            self._count_bytes(flows, seg.phase)
            return [flows] if flows else []

        there = sim.comm(streams, phase(out_b, False), f"{first}.L{seg.layer}.{ctx['name']}", category="all_to_all",
                         deps=[ready[k][-1] for k in keys], args=args)
        inbound = {j: there for j in range(n)}
        _shared_experts(sim, seg, ctx, gpus, keys, ready, args)
        last = self._all_experts(sim, seg, ctx, gpus, plan, keys, ready, inbound)
        back = sim.comm(streams, phase(back_b, True), f"{second}.L{seg.layer}.{ctx['name']}", category="all_to_all",
                        deps=[last[j] for j in range(n)] + [ready[k][-1] for k in keys], args=args)
        for k in keys:
            ready[k] = [back]
        if seg.phase == "F":
            self.stats.dropped_tokens += plan.dropped

    def _all_experts(self, sim, seg: Exchange, ctx: dict, gpus, plan: ExchangePlan, keys, ready,
                     inbound: dict) -> dict[int, Task]:
        """The expert tasks between the two all-to-alls: F's, B's, or with ``seg.wgrad`` (a
        backward whose weight gradients are not split off: :mod:`moesim.lowering.overlap`, and a
        loop's always, :class:`~moesim.lowering.moe_costs.MoEStageTable`) phase BW's, input and
        weight gradients in the order autograd runs them (a loop: expert by expert, each with its
        select-backward share, :func:`moesim.workload.moe_exec.expert_tasks`); the dispatch
        backward waits for them. A table without ``expert_tasks`` (tests' fakes) runs W after B."""
        if seg.phase == "F":
            return self._experts(sim, seg, "F", ctx, gpus, plan, keys, ready, after=inbound)
        if seg.wgrad and hasattr(self.table, "expert_tasks"):
            return self._experts(sim, seg, "BW", ctx, gpus, plan, keys, ready, after=inbound)
        last = self._experts(sim, seg, "B", ctx, gpus, plan, keys, ready, after=inbound)
        return self._experts(sim, seg, "W", ctx, gpus, plan, keys, ready, after=last) if seg.wgrad else last

    def _tokens(self, plan: ExchangePlan) -> np.ndarray:
        """Rows each source sends each GPU: the plan's, or every local expert's capacity when padded."""
        rows = getattr(self.table, "capacity", 0) if getattr(self.table, "experts", "") == "padded" else 0
        if not rows:
            return plan.tokens
        per_gpu = np.array([rows * len(experts) for experts in plan.experts], dtype=np.int64)
        return np.tile(per_gpu, (len(plan.experts), 1))

    def _gpu_tasks(self, sim, seg: Exchange, phase: str, ctx: dict, g: int, experts, deps) -> "Task | None":
        """One GPU's expert tasks in the table's mode, chained; the last one (None if none)."""
        counts = tuple(int(n) for _e, n in experts)
        ids = tuple(int(e) for e, _n in experts)
        prev = None
        base = {**ctx["args"], "layer": seg.layer, "experts_mode": self.table.experts,
                "host_phase": "fwd" if phase == "F" else "bwd"}
        for task in self.table.expert_tasks(phase, counts, ids):
            ns, region = self.table.task_ns(task)
            args = {**base, "tokens": task.tokens, "flops": task.flops, "kernels": len(task.ops), "ops": task.ops}
            args.update(expert_task_args(task))
            prev = sim.compute(g, ns, f"{task.name}.L{seg.layer}.{ctx['name']}", category="expert",
                               deps=deps if prev is None else [prev], args=args, region_ns=region)
        return prev

    def _slot_tasks(self, sim, seg: Exchange, phase: str, ctx: dict, g: int, experts, deps) -> "Task | None":
        """One task per expert slot with tokens (a table without ``expert_tasks``)."""
        prev = None
        for expert, n_tok in experts:
            if n_tok <= 0:
                continue
            prev = sim.compute(g, self.table.expert_ns(phase, n_tok), f"expert{expert}.L{seg.layer}.{ctx['name']}",
                               category="expert", deps=deps if prev is None else [prev],
                               args={**ctx["args"], "layer": seg.layer, "expert": expert, "tokens": n_tok,
                                     "flops": self.table.expert_flops(phase, n_tok),
                                     "kernels": self._kernels(phase)},
                               region_ns=self._region(phase, n_tok))
        return prev

    def _experts(self, sim, seg: Exchange, phase: str, ctx: dict, gpus, plan: ExchangePlan, keys, ready,
                 after: dict) -> dict[int, Task]:
        """Expert tasks per GPU; returns the last task per EP rank (the inbound one if idle)."""
        last: dict[int, Task] = {}
        lower = self._gpu_tasks if hasattr(self.table, "expert_tasks") else self._slot_tasks
        for j, g in enumerate(gpus):
            deps = ready[keys[j]] + ([after[j]] if j in after else [])
            prev = lower(sim, seg, phase, ctx, g, plan.experts[j], deps) if plan.experts[j] else None
            if phase == "F":
                for expert, n_tok in plan.experts[j]:
                    if n_tok <= 0:
                        continue
                    per = self.stats.expert_tokens.setdefault(seg.layer, {})
                    per[expert] = per.get(expert, 0) + n_tok
                    self.stats.gpu_tokens[g] = self.stats.gpu_tokens.get(g, 0) + n_tok
            if prev is not None:
                last[j] = prev
                if phase == "W":
                    ready[keys[j]] = [prev]
            else:
                last[j] = after.get(j) or ready[keys[j]][-1]
        return last

    def _kernels(self, phase: str) -> int:
        """Kernels of one expert task (0 for a table that does not count them)."""
        method = getattr(self.table, "expert_kernels", None)
        return int(method(phase)) if method is not None else 0

    def _region(self, phase: str, num_tokens: int) -> int:
        """An expert task's region cost (0 for a table without one)."""
        method = getattr(self.table, "expert_region_ns", None)
        return int(method(phase, num_tokens)) if method is not None else 0

    def _count_bytes(self, flows, phase: str) -> None:
        if phase != "F":
            return
        for src, dst, nbytes in flows:
            self.stats.total_bytes += nbytes
            if self.host_of(src) != self.host_of(dst):
                self.stats.cross_node_bytes += nbytes


def _shared_experts(sim, seg: Exchange, ctx: dict, gpus: list[int], keys, ready: dict, args: dict) -> None:
    """The layer's shared experts on every GPU of the group, while the first all-to-all is in flight."""
    if not seg.shared.duration_ns:
        return
    for i, g in enumerate(gpus):
        ready[keys[i]] = [sim.compute(g, seg.shared.duration_ns, f"shared.L{seg.layer}.{ctx['name']}",
                                      category="expert", deps=ready[keys[i]],
                                      args={**args, "flops": seg.shared.flops, "kernels": seg.shared.kernels,
                                            **({"host_ns": seg.shared.host_ns} if seg.shared.host_ns else {})},
                                      region_ns=min(seg.shared.region_ns, seg.shared.duration_ns))]
