"""Console renderings of the planner's reports (rich renderables and plain lines).

Only presentation: the numbers come from :class:`~moesim.planner.breakdown.Breakdown`,
:class:`~moesim.planner.plan.PlanReport` and :class:`~moesim.planner.affinity.AffinityReport`.
"""
from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from moesim.planner.breakdown import Breakdown

GB = 1e9


def gb(nbytes: float) -> str:
    return f"{nbytes / GB:,.2f} GB"


def traffic_table(b: Breakdown) -> Table:
    """Bytes per GPU per step of each parallel dimension, and the wires they cross."""
    t = Table(title="traffic per GPU per step", title_justify="left")
    for col in ("dim", "group", "collective", "bytes", "link kinds (bytes per kind)", "detail"):
        t.add_column(col, overflow="fold")
    for d in b.traffic:
        kinds = ", ".join(f"{k} {v / GB:,.2f} GB" for k, v in sorted(d.bytes_by_kind.items()))
        t.add_row(d.dim.upper(), str(d.group_size), d.collective, gb(d.bytes_per_gpu), kinds or "-", d.detail)
    return t


def bandwidth_table(b: Breakdown) -> Table:
    """Average bandwidth each link kind must sustain at the step time vs what one GPU has."""
    t = Table(title=f"bandwidth needed per GPU at {b.step_ms:,.1f} ms per step", title_justify="left")
    for col in ("link kind", "bytes/step", "needed GB/s", "available GB/s", "share"):
        t.add_column(col, justify="right" if col != "link kind" else "left")
    needed = b.needed_gbps
    for kind, nbytes in sorted(b.bytes_by_kind.items(), key=lambda kv: -kv[1]):
        have = b.available_gbps.get(kind)
        share = f"{100 * needed[kind] / have:.0f}%" if have else "-"
        t.add_row(kind, gb(nbytes), f"{needed[kind]:,.1f}", f"{have:,.0f}" if have else "-", share)
    return t


def breakdown_lines(b: Breakdown) -> list[Any]:
    """The whole breakdown: layout, mapping, layers, experts, traffic, bandwidth, memory, time."""
    out: list[Any] = [f"[bold]{escape(b.label)}[/bold] on {b.num_gpus} GPUs ({escape(b.topology)}), model {b.model}"]
    out += [f"  mapping: {escape(line)}" for line in b.mapping]
    out.append(f"  layers per virtual stage: {_compact(b.layers_per_stage)} (MoE: {_compact(b.moe_layers_per_stage)}); "
               f"held per pipeline rank: {_compact(b.layers_per_rank)}")
    if b.experts_per_gpu:
        out.append(f"  experts per GPU per MoE layer: {b.experts_per_gpu}; tokens per expert per step (per MoE layer, "
                   f"balanced): {b.tokens_per_expert_per_step:,.0f}; busiest expert GPU / mean: {b.estimate.imbalance:.2f}")
    out.append(f"  memory per GPU: {escape(b.memory_verdict)}")
    out += [traffic_table(b), bandwidth_table(b), time_line(b)]
    out += [f"  note: {escape(n)}" for n in b.notes]
    return out


def time_line(b: Breakdown) -> str:
    e = b.estimate
    est = (f"estimate {e.step_ms:,.1f} ms (compute {e.compute_ms:,.0f}, TP {e.tp_ms:,.0f}, EP {e.ep_ms:,.0f}, "
           f"DP exposed {e.dp_exposed_ms:,.0f}, bubble {100 * e.bubble_fraction:.0f}%)")
    if not b.simulated:
        return f"  step: {est}; {e.tokens_per_s:,.0f} tokens/s"
    s = b.simulated
    scaled = f" [scaled from a proxy: {s.reduced}]" if s.reduced else ""
    lines = [f"  step: simulated {s.step_ms:,.1f} ms, {s.tokens_per_s:,.0f} tokens/s, MFU {100 * s.mfu:.1f}%, "
             f"bubble {100 * s.result.bubble_fraction:.0f}% ({s.network} network, {s.result.cost_model}){scaled}",
             f"  {est}"]
    lines += [f"  bottleneck: {escape(x)}" for x in s.result.bottlenecks]
    return "\n".join(lines)


