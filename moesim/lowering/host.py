"""The host thread that issues each GPU's work: ``Scenario.host = "eager"``.

By default (``"ahead"``) every task may start as soon as its dependencies and its stream allow:
the host has issued it long before, as CUDA graphs or a fast host thread do. ``"eager"`` adds a
host thread per GPU, as eager PyTorch runs: one Python thread issues the GPU's tasks in program
order (the order the lowering made them, which follows each GPU's schedule), each costing its
measured host time, and a task cannot start on the GPU before its issue is done. The host thread
never waits for the GPU (no synchronising calls), so it runs ahead whenever it can; where the
GPU's kernels are shorter than their launches, the GPU waits for it and the step is host-bound.

Host cost per task, from the calibrated profile (the H200 profile's for a roofline cost model,
labelled so): a compute task's kernels (``args["kernels"]``, counted by the lowering; 1 where
not counted) times the profile's ``eager_host`` figure, and a collective or send/recv call its
op's eager host time (eager minus CUDA-graph time of small collectives: 50-67 us for two ranks).
``eager_host`` is what one more eager Llama-3-8B layer (forward and backward) costs the host
thread, per kernel moesim counts for it (``moesim.calibrate.eager_probe --stack``, runs 26-27 on
the H200 machines: about 2.2 ms per layer for its 29 counted kernels, 86-96 launched by PyTorch:
74.5 us per counted kernel, against 6.8 us per back-to-back launch); checked on 1-8 stacked
layers (:mod:`moesim.validate.eager_stack`). A profile without it falls back to the
back-to-back launch (a lower bound). ``host_launch_us`` states another host.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from moesim.engine.sim import Simulation, Task

HOST_MODES = ("ahead", "eager")
CALL_OPS = {"all_reduce": "all_reduce", "all_gather": "all_gather", "reduce_scatter": "reduce_scatter",
            "all_to_all": "all_to_all", "send": "send_recv"}  # task category -> profile collective


def host_model(cost: Any) -> tuple[Any, str]:
    """The cost model whose host figures apply: ``cost`` where its profile measured them, else
    the shipped H200 profile; with a label saying which."""
    launch = getattr(cost, "launch_overhead_ns", None)
    if callable(launch) and launch() > 0 and callable(getattr(cost, "host_overhead_ns", None)):
        return cost, f"{cost.name}: back-to-back eager launches"
    h200 = _h200()
    return h200, f"{h200.name} (no host figure for this cost model)"


def launch_cost(cost: Any) -> tuple[float, str]:
    """Host time per eager kernel launch (ns) and where it comes from (:func:`host_model`)."""
    model, label = host_model(cost)
    return float(model.launch_overhead_ns()), label


def eager_launch_cost(cost: Any) -> tuple[float, str]:
    """Host time of eager PyTorch per counted kernel (what ``host="eager"`` charges and the
    ``host_issue`` check multiplies): the profile's in-program figure (``eager_host``: an eager
    layer's host time per kernel moesim counts) where measured, else the back-to-back launch
    (:func:`launch_cost`, a lower bound)."""
    model, label = host_model(cost)
    per_kernel = getattr(model, "eager_host_ns", None)
    if callable(per_kernel) and per_kernel() > 0:
        return float(per_kernel()), f"{model.name}: eager layer host time per counted kernel"
    return launch_cost(cost)


def call_cost(cost: Any) -> Callable[[str], float]:
    """Host time (ns) of one eager communication call by task category (a launch where the
    profile has no figure for it)."""
    model, _ = host_model(cost)
    launch = float(model.launch_overhead_ns())

    def ns(category: str) -> float:
        op = CALL_OPS.get(category)
        return float(model.host_overhead_ns(op)) if op is not None else launch
    return ns


@lru_cache(maxsize=1)
def _h200() -> Any:
    from moesim.costs.calibrated import CalibratedCostModel
    return CalibratedCostModel("h200_sxm")


def add_eager_host(sim: Simulation, launch_ns: float, call_ns: Callable[[str], float]) -> int:
    """Give every task made so far its issue on its GPUs' host threads (a collective: on each
    rank it spans); returns the number of host tasks added. ``launch_ns`` per kernel of a compute
    task, ``call_ns(category)`` per communication call.

    Each rank's host issues in program order (:func:`program_order`): compute tasks in the order
    the lowering made them (each GPU's schedule order), each communication call where a program
    makes it: right after the last of its inputs on that rank (a send after the compute that
    produced it, a gradient all-reduce after the backward it follows), else right before the
    first task of that rank that needs it (a receive before the compute that consumes it)."""
    added = 0
    for rank, tasks in program_order(sim.tasks).items():
        for task in tasks:
            issue = sim.host(rank, int(round(_issue_ns(task, launch_ns, call_ns))), f"issue {task.name}",
                             args={"issues": task.id})
            sim.add_dep(task, issue)
            added += 1
    return added


def program_order(tasks: list[Task]) -> dict[int, list[Task]]:
    """Per rank, its tasks in the order its host thread issues them (see :func:`add_eager_host`)."""
    def ranks_of(t: Task) -> list[int]:
        return list(dict.fromkeys(r for r, _ in t.streams))

    position: dict[tuple[int, int], int] = {}  # (rank, task id) -> creation position on that rank
    per_rank: dict[int, list[Task]] = {}
    for t in tasks:
        for r in ranks_of(t):
            position[(r, t.id)] = len(per_rank.setdefault(r, []))
            per_rank[r].append(t)
    first_user: dict[tuple[int, int], int] = {}  # (rank, task id) -> earliest position of a task there needing it
    for t in tasks:
        for r in ranks_of(t):
            for d in t.deps:
                key = (r, d.id)
                first_user[key] = min(first_user.get(key, position[(r, t.id)]), position[(r, t.id)])
    order: dict[int, list[Task]] = {}
    for r, ts in sorted(per_rank.items()):
        keyed = []
        for t in ts:
            pos = position[(r, t.id)]
            if t.phases is not None:  # a call: after its last input on this rank, else before its first user
                inputs = [position[(r, d.id)] for d in t.deps if (r, d.id) in position]
                if inputs:
                    keyed.append(((max(inputs), 1, t.id), t))
                    continue
                if (r, t.id) in first_user:
                    keyed.append(((first_user[(r, t.id)], -1, t.id), t))
                    continue
            keyed.append(((pos, 0, t.id), t))
        order[r] = [t for _, t in sorted(keyed, key=lambda kt: kt[0])]
    return order


def _issue_ns(task: Task, launch_ns: float, call_ns: Callable[[str], float]) -> float:
    if task.phases is None:
        return max(1, int(task.args.get("kernels", 1) or 1)) * launch_ns
    return call_ns(task.category)
