"""Calibration: measure real kernel and NCCL timings on a GPU and write a profile JSON.

The modules here run on the measurement machine, which has torch but not the simulator's
dependencies, so they import only torch, numpy, the standard library and the dependency-free
``moesim.errors``. ``measure`` builds the calibration profile (``hostops`` adds the host time per
eager call), ``validate_workloads`` measures whole workloads kept for validating the simulator,
``probes`` runs the experiments behind docs/accuracy.md, ``host_probe`` and ``host_reference``
measure a process's host speed and relate it to the profile's host table, and ``cli`` exposes the first two as
``moesim calibrate``.
The profile is read back by ``moesim.costs.profile`` and turned into costs by
``moesim.costs.calibrated``.
"""
