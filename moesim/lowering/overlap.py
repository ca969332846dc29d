"""Communication overlap as training frameworks switch it on, under the frameworks' own names.

:class:`OverlapOptions` is the ``Scenario.overlap`` field. Each switch is named after the
Megatron-LM argument that turns it on (``megatron/training/arguments.py`` generates the flags
from ``ModelParallelConfig`` / ``TransformerConfig`` fields of the same names; checked against
NVIDIA/Megatron-LM at d98e8a6, 2026-08-22) and says, in the lowering, which ops go to which
stream and which dependencies are relaxed:

* ``overlap_moe_expert_parallel_comm`` (``--overlap-moe-expert-parallel-comm``, Megatron's
  "batch-level EP A2A overlap", ``combined_1f1b.py``): in the 1F1B steady state one
  microbatch's forward runs together with another's backward, layer by layer, so the forward's
  dispatch / combine hide behind the backward's compute and the other way round. Lowered as a
  schedule transform (:func:`combined_1f1b`): each steady-state ``F, BW`` of a rank becomes one
  overlapped pair (:class:`~moesim.schedules.model.Overlap`), whose halves' segments the
  pipeline lowering interleaves on the compute stream, forward all-to-alls on ``comm.ep`` and
  backward ones on ``comm.ep.bwd`` (the machinery DualPipe's pairs use). Without pipelining
  (pp = 1) the order is Megatron's ``combined_1f1b_schedule_for_no_pipelining``: F0, F1&B0, ...,
  B(m-1). Megatron refuses it with pp > 1 and no virtual pipeline (the last stage's F and B of
  one microbatch cannot pair), with ep = 1, with full recompute, and with
  ``moe_shared_expert_overlap``; so does moesim.
* ``delay_wgrad_compute`` (``--delay-wgrad-compute``; needs the EP overlap, as in Megatron):
  weight gradients leave the layer's backward, so the backward dispatch is issued right after
  the experts' input gradients and overlaps the weight-gradient GEMMs. Without it (Megatron's
  default) a combined pair's backward computes each layer's expert weight gradients before
  that layer's dispatch backward (:class:`~moesim.lowering.moe_costs.Exchange` ``wgrad``).
* ``moe_shared_expert_overlap`` (``--moe-shared-expert-overlap``): the shared experts run on the
  compute stream while the dispatch is in flight. False: they run before the dispatch is issued
  (Megatron runs them before the router), unless the EP overlap is on (Megatron then runs them
  after the router, before the routed experts). Megatron's default is False; moesim's default
  (None) keeps its behaviour before this switch existed, shared experts during the dispatch, so
  a published run states its flag. True together with the EP overlap is refused, as in Megatron.
* ``tp_comm_overlap`` (``--tp-comm-overlap``, Transformer Engine userbuffers): a segment's TP
  collectives run alongside its GEMMs, so the folded TP collective starts with the segment's
  compute instead of after it, and the next segment waits for both (exposed TP time per segment
  ``max(0, tp - compute)``; the pipelined first / last chunk that TE cannot hide is not modelled).
* ``overlap_grad_reduce`` (``--overlap-grad-reduce``): ``ParallelPlan.dp_overlap`` under
  Megatron's name (None leaves the plan's). Each chunk's gradient reduction starts after its
  last backward rather than after the rank's whole backward.
* ``overlap_param_gather`` (``--overlap-param-gather``; needs the distributed optimizer / ZeRO-1
  and ``overlap_grad_reduce``, as in Megatron): the parameter all-gather of the previous step's
  optimizer update is issued at the start of the step and each chunk's first forward waits for
  its own, instead of an all-gather after the optimizer that ends the step.
* ``deepep_num_sms`` (DeepEP ``Buffer.num_sms``, default 20 in DeepEP): with
  ``moe.dispatcher="deepep"`` the compute stream loses that many SMs while a DeepEP kernel runs:
  compute slows by ``sm_count / (sm_count - num_sms)`` (the profile's ``sm_count``), unless the
  scenario's ``overlap_slowdown`` says otherwise. None: the cost model's measured overlap rows.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from moesim.errors import ConfigError
from moesim.schedules.deps import cross_deps
from moesim.schedules.model import Action, Overlap, Schedule, Step

_SWITCHES = ("overlap_moe_expert_parallel_comm", "delay_wgrad_compute", "tp_comm_overlap", "overlap_param_gather")


@dataclass(frozen=True)
class OverlapOptions:
    """Framework overlap switches (see the module docstring for what each lowers to)."""

    overlap_moe_expert_parallel_comm: bool = False
    delay_wgrad_compute: bool = False
    moe_shared_expert_overlap: bool | None = None
    tp_comm_overlap: bool = False
    overlap_grad_reduce: bool | None = None
    overlap_param_gather: bool = False
    deepep_num_sms: int | None = None

    def __post_init__(self) -> None:
        for name in _SWITCHES:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"overlap.{name}", f"must be true or false, got {getattr(self, name)!r}",
                                  f"write overlap.{name}=true or overlap.{name}=false")
        for name, unset in (("overlap_grad_reduce", "plan.dp_overlap"), ("moe_shared_expert_overlap", "the default")):
            text = getattr(self, name)
            if isinstance(text, str) and text.lower() in ("true", "false"):   # --set on a field that is None
                object.__setattr__(self, name, text.lower() == "true")
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ConfigError(f"overlap.{name}", f"must be true, false or None, got {getattr(self, name)!r}",
                                  f"write true or false, or leave it out for {unset}")
        n = self.deepep_num_sms
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError("overlap.deepep_num_sms", f"must be a whole number >= 1, got {n!r}",
                              "give DeepEP's Buffer.num_sms (20 by default), or leave it out")
        if self.delay_wgrad_compute and not self.overlap_moe_expert_parallel_comm:
            raise ConfigError("overlap.delay_wgrad_compute", "delay_wgrad_compute needs "
                              "overlap_moe_expert_parallel_comm (Megatron asserts the same)",
                              "set overlap.overlap_moe_expert_parallel_comm=true, or delay_wgrad_compute=false")
        if self.overlap_moe_expert_parallel_comm and self.moe_shared_expert_overlap is True:
            raise ConfigError("overlap.moe_shared_expert_overlap", "moe_shared_expert_overlap and "
                              "overlap_moe_expert_parallel_comm are exclusive (Megatron: 'disable moe_shared_expert_overlap "
                              "when enabling overlap_moe_expert_parallel_comm')",
                              "set overlap.moe_shared_expert_overlap=false with the EP overlap")


    @property
    def shared_during_dispatch(self) -> bool:
        """Whether the shared experts run after the dispatch is issued (with either overlap; None:
        moesim's default, during the dispatch) rather than before the router."""
        return self.moe_shared_expert_overlap is not False or self.overlap_moe_expert_parallel_comm


def grad_reduce_overlap(options: OverlapOptions, plan_dp_overlap: bool) -> bool:
    """Whether DP gradient reductions overlap the backward: Megatron's switch when given, else the plan's."""
    return plan_dp_overlap if options.overlap_grad_reduce is None else options.overlap_grad_reduce


def check_overlap(options: OverlapOptions, *, schedule: str, pp: int, vpp: int, ep: int, recompute: str,
                  zero: bool, dp_overlap: bool, dispatcher: str) -> None:
    """What Megatron refuses together with these switches, as ConfigErrors naming both sides."""
    if options.overlap_moe_expert_parallel_comm:
        if ep < 2:
            raise ConfigError("overlap.overlap_moe_expert_parallel_comm", f"needs expert parallelism, got plan.ep={ep}",
                              "use plan.ep >= 2, or leave the EP overlap off")
        if schedule not in ("1f1b", "interleaved"):
            raise ConfigError("overlap.overlap_moe_expert_parallel_comm", f"pairs 1F1B's steady state; schedule "
                              f"{schedule!r} is not 1F1B (DualPipe pairs its own F&B: plan.pair_overlap)",
                              "use schedule='1f1b' (pp=1) or 'interleaved' with vpp > 1")
        if pp > 1 and vpp < 2:
            raise ConfigError("overlap.overlap_moe_expert_parallel_comm", f"with plan.pp={pp} it needs a virtual "
                              "pipeline (Megatron asserts virtual_pipeline_model_parallel_size is set: the last "
                              "stage's forward and backward of one microbatch cannot run together)",
                              "set schedule='interleaved' and plan.vpp >= 2")
        if recompute == "full":
            raise ConfigError("overlap.overlap_moe_expert_parallel_comm", "memory.recompute='full' is refused with "
                              "it (Megatron: 'disable full recomputation')", "use recompute 'none' or 'selective'")
    if options.overlap_param_gather and not zero:
        raise ConfigError("overlap.overlap_param_gather", "needs the distributed optimizer (memory.zero_stage >= 1); "
                          "Megatron: 'only supported with distributed optimizer'",
                          "set memory.zero_stage=1 (or the distributed optimizer), or overlap_param_gather=false")
    if options.overlap_param_gather and not grad_reduce_overlap(options, dp_overlap):
        raise ConfigError("overlap.overlap_param_gather", "needs overlap_grad_reduce (Megatron: 'Must use "
                          "--overlap-param-gather with --overlap-grad-reduce')",
                          "set overlap.overlap_grad_reduce=true (or plan.dp_overlap=true)")
    if options.deepep_num_sms is not None and dispatcher != "deepep":
        raise ConfigError("overlap.deepep_num_sms", f"is DeepEP's SM budget but moe.dispatcher={dispatcher!r}",
                          "set moe.dispatcher='deepep', or leave deepep_num_sms out")


def deepep_slowdown(num_sms: int, sm_count: int) -> float:
    """Compute-time multiplier while DeepEP holds ``num_sms`` of the GPU's ``sm_count`` SMs."""
    if num_sms >= sm_count:
        raise ConfigError("overlap.deepep_num_sms", f"{num_sms} SMs leave none of the GPU's {sm_count} for compute",
                          f"give fewer than {sm_count}")
    return sm_count / (sm_count - num_sms)


def combined_1f1b(schedule: Schedule) -> Schedule:
    """Megatron's combined 1F1B: each rank runs one more warm-up forward than its 1F1B order
    (Megatron's ``num_warmup_microbatches + 1`` "to ensure the forward and backward computations
    are independent in all 1f1b steps"), then every steady-state forward together with the
    oldest pending backward as one overlapped pair, then the cool-down backwards. With one
    pipeline rank that is ``combined_1f1b_schedule_for_no_pipelining``: F0, F1&B0, ..., B(m-1).
    Rows with split backwards (W) or pairs already are refused."""
    rows = tuple(_combined_row(schedule, row) for row in schedule.steps)
    return replace(schedule, name=f"{schedule.name} (combined 1F1B)", steps=rows)


def _combined_row(schedule: Schedule, row: tuple[Step, ...]) -> tuple[Step, ...]:
    if not all(isinstance(s, Action) and s.kind in ("F", "BW") for s in row):
        raise ConfigError("overlap.overlap_moe_expert_parallel_comm", f"schedule {schedule.name!r} has split "
                          "backwards or overlapped pairs; the combined 1F1B pairs F with a full backward",
                          "use schedule='1f1b' (pp=1) or 'interleaved'")
    forwards = [a for a in row if a.kind == "F"]
    backwards = [a for a in row if a.kind == "BW"]
    # forwards before the first backward: 1F1B's warm-up plus its first steady-state forward
    warmup = next((i for i, a in enumerate(row) if a.kind != "F"), len(row))
    steps: list[Step] = list(forwards[:warmup])
    for f, b in zip(forwards[warmup:], backwards):
        if any(dep.action == f for dep in cross_deps(schedule, b)):
            raise ConfigError("overlap.overlap_moe_expert_parallel_comm", f"{f} and {b} cannot run together: the "
                              "backward needs that forward", "use schedule='interleaved' with vpp >= 2")
        steps.append(Overlap(f, b))
    return tuple(steps + backwards[len(forwards) - warmup:])


def table_kwargs(options: OverlapOptions) -> dict:
    """The :class:`~moesim.lowering.moe_costs.MoEStageTable` keywords these switches set (both engines)."""
    return {"shared_overlap": options.shared_during_dispatch,
            "fused_wgrad": options.overlap_moe_expert_parallel_comm and not options.delay_wgrad_compute}


def lowering_kwargs(options: OverlapOptions, plan_dp_overlap: bool) -> dict:
    """The :class:`~moesim.lowering.pipeline.LoweringOptions` fields these switches set (both engines)."""
    return {"dp_overlap": grad_reduce_overlap(options, plan_dp_overlap), "tp_overlap": options.tp_comm_overlap,
            "param_gather_overlap": options.overlap_param_gather}


def compute_slowdown(options: OverlapOptions, scenario_slowdown: "float | None", cost, gpu_kind: str) -> float:
    """The engine's compute multiplier under concurrent communication: the scenario's when given;
    else DeepEP's SM share when ``deepep_num_sms`` is set; else the cost model's (measured overlap
    rows where the profile has them)."""
    if scenario_slowdown:
        return scenario_slowdown
    if options.deepep_num_sms is not None:
        from moesim.costs.devices import get_device

        return deepep_slowdown(options.deepep_num_sms, get_device(gpu_kind).sms)
    return cost.overlap_slowdown()
