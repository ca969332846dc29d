"""Scenarios, experiments and the runner behind ``moesim run``."""
from moesim.experiment.experiment import Comparison, Experiment, load_experiment
from moesim.experiment.scenario import MoEOptions, OverlapOptions, ParallelPlan, Scenario

__all__ = ["Comparison", "Experiment", "MoEOptions", "OverlapOptions", "ParallelPlan", "Scenario", "load_experiment"]
