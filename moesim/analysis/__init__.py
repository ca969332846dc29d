"""Timeline analysis of a Recorder: critical path, utilisation, bubbles and ranked bottlenecks.

Everything here reads recorded spans, arrows and counters only; nothing knows about models,
schedules or experts beyond the span categories and args the engine conventions define.
"""
from moesim.analysis.bottlenecks import Bottleneck, bottlenecks
from moesim.analysis.critical_path import CriticalPath, PathStep, critical_path
from moesim.analysis.summary import summarize
from moesim.analysis.utilization import Bubbles, Utilization, bubbles, utilization

__all__ = ["Bottleneck", "Bubbles", "CriticalPath", "PathStep", "Utilization", "bottlenecks", "bubbles",
           "critical_path", "summarize", "utilization"]
