"""Hypothesis properties of every schedule (reference pipeline_schedules.md, section 6).

Shapes are drawn only from valid (p, m, v); costs are random positive floats. Timing formulas
are checked with zero communication, as the reference states them.
"""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from moesim.errors import ConfigError

from moesim.schedules import (
    SCHEDULES, Action, Overlap, Schedule, actions_of, dry_run, from_text, generate, to_text, validate,
)

FAST = settings(max_examples=100, deadline=None)
cost = st.floats(min_value=0.1, max_value=4.0, allow_nan=False, allow_infinity=False)


@st.composite
def shapes(draw: st.DrawFn, name: str | None = None) -> tuple[str, int, int, int | None]:
    """A valid (name, p, m, v) for the named (or any) schedule."""
    name = name or draw(st.sampled_from(sorted(SCHEDULES)))
    if name == "interleaved":
        p = draw(st.integers(2, 5))
        return name, p, p * draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if name == "dualpipe":
        p = 2 * draw(st.integers(1, 3))
        return name, p, 2 * draw(st.integers(p, 2 * p + 2)), None
    p = draw(st.integers(1, 6))
    low = {"zb-h2": 2 * p - 1, "dualpipev": 2 * p}.get(name, 1)
    return name, p, draw(st.integers(low, low + 14)), None


def build(shape: tuple[str, int, int, int | None]) -> Schedule:
    name, p, m, v = shape
    return generate(name, p, m, v)


def op_cost(step: object, t_f: float, t_b: float, t_w: float) -> float:
    costs = {"F": t_f, "B": t_b, "W": t_w, "BW": t_b + t_w}
    return sum(costs[a.kind] for a in actions_of(step))  # type: ignore[arg-type]


# --- structure (invariants 1-4) ----------------------------------------------------------------

@FAST
@given(shapes())
def test_every_generated_schedule_validates(shape: tuple) -> None:
    schedule = build(shape)
    validate(schedule)
    per_rank_f = schedule.num_paths * schedule.microbatches_per_path * schedule.num_stages // schedule.num_ranks
    assert all(schedule.op_counts(r)["F"] == per_rank_f for r in range(schedule.num_ranks))


@FAST
@given(shapes())
def test_text_form_round_trips(shape: tuple) -> None:
    schedule = build(shape)
    assert from_text(to_text(schedule)) == schedule
    assert to_text(from_text(to_text(schedule))) == to_text(schedule)


@FAST
@given(shapes(), cost, cost, cost, st.floats(0.0, 2.0), st.one_of(st.none(), cost))
def test_never_deadlocks_and_busy_is_sum_of_op_costs(shape: tuple, t_f: float, t_b: float, t_w: float,
                                                     comm: float, t_fb: float | None) -> None:
    schedule = build(shape)
    result = dry_run(schedule, t_f, t_b, t_w, comm=comm, t_fb=t_fb)
    for rank, row in enumerate(schedule.steps):
        expected = sum(t_fb if isinstance(s, Overlap) and t_fb is not None else op_cost(s, t_f, t_b, t_w) for s in row)
        assert result.busy[rank] == pytest.approx(expected)
        starts = [s for s, _ in result.step_times[rank]]
        assert starts == sorted(starts)
    assert result.makespan >= max(result.busy) - 1e-9
    assert all(i >= -1e-9 for i in result.idle)


@FAST
@given(shapes(), cost, cost, cost)
def test_busy_per_stage_chunk_is_m_times_op_costs(shape: tuple, t_f: float, t_b: float, t_w: float) -> None:
    schedule = build(shape)
    result = dry_run(schedule, t_f, t_b, t_w)  # no overlap credit
    per_rank = schedule.num_paths * schedule.microbatches_per_path * schedule.num_stages // schedule.num_ranks
    assert all(b == pytest.approx(per_rank * (t_f + t_b + t_w)) for b in result.busy)


# --- timing (invariants 5-10), zero comm -------------------------------------------------------

@FAST
@given(st.sampled_from(["gpipe", "1f1b"]), st.integers(1, 6), st.integers(1, 16), cost, cost, cost)
def test_gpipe_and_1f1b_makespan(name: str, p: int, m: int, t_f: float, t_b: float, t_w: float) -> None:
    result = dry_run(generate(name, p, m), t_f, t_b, t_w)
    total = t_f + t_b + t_w
    assert result.makespan == pytest.approx((m + p - 1) * total)
    assert all(i == pytest.approx((p - 1) * total) for i in result.idle)
    assert result.bubble_fraction_ideal == pytest.approx((p - 1) / m)


