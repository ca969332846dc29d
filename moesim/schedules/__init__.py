"""Pipeline-parallel schedules as pure data: generators, text form, validator and dry run.

``generate(name, num_ranks, num_microbatches, num_chunks=None)`` builds a :class:`Schedule`
(per-rank ordered F/B/W/BW actions) from the :data:`SCHEDULES` registry; ``validate`` checks it
apart from generation; ``cross_deps`` gives the dependency rules the lowering turns into
send/recv pairs; ``dry_run`` times it with abstract op costs; ``render_grid`` draws it.
Nothing here imports the engine.
"""
from moesim.schedules.deps import Dependency, cross_deps
from moesim.schedules.dry_run import DryRunResult, ScheduleDeadlockError, dry_run, peak_activations
from moesim.schedules.grid import render_grid
from moesim.schedules.model import Action, Overlap, Schedule, Step, actions_of
from moesim.schedules.registry import SCHEDULES, generate
from moesim.schedules.text import from_text, to_text
from moesim.schedules.validate import validate

__all__ = [
    "SCHEDULES", "Action", "Dependency", "DryRunResult", "Overlap", "Schedule", "ScheduleDeadlockError", "Step",
    "actions_of", "cross_deps", "dry_run", "from_text", "generate", "peak_activations", "render_grid", "to_text",
    "validate",
]
