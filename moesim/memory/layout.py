"""Which layers each pipeline rank holds, and how many microbatch activations it keeps alive.

A :class:`Layout` splits the model's layers over the schedule's virtual stages (evenly; when
the split is uneven the first stages take one layer more, and ``validate_budget`` reports it)
and lists the (path, stage) pairs every pipeline rank owns, from the schedule itself: looped
stages for GPipe/1F1B/interleaved/ZB-H*, the V shape of ZB-V/DualPipeV, and DualPipe's two
paths (each rank then holds two different model stages: twice the parameters).
:func:`peak_live_bytes` walks a rank's step order with each (path, stage) weighted by its
activation bytes; with equal weights and no split backward it is exactly
``peak_activations(row) * bytes``.
"""
from __future__ import annotations

from dataclasses import dataclass

from moesim.errors import ConfigError
from moesim.schedules import Schedule, actions_of, peak_activations

Chunk = tuple[int, int]  # (path, stage)


@dataclass(frozen=True)
class Layout:
    """Layers per virtual stage and the (path, stage) pairs each pipeline rank owns."""

    stage_layers: tuple[range, ...]
    held: tuple[tuple[Chunk, ...], ...]

    @property
    def num_stages(self) -> int:
        return len(self.stage_layers)

    @property
    def num_ranks(self) -> int:
        return len(self.held)

    def param_stages(self, rank: int) -> tuple[int, ...]:
        """Distinct model stages whose weights live on ``rank``."""
        return tuple(sorted({stage for _, stage in self.held[rank]}))

    def param_layers(self, rank: int) -> list[int]:
        """Layer indices whose weights live on ``rank``."""
        return [i for s in self.param_stages(rank) for i in self.stage_layers[s]]

    def holds_first(self, rank: int) -> bool:
        return 0 in self.param_stages(rank)

    def holds_last(self, rank: int) -> bool:
        return self.num_stages - 1 in self.param_stages(rank)


def split_layers(num_layers: int, num_stages: int, leading: int = 0, trailing: int = 0) -> tuple[range, ...]:
    """Contiguous layer ranges of ``num_stages`` stages; the first ``num_layers % num_stages``
    stages take one layer more (the worst case of an uneven split).

    ``leading`` / ``trailing`` slots count as layers of the first / last stage without being
    layers (Megatron ``--account-for-embedding-in-pipeline-split`` / ``--account-for-loss-in-
    pipeline-split``): the slots are split evenly and those stages hold that many layers fewer.
    """
    slots = num_layers + leading + trailing
    if num_stages > slots:  # 100,000 stages of an 8B model: empty stages, and a 100,000-row table
        raise ConfigError("plan.pp", f"{num_stages:,} pipeline stages (pp x vpp) for {num_layers} layers: a stage "
                          "would hold no layer", f"use at most {slots} stages")
    base, extra = divmod(slots, num_stages)
    sizes = [base + (1 if stage < extra else 0) for stage in range(num_stages)]
    sizes[0] -= leading
    sizes[-1] -= trailing
    if min(sizes) < 0:
        raise ConfigError("pipeline split", f"{leading} embedding and {trailing} loss/MTP slots do not fit "
                          f"{num_layers} layers over {num_stages} stages", "turn the account_for_* options off")
    ranges, start = [], 0
    for size in sizes:
        ranges.append(range(start, start + size))
        start += size
    return tuple(ranges)


def layout_from_schedule(schedule: Schedule, num_layers: int, leading: int = 0, trailing: int = 0) -> Layout:
    """The layout a training schedule implies (its stage-to-rank map); ``leading`` /
    ``trailing`` as :func:`split_layers`."""
    held: list[list[tuple[int, int]]] = [[] for _ in range(schedule.num_ranks)]
    for path in range(schedule.num_paths):  # one pass: ranks x stages was 10^10 steps at pp=100,000
        for stage in range(schedule.num_stages):
            held[schedule.rank_of(path, stage)].append((path, stage))
    return Layout(split_layers(num_layers, schedule.num_stages, leading, trailing), tuple(map(tuple, held)))


def looped_layout(pp: int, vpp: int, num_layers: int) -> Layout:
    """Stage s on rank s % pp over pp * vpp stages (inference, which runs no schedule)."""
    stages = pp * vpp
    held = tuple(tuple((0, s) for s in range(stages) if s % pp == rank) for rank in range(pp))
    return Layout(split_layers(num_layers, stages), held)


def peak_live_bytes(schedule: Schedule, rank: int, chunk_bytes: dict[Chunk, tuple[float, ...]],
                    w_retained_fraction: float) -> tuple[float, ...]:
    """Live activation bytes (one entry per component) at the rank's peak of their sum.

    F adds the chunk's bytes; BW frees them; a split B frees all but ``w_retained_fraction``
    of them, which the matching W frees. An overlapped pair adds before it frees.
    """
    width = len(next(iter(chunk_bytes.values())))
    live = [0.0] * width
    best = list(live)
    for step in schedule.steps[rank]:
        for action in actions_of(step):
            weights = chunk_bytes[(action.path, action.stage)]
            share = {"F": 1.0, "BW": -1.0, "B": w_retained_fraction - 1.0, "W": -w_retained_fraction}[action.kind]
            live = [x + share * w for x, w in zip(live, weights)]
            if sum(live) > sum(best):
                best = list(live)
    return tuple(best)


def peak_inflight(schedule: Schedule, rank: int) -> int:
    """Peak in-flight microbatch-chunks of ``rank`` (F done, B/BW not yet)."""
    return peak_activations(schedule.steps[rank])


def concurrent_microbatches(schedule: Schedule, rank: int) -> int:
    """Microbatches whose all-to-alls can be in flight at once on ``rank``: 2 when the rank
    runs overlapped F&B pairs (DualPipe), else 1."""
    return 2 if any(len(actions_of(step)) == 2 for step in schedule.steps[rank]) else 1
