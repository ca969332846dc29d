"""DualPipe and DualPipeV (DeepSeek-V3), transcribed from ``DualPipe.step`` / ``DualPipeV.step``.

Both run the same eight phases per rank (nF0, nF0F1, nB1W1F1, the main nF0B1F1B0 loop with
overlapped F&B pairs, nB1F1B0, nB1B0, nWB0, nW). "Phase" 0/1 is a rank-local module index:

* DualPipe: P ranks (even), two paths of N/2 microbatches. On the first half of the ranks phase
  0 is path 0 (stage r) and phase 1 is path 1 (stage P-1-r); the second half swaps them.
* DualPipeV: P ranks, one path of 2P stages; phase 0 is stage r, phase 1 is stage 2P-1-r.

A backward run "with zero bubble" is a B whose W goes to a FIFO store and comes back at the
next ``_weight_chunk`` (a W step); every other backward is a fused BW.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from moesim.errors import ConfigError
from moesim.schedules._common import check_sizes, fixed_chunks
from moesim.schedules.model import Action, Overlap, Schedule, Step


def dualpipe(num_ranks: int, num_microbatches: int, num_chunks: int | None = None) -> Schedule:
    """DualPipe: two opposite pipelines over the same P ranks, 2 modules per rank."""
    check_sizes("dualpipe", num_ranks, num_microbatches)
    fixed_chunks("dualpipe", num_chunks, 2)
    p, n = num_ranks, num_microbatches
    if p % 2:
        raise ConfigError("num_ranks", f"dualpipe needs an even number of ranks (got p={p})", f"use p={p + 1}")
    if n % 2 or n < 2 * p:
        raise ConfigError("num_microbatches", f"dualpipe needs num_microbatches even and >= 2*ranks (got m={n}, p={p})",
                          f"use m = {max(2 * p, n + n % 2)}")
    half = p // 2
    rows = []
    for r in range(p):
        second = r >= half
        plan = _Plan(
            half_rank=min(r, p - 1 - r), num_half_ranks=half, per_phase=n // 2,
            is_middle=r in (half - 1, half),
            stages=(p - 1 - r, r) if second else (r, p - 1 - r), paths=(1, 0) if second else (0, 1),
        )
        rows.append(_rank_steps(plan))
    return Schedule("dualpipe", p, n, 2, 2, "dual", tuple(rows))


def dualpipev(num_ranks: int, num_microbatches: int, num_chunks: int | None = None) -> Schedule:
    """DualPipeV: DualPipe cut in half; one path folded into a V over P ranks."""
    check_sizes("dualpipev", num_ranks, num_microbatches)
    fixed_chunks("dualpipev", num_chunks, 2)
    p, n = num_ranks, num_microbatches
    if n < 2 * p:
        raise ConfigError("num_microbatches", f"dualpipev needs num_microbatches >= 2*ranks (got m={n}, p={p})",
                          f"use m >= {2 * p}")
    rows = tuple(
        _rank_steps(_Plan(half_rank=r, num_half_ranks=p, per_phase=n, is_middle=r == p - 1,
                          stages=(r, 2 * p - 1 - r), paths=(0, 0)))
        for r in range(p)
    )
    return Schedule("dualpipev", p, n, 2, 1, "v", rows)


@dataclass(frozen=True)
class _Plan:
    """What the eight phases need to know about one rank."""

    half_rank: int
    num_half_ranks: int
    per_phase: int
    is_middle: bool
    stages: tuple[int, int]
    paths: tuple[int, int]


class _RankOps:
    """Emits one rank's actions, numbering microbatches per phase as DualPipe's counters do."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.next_f = [0, 0]
        self.next_b = [0, 0]
        self.weight_store: deque[Action] = deque()

    def forward(self, phase: int) -> Action:
        j = self.next_f[phase]
        self.next_f[phase] += 1
        return Action("F", self.plan.stages[phase], j, self.plan.paths[phase])

    def backward(self, phase: int, zero_bubble: bool = False) -> Action:
        j = self.next_b[phase]
        self.next_b[phase] += 1
        action = Action("B" if zero_bubble else "BW", self.plan.stages[phase], j, self.plan.paths[phase])
        if zero_bubble:
            self.weight_store.append(action)
        return action

    def weight(self) -> Action:
        b = self.weight_store.popleft()
        return Action("W", b.stage, b.microbatch, b.path)

    def pair(self, forward_phase: int, backward_phase: int) -> Overlap:
        return Overlap(self.forward(forward_phase), self.backward(backward_phase))


def _rank_steps(plan: _Plan) -> tuple[Step, ...]:
    ops = _RankOps(plan)
    h, half = plan.half_rank, plan.num_half_ranks
    out: list[Step] = [ops.forward(0) for _ in range(2 * (half - h - 1))]  # 1: nF0
    for _ in range(h + 1):  # 2: nF0F1
        out += [ops.forward(0), ops.forward(1)]
    for _ in range(half - h - 1):  # 3: nB1W1F1
        out += [ops.backward(1, zero_bubble=True), ops.weight(), ops.forward(1)]
    for i in range(plan.per_phase - 2 * half + h + 1):  # 4: nF0B1F1B0
        if i == 0 and plan.is_middle:  # not overlapped, to shrink the bubble
            out += [ops.forward(0), ops.backward(1)]
        else:
            out.append(ops.pair(0, 1))
        out.append(ops.pair(1, 0))
    for _ in range(half - h - 1):  # 5: nB1F1B0
        out += [ops.backward(1), ops.pair(1, 0)]
    out += _phase_6(ops, h)
    for _ in range(half - h - 1):  # 7: nWB0
        out += [ops.weight(), ops.backward(0, zero_bubble=True)]
    out += [ops.weight() for _ in range(h + 1)]  # 8: nW
    assert not ops.weight_store, "DualPipe left weight gradients in the store"
    return tuple(out)


def _phase_6(ops: _RankOps, h: int) -> list[Step]:
    """nB1B0: the second half of these backwards defer their W (zero bubble)."""
    out: list[Step] = []
    zero_bubble = False
    count = h + 1
    for i in range(count):
        if i == count // 2 and h % 2 == 1:
            zero_bubble = True
        out.append(ops.backward(1, zero_bubble))
        if i == count // 2 and h % 2 == 0:
            zero_bubble = True
        out.append(ops.backward(0, zero_bubble))
    return out
