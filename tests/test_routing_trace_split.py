"""``split_evenly`` splits each rank's routed pairs into microbatches that each route exactly
their share, so a valid multi-microbatch 4-D counts trace is accepted."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.moe.traces import split_evenly


@st.composite
def rows_and_parts(draw):
    parts = draw(st.integers(1, 6))
    ranks = draw(st.integers(1, 4))
    experts = draw(st.integers(1, 9))
    per_mb = draw(st.integers(0, 30))
    rows = []
    for _ in range(ranks):  # a random composition of parts * per_mb into `experts` non-negative counts
        cuts = sorted(draw(st.lists(st.integers(0, parts * per_mb), min_size=experts - 1, max_size=experts - 1)))
        rows.append(np.diff([0, *cuts, parts * per_mb]))
    return np.array(rows, dtype=np.int64), parts, per_mb


@settings(max_examples=200, deadline=None)
@given(rows_and_parts())
def test_every_microbatch_row_routes_its_share(case):
    counts, parts, per_mb = case
    split = split_evenly(counts, parts)
    assert split.shape == (parts, *counts.shape)
    assert (split >= 0).all()
    assert np.array_equal(split.sum(axis=0), counts)                  # sums back to the original
    assert (split.sum(axis=-1) == per_mb).all()                       # each microbatch row: exactly per_mb
    assert (split.max(axis=0) - split.min(axis=0) <= 1).all()         # each cell split near-evenly
    assert np.array_equal(split, split_evenly(counts, parts))         # deterministic


def test_the_reported_case_two_microbatches_of_4096_tokens_top8():
    rng = np.random.default_rng(0)
    counts = np.stack([rng.multinomial(2 * 4096 * 8, np.full(128, 1 / 128)) for _ in range(8)])
    split = split_evenly(counts, 2)
    assert (split.sum(axis=-1) == 4096 * 8).all()
