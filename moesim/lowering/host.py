"""The host thread that issues each GPU's work: ``Scenario.host = "graphs" | "eager"``.

``"graphs"`` (the default; ``"ahead"`` is accepted as its older name and printed as
``"graphs"``): every task may start as soon as its dependencies and its stream allow, the host
having issued it long before, as CUDA graphs or a fast host thread do. ``"eager"`` adds a host
thread per GPU, as eager PyTorch runs: one Python thread issues the GPU's tasks in program order
(:func:`program_order`), each costing its host time, and a task cannot start on the GPU before its
issue is done. The host thread runs ahead whenever it can; where the GPU's kernels are shorter
than their issue, the GPU waits for it and the step is host-bound. A task marked
``args["host_sync"]`` (a device-to-host copy, e.g. the expert counts ``.tolist()`` of a loop-mode
MoE layer) makes its host thread wait until the task has finished on the GPU, plus the copy's
host time (``sync_ns``), before it issues anything after it. Right after such a wait the thread
issues slower than in steady state (a measured curve of extra host time against the steady issue
time since the read, ``host_after_sync`` rows: on the H100 +93 us over the first 61 us of steady
issue, +221 us over the first 350 us, then the steady rate); every task's issue time after a read
is its steady time plus the curve's rise over its span (:meth:`HostPricing.after_sync_extra`).

Host time of a task (:class:`HostPricing`, one per run, the same in both engines):

* **per op class** where the cost model's profile measured ``host_op`` rows: the sum of
  ``host_op_ns(op, phase)`` over the ops the task issues (phase ``"fwd"``: forward with autograd
  recording; ``"bwd"``: backward). A lowered segment carries that sum, computed once when it is
  costed (``StageWork.host_ns`` -> ``args["host_ns"]``); a task carrying its ops instead
  (``args["ops"]``, phase from ``args["host_phase"]``, its category, else each op's own form) is
  summed here. A compute task with neither (the optimizer step) costs the per-kernel figure below
  per counted kernel, and the result counts such tasks;
* **per counted kernel** (fallback, labelled so): a profile without ``host_op`` rows charges its
  ``eager_host`` figure (an eager Llama-3-8B layer's host time per kernel moesim counts, 77.2 us
  on the H200 machines) per counted kernel (``args["kernels"]``), else the back-to-back launch;
* ``Scenario.host_launch_us`` overrides both: a flat figure per counted kernel replaces the
  per-op costs.

A communication call costs its op's eager host time (eager minus CUDA-graph time of small
collectives: 50-67 us for two ranks) per call it stands for (``args["calls"]``: a folded TP
collective stands for several; an expert-parallel exchange over a group of one GPU, 0: no
all-to-all is called). A roofline cost model has no host figures: the shipped H200
profile's apply, labelled so.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from moesim.engine.sim import Simulation, Task
from moesim.workload.common import CommOp
from moesim.workload.moe_exec import FRAMEWORK_LAYER_CLASS, MEGATRON_BODY_CLASS

HOST_MODES = ("graphs", "eager")
HOST_SYNONYMS = {"ahead": "graphs"}   # accepted older names -> the mode they mean
HOST_PHASES = ("fwd", "bwd", "plain")
PHASE_OF_KIND = {"F": "fwd", "B": "bwd", "W": "bwd", "BW": "bwd"}   # pipeline action kind -> host phase
PHASE_OF_CATEGORY = {"forward": "fwd", "backward": "bwd", "weight_grad": "bwd"}
CALL_OPS = {"all_reduce": "all_reduce", "all_gather": "all_gather", "reduce_scatter": "reduce_scatter",
            "all_to_all": "all_to_all", "send": "send_recv"}  # task category -> profile collective
SYNC_BYTES = 8   # a device-to-host copy without a stated size: one int64


def expert_task_args(task: Any) -> dict[str, Any]:
    """The host-related engine args of a lowered expert task (``moesim.workload.moe_exec.ExpertTask``),
    the same in both engines: its expert (a loop body: no mixed-program factor), the loop body it
    belongs to, its device-to-host copy."""
    args: dict[str, Any] = {}
    if task.expert is not None:
        args["expert"] = task.expert
    if task.body:
        args["host_body"] = task.body
    if task.body_class:
        args["host_body_class"] = task.body_class
    if task.host_sync:
        args.update(host_sync=True, sync_bytes=task.sync_bytes)
    return args


def host_mode(value: Any) -> "str | None":
    """The mode ``value`` names (``"ahead"`` -> ``"graphs"``), or None where it names none."""
    if not isinstance(value, str):
        return None
    value = HOST_SYNONYMS.get(value, value)
    return value if value in HOST_MODES else None


def has_host_ops(model: Any) -> bool:
    """Whether ``model`` prices host time per op class: it has ``host_op_ns`` and, where it has a
    profile, that profile holds ``host_op`` rows."""
    return _has_rows(model, "host_op", "host_op_ns")


def _has_rows(model: Any, op: str, method: str) -> bool:
    """``model`` has ``method`` and, where it has a profile, the profile has ``op`` rows."""
    if not callable(getattr(model, method, None)):
        return False
    select = getattr(getattr(model, "profile", None), "select", None)
    return bool(select(op)) if callable(select) else True


def host_model(cost: Any) -> tuple[Any, str]:
    """The cost model whose host figures apply: ``cost`` where it measured some, else the
    shipped H200 profile; with a label saying which."""
    launch = getattr(cost, "launch_overhead_ns", None)
    if has_host_ops(cost) or (callable(launch) and launch() > 0
                              and callable(getattr(cost, "host_overhead_ns", None))):
        return cost, cost.name
    h200 = _h200()
    return h200, f"{h200.name} (no host figure for this cost model)"


@dataclass(frozen=True)
class HostPricing:
    """What an eager host thread charges (see the module docstring).

    ``per_op``: tasks cost the host time of their ops (``model.host_op_ns``); otherwise, and for
    compute tasks whose ops are unknown, ``kernel_ns`` per counted kernel. ``source`` says which
    figures apply, for results; ``sync_source`` where the device-to-host copy time comes from.
    """

    model: Any
    per_op: bool
    kernel_ns: float
    source: str
    sync_source: str = ""
    calls: "Callable[[str], float] | None" = None   # host ns per call by task category, replacing the model's
    autograd: bool = True   # False: forward passes under torch.no_grad (their ops in the "plain" phase)
    after_sync: "tuple[tuple[float, float], ...] | None" = None   # (steady ns since a read, extra ns) points

    def after_sync_extra(self, since_ns: float, ns: float) -> int:
        """Extra host ns of issuing ``ns`` (steady-state time) that starts ``since_ns`` (steady)
        after the thread's last device-to-host read: the measured curve's rise over that span
        (:meth:`moesim.costs.calibrated.CalibratedCostModel.host_after_sync_curve`), 0 without one."""
        if not self.after_sync or ns <= 0:
            return 0
        xs, es = [p[0] for p in self.after_sync], [p[1] for p in self.after_sync]
        return int(round(float(np.interp(since_ns + ns, xs, es)) - float(np.interp(since_ns, xs, es))))

    def after_sync_span(self) -> float:
        """Steady ns after a read past which issue runs at the steady rate again (0: no curve)."""
        return self.after_sync[-1][0] if self.after_sync else 0.0

    @staticmethod
    def flat(kernel_ns: float, call_ns: "Callable[[str], float] | None" = None, source: str = "flat") -> "HostPricing":
        """A flat figure per counted kernel and ``call_ns(category)`` per call (tests, probes)."""
        return HostPricing(None, False, float(kernel_ns), source, source, call_ns or (lambda category: 0.0))

    def ops_ns(self, ops: Iterable[Any], phase: "str | None", repeated: bool = False) -> int:
        """Host time of issuing ``ops`` (compute ops; collectives are calls of their own) in
        ``phase`` (None: each op's own form, :func:`op_phase`); ``repeated``: a per-expert loop's
        body, issued back to back with the same neighbours (no mixed-program factor)."""
        model, context = self.model, ({"mixed": False} if repeated else {})
        return sum(int(model.host_op_ns(op, self._phase(phase or op_phase(op)), **context)) for op in ops
                   if not isinstance(op, CommOp))

    def _body_share(self, ns: int, body: Any, phase: "str | None", body_class: "str | None") -> int:
        """A task that is part of a per-expert loop body (``host_body``: the body's ops in this
        pass; ``body_class``: its measured class): its per-op share of the body's measured host
        time, where the profile measured that class in this phase; else ``ns`` (the per-op sum).
        ``expert_loop_body`` is the body as torchtitan writes it (``w[e]`` selects and transposes,
        three ``matmul``, ``silu``, ``mul``, and in its backward the select backward, timed as one
        call): the per-op classes miss its views and price ``matmul`` as ``linear`` (H100, no
        autograd, 65 us per body by classes against 90 us measured). ``megatron_expert_mlp`` is
        Megatron-Core's expert module call (its linear layers' autograd functions, the fused
        weighted SwiGLU, NVTX ranges): several times its kernels' per-op sum. A class without a
        body (an expert module called on no tokens) costs the class's whole time."""
        measured = getattr(self.model, "host_call_ns", None)
        if not body_class or phase is None or not callable(measured):
            return ns
        whole_ns = measured(body_class, self._phase(phase))
        if whole_ns is None:
            return ns
        if not body:
            return int(round(whole_ns))
        per_op = self.ops_ns(body, phase, repeated=True)
        return ns if per_op <= 0 else int(round(ns * whole_ns / per_op))

    def _phase(self, phase: str) -> str:
        """A forward op without autograd recording (``torch.no_grad``) is a ``plain`` call."""
        return "plain" if phase == "fwd" and not self.autograd else phase

    def call_ns(self, category: str) -> float:
        """Host time of one eager communication call of a task ``category`` (a launch where the
        profile has no figure for it)."""
        if self.calls is not None:
            return float(self.calls(category))
        op = CALL_OPS.get(category)
        overhead = getattr(self.model, "host_overhead_ns", None)
        if op is not None and callable(overhead):
            return float(overhead(op))
        launch = getattr(self.model, "launch_overhead_ns", None)
        return float(launch()) if callable(launch) else 0.0

    def sync_ns(self, nbytes: float) -> int:
        """Host time of a device-to-host copy of ``nbytes`` once the GPU has finished (the wait
        itself is the dependency on the task)."""
        sync = getattr(self.model, "sync_ns", None)
        if callable(sync):
            return int(sync(nbytes))
        return int(round(self.call_ns("")))

    def task_ns(self, task: Task) -> tuple[int, bool]:
        """(host time of issuing ``task``, whether it was priced per op class)."""
        if task.phases is not None:
            calls = max(0, int(task.args.get("calls", 1)))   # 0: a group of one calls nothing
            return int(round(self.call_ns(task.category) * calls)), self.per_op
        return self.compute_ns(task.args, task.category)

    def compute_ns(self, args: dict, category: str) -> tuple[int, bool]:
        """(host time of issuing a compute task with ``args``, whether priced per op class):
        ``args["host_ns"]`` or the ops in ``args["ops"]`` where pricing per op, else the
        per-kernel figure times ``args["kernels"]`` (at least one)."""
        if args.get("host_sync") and not args.get("ops") and not args.get("kernels"):
            return 0, self.per_op   # a counts copy: its host time is the sync that follows it
        if self.per_op:
            if "host_ns" in args:
                return int(args["host_ns"]), True
            if "ops" in args:   # the ops it issues (none: nothing to issue)
                phase = _phase_name(args.get("host_phase") or args.get("phase")) or PHASE_OF_CATEGORY.get(category)
                ns = self.ops_ns(args["ops"], phase, repeated=args.get("expert") is not None)
                return self._body_share(ns, args.get("host_body"), phase, args.get("host_body_class")), True
        return int(round(max(1, int(args.get("kernels", 1) or 1)) * self.kernel_ns)), False


