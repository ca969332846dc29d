"""One JSON-able summary of a recorded step: makespan, critical path, utilisation, bubbles, bottlenecks.

This is what ``results.json`` and reports read; every number is computed here from the Recorder
by the analyses in this package, each run once.
"""
from __future__ import annotations

from typing import Any

from moesim.analysis.bottlenecks import rank_bottlenecks
from moesim.analysis.critical_path import critical_path
from moesim.analysis.timeline import makespan_ns
from moesim.analysis.utilization import bubbles, utilization
from moesim.engine.recorder import Recorder

RUN_FACTS = ("scenario", "mode", "cost_model", "num_ranks")


def summarize(recorder: Recorder, top: int = 5, max_path_steps: int = 20) -> dict[str, Any]:
    """Everything the analyses say about ``recorder``, as plain JSON types."""
    cp = critical_path(recorder)
    util = utilization(recorder)
    bub = bubbles(recorder)
    found = rank_bottlenecks(recorder, cp, util, bub, top)
    facts = {key: recorder.meta[key] for key in RUN_FACTS if key in recorder.meta}
    return {**facts, "makespan_ns": makespan_ns(recorder), "num_spans": len(recorder.spans),
            "critical_path": cp.to_dict(max_path_steps), "utilization": util.to_dict(),
            "bubbles": bub.to_dict(), "bottlenecks": [b.to_dict() for b in found]}