@FAST
@given(shapes("interleaved"), cost, cost, cost)
def test_interleaved_idle_per_rank(shape: tuple, t_f: float, t_b: float, t_w: float) -> None:
    _, p, m, v = shape
    result = dry_run(build(shape), t_f / v, t_b / v, t_w / v)
    assert all(i == pytest.approx((p - 1) * (t_f + t_b + t_w) / v) for i in result.idle)


@FAST
@given(st.integers(2, 5), st.integers(1, 4), st.integers(2, 4), st.data(), cost)
def test_interleaved_idle_with_any_valid_group_size(p: int, groups: int, v: int, data: st.DataObject,
                                                    t: float) -> None:
    group = data.draw(st.integers(p, 2 * p))
    remainder = data.draw(st.sampled_from([0] + list(range(p, group))))
    m = groups * group + remainder
    result = dry_run(generate("interleaved", p, m, v, microbatch_group_size=group), t / v, t / v, t / v)
    assert all(i == pytest.approx((p - 1) * 3 * t / v) for i in result.idle)


@FAST
@given(st.integers(1, 6), st.data(), cost, cost, cost)
def test_zb_h1_bubble(p: int, data: st.DataObject, t_f: float, t_b: float, t_w: float) -> None:
    t_w = min(t_w, t_f, t_b)
    m = data.draw(st.integers(1, 3 * p + 4))
    result = dry_run(generate("zb-h1", p, m), t_f, t_b, t_w)
    if m >= p:
        assert max(result.span) - m * (t_f + t_b + t_w) == pytest.approx((p - 1) * (t_f + t_b - t_w))
    if m <= p:
        assert result.makespan == pytest.approx((m + p - 1) * (t_f + t_b) + t_w)


@FAST
@given(shapes("zb-h2"), cost, cost, cost)
def test_zb_h2_bubble(shape: tuple, t_f: float, t_b: float, t_w: float) -> None:
    _, p, m, _ = shape
    t_w = min(t_w, t_f, t_b)
    result = dry_run(build(shape), t_f, t_b, t_w)
    assert max(result.span) - m * (t_f + t_b + t_w) == pytest.approx((p - 1) * (t_f + t_b - 2 * t_w))


@FAST
@given(st.integers(1, 6), st.data(), cost)
def test_zb_v_zero_span_bubble_with_equal_costs(p: int, data: st.DataObject, t: float) -> None:
    m = data.draw(st.integers(2 * p - 1, 2 * p + 12))
    result = dry_run(generate("zb-v", p, m), t, t, t)
    assert max(result.span) == pytest.approx(2 * m * 3 * t)
    assert result.bubble_fraction_span == pytest.approx(0.0, abs=1e-9)


@FAST
@given(st.sampled_from(["dualpipe", "dualpipev"]), st.integers(1, 4), st.data(), cost, st.floats(0.05, 1.0),
       st.floats(0.0, 1.0))
def test_dualpipe_idle_formula(name: str, half: int, data: st.DataObject, t: float, w_share: float,
                               fb_share: float) -> None:
    """(S/2 - 1)(F&B + B_full - 3W), S = stages along the path, when T_F = T_B, W <= F and
    B_full <= F&B: exact on the middle ranks (the idlest ones while F&B <= F + B_full), for any N."""
    p = 2 * half if name == "dualpipe" else half
    stages = p if name == "dualpipe" else 2 * p
    t_w = w_share * t
    t_fb = (t + t_w) + fb_share * t
    formula = (stages / 2 - 1) * (t_fb + t + t_w - 3 * t_w)
    middle = p // 2 if name == "dualpipe" else p - 1
    idles = set()
    for extra in data.draw(st.lists(st.integers(0, 3 * p), min_size=1, max_size=2)):
        m = 2 * p + 2 * extra
        result = dry_run(generate(name, p, m), t, t, t_w, t_fb=t_fb)
        assert result.idle[middle] == pytest.approx(formula)
        assert max(result.idle) == pytest.approx(formula)
        idles.add(round(max(result.idle), 9))
    assert len(idles) == 1  # independent of N


@FAST
@given(st.sampled_from(["1f1b", "interleaved"]), st.integers(2, 5), st.integers(1, 4), cost)
def test_bubble_fraction_non_increasing_in_m(name: str, p: int, k: int, t: float) -> None:
    v = 2 if name == "interleaved" else None
    fractions = [dry_run(generate(name, p, p * j, v), t, t, t).bubble_fraction_ideal for j in (k, k + 1, k + 2)]
    assert fractions[0] >= fractions[1] - 1e-12 >= fractions[2] - 2e-12