def host_pricing(cost: Any, override_ns: "float | None" = None, autograd: bool = True) -> HostPricing:
    """The run's :class:`HostPricing`: ``override_ns`` (``Scenario.host_launch_us``) flat per
    counted kernel; else per op class where the host model (:func:`host_model`) has ``host_op``
    rows (forward ops without autograd recording, ``autograd=False``, in their ``plain`` phase);
    else its per-kernel figure, labelled as the fallback."""
    model, where = host_model(cost)
    sync = f"{where}: measured device-to-host copy" if _has_rows(model, "sync", "sync_ns") \
        else f"{where}: no sync rows (one launch per copy, a lower bound)"
    kernel_ns, kernel_source = _kernel_figure(model, where)
    if override_ns is not None:
        return HostPricing(model, False, float(override_ns),
                           "scenario.host_launch_us: flat per counted kernel (replaces per-op host costs)", sync)
    if has_host_ops(model):   # the only pricing in steady-state issue time, which the after-sync curve extends
        curve = model.host_after_sync_curve() if callable(getattr(model, "host_after_sync_curve", None)) else None
        sync += (f"; the issue after it {curve[-1][1] / 1e3:.0f} us slower over its first {curve[-1][0] / 1e3:.0f} us"
                 " (measured host_after_sync curve)") if curve else \
            "; the issue after it at the steady rate (no host_after_sync rows)"
        return HostPricing(model, True, kernel_ns, f"{where}: host time per op class" + _mix_note(model)
                           + ("" if autograd else " (forward without autograd)") + _framework_note(model),
                           sync, autograd=autograd, after_sync=curve)
    return HostPricing(model, False, kernel_ns, f"{kernel_source} (fallback: no host_op rows)", sync)


