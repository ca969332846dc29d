"""Rich tables of a :class:`~moesim.memory.budget.Budget`: the worst GPU's parts and per rank.

Presentation only: it reads a finished budget and formats GiB and shares of HBM. Parts that
are zero on every rank are left out of the parts table.
"""
from __future__ import annotations

from rich.table import Table

from moesim.costs.devices import GIB
from moesim.memory.budget import PARTS, Budget

# Up to this many pipeline ranks get their own column in the parts table.
MAX_RANK_COLUMNS = 8


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def parts_table(budget: Budget) -> Table:
    """Part -> GiB on the worst GPU, its share of HBM, and each rank's GiB when pp is small."""
    how = f"training, {budget.schedule}" if budget.mode == "training" else budget.mode
    table = Table(title=f"{budget.model} on {budget.device} ({how}): GiB per GPU")
    table.add_column("part")
    table.add_column(f"worst GPU (rank {budget.worst_rank})", justify="right")
    table.add_column("% HBM", justify="right")
    ranks = budget.per_rank if len(budget.per_rank) <= MAX_RANK_COLUMNS else ()
    for r in ranks:
        table.add_column(f"rank {r.rank}", justify="right")
    for name in PARTS:
        if not any(r.parts.get(name, 0.0) for r in budget.per_rank) and not budget.parts.get(name, 0.0):
            continue
        value = budget.parts.get(name, 0.0)
        table.add_row(name, _gib(value), f"{100 * value / budget.hbm_bytes:.1f}",
                      *[_gib(r.parts.get(name, 0.0)) for r in ranks])
    table.add_section()
    table.add_row("total", _gib(budget.total_bytes), f"{100 * budget.used_fraction:.1f}",
                  *[_gib(r.total_bytes) for r in ranks], style="bold")
    table.add_row("HBM", _gib(budget.hbm_bytes), "100.0", *["" for _ in ranks])
    table.add_row("margin", _gib(budget.margin_bytes), "", *[_gib(budget.hbm_bytes - r.total_bytes) for r in ranks],
                  style="green" if budget.fits else "red")
    return table


def ranks_table(budget: Budget) -> Table:
    """Per pipeline rank: layers held, peak in-flight microbatch-chunks, total and margin."""
    table = Table(title="per pipeline rank")
    for column in ("rank", "layers", "peak in-flight", "total GiB", "margin GiB"):
        table.add_column(column, justify="right")
    for r in budget.per_rank:
        table.add_row(str(r.rank), str(r.num_layers), str(r.peak_inflight), _gib(r.total_bytes),
                      _gib(budget.hbm_bytes - r.total_bytes))
    return table
