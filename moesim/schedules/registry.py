"""The schedule registry: name -> generator, and :func:`generate` to look one up and run it.

Every generator has the signature ``(num_ranks, num_microbatches, num_chunks=None, **options)``
and raises :class:`ConfigError` naming the violated rule. ``num_ranks`` is the number of
pipeline devices (p), whatever the number of virtual stages the schedule puts on them.
"""
from __future__ import annotations

from typing import Any, Callable

from moesim.errors import ConfigError, unknown_name
from moesim.schedules.dualpipe import dualpipe, dualpipev
from moesim.schedules.megatron import gpipe, interleaved, one_f_one_b
from moesim.schedules.model import Schedule
from moesim.schedules.zero_bubble import zb_h1, zb_h2, zb_v

SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "gpipe": gpipe,
    "1f1b": one_f_one_b,
    "interleaved": interleaved,
    "zb-h1": zb_h1,
    "zb-h2": zb_h2,
    "zb-v": zb_v,
    "dualpipe": dualpipe,
    "dualpipev": dualpipev,
}


def generate(name: str, num_ranks: int, num_microbatches: int, num_chunks: int | None = None, **options: Any) -> Schedule:
    """Build schedule ``name`` for ``num_ranks`` pipeline ranks and ``num_microbatches``.

    ``options`` go to the generator (``microbatch_group_size`` for interleaved). A name that is
    not text (even an unhashable one) gets the same ConfigError as an unknown name.
    """
    if not isinstance(name, str) or name not in SCHEDULES:
        raise unknown_name("schedule", name, list(SCHEDULES))
    _check_size(num_ranks, num_microbatches, num_chunks)
    return SCHEDULES[name](num_ranks, num_microbatches, num_chunks, **options)


# Generating costs 5-15 us per (rank, microbatch, chunk) cell: 2^21 cells is ~10-30 s and a few GB.
# Beyond it (10^12 microbatches in `moesim memory show` hung) callers use a smaller schedule of the
# same shape: every schedule is linear in microbatches past its warm-up.
MAX_SCHEDULE_CELLS = 1 << 21


def _check_size(num_ranks: Any, num_microbatches: Any, num_chunks: Any) -> None:
    counts = (num_ranks, num_microbatches, num_chunks or 1)
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts):
        return  # the generator names the bad count
    cells = counts[0] * counts[1] * counts[2]
    if cells > MAX_SCHEDULE_CELLS:
        raise ConfigError("num_microbatches", f"{num_ranks} ranks x {num_microbatches:,} microbatches x {counts[2]} "
                          f"chunks = {cells:,} schedule cells, more than {MAX_SCHEDULE_CELLS:,}",
                          "use fewer microbatches (the step grows by the same time per microbatch past the warm-up)")