def _mix_note(model: Any) -> str:
    """How the per-class chain times are scaled for a mixed program (``host_mix`` rows)."""
    factors = model.host_mix_factors() if callable(getattr(model, "host_mix_factors", None)) else {}
    if not factors:
        return " (chain times: no host_mix rows)"
    return " x mixed-program factor " + ", ".join(f"{p} {factors[p]:.2f}" for p in ("plain", "fwd", "bwd") if p in factors)


FRAMEWORK_CLASSES = (FRAMEWORK_LAYER_CLASS, MEGATRON_BODY_CLASS)   # measured with megatron-core installed


def _framework_note(model: Any) -> str:
    """Which framework host classes the profile measured (used by Megatron's token movements)."""
    measured = getattr(model, "host_call_ns", None)
    have = [c for c in FRAMEWORK_CLASSES if callable(measured) and measured(c, "fwd") is not None]
    return f"; Megatron-Core classes {', '.join(have)} for Megatron's token movements" if have else ""


def _kernel_figure(model: Any, where: str) -> tuple[float, str]:
    """Host ns per counted kernel: the profile's in-program ``eager_host`` figure where measured,
    else the back-to-back launch (a lower bound)."""
    per_kernel = getattr(model, "eager_host_ns", None)
    if callable(per_kernel) and per_kernel() > 0:
        return float(per_kernel()), f"{where}: eager layer host time per counted kernel"
    launch = getattr(model, "launch_overhead_ns", None)
    return (float(launch()) if callable(launch) else 0.0), f"{where}: back-to-back eager launches"


