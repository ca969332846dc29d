"""Validation: stored real-GPU measurements predicted through ``moesim run``'s own path (``moesim validate``).

* :mod:`~moesim.validate.layers`: each entry of a layer-workloads file (``data/validation/layers/``,
  written by :mod:`moesim.calibrate.layer_workloads`) described as a block Scenario and run by
  :func:`moesim.experiment.block.simulate_block`;
* :mod:`~moesim.validate.kernels`: the single-GPU kernels of ``data/validation/h200_measurements.json``
  priced by the cost model ``moesim run`` builds (:mod:`~moesim.validate.measurements` loads that file);
* :mod:`~moesim.validate.compare`: the per-case record and the summary per workload class;
  :mod:`~moesim.validate.report`: the report as data, Markdown and JSON; :mod:`~moesim.validate.cli`: the command;
* :mod:`~moesim.validate.memory`: the memory probe's per-layer saved bytes against :mod:`moesim.memory`.

No predictor, clock model or host model of its own, and nothing measured during a case is fed.
The retired predictors live in ``lab/legacy_validate`` (not part of the package).
"""
