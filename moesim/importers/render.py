"""Console rendering of the importers' reports (rich tables and text lines)."""
from __future__ import annotations

from typing import Any

from moesim.importers.compare import Comparison


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


def comparison_tables(c: Comparison) -> list[Any]:
    """The per-class table and the per-step table."""
    from rich.table import Table

    classes = Table(title=f"GPU time per op class, per step and GPU: {c.real.device_name or 'real'} vs "
                          f"{c.sim.scenario or 'simulated'}")
    for name, justify in (("op class", "left"), ("measured ms", "right"), ("simulated ms", "right"),
                          ("miss ms", "right"), ("miss", "right")):
        classes.add_column(name, justify=justify)
    for r in c.rows:
        pct = "n/a" if r.miss_pct is None else f"{r.miss_pct:+.1f}%"
        classes.add_row(r.name, _ms(r.measured_ns), _ms(r.simulated_ns), f"{r.miss_ns / 1e6:+.3f}", pct)
    total_real = sum(r.measured_ns for r in c.rows)
    total_sim = sum(r.simulated_ns for r in c.rows)
    classes.add_row("all GPU time", _ms(total_real), _ms(total_sim), f"{(total_sim - total_real) / 1e6:+.3f}",
                    f"{100 * (total_sim - total_real) / total_real:+.1f}%" if total_real else "n/a")
    steps = Table(title="GPU time per step (sum over classes)")
    for name in ("step", "measured ms", "simulated ms"):
        steps.add_column(name, justify="right")
    for i in range(max(len(c.real_steps_ns), len(c.sim_steps_ns))):
        real = _ms(c.real_steps_ns[i]) if i < len(c.real_steps_ns) else "-"
        sim = _ms(c.sim_steps_ns[i]) if i < len(c.sim_steps_ns) else "-"
        steps.add_row(str(i), real, sim)
    return [classes, steps]


def comparison_lines(c: Comparison, top: int) -> list[str]:
    """Summary lines: steps found, biggest misses, unclassified kernels, notes."""
    lines = [f"real: {len(c.real.events)} GPU events, {len(c.real.steps)} step(s) ({c.real.step_source}); "
             f"simulated: {len(c.sim.steps)} step(s) on {c.sim.gpus} GPU(s), costs {c.sim.cost_model or 'unknown'}"]
    misses = [r for r in c.biggest_misses[:max(0, top)] if r.miss_ns]
    if misses:
        lines.append("biggest misses: " + "; ".join(
            f"{r.name} {r.miss_ns / 1e6:+.3f} ms" + ("" if r.miss_pct is None else f" ({r.miss_pct:+.0f}%)")
            for r in misses))
    if c.unclassified:
        lines.append("unclassified kernels (left in the table as 'unclassified'):")
        lines += [f"  {share:.1%} of GPU time: {name}" for name, _, share in c.unclassified]
    else:
        lines.append("unclassified kernels: none")
    lines += [f"note: {n}" for n in c.real.notes]
    return lines