def op_phase(op: Any) -> str:
    """An op's host phase from its own form: backward for input/weight-gradient GEMMs
    (``GroupedGemm.layout``; names with a ``dgrad``/``wgrad`` part), backward attention and
    ``.bwd`` kernels, else forward. The workload names every backward op so
    (``tests/test_host_classes.py`` checks the presets), which prices a recomputed forward
    inside a backward pass as the forward it is."""
    parts = (getattr(op, "name", "") or "").split(".")
    backward = getattr(op, "layout", "fwd") != "fwd" or getattr(op, "backward", False) \
        or any(p == "bwd" or p.startswith(("dgrad", "wgrad")) for p in parts)
    return "bwd" if backward else "fwd"


def _phase_name(value: Any) -> "str | None":
    if value in HOST_PHASES:
        return value
    return PHASE_OF_KIND.get(value) if isinstance(value, str) else None


@lru_cache(maxsize=1)
def _h200() -> Any:
    from moesim.costs.calibrated import CalibratedCostModel
    return CalibratedCostModel("h200_sxm")


@dataclass(frozen=True)
class HostIssue:
    """What :func:`add_eager_host` added: host tasks, syncs, and how many compute tasks were
    priced per op class and how many at the per-kernel figure."""

    host_tasks: int
    syncs: int
    per_op_tasks: int
    per_kernel_tasks: int


