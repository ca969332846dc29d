"""Calibration: measure real kernel and NCCL timings on a GPU and write a profile JSON.

The modules here run on the measurement machine, which has torch but not the simulator's
dependencies, so they import only torch, numpy, the standard library and the dependency-free
``moesim.errors``. ``measure`` builds the calibration profile (``hostops`` adds the host time per
eager call), ``validate_workloads`` and ``layer_workloads`` measure whole workloads kept for validating the simulator
(``python3 -m moesim.calibrate.layer_workloads``), and ``cli`` exposes ``measure`` and
``validate_workloads`` as ``moesim calibrate``. The one-question probes behind docs/accuracy.md
(clock, host-speed, event-region and eager-host studies) live in the repository's top-level
``lab/``, outside the package.
The profile is read back by ``moesim.costs.profile`` and turned into costs by
``moesim.costs.calibrated``.
"""
