"""SimPy glue: integer-ns clock, GPU streams, fluid network, collectives, Recorder.

The engine knows tasks, streams and flows only; everything domain-specific is lowered into
that vocabulary first (see :mod:`moesim.lowering`).
"""
from moesim.engine.recorder import Arrow, CounterSample, Recorder, Span
from moesim.engine.sim import MODES, SimResult, Simulation, Task, gc_paused

__all__ = ["Arrow", "CounterSample", "Recorder", "Span", "MODES", "SimResult", "Simulation", "Task", "gc_paused"]
