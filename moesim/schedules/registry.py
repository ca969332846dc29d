"""The schedule registry: name -> generator, and :func:`generate` to look one up and run it.

Every generator has the signature ``(num_ranks, num_microbatches, num_chunks=None, **options)``
and raises :class:`ConfigError` naming the violated rule. ``num_ranks`` is the number of
pipeline devices (p), whatever the number of virtual stages the schedule puts on them.
"""
from __future__ import annotations

from typing import Any, Callable

from moesim.errors import unknown_name
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
    return SCHEDULES[name](num_ranks, num_microbatches, num_chunks, **options)
