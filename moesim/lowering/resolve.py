"""What a Scenario's choices resolve to, shared by both engines' builders.

``moesim.experiment.build`` (the full engine) and ``moesim.scale.reduced`` (lanes) turn a
Scenario into work the same way: the cost model of its GPU, its model spec, its pipeline
schedule, its host pricing, its routing source and the link kind a group's traffic crosses. The
Scenario is read by attribute only (it lives in ``moesim.experiment``, above this layer).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from moesim.costs.base import CostModel
from moesim.costs.host_classes import check_host_speed
from moesim.errors import ConfigError
from moesim.lowering.host import HostPricing, host_pricing
from moesim.lowering.moe_costs import MoEStageTable
from moesim.lowering.overlap import OverlapOptions, check_overlap, combined_1f1b
from moesim.lowering.pipeline import Grid, forward_schedule
from moesim.schedules import generate, validate
from moesim.schedules.model import Schedule
from moesim.workload.moe import MoESpec

if TYPE_CHECKING:
    from moesim.experiment.scenario import Scenario

PROFILE_FOR_GPU = {"H200": "h200_sxm", "H100": "h100_sxm"}  # what cost_model="auto" picks when no profile is named
PROFILE_DIR = Path(__file__).resolve().parents[1] / "profiles"
_DEFAULT_PROFILE: ContextVar[str | None] = ContextVar("moesim_default_profile", default=None)


@contextmanager
def profile_scope(profile: str | None) -> Iterator[None]:
    """Within the block, cost models built without a profile of their own use ``profile`` (a
    path or name): how ``moesim plan --profile`` and ``moesim bench run --profile`` reach every
    scenario and planning context they build."""
    token = _DEFAULT_PROFILE.set(profile)
    try:
        yield
    finally:
        _DEFAULT_PROFILE.reset(token)


def resolve_cost_model(choice: str, gpu_kind: str, profile: str | None = None, gpu_clock: str = "sustained",
                       gemm_duty: float = 0.0, host_speed: str = "mean") -> CostModel:
    """The cost model of a GPU kind: the named ``profile`` (a path or a name on the profile search
    path, :func:`moesim.costs.profile.resolve_profile_path`; else the one of an enclosing
    :func:`profile_scope`), or the calibrated profile shipped for this GPU (``auto``/``calibrated``),
    else the roofline. A profile measured on another device is refused unless ``choice`` is
    ``"calibrated"`` (the user's explicit override). ``gpu_clock`` (:mod:`moesim.costs.clock`)
    applies to calibrated profiles; the roofline's datasheet peaks are the same in both. ``host_speed``
    (:data:`moesim.costs.host_classes.HOST_SPEEDS`) needs a calibrated profile with host rows of
    several runs."""
    from moesim.costs.roofline import make_cost_model

    profile = _named_profile(choice, profile)
    if profile:
        return _named_profile_model(choice, gpu_kind, profile, gpu_clock, gemm_duty, host_speed)
    shipped = _shipped_profile(gpu_kind)
    if choice == "roofline" or (choice == "auto" and shipped is None):
        if check_host_speed(host_speed, "scenario.host_speed") != "mean":
            raise ConfigError("scenario.host_speed", f"{host_speed!r} needs a calibrated profile's host rows, and "
                              f"{gpu_kind} is priced by the roofline", "use host_speed='mean', or a calibrated profile")
        return make_cost_model(gpu_kind)
    if shipped is None:
        raise ConfigError("scenario.cost_model", f"no calibrated profile ships for {gpu_kind}",
                          f"use cost_model='roofline' or 'auto', or name your own with profile=PATH|NAME (profiles "
                          f"ship for: {', '.join(PROFILE_FOR_GPU)})")
    from moesim.costs.calibrated import CalibratedCostModel
    from moesim.costs.profile import load_profile

    return CalibratedCostModel(load_profile(shipped), fallback=make_cost_model(gpu_kind),
                               gpu_clock=gpu_clock, gemm_duty=gemm_duty, host_speed=host_speed)


def _named_profile(choice: str, profile: str | None) -> str | None:
    """The profile named for a run, or the enclosing :func:`profile_scope`'s (an explicit roofline
    choice ignores the scope's)."""
    return profile or (_DEFAULT_PROFILE.get() if choice != "roofline" else None)


def _shipped_profile(gpu_kind: str) -> Path | None:
    """The calibrated profile shipped for this GPU kind, where one is installed."""
    shipped = PROFILE_FOR_GPU.get(gpu_kind.upper())
    path = PROFILE_DIR / f"{shipped}.json" if shipped is not None else None
    return path if path is not None and path.is_file() else None


def resolved_profile(choice: str, gpu_kind: str, profile: str | None = None):
    """The calibration profile :func:`resolve_cost_model` would price ``gpu_kind`` with (None where it
    would use the roofline or refuse), read without building the cost model."""
    from moesim.costs.profile import load_profile

    named = _named_profile(choice, profile)
    if named:
        return load_profile(named)
    shipped = _shipped_profile(gpu_kind)
    return load_profile(shipped) if shipped is not None and choice != "roofline" else None


def _named_profile_model(choice: str, gpu_kind: str, name: str, gpu_clock: str = "sustained",
                         gemm_duty: float = 0.0, host_speed: str = "mean") -> CostModel:
    """A calibrated model of the profile ``name``, checked against the topology's GPU kind."""
    from moesim.costs.calibrated import CalibratedCostModel
    from moesim.costs.profile import load_profile
    from moesim.costs.roofline import make_cost_model

    if choice == "roofline":
        raise ConfigError("scenario.profile", f"profile {name!r} given with cost_model='roofline'",
                          "drop the profile to use the roofline, or set cost_model='auto' to use the profile")
    prof = load_profile(name)
    if prof.device_kind != gpu_kind.upper() and choice != "calibrated":
        raise ConfigError("scenario.profile", f"profile {prof.name!r} was measured on {prof.device} "
                          f"({prof.device_kind}) but the topology's GPUs are {gpu_kind}",
                          f"use a profile measured on {gpu_kind} (moesim calibrate run on one), a topology of "
                          f"{prof.device_kind} GPUs, or set cost_model='calibrated' (--set cost_model=calibrated) "
                          f"to price {gpu_kind} GPUs with it anyway")
    return CalibratedCostModel(prof, fallback=make_cost_model(gpu_kind), gpu_clock=gpu_clock, gemm_duty=gemm_duty,
                               host_speed=host_speed)


def resolve_model(model: Any):
    """A model spec from a preset name or a spec object."""
    if isinstance(model, str):
        from moesim.workload.presets import get_model

        return get_model(model)
    return model


def make_schedule(scn: Scenario) -> Schedule:
    """Generate and validate the scenario's pipeline schedule."""
    plan = scn.plan
    chunks = plan.vpp if scn.schedule == "interleaved" else None
    if plan.vpp > 1 and scn.schedule != "interleaved":
        raise ConfigError("plan.vpp", f"vpp={plan.vpp} is only used by the 'interleaved' schedule, not {scn.schedule!r}",
                          "set vpp=1 or schedule='interleaved'")
    if scn.schedule == "interleaved" and plan.vpp == 1:
        raise ConfigError("plan.vpp", "vpp=1 with the 'interleaved' schedule is plain 1F1B (one model chunk per GPU)",
                          "set plan.vpp to the model chunks per GPU (e.g. plan.vpp=2), or schedule='1f1b'")
    sched = generate(scn.schedule, plan.pp, plan.num_microbatches, chunks)
    validate(sched)
    if scn.mode == "forward":
        return forward_schedule(sched)
    overlap = scenario_overlap(scn)
    if not overlap.overlap_moe_expert_parallel_comm:
        return sched
    combined = combined_1f1b(sched)
    validate(combined)
    return combined


def scenario_overlap(scn: Scenario) -> OverlapOptions:
    """The scenario's overlap switches, checked against its plan, schedule, memory and dispatcher
    (what Megatron refuses together is refused naming both sides)."""
    overlap = getattr(scn, "overlap", None) or OverlapOptions()
    plan = scn.plan
    check_overlap(overlap, schedule=scn.schedule, pp=plan.pp, vpp=plan.vpp, ep=plan.ep,
                  recompute=scn.memory.recompute, zero=scn.memory.effective_zero_stage >= 1,
                  dp_overlap=plan.dp_overlap, dispatcher=scn.moe.dispatcher)
    return overlap


def scenario_host(scn: Scenario, cost: CostModel) -> HostPricing:
    """The scenario's host pricing: per op class from the profile, or ``host_launch_us`` flat."""
    return host_pricing(cost, scn.host_launch_us * 1e3 if scn.host_launch_us is not None else None,
                        autograd=scn.mode != "forward")


def eager_host_counts(issued) -> dict[str, int]:
    """The run's counts from :func:`~moesim.lowering.host.add_eager_host`'s record."""
    return {"host_tasks": issued.host_tasks, "host_syncs": issued.syncs,
            "host_per_op_tasks": issued.per_op_tasks, "host_per_kernel_tasks": issued.per_kernel_tasks}


def make_routing(scn: Scenario, spec: MoESpec, table: MoEStageTable, topo, grid: Grid):
    """The scenario's routing source: balanced when no routing is configured."""
    from moesim.lowering.moe_routing import BalancedRouting

    opts = scn.moe
    if spec.num_experts % scn.plan.ep:
        raise ConfigError("plan.ep", f"ep={scn.plan.ep} does not divide the {spec.num_experts} experts",
                          "choose ep dividing num_experts")
    if opts.routing is None and opts.placement == "contiguous" and opts.num_redundant == 0 \
            and opts.dispatcher == "alltoall":
        return BalancedRouting(spec.num_experts, spec.top_k, table.tokens_per_rank, scn.plan.ep,
                               opts.capacity_factor if opts.experts == "padded" else None)
    from moesim.lowering.moe_routing import routing_from_options

    return routing_from_options(scn, spec, table, topo, grid)


def group_link_kind(topo, ranks: list[int]) -> str:
    """The slowest link kind a group's traffic crosses (first hop kinds of its routes)."""
    if len(ranks) < 2:
        return "nvlink"
    kinds = set()
    for a, b in zip(ranks, ranks[1:] + ranks[:1]):
        kinds.update(topo.route(a, b).kinds)
    for k in ("ethernet", "ib", "pcie", "nvswitch", "nvlink", "c2c"):
        if k in kinds:
            return k
    return "nvlink"
