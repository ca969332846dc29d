"""Where a plan's parallel groups land on a fabric: rank-to-GPU grid, groups, link tiers.

A :class:`~moesim.experiment.ParallelPlan` places GPU (tp, dp, pp) at rank
``plan.rank(tp, dp, pp)`` (``order`` innermost first); an EP group is ``ep`` consecutive DP
replicas of one (tp, stage), or folded ``ep / tp`` consecutive replicas' whole TP groups. This
module lists representative groups of each parallel dimension, which hosts they span and which
link kinds their traffic crosses (from the topology's own routes), and spreads a group's per-GPU
bytes over the link kinds on the routes to its peers. It is the one place the planner, the
breakdown and the affinity report ask "which wire does this traffic use".
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

from moesim.experiment.scenario import ParallelPlan
from moesim.lowering.pipeline import Grid
from moesim.topology.model import Topology
from moesim.workload.parallel import ep_group as members_of

# Slowest first: the tier a transfer is named after is the first of these its route crosses.
TIER_ORDER = ("ethernet", "ib", "pcie", "c2c", "nvlink", "nvswitch")
DIMENSIONS = ("tp", "ep", "pp", "dp")


@lru_cache(maxsize=256)
def grid_of(plan: ParallelPlan) -> Grid:
    """The lowering's grid for ``plan`` (rank of every (tp, dp, pp) coordinate)."""
    ranks = tuple(plan.rank(t, d, p) for p in range(plan.pp) for d in range(plan.dp) for t in range(plan.tp))
    return Grid(plan.tp, plan.dp, plan.pp, ranks)


def ep_group(grid: Grid, ep: int, tp: int = 0, pp: int = 0, index: int = 0, layout: str = "strided") -> list[int]:
    """Ranks of EP group ``index`` at stage ``pp`` (:func:`moesim.workload.parallel.ep_group`):
    strided, DP replicas ``index*ep .. +ep`` at TP index ``tp``; folded, the whole TP groups of DP
    replicas ``index*ep/tp .. +ep/tp`` in EP-rank order (``tp`` unused)."""
    return [grid.gpu(t, d, pp) for d, t in members_of(grid.tp, ep, layout, tp, index)]


def plan_ep_group(plan: ParallelPlan) -> list[int]:
    """The first EP group of ``plan`` (the one holding rank of coordinate (0, 0, 0))."""
    return ep_group(grid_of(plan), plan.ep, layout=plan.ep_layout)


def representative_group(plan: ParallelPlan, dim: str) -> list[int]:
    """The first group of dimension ``dim`` (the one holding rank of coordinate (0, 0, 0));
    for ``pp`` the chain of stage GPUs of TP index 0, DP replica 0."""
    grid = grid_of(plan)
    if dim == "tp":
        return grid.tp_group(0, 0)
    if dim == "dp":
        return grid.dp_group(0, 0)
    if dim == "ep":
        return plan_ep_group(plan)
    if dim == "pp":
        return [grid.gpu(0, 0, p) for p in range(plan.pp)]
    raise ValueError(f"unknown dimension {dim!r}")


def tier_of(kinds: Iterable[str]) -> str:
    """The slowest link kind among ``kinds`` ("local" for none)."""
    present = set(kinds)
    return next((k for k in TIER_ORDER if k in present), "local")


def route_kinds(topo: Topology, src: int, dst: int) -> tuple[str, ...]:
    """Link kinds a transfer from rank ``src`` to ``dst`` crosses, in order (ECMP key 0)."""
    return topo.route(src, dst).kinds


def pair_tier(topo: Topology, src: int, dst: int) -> str:
    """The slowest link kind between two ranks."""
    return tier_of(route_kinds(topo, src, dst))


def spread_over_kinds(topo: Topology, pairs: Iterable[tuple[int, int, float]]) -> dict[str, float]:
    """Bytes entering each link kind: every transfer ``(src, dst, bytes)`` counts once on every
    kind its route crosses (a cross-node transfer loads PCIe and the NIC fabric alike)."""
    out: Counter[str] = Counter()
    for src, dst, nbytes in pairs:
        if src == dst or nbytes <= 0:
            continue
        for kind in set(route_kinds(topo, src, dst)):
            out[kind] += nbytes
    return dict(out)


def ring_pairs(members: Sequence[int]) -> list[tuple[int, int]]:
    """Neighbour pairs of a ring over ``members`` in order (none for a single member)."""
    n = len(members)
    return [] if n < 2 else [(members[i], members[(i + 1) % n]) for i in range(n)]


def all_pairs(members: Sequence[int]) -> list[tuple[int, int]]:
    """Every ordered pair of distinct members (all-to-all)."""
    return [(a, b) for a in members for b in members if a != b]


@dataclass(frozen=True)
class GroupPlacement:
    """One representative group of a parallel dimension on the fabric."""

    dim: str
    size: int
    ranks: tuple[int, ...]
    hosts: int
    members_per_host: int
    kinds: tuple[str, ...]
    tier: str

    def summary(self) -> str:
        shown = ", ".join(map(str, self.ranks[:8])) + (", ..." if len(self.ranks) > 8 else "")
        where = "one host" if self.hosts == 1 else f"{self.hosts} hosts ({self.members_per_host} per host)"
        return f"{self.dim.upper()}{self.size}: ranks [{shown}] on {where}, slowest link {self.tier}"


def group_placement(topo: Topology, plan: ParallelPlan, dim: str) -> GroupPlacement:
    """Where the representative group of ``dim`` lives and which link kinds it crosses."""
    ranks = representative_group(plan, dim)
    pairs = list(zip(ranks, ranks[1:])) if dim == "pp" else (ring_pairs(ranks) if dim in ("tp", "dp") else all_pairs(ranks))
    kinds = sorted({k for a, b in pairs for k in route_kinds(topo, a, b)}, key=_kind_rank)
    hosts = Counter(topo.host_of(r) for r in ranks)
    return GroupPlacement(dim=dim, size=len(ranks), ranks=tuple(ranks), hosts=len(hosts),
                          members_per_host=max(hosts.values()), kinds=tuple(kinds), tier=tier_of(kinds))


def _kind_rank(kind: str) -> int:
    return TIER_ORDER.index(kind) if kind in TIER_ORDER else len(TIER_ORDER)


def mapping_summary(topo: Topology, plan: ParallelPlan) -> list[str]:
    """One line per parallel dimension of degree > 1, plus the stage-to-host layout."""
    lines = [f"order {plan.order} (innermost first); {topo.num_gpus} GPUs on {topo.num_hosts} host(s) of "
             f"{topo.gpus_per_host}"]
    for dim in DIMENSIONS:
        size = {"tp": plan.tp, "dp": plan.dp, "pp": plan.pp, "ep": plan.ep}[dim]
        if size > 1:
            lines.append(group_placement(topo, plan, dim).summary())
    if plan.pp > 1:
        grid = grid_of(plan)
        per_stage = [len({topo.host_of(grid.gpu(t, d, p)) for t in range(plan.tp) for d in range(plan.dp)})
                     for p in range(plan.pp)]
        lines.append(f"pipeline stages span {min(per_stage)}-{max(per_stage)} host(s) each")
    return lines
