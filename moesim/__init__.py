"""moesim: a discrete-event simulator for Mixture-of-Experts GPU clusters.

Layers (arrows = imports, nothing imports upward): cli -> experiment -> analysis/trace/plots
-> engine <- lowering <- workload/schedules/moe/topology/costs/memory. See docs/architecture.md.
"""
__version__ = "0.1.0"
