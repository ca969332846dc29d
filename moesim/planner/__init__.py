"""The MoE parallelism planner: scenario presets, layout search, breakdowns, affinity, benches.

``presets.py`` holds the scenario registry; ``plan.py`` searches the layouts of a preset
(``moesim plan``); ``breakdown.py`` and ``affinity.py`` explain one layout (where each parallel
group lives, bytes per link kind, where experts should live); ``bench.py`` runs the named
baseline/optimized pairs (``moesim bench``). See docs/planner.md.
"""
from moesim.planner.affinity import AffinityReport, network_affinity
from moesim.planner.bench import BENCHES, BenchResult, run_benches
from moesim.planner.breakdown import Breakdown, parallelism_breakdown
from moesim.planner.candidates import Candidate, enumerate_candidates
from moesim.planner.plan import PlanReport, plan_scenario
from moesim.planner.presets import PRESETS, ScenarioPreset, get_preset

__all__ = ["AffinityReport", "BENCHES", "BenchResult", "Breakdown", "Candidate", "PRESETS", "PlanReport",
           "ScenarioPreset", "enumerate_candidates", "get_preset", "network_affinity", "parallelism_breakdown",
           "plan_scenario", "run_benches"]
