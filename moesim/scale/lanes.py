"""The lane lowering: one engine lane per pipeline rank stands for all the GPUs of that rank.

Used by :mod:`moesim.scale.reduced` for clusters too large to lower GPU by GPU. Inside one
expert-parallel group the ``ep`` GPUs of a pipeline rank run the same dense work on the same
number of tokens and meet at every all-to-all, so one lane carries:

* the dense segments of each action once (attention, norms, router, shared experts), exactly as
  :class:`~moesim.lowering.moe_costs.MoEStageTable` costs them for one GPU;
* each dispatch and combine as **one phase event**: the whole group's byte matrix solved at once
  on the real fabric by :class:`~moesim.scale.phase.PhaseSolver` (load bound of the most loaded
  link: NVSwitch port, PCIe, NIC or spine), cached per (layer, routing sample, direction) since
  the time is linear in the payload;
* the **busiest GPU's expert queue** (per-rank routing imbalance kept: the combine waits for the
  slowest GPU of the group), costed as the full engine runs the table's ``experts`` mode
  (:meth:`~moesim.lowering.moe_costs.MoEStageTable.gpu_expert_ns`: grouped kernels on that
  GPU's count vector, or the loop's counts copy, per-expert chains and cat);
* on the lane GPU's own NIC, the busiest GPU's scale-out bytes of each phase as two fluid flows
  (egress and ingress, to a *mirror* GPU on a node no lane uses), the rest of the phase time as
  latency, so pipeline P2P and DP traffic share that NIC with the all-to-alls as they do on
  every GPU of the rank.
"""
from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from moesim.engine import Simulation, Task
from moesim.lowering.moe_costs import Exchange, MoEStageTable
from moesim.lowering.op_classes import class_times
from moesim.lowering.host import PHASE_OF_KIND as PHASE, expert_task_args
from moesim.lowering.moe_exchange import ep_stream, exchange_units
from moesim.lowering.pipeline import Grid
from moesim.scale.cache import ReducedCache
from moesim.scale.phase import PhaseSolver, PhaseTime
from moesim.schedules.model import Action


@dataclass
class LaneStats:
    """What the lanes' exchanges looked like (forward passes; one entry per distinct phase)."""

    phases: int = 0
    bound_by: dict[str, int] = field(default_factory=dict)           # link kind -> forward phases it bound
    imbalance: dict[int, float] = field(default_factory=dict)        # layer -> busiest/mean expert time
    busiest_gpu: dict[int, int] = field(default_factory=dict)        # layer -> EP rank of the busiest GPU
    expert_imbalance: dict[int, float] = field(default_factory=dict)  # layer -> busiest/mean expert tokens
    a2a_bytes: float = 0.0                                           # per EP group, forward, whole step
    cross_node_bytes: float = 0.0


class LaneLink:
    """Phase events on a lane: NIC flows to and from its mirror GPU plus the remaining latency."""

    def __init__(self, topo, efficiency: dict[str, float], mirror_of: dict[int, int]) -> None:
        self.mirror_of = mirror_of
        self.capacity: dict[int, float] = {}
        self.latency: dict[int, int] = {}
        for lane, mirror in mirror_of.items():
            routes = [topo.route(lane, mirror), topo.route(mirror, lane)]
            self.capacity[lane] = min(topo.links[i].bandwidth_gbps * efficiency.get(topo.links[i].kind, 1.0)
                                      for r in routes for i in r.link_ids)
            self.latency[lane] = max(r.latency_ns for r in routes)

    def phase(self, sim: Simulation, lane: int, duration_ns: int, tx_bytes: float, rx_bytes: float, name: str, *,
              stream: str, category: str, deps, args: dict) -> Task:
        """A comm task on ``(lane, stream)`` lasting ``duration_ns`` when alone on the fabric."""
        mirror = self.mirror_of[lane]
        own = max(tx_bytes, rx_bytes) / self.capacity[lane] + (self.latency[lane] if max(tx_bytes, rx_bytes) else 0)
        flows = [(lane, mirror, float(tx_bytes))] if tx_bytes > 0 else []
        flows += [(mirror, lane, float(rx_bytes))] if rx_bytes > 0 else []
        rest = max(0, int(round(duration_ns - own)))
        return sim.comm([(lane, stream)], [flows] if flows else [], name, category=category, step_latency_ns=rest,
                        deps=deps, args={**args, "phase_ns": duration_ns, "nic_bytes": max(tx_bytes, rx_bytes)})