def plan_lines(report: Any) -> list[Any]:
    """The actionable plan: choice, why, runners-up, memory losers, counts."""
    p, c = report.preset, report.chosen
    out: list[Any] = [f"[bold]moesim plan[/bold] {escape(p.name)}: {escape(p.description)}",
                      f"global batch {p.global_batch} sequences of {p.seq_len} tokens; routing "
                      f"{escape(_routing(p))}; memory: recompute {p.memory.recompute}, ZeRO {p.memory.effective_zero_stage}"]
    src = "simulated" if c.simulated else "estimated"
    out.append(f"[bold green]chosen: {escape(c.cand.label)}[/bold green] ({src} {c.step_ms:,.1f} ms per step)")
    out += breakdown_lines(report.breakdown)
    if report.default is not None:
        d = report.default
        fit = "fits" if d.fits else f"over memory by {d.over_gib:.1f} GiB"
        gain = d.estimate.step_ms / c.estimate.step_ms
        verdict = f"{gain:.2f}x faster" if gain >= 1 else f"{1 / gain:.2f}x slower"
        out.append(f"preset's own layout {escape(d.cand.label)}: estimate {d.estimate.step_ms:,.1f} ms, {fit}; "
                   f"the chosen layout is {verdict} by the same estimate")
    out.append(_losers_table("runners-up (fit in memory)", report.runners_up))
    if report.over_memory:
        out.append(_losers_table("faster by the estimate but over memory", report.over_memory))
    counts = report.counts
    out.append(f"searched {counts['enumerated']} layouts: {counts['valid']} valid, {counts['estimated']} estimated, "
               f"{counts['memory_checked']} memory-checked, {counts['simulated']} simulated ({report.network} network); "
               f"rejected by rule: {_fields(report.rejected)}; {report.wall_s:.1f} s")
    out += [f"note: {escape(n)}" for n in report.notes if n not in report.breakdown.notes]
    return out


def affinity_table(report: Any) -> Table:
    """Each mapping's bytes per hop kind, link-time bounds and expert-load imbalance."""
    t = Table(title=f"network affinity of one EP group per step ({escape(report.plan_label)})", title_justify="left")
    for col in ("mapping", "bytes per hop kind", "time bound per link kind", "cross-host", "busiest GPU load",
                "a2a bound + hot expert ms"):
        t.add_column(col, overflow="fold")
    for r in report.results:
        kinds = ", ".join(f"{k} {v / GB:,.1f} GB" for k, v in sorted(r.bytes_by_kind.items()))
        bounds = ", ".join(f"{k} {v:,.1f} ms" for k, v in sorted(r.bound_ms_by_kind.items(), key=lambda kv: -kv[1]))
        best = " *" if r.name == report.best else ""
        t.add_row(r.name + best, kinds, bounds, f"{100 * r.cross_host_fraction:.0f}%",
                  f"{r.gpu_load_max_over_mean:.2f}x mean", f"{r.score_ms:,.1f}")
    return t


def _losers_table(title: str, losers: list) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("layout", "step ms", "from", "why it lost"):
        t.add_column(col, overflow="fold")
    for x in losers:   # simulated rows first; an estimate compares with the chosen layout's estimate
        t.add_row(x.label, f"{x.step_ms:,.1f}", x.source, x.reason)
    return t


def _routing(preset: Any) -> str:
    r = preset.routing
    if r is None:
        return "balanced"
    extra = f", {r.gating} gating" if r.gating != "topk" else ""
    return f"{r.kind} s={r.zipf_s}{extra}" if r.kind == "zipf" else f"{r.kind}{extra}"


def _fields(rejected: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1])) or "none"


def _compact(values: list[int]) -> str:
    """``[12, 12, 12, 12]`` -> ``12 x4``; mixed lists as slashes."""
    if values and all(v == values[0] for v in values):
        return f"{values[0]} x{len(values)}"
    return "/".join(map(str, values))