def add_eager_host(sim: Simulation, pricing: "HostPricing | float",
                   call_ns: "Callable[[str], float] | None" = None) -> HostIssue:
    """Give every task made so far its issue on its GPUs' host threads (a collective: on each
    rank it spans), at ``pricing`` (a number: a flat figure per counted kernel, ``call_ns`` per
    call). A task with ``args["host_sync"]`` is followed on its ranks' host threads by a sync
    that waits for it to finish on the GPU and lasts ``pricing.sync_ns(args["sync_bytes"])``.

    Each rank's host issues in program order (:func:`program_order`): compute tasks in the order
    the lowering made them (each GPU's schedule order), each communication call where a program
    makes it: right after the last of its inputs on that rank (a send after the compute that
    produced it, a gradient all-reduce after the backward it follows), else right before the
    first task of that rank that needs it (a receive before the compute that consumes it)."""
    if not isinstance(pricing, HostPricing):
        pricing = HostPricing.flat(pricing, call_ns)
    added = syncs = per_op = per_kernel = 0
    span = pricing.after_sync_span()
    for rank, tasks in program_order(sim.tasks).items():
        since: "float | None" = None   # steady host ns issued since this thread's last read (None: none near)
        for task in tasks:
            ns, priced = pricing.task_ns(task)
            if since is not None:   # right after a device-to-host read the host issues slower
                extra = pricing.after_sync_extra(since, ns)
                since = since + ns if since + ns < span else None
                ns += extra
            if task.phases is None:
                per_op += priced
                per_kernel += not priced
            how = "call" if task.phases is not None else ("op" if priced else "kernel")
            issue = sim.host(rank, ns, f"issue {task.name}", args={"issues": task.id, "priced": how})
            sim.add_dep(task, issue)
            added += 1
            if task.args.get("host_sync"):
                wait = sim.host(rank, sync_tail_ns(pricing, task), f"sync {task.name}", args={"syncs": task.id})
                sim.add_dep(wait, task)
                syncs += 1
                since = 0.0 if span > 0 else None
    return HostIssue(added + syncs, syncs, per_op, per_kernel)


def sync_tail_ns(pricing: HostPricing, task: Task) -> int:
    """How long a host thread still waits once a ``host_sync`` task has finished on the GPU: the
    copy's measured time (``sync_ns``: from the end of the GPU work queued before it until the
    host holds the values) less the task's own GPU time, so the host resumes ``max(task,
    sync_ns)`` after the copy starts, whether the lowering gave the copy task its device time
    only or the whole measured wait."""
    copy_ns = pricing.sync_ns(task.args.get("sync_bytes", SYNC_BYTES))
    if task.args.get("kernels"):  # a compute segment whose last result is read: the copy follows it
        return copy_ns
    return max(0, copy_ns - task.duration_ns)


def program_order(tasks: list[Task]) -> dict[int, list[Task]]:
    """Per rank, its tasks in the order its host thread issues them (see :func:`add_eager_host`)."""
    def ranks_of(t: Task) -> list[int]:
        return list(dict.fromkeys(r for r, _ in t.streams))

    position: dict[tuple[int, int], int] = {}  # (rank, task id) -> creation position on that rank
    per_rank: dict[int, list[Task]] = {}
    for t in tasks:
        if t.category == "host":
            continue
        for r in ranks_of(t):
            position[(r, t.id)] = len(per_rank.setdefault(r, []))
            per_rank[r].append(t)
    first_user: dict[tuple[int, int], int] = {}  # (rank, task id) -> earliest position of a task there needing it
    for t in tasks:
        for r in ranks_of(t):
            if (r, t.id) not in position:
                continue
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