class LaneExchangeLowering:
    """:class:`~moesim.lowering.pipeline.ExchangeLowering` for lanes (see the module docstring)."""

    def __init__(self, table: MoEStageTable, routing, solver: PhaseSolver, link: LaneLink, samples: int,
                 step_latency_ns: int, per_task: bool = False, *, cache: "ReducedCache | None" = None,
                 keys: tuple[Hashable, Hashable, Hashable] = (None, None, None), layers: Sequence[int] = ()) -> None:
        self.table, self.routing, self.solver, self.link = table, routing, solver, link
        self.per_task = per_task   # host="eager": the busiest GPU's expert tasks one by one (see _queue)
        self.samples, self.step_latency_ns = samples, step_latency_ns
        self.stats = LaneStats()
        self._seen: set[tuple[int, int]] = set()
        # shared with the experiment's other scenarios (moesim.scale.cache); keys: what the
        # routing, the phase solver and the expert pricing are functions of
        self.cache = cache if cache is not None else ReducedCache()
        self.routing_key, self.solver_key, self.pricing_key = keys
        self.layers = tuple(layers)

    def _phase(self, layer: int, sample: int, reverse: bool) -> PhaseTime:
        key = (self.solver_key, self.routing_key, layer, sample, reverse)
        phases = self.cache.phases
        if key not in phases:   # solve every (layer, sample, direction) of this routing at once
            self._solve_all(layer)
        if key not in phases:   # a layer outside ``layers``
            phases[key] = self._solve(layer, sample, reverse)
        return phases[key]

    def _solve_all(self, layer: int) -> None:
        start = time.process_time()   # ReducedCache.spend counts CPU seconds
        keys = [(lay, s, rev) for lay in (self.layers or (layer,)) for s in range(self.samples) for rev in (False, True)]
        units = [self._units(lay, s) for lay, s, _rev in keys]
        times = self.solver.solve_many([u.T if rev else u for u, (_l, _s, rev) in zip(units, keys)])
        for (lay, s, rev), ph in zip(keys, times):
            self.cache.phases.setdefault((self.solver_key, self.routing_key, lay, s, rev), ph)
        self.cache.misses["phases"] = self.cache.misses.get("phases", 0) + len(keys)
        self.cache.spend("phases", start)

    def _solve(self, layer: int, sample: int, reverse: bool) -> PhaseTime:
        units = self._units(layer, sample)
        return self.solver.solve(units.T if reverse else units)

    def _units(self, layer: int, sample: int) -> np.ndarray:
        return exchange_units(self.routing, self.routing.plan(0, 0, layer, sample), layer)

    def _experts(self, layer: int, sample: int, phase: str) -> tuple[int, float, int, float, int]:
        """(busiest GPU's queue ns, mean FLOPs per GPU, busiest EP rank, mean queue ns, the region
        cost its first expert saves when queued behind other work); shared through the cache."""
        key = (self.pricing_key, self.routing_key, layer, sample, phase)
        return self.cache.priced(getattr(self.table, "cost", None), key, lambda: self._price_experts(layer, sample, phase))

    def _price_experts(self, layer: int, sample: int, phase: str) -> tuple[int, float, int, float, int]:
        plan = self.routing.plan(0, 0, layer, sample)
        gpu = getattr(self.table, "gpu_expert_ns", None)
        if gpu is not None:   # the table's expert mode: grouped on each GPU's count vector, or a loop
            vectors = [tuple(int(n) for _e, n in experts) for experts in plan.experts]
            priced = {v: gpu(phase, v) if v else (0, 0, 0.0) for v in dict.fromkeys(vectors)}
            costs = [priced[v] for v in vectors]
            busiest = int(np.argmax([c[0] for c in costs]))
            return (int(costs[busiest][0]), float(np.mean([c[2] for c in costs])), busiest,
                    float(np.mean([c[0] for c in costs])), min(int(costs[busiest][1]), int(costs[busiest][0])))
        tokens = [[n for _e, n in experts if n > 0] for experts in plan.experts]
        times = [_queue_ns(self.table, phase, t) for t in tokens]
        flops = [sum(self.table.expert_flops(phase, n) for _e, n in experts if n > 0) for experts in plan.experts]
        busiest = int(np.argmax(times))
        region = getattr(self.table, "expert_region_ns", None)
        first = int(region(phase, tokens[busiest][0])) if region is not None and tokens[busiest] else 0
        return int(times[busiest]), float(np.mean(flops)), busiest, float(np.mean(times)), min(first, int(times[busiest]))

    def lower(self, sim: Simulation, seg: Exchange, a: Action, ctx: dict, p: int, grid: Grid, ready: dict) -> None:
        """The exchange on each GPU of the lane's TP group: with TP every TP index has its own EP
        group with the same routing (as in the full run), so each lane GPU runs the same phases."""
        for t in range(grid.tp):
            extra = {"tp": t} if grid.tp > 1 else {}
            self._lower_lane(sim, seg, a, {**ctx, "args": {**ctx["args"], **extra}}, grid.gpu(t, 0, p), (0, t), ready)

    def _lower_lane(self, sim: Simulation, seg: Exchange, a: Action, ctx: dict, lane: int, key: tuple[int, int],
                    ready: dict) -> None:
        sample = a.microbatch % self.samples
        phase = "W" if seg.phase == "W" else ("F" if seg.phase == "F" else "B")
        if phase == "B" and getattr(seg, "wgrad", False) and hasattr(self.table, "expert_tasks"):
            phase = "BW"   # input and weight gradients in one queue, in autograd's order, as the full engine
        busy_ns, mean_flops, busiest, mean_ns, first_region = self._experts(seg.layer, sample, phase)
        args = {**ctx["args"], "layer": seg.layer, "busiest_ep_rank": busiest}
        expert_args = {**args, "flops": mean_flops, "mean_ns": mean_ns}
        queue = (seg.layer, sample, phase, busy_ns, first_region)
        if seg.phase == "W":
            ready[key] = [self._queue(sim, lane, f"experts.W.L{seg.layer}.{ctx['name']}", ready[key], expert_args,
                                      *queue)]
            return
        out_b, back_b = self.table.bytes_per_token(seg.phase)
        first, second = ("dispatch", "combine") if seg.phase == "F" else ("combine.bwd", "dispatch.bwd")
        there, back = self._phase(seg.layer, sample, False), self._phase(seg.layer, sample, True)
        self._count(seg, sample, there, back, out_b, back_b, busy_ns, mean_ns, busiest)
        stream = ep_stream(seg.phase)
        disp = self._comm(sim, lane, there, out_b, f"{first}.L{seg.layer}.{ctx['name']}", ready[key], args, stream)
        if seg.shared.duration_ns:
            ready[key] = [sim.compute(lane, seg.shared.duration_ns, f"shared.L{seg.layer}.{ctx['name']}",
                                      category="expert", deps=ready[key],
                                      args={**args, "flops": seg.shared.flops, "kernels": seg.shared.kernels,
                                            "host_ns": seg.shared.host_ns},
                                      region_ns=min(seg.shared.region_ns, seg.shared.duration_ns))]
        experts = self._queue(sim, lane, f"experts.{phase}.L{seg.layer}.{ctx['name']}", ready[key] + [disp],
                              expert_args, *queue)
        if getattr(seg, "wgrad", False) and phase == "B":   # wgrad not delayed (lowering.overlap): before the dispatch
            w_ns, w_flops, _busiest, w_mean, w_region = self._experts(seg.layer, sample, "W")
            experts = self._queue(sim, lane, f"experts.W.L{seg.layer}.{ctx['name']}", [experts],
                                  {**args, "flops": w_flops, "mean_ns": w_mean}, seg.layer, sample, "W", w_ns, w_region)
        ready[key] = [self._comm(sim, lane, back, back_b, f"{second}.L{seg.layer}.{ctx['name']}", [experts], args,
                                 stream)]

    def _queue(self, sim: Simulation, lane: int, name: str, deps, args: dict, layer: int, sample: int, phase: str,
               busy_ns: int, first_region: int) -> Task:
        """The busiest GPU's expert work on the lane: one task carrying what its host issues, or,
        with ``per_task`` (an eager host issues each task, and a loop's counts copy makes it wait
        for the GPU), that GPU's expert tasks one by one as the full engine lowers them, their
        FLOPs scaled to the group mean."""
        tasks = self._busiest_tasks(layer, sample, phase) if self.per_task else []
        if not tasks:
            return sim.compute(lane, busy_ns, name, category="expert", deps=deps,
                               args={**args, **self._expert_issue(layer, sample, phase),
                                     **self._expert_classes(layer, sample, phase)}, region_ns=first_region)
        total = sum(t.flops for t in tasks)
        share = args["flops"] / total if total else 0.0
        prev = None
        for t in tasks:
            ns, region = self.table.task_ns(t)
            targs = {**args, "flops": t.flops * share, "kernels": len(t.ops), "ops": t.ops, "host_phase": PHASE[phase]}
            targs.update(expert_task_args(t))   # as the full engine marks its expert tasks
            prev = sim.compute(lane, ns, f"{name}:{t.name}", category="expert", deps=deps if prev is None else [prev],
                               args=targs, region_ns=min(region, ns))
        return prev

    @cache
    def _busiest_tasks(self, layer: int, sample: int, phase: str) -> tuple:
        """The busiest GPU's expert tasks (the table's ``expert_tasks``; none for a table without)."""
        experts = self.routing.plan(0, 0, layer, sample).experts[self._experts(layer, sample, phase)[2]]
        counts = tuple(int(n) for _e, n in experts)
        if not counts or not hasattr(self.table, "expert_tasks"):
            return ()
        return tuple(self.table.expert_tasks(phase, counts, tuple(int(e) for e, _n in experts)))

    @cache
    def _expert_classes(self, layer: int, sample: int, phase: str) -> dict[str, dict[str, int]]:
        """``op_ns`` of the busiest GPU's expert work (its tasks' kernels by op class, as the full
        engine's segments carry them), for per-class reports and the GEMM duty; empty for a table
        without ``expert_tasks``."""
        cost = getattr(self.table, "cost", None)
        tasks = self._busiest_tasks(layer, sample, phase)
        if cost is None or not tasks:
            return {}
        ops = [op for t in tasks for op in t.ops]
        return {"op_ns": dict(class_times(ops, (cost.compute_ns(op) for op in ops)))}

    @cache
    def _expert_issue(self, layer: int, sample: int, phase: str) -> dict[str, int]:
        """What the busiest GPU's host issues for its expert work (:meth:`_busiest_tasks`; a table
        without ``expert_tasks``: an FFN chain per expert with tokens), priced as the full engine's
        expert tasks are (:meth:`~moesim.lowering.host.HostPricing.compute_ns` on each task's
        ops): its kernels and, where the host is priced per op class, their host time."""
        if hasattr(self.table, "expert_tasks"):
            programs = [(t.ops, expert_task_args(t)) for t in self._busiest_tasks(layer, sample, phase)]
        else:
            experts = self.routing.plan(0, 0, layer, sample).experts[self._experts(layer, sample, phase)[2]]
            programs = _chain_programs(self.table, phase, [n for _e, n in experts if n > 0])
        host = getattr(self.table, "host", None)
        kernels = host_ns = 0
        for ops, marks in programs:
            kernels += len(ops)
            if host is not None and host.per_op:   # priced as the full engine's expert tasks are
                args = {"ops": ops, "host_phase": PHASE[phase], "kernels": len(ops), **marks}
                host_ns += host.compute_ns(args, "expert")[0]
        return {"kernels": kernels, "host_ns": host_ns} if host is not None and host.per_op else {"kernels": kernels}

    def _comm(self, sim: Simulation, lane: int, ph: PhaseTime, unit_bytes: float, name: str, deps, args,
              stream: str) -> Task:
        return self.link.phase(sim, lane, ph.duration_ns(unit_bytes, self.step_latency_ns), ph.nic_tx * unit_bytes,
                               ph.nic_rx * unit_bytes, name, stream=stream, category="all_to_all", deps=deps,
                               args={**args, "bound_by": ph.bottleneck})

    def _count(self, seg: Exchange, sample: int, there: PhaseTime, back: PhaseTime, out_b: float, back_b: float,
               busy_ns: int, mean_ns: float, busiest: int) -> None:
        if seg.phase != "F" or (seg.layer, sample) in self._seen:
            return
        self._seen.add((seg.layer, sample))
        st = self.stats
        for ph in (there, back):
            st.phases += 1
            st.bound_by[ph.bottleneck_kind] = st.bound_by.get(ph.bottleneck_kind, 0) + 1
        if sample == 0:
            st.imbalance[seg.layer] = round(busy_ns / mean_ns, 4) if mean_ns else 1.0
            st.busiest_gpu[seg.layer] = busiest
            per_expert: dict[int, int] = {}
            for experts in self.routing.plan(0, 0, seg.layer, sample).experts:
                for e, n in experts:
                    per_expert[e] = per_expert.get(e, 0) + n
            loads = np.array(list(per_expert.values()), dtype=float)
            st.expert_imbalance[seg.layer] = round(float(loads.max() / loads.mean()), 4) if loads.mean() else 1.0
        tok = self._units(seg.layer, sample)
        off = tok.sum() - np.trace(tok)
        cross = float(np.where(self.solver.cross, tok, 0.0).sum())
        st.a2a_bytes += off * (out_b + back_b) / self.samples
        st.cross_node_bytes += cross * (out_b + back_b) / self.samples


def _chain_programs(table, phase: str, tokens: list[int]) -> list[tuple[tuple, dict]]:
    """(ops, host marks: its expert slot) of the FFN chain of each expert with ``tokens`` (a table
    without ``expert_tasks``, as tests' fakes)."""
    from moesim.workload import moe as moe_ops

    build = {"F": moe_ops.expert_forward_ops, "B": moe_ops.expert_backward_input_ops,
             "W": moe_ops.expert_backward_weight_ops}[phase]
    return [(tuple(build(table.spec, n)), {"expert": i}) for i, n in enumerate(tokens)]


def _queue_ns(table, phase: str, tokens: list[int]) -> int:
    """One GPU's expert queue, its experts back to back as the full engine runs them: each expert's
    time, less the region cost of every expert after the first (:mod:`moesim.costs.regions`)."""
    region = getattr(table, "expert_region_ns", None)
    total = sum(table.expert_ns(phase, n) for n in tokens)
    if region is None or len(tokens) < 2:
        return total
    return total - sum(region(phase, n) for n in tokens[1:])