@FAST
@given(shapes(), cost, cost, cost, st.floats(0.0, 1.0), st.sampled_from(["t_f", "t_b", "t_w", "comm"]),
       st.floats(0.01, 2.0))
def test_makespan_non_decreasing_in_every_cost(shape: tuple, t_f: float, t_b: float, t_w: float, comm: float,
                                               which: str, bump: float) -> None:
    schedule = build(shape)
    costs = {"t_f": t_f, "t_b": t_b, "t_w": t_w, "comm": comm}
    before = dry_run(schedule, **costs).makespan
    costs[which] += bump
    assert dry_run(schedule, **costs).makespan >= before - 1e-9


# --- memory (invariants 11-16) --------------------------------------------------------------

@FAST
@given(st.integers(1, 6), st.integers(1, 16))
def test_peak_activations_1f1b_gpipe_zb_h1(p: int, m: int) -> None:
    one_f_one_b = dry_run(generate("1f1b", p, m), 1, 1, 1).peak_activations
    assert one_f_one_b == tuple(min(p - r, m) for r in range(p))
    assert dry_run(generate("zb-h1", p, m), 1, 1, 1).peak_activations == one_f_one_b
    assert dry_run(generate("gpipe", p, m), 1, 1, 1).peak_activations == (m,) * p


@FAST
@given(shapes("zb-h2"))
def test_peak_activations_zb_h2(shape: tuple) -> None:
    _, p, _, _ = shape
    assert dry_run(build(shape), 1, 1, 1).peak_activations == tuple(2 * p - 2 * r - 1 for r in range(p))


@FAST
@given(shapes("interleaved"))
def test_peak_activations_interleaved(shape: tuple) -> None:
    _, p, m, v = shape
    peaks = dry_run(build(shape), 1, 1, 1).peak_activations
    if v == 1:  # plain 1F1B
        assert peaks == tuple(min(p - r, m) for r in range(p))
    else:
        assert peaks == tuple(min(m * v, 2 * (p - r - 1) + (v - 1) * p + 1) for r in range(p))


@FAST
@given(st.integers(1, 6), st.data())
def test_peak_activations_v_shapes_and_dualpipe(p: int, data: st.DataObject) -> None:
    m = data.draw(st.integers(2 * p, 2 * p + 10))
    assert dry_run(generate("zb-v", p, m), 1, 1, 1).peak_activations == (2 * p,) * p
    assert dry_run(generate("dualpipev", p, m), 1, 1, 1).peak_activations == (2 * p + 1,) * p
    even = 2 * ((p + 1) // 2)
    n = 2 * data.draw(st.integers(even, even + 5))
    assert dry_run(generate("dualpipe", even, n), 1, 1, 1).peak_activations == (even + 1,) * even


# --- cross-checks (invariants 20-22) ---------------------------------------------------------

@FAST
@given(st.integers(1, 6), st.integers(1, 12))
def test_interleaved_with_one_chunk_is_1f1b(p: int, m: int) -> None:
    assert generate("interleaved", p, m, 1).steps == generate("1f1b", p, m).steps


@FAST
@given(st.integers(1, 6), st.integers(1, 12))
def test_zb_h1_with_w_fused_back_is_1f1b(p: int, m: int) -> None:
    fused = tuple(
        tuple(Action("BW", a.stage, a.microbatch) if a.kind == "B" else a for a in row if a.kind != "W")
        for row in generate("zb-h1", p, m).steps
    )
    assert fused == generate("1f1b", p, m).steps


@FAST
@given(shapes(), st.integers(0, 10_000), st.integers(0, 10_000))
def test_validator_rejects_swapped_microbatches_of_one_stage(shape: tuple, pick: int, offset: int) -> None:
    schedule = build(shape)
    rank = pick % schedule.num_ranks
    row = list(schedule.steps[rank])
    singles = [i for i, step in enumerate(row) if isinstance(step, Action)]
    first = singles[pick % len(singles)]
    a = row[first]
    twins = [i for i in singles if i > first and row[i].kind == a.kind and row[i].stage == a.stage
             and row[i].path == a.path]
    assume(twins)
    second = twins[offset % len(twins)]
    row[first], row[second] = row[second], row[first]
    swapped = dataclasses.replace(schedule, steps=schedule.steps[:rank] + (tuple(row),) + schedule.steps[rank + 1:])
    with pytest.raises(ConfigError, match=r"increasing order|before"):
        validate(swapped)
