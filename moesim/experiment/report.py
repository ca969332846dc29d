"""Present results: the Markdown summary and the console table (rich)."""
from __future__ import annotations

from typing import Sequence

from moesim.experiment.experiment import Experiment

COLUMNS = ("scenario", "schedule", "step ms", "tokens/s", "MFU", "bubble", "peak act GiB", "top bottlenecks")


def _row(r) -> list[str]:
    return [r.name, r.schedule, f"{r.step_time_ms:.2f}", f"{r.tokens_per_s:,.0f}", f"{100 * r.mfu:.1f}%",
            f"{100 * r.bubble_fraction:.1f}%", f"{r.peak_activation_gib:.2f}", " / ".join(r.bottlenecks)]


def summary_markdown(exp: Experiment, results: Sequence) -> str:
    """The table a person reads, with the optimized/baseline ratios."""
    from moesim.experiment.runner import comparisons

    lines = [f"# {exp.name}", "", exp.description, ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _row(r)) + " |" for r in results]
    comps = comparisons(exp, list(results))
    if comps:
        lines += ["", "## Baseline vs optimized", "", "| baseline | optimized | step time ratio | tokens/s ratio | bubble change | lesson |",
                  "|---|---|---|---|---|---|"]
        for c in comps:
            lines.append(f"| {c['baseline']} | {c['optimized']} | {c['step_time_ratio']:.3f} | "
                         f"{c['tokens_per_s_ratio']:.3f} | {100 * c['bubble_delta']:+.1f} pt | {c['lesson']} |")
    first = results[0] if results else None
    if first is not None:
        lines += ["", f"Costs: {first.cost_model}. Network model: {first.network_mode}."]
    lines += [f"- {n}" for n in exp.notes]
    return "\n".join(lines) + "\n"


def console_table(exp: Experiment, results: Sequence, walls: dict[str, float]):
    """A rich Table of the results (wall time per scenario included, console only)."""
    from rich.table import Table

    from moesim.experiment.runner import comparisons

    t = Table(title=exp.name, show_lines=False)
    for c in COLUMNS[:-1]:
        t.add_column(c, justify="right" if c not in ("scenario", "schedule") else "left")
    t.add_column("top bottlenecks", overflow="fold", max_width=60)
    t.add_column("wall s", justify="right")
    for r in results:
        t.add_row(*_row(r), f"{walls.get(r.name, 0):.1f}")
    ratios = Table(title="optimized / baseline")
    for c in ("baseline", "optimized", "step time", "tokens/s", "bubble", "lesson"):
        ratios.add_column(c, overflow="fold")
    for c in comparisons(exp, list(results)):
        ratios.add_row(c["baseline"], c["optimized"], f"{c['step_time_ratio']:.3f}x", f"{c['tokens_per_s_ratio']:.3f}x",
                       f"{100 * c['bubble_delta']:+.1f} pt", c["lesson"])
    return t, ratios
