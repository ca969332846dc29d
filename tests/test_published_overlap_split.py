"""lab.published_overlap_split: exposed EP all-to-all inside / outside the paired phase, exact on
hand-made spans."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from lab.published_overlap_split import split

MS = 1_000_000


@dataclass(frozen=True)
class Span:
    rank: int
    stream: str
    name: str
    start_ns: int
    end_ns: int


def test_exposed_all_to_all_splits_at_first_backward_and_last_forward() -> None:
    """Compute (ms): F 0-10, F 20-30, BW 30-50, F 50-60, BW 70-80, so the paired phase is 30..60
    (first backward start to last forward end), compute busy all of it. All-to-alls: 10-20 exposed
    before the phase; 45-55 under compute; 55-70 under compute until 60, exposed 60-70 after the
    phase. Inside 0, outside 20."""
    spans = [Span(0, "compute", "F0.0", 0, 10 * MS), Span(0, "compute", "F1.0", 20 * MS, 30 * MS),
             Span(0, "compute", "BW0.0", 30 * MS, 50 * MS), Span(0, "compute", "F2.0", 50 * MS, 60 * MS),
             Span(0, "compute", "BW1.0", 70 * MS, 80 * MS),
             Span(0, "comm.ep", "dispatch.L0.F0.0", 10 * MS, 20 * MS),
             Span(0, "comm.ep.bwd", "combine.bwd.L0.BW0.0", 45 * MS, 55 * MS),
             Span(0, "comm.ep", "dispatch.L0.F2.0", 55 * MS, 70 * MS)]
    parts = split(spans)
    assert parts["exposed_inside"] == pytest.approx(0.0)
    assert parts["exposed_outside"] == pytest.approx(20.0)   # 10-20 and 60-70
    assert parts["phase_length"] == pytest.approx(30.0)
    assert parts["phase_compute"] == pytest.approx(30.0)


def test_exposure_inside_the_phase_is_counted_there_and_gpus_are_averaged() -> None:
    """GPU 0: BW 0-10, gap 10-14 with an all-to-all 10-14, F 14-20: 4 ms exposed inside. GPU 1: the
    same without the all-to-all: the mean is 2 ms."""
    spans = []
    for rank in (0, 1):
        spans += [Span(rank, "compute", "BW0.0", 0, 10 * MS), Span(rank, "compute", "F1.0", 14 * MS, 20 * MS)]
    spans.append(Span(0, "comm.ep", "dispatch.L0.F1.0", 10 * MS, 14 * MS))
    parts = split(spans)
    assert parts["exposed_inside"] == pytest.approx(2.0)
    assert parts["exposed_outside"] == pytest.approx(0.0)
    assert parts["phase_length"] == pytest.approx(20.0)
    assert parts["phase_compute"] == pytest.approx(16.0)
