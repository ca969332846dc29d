"""Per-rank action orders of the pipeline schedules the validation workload runs.

Kept here, dependency-free, because the measurement machine runs without the simulator's own
schedule package. An action is ``(kind, stage, microbatch)`` with kind ``"F"`` or ``"B"`` and
``stage`` the virtual stage; with ``num_chunks`` chunks per rank, rank ``r`` holds virtual
stages ``r, r + num_ranks, ...`` (Megatron's interleaved layout). The orders are recorded in the
validation file so the simulator can replay exactly what ran.
"""
from __future__ import annotations

Action = tuple[str, int, int]


def gpipe_order(num_ranks: int, num_microbatches: int, rank: int) -> list[Action]:
    """All forwards, then all backwards, microbatches in increasing order."""
    return [("F", rank, m) for m in range(num_microbatches)] + [("B", rank, m) for m in range(num_microbatches)]


def one_f_one_b_order(num_ranks: int, num_microbatches: int, rank: int) -> list[Action]:
    """1F1B: ``num_ranks - rank - 1`` warm-up forwards, then alternate, then drain backwards."""
    warm = min(num_ranks - rank - 1, num_microbatches)
    order: list[Action] = [("F", rank, m) for m in range(warm)]
    for i in range(num_microbatches - warm):
        order += [("F", rank, warm + i), ("B", rank, i)]
    order += [("B", rank, m) for m in range(num_microbatches - warm, num_microbatches)]
    return order


def interleaved_order(num_ranks: int, num_chunks: int, num_microbatches: int, rank: int) -> list[Action]:
    """Megatron interleaved 1F1B; needs ``num_microbatches`` to be a multiple of ``num_ranks``."""
    assert num_microbatches % num_ranks == 0, "interleaved 1F1B needs microbatches % ranks == 0"
    total = num_microbatches * num_chunks
    group = num_ranks * num_chunks

    def unit(k: int, backward: bool) -> tuple[int, int]:
        chunk = (k % group) // num_ranks
        chunk = num_chunks - 1 - chunk if backward else chunk
        return chunk * num_ranks + rank, (k // group) * num_ranks + k % num_ranks

    warm = min((num_ranks - rank - 1) * 2 + (num_chunks - 1) * num_ranks, total)
    order: list[Action] = [("F", *unit(k, False)) for k in range(warm)]
    for i in range(total - warm):
        order += [("F", *unit(warm + i, False)), ("B", *unit(i, True))]
    order += [("B", *unit(k, True)) for k in range(total - warm, total)]
    return order


def dry_run(orders: list[list[Action]], num_stages: int) -> int:
    """Execute the orders on dependencies alone; returns the number of rounds, or raises on deadlock.

    F(s, m) needs F(s-1, m); B(s, m) needs F(s, m) and B(s+1, m) (the last stage only F).
    """
    done: set[Action] = set()
    pos = [0] * len(orders)
    rounds = 0
    while any(p < len(o) for p, o in zip(pos, orders)):
        progressed = False
        for r, order in enumerate(orders):
            if pos[r] < len(order) and _ready(order[pos[r]], done, num_stages):
                done.add(order[pos[r]])
                pos[r] += 1
                progressed = True
        if not progressed:
            stuck = [order[pos[r]] for r, order in enumerate(orders) if pos[r] < len(order)]
            raise RuntimeError(f"pipeline order deadlocks; next actions per rank: {stuck}")
        rounds += 1
    return rounds


def _ready(action: Action, done: set[Action], num_stages: int) -> bool:
    kind, stage, mb = action
    if kind == "F":
        return stage == 0 or ("F", stage - 1, mb) in done
    return ("F", stage, mb) in done and (stage == num_stages - 1 or ("B", stage + 1, mb) in done)


SCHEDULES = ("gpipe", "1f1b", "interleaved")


def orders_for(schedule: str, num_ranks: int, num_microbatches: int, num_chunks: int = 2) -> list[list[Action]]:
    """Every rank's order for one schedule name."""
    if schedule == "gpipe":
        return [gpipe_order(num_ranks, num_microbatches, r) for r in range(num_ranks)]
    if schedule == "1f1b":
        return [one_f_one_b_order(num_ranks, num_microbatches, r) for r in range(num_ranks)]
    if schedule == "interleaved":
        return [interleaved_order(num_ranks, num_chunks, num_microbatches, r) for r in range(num_ranks)]
    raise ValueError(f"unknown schedule {schedule!r}; use one of {SCHEDULES}")


def format_action(action: Action) -> str:
    """Compact text form, e.g. ``F2.5`` = forward of virtual stage 2, microbatch 5."""
    return f"{action[0]}{action[1]}.{action[2]}"
