"""Present a sweep: ``summary.md`` (points sorted by step time, the Pareto front, the failures).

The file depends only on the records' results, never on wall-clock times or on how many points
this run executed versus reused, so an unchanged resumed sweep rewrites the same bytes.
"""
from __future__ import annotations

from typing import Any, Sequence

COLUMNS = ("#", "point", "step ms", "tokens/s", "MFU", "bubble", "mem GiB", "Pareto", "id")


def grid_of(records: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """The swept keys and their values, in order of first appearance."""
    grid: dict[str, list[str]] = {}
    for r in records:
        for key, value in r["overrides"].items():
            values = grid.setdefault(key, [])
            if value not in values:
                values.append(value)
    return grid


def sort_by_step_time(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Successful records, fastest first (ties by id, so the order is deterministic)."""
    ok = [r for r in records if r.get("status") == "ok"]
    return sorted(ok, key=lambda r: (r["result"]["step_time_ms"], r["id"]))


def _cell(text: str) -> str:
    return text.replace("|", "/")


def _row(rank: int, r: dict[str, Any], on_front: bool) -> str:
    res = r["result"]
    cells = [str(rank), r["name"], f"{res['step_time_ms']:.3f}", f"{res['tokens_per_s']:,.0f}", f"{100 * res['mfu']:.1f}%",
             f"{100 * res['bubble_fraction']:.1f}%", f"{res['memory_gib']:.2f}" + ("" if res.get("fits", True) else " (over)"),
             "yes" if on_front else "", f"`{r['id']}`"]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def summary_markdown(title: str, records: Sequence[dict[str, Any]], front: Sequence[str], num_points: int) -> str:
    """The Markdown summary of a sweep of ``num_points`` points, of which ``records`` finished."""
    ok = sort_by_step_time(records)
    failed = [r for r in records if r.get("status") != "ok"]  # in sweep order
    on_front = set(front)
    lines = [f"# Sweep: {title}", ""]
    grid = grid_of(records)
    if grid:
        lines += ["Grid: " + "; ".join(f"`{k}` = {', '.join(v)}" for k, v in grid.items()), ""]
    lines.append(f"Base scenarios: {', '.join(sorted({r['base'] for r in records})) or '(none finished)'}")
    missing = num_points - len(records)
    lines += ["", f"{num_points} points: {len(ok)} ok, {len(failed)} failed"
              + (f", {missing} not run yet (rerun the sweep to resume)" if missing else "") + ".", ""]
    lines += ["## Results, fastest first", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += [_row(i + 1, r, r["id"] in on_front) for i, r in enumerate(ok)]
    lines += ["", "Pareto: no other point that fits in HBM is both faster and lighter on memory per GPU.", ""]
    lines += _work_note(ok)
    lines += _front_section(ok, on_front) + _failure_section(failed) + _models_line(ok)
    return "\n".join(lines) + "\n"


def _front_section(ok: Sequence[dict[str, Any]], on_front: set[str]) -> list[str]:
    front = sorted((r for r in ok if r["id"] in on_front), key=lambda r: r["result"]["memory_gib"])
    lines = ["## Pareto front (step time vs memory per GPU)", ""]
    if not front:
        return lines + ["No successful point fits in HBM.", ""]
    return lines + [f"- {r['name']}: {r['result']['step_time_ms']:.3f} ms, {r['result']['memory_gib']:.2f} GiB "
                    f"(`{r['id']}`)" for r in front] + [""]


def _work_note(ok: Sequence[dict[str, Any]]) -> list[str]:
    """Warn when points do different amounts of work per step (step times then do not compare)."""
    tokens = sorted({r["result"]["tokens_per_step"] for r in ok})
    if len(tokens) < 2:
        return []
    return [f"Note: tokens per step differ between points ({', '.join(f'{t:,}' for t in tokens)}), so step "
            "times compare different amounts of work: compare tokens/s too.", ""]


def _failure_section(failed: Sequence[dict[str, Any]]) -> list[str]:
    if not failed:
        return []
    lines = ["## Failures", ""]
    for r in failed:
        tag = " (unexpected error: a bug, see the traceback in results.jsonl)" if r.get("unexpected") else ""
        lines.append(f"- {r['name']} (`{r['id']}`){tag}: {r.get('error', '')}")
    return lines + [""]


def _models_line(ok: Sequence[dict[str, Any]]) -> list[str]:
    costs = sorted({r["result"]["cost_model"] for r in ok})
    modes = sorted({r["result"]["network_mode"] for r in ok})
    profiles = sorted({_profile(r["result"].get("profile")) for r in ok})
    versions = sorted({str(r.get("moesim_version", "?")) for r in ok})
    return [f"Costs: {', '.join(costs)}. Network model: {', '.join(modes)}.", "",
            f"Profiles: {'; '.join(profiles)}. moesim {', '.join(versions)}."] if ok else []


def _profile(p: Any) -> str:
    """One profile identity as the summary quotes it (None: the roofline)."""
    if not isinstance(p, dict):
        return "none (roofline)"
    return f"{p.get('name')} ({p.get('device')}, {str(p.get('date', ''))[:10]}, sha256 {p.get('sha256')}, {p.get('source')})"
