"""Ranked, plain-words bottlenecks of a recorded step, each with its share of the step time.

Candidates, all computed from the Recorder: the GPU with the most time with nothing running
(a *pipeline bubble* when spans carry more than one ``stage``, otherwise an *idle GPU*; compute
idle time hidden under the GPU's own communication is reported in its message but not counted,
because the critical-path candidates account for it), the busiest link (its time-weighted mean
utilisation), each collective on the critical path (with the streams it ran on), the gaps on
the critical path, and the slowest rank's compute against the median rank (a *straggler*,
called a *hot expert* when most of the excess is ``expert`` compute, and a *stage imbalance* when
every GPU running its pipeline stages is as slow and a median rank runs other stages, unless the
recorder's ``meta["slow_gpus"]`` names it: a configured slow GPU). Each candidate's share is
a fraction of the makespan; candidates under ``MIN_SHARE`` are dropped and the rest sorted by
share, largest first.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

from moesim.analysis.critical_path import CriticalPath, critical_path
from moesim.analysis.timeline import COMPUTE_STREAM, KIND_COMM, KIND_HOST, KIND_WAIT, makespan_ns
from moesim.analysis.utilization import Bubbles, Utilization, bubbles, utilization
from moesim.engine.recorder import Recorder
from moesim.errors import ConfigError

NEAR_TOP_LINK = 0.9  # links within this factor of the busiest one are counted in its message
MIN_SHARE = 0.005  # findings below half a percent of the step are noise, not bottlenecks


@dataclass(frozen=True)
class Bottleneck:
    """One ranked finding: what kind, about what, its share of the step, in a sentence."""

    kind: str
    subject: str
    share: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _bubble(bub: Bubbles) -> list[Bottleneck]:
    if not bub.ranks or bub.makespan_ns == 0:
        return []
    worst = max(bub.ranks, key=lambda b: (b.gpu_idle_fraction, -b.rank))
    if worst.gpu_idle_ns <= 0:
        return []
    h = bub.makespan_ns
    kind, label = ("pipeline_bubble", "pipeline bubble") if len(bub.stages) > 1 else ("idle_gpu", "idle GPU")
    where = (f"{_pct(worst.leading_idle_ns / h)} before its first compute, {_pct(worst.trailing_idle_ns / h)} after "
             f"its last, {_pct(worst.interior_idle_ns / h)} in gaps; {_pct(worst.overlapped_idle_ns / h)} of the step "
             f"under its own communication")
    msg = (f"{label}: gpu{worst.rank} has nothing running for {_pct(worst.gpu_idle_fraction)} of the step "
           f"(its compute stream idles {_pct(worst.idle_fraction)}: {where}); mean over {len(bub.ranks)} GPUs "
           f"{_pct(bub.gpu_idle_fraction)}")
    return [Bottleneck(kind, f"gpu{worst.rank}", worst.gpu_idle_fraction, msg)]


def _link(util: Utilization) -> list[Bottleneck]:
    top = util.busiest_links(1)
    if not top or top[0].mean_utilization <= 0:
        return []
    link = top[0]
    near = sum(1 for u in util.links if u is not link and u.mean_utilization >= NEAR_TOP_LINK * link.mean_utilization)
    also = f"; {near} other link(s) within {_pct(1 - NEAR_TOP_LINK)} of it" if near else ""
    msg = (f"link {link.label} busy {_pct(link.mean_utilization)} of the step (time-weighted utilisation, "
           f"carrying traffic {_pct(link.busy_fraction)} of the time, peak {_pct(link.peak_utilization)}){also}")
    return [Bottleneck("link", link.label, link.mean_utilization, msg)]


def _streams_text(per_stream: dict[str, int]) -> str:
    names = sorted(per_stream, key=lambda k: (-per_stream[k], k))
    if len(names) == 1:
        return f"{names[0]} stream"
    shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    return f"{shown} streams"


def _critical(cp: CriticalPath) -> list[Bottleneck]:
    comm: dict[str, dict[str, int]] = {}
    wait_ns = host_ns = 0
    for step in cp.steps:
        if step.kind == KIND_HOST:
            host_ns += step.duration_ns
        elif step.kind == KIND_COMM:
            per_stream = comm.setdefault(step.category, {})
            per_stream[step.stream or "?"] = per_stream.get(step.stream or "?", 0) + step.duration_ns
        elif step.kind == KIND_WAIT:
            wait_ns += step.duration_ns
    out = []
    for cat, per_stream in comm.items():
        share = cp.share(sum(per_stream.values()))
        subject = f"{cat} on {next(iter(per_stream))}" if len(per_stream) == 1 else cat
        out.append(Bottleneck("critical_comm", subject, share,
                              f"{cat} on {_streams_text(per_stream)} on critical path for {_pct(share)} of the step"))
    if host_ns > 0:
        out.append(Bottleneck("critical_host", "host threads", cp.share(host_ns),
                              f"eager host issue on critical path for {_pct(cp.share(host_ns))} of the step "
                              f"(GPUs waiting for their host thread to launch work)"))
    if wait_ns > 0:
        out.append(Bottleneck("critical_gap", "critical path gaps", cp.share(wait_ns),
                              f"critical path waits {_pct(cp.share(wait_ns))} of the step between a task and "
                              f"what it waited on (latency or launch gaps that no stream shows as busy)"))
    return out


def _compute_by_rank(recorder: Recorder, category: str | None = None) -> dict[int, int]:
    busy: dict[int, int] = {}
    for span in recorder.spans:
        if span.stream == COMPUTE_STREAM and (category is None or span.category == category):
            busy[span.rank] = busy.get(span.rank, 0) + span.duration_ns
    return busy


def _straggler(recorder: Recorder) -> list[Bottleneck]:
    busy = _compute_by_rank(recorder)
    horizon = makespan_ns(recorder)
    if len(busy) < 2 or horizon == 0:
        return []
    typical = median(busy.values())
    rank = max(busy, key=lambda r: (busy[r], -r))
    excess = busy[rank] - typical
    if excess <= 0 or typical <= 0:
        return []
    expert = _compute_by_rank(recorder, "expert")
    expert_excess = expert.get(rank, 0) - median([expert.get(r, 0) for r in busy])
    if expert_excess >= 0.5 * excess:
        kind, cause = "hot_expert", f"expert compute {expert_excess / 1e3:.1f} us above the median: hot expert"
    elif (stages := _heavier_stage(recorder, busy, rank, typical)) is not None:
        kind, cause = "stage_imbalance", stages
    else:
        slow = (recorder.meta.get("slow_gpus") or {}).get(rank)
        kind, cause = "straggler", "straggler" + (f": faults.slow_gpus x{slow:g}" if slow else "")
    msg = (f"gpu{rank} compute {_pct(excess / typical)} above the median GPU's: {cause}" if kind == "stage_imbalance"
           else f"gpu{rank} compute {_pct(excess / typical)} slower than the median ({cause})")
    return [Bottleneck(kind, f"gpu{rank} {COMPUTE_STREAM}", excess / horizon, msg)]


def _heavier_stage(recorder: Recorder, busy: dict[int, int], rank: int, typical: float) -> "str | None":
    """Where the slowest rank runs other pipeline stages than a median rank and every GPU running
    its stages is as slow (within 1%), not a slow GPU but a heavier stage: the words saying so;
    else None. A rank named in ``meta["slow_gpus"]`` (a configured straggler) is never this."""
    if rank in (recorder.meta.get("slow_gpus") or {}):
        return None
    stages: dict[int, set] = {}
    for span in recorder.spans:
        if span.stream == COMPUTE_STREAM and span.args and "stage" in span.args:
            stages.setdefault(span.rank, set()).add(span.args["stage"])
    mine = stages.get(rank)
    if not mine or not any(stages.get(r) != mine and busy[r] <= typical for r in busy):
        return None
    peers = [r for r in busy if stages.get(r) == mine]
    if any(busy[r] < 0.99 * busy[rank] for r in peers):
        return None
    names = ", ".join(str(s) for s in sorted(mine, key=lambda s: (str(type(s)), s)))
    which = f"pipeline stages {names} carry" if len(mine) > 1 else f"pipeline stage {names} carries"
    return (f"stage imbalance, not a slow GPU: {which} more compute than the others on all {len(peers)} of its "
            "GPUs (the layers, and the embedding on the first stage or the output head and loss on the last)")


def _check_top(top: int) -> None:
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError("top", f"must be a positive integer, got {top!r}", "pass top=3 (or any n >= 1)")


def rank_bottlenecks(recorder: Recorder, cp: CriticalPath, util: Utilization, bub: Bubbles,
                     top: int = 3) -> list[Bottleneck]:
    """Rank candidates from already computed analyses (see :func:`bottlenecks`)."""
    _check_top(top)
    found = [b for b in _bubble(bub) + _link(util) + _critical(cp) + _straggler(recorder) if b.share >= MIN_SHARE]
    found.sort(key=lambda b: (-b.share, b.kind, b.subject))
    return found[:top]


def bottlenecks(recorder: Recorder, top: int = 3) -> list[Bottleneck]:
    """The ``top`` bottlenecks of the step, largest share of the step first."""
    _check_top(top)
    return rank_bottlenecks(recorder, critical_path(recorder), utilization(recorder), bubbles(recorder), top)
