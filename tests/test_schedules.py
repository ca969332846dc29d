"""Exact answers for moesim.schedules: golden orders, constraint errors, the validator,
dependency rules, dry-run times and grids. Properties over many shapes live in
test_schedules_properties.py; the CLI in test_schedules_cli.py."""
from __future__ import annotations

import dataclasses

import pytest

from moesim.errors import ConfigError, DeadlockError
from moesim.schedules import (
    SCHEDULES, Action, Overlap, Schedule, cross_deps, dry_run, from_text, generate, render_grid, to_text, validate,
)
from moesim.schedules.megatron import microbatch_table


def rows_of(text: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in text.strip().splitlines() if line.startswith("rank")]


def row_text(schedule: Schedule, rank: int) -> str:
    return " ".join(str(step) for step in schedule.steps[rank])


def one_indexed(row: str) -> str:
    """'F1 B1 W1' (the paper's 1-indexed microbatches) -> per-op kind and 0-indexed microbatch."""
    return " ".join(f"{tok[0]}{int(tok[1:]) - 1}" for tok in row.split())


def kinds_and_microbatches(schedule: Schedule, rank: int) -> str:
    return " ".join(f"{a.kind}{a.microbatch}" for a in schedule.steps[rank])


# --- golden orders -----------------------------------------------------------------------------

def test_1f1b_golden_p4_m8_megatron_order() -> None:
    expected = """
    rank 0: 0F0 0F1 0F2 0F3 0BW0 0F4 0BW1 0F5 0BW2 0F6 0BW3 0F7 0BW4 0BW5 0BW6 0BW7
    rank 1: 1F0 1F1 1F2 1BW0 1F3 1BW1 1F4 1BW2 1F5 1BW3 1F6 1BW4 1F7 1BW5 1BW6 1BW7
    rank 2: 2F0 2F1 2BW0 2F2 2BW1 2F3 2BW2 2F4 2BW3 2F5 2BW4 2F6 2BW5 2F7 2BW6 2BW7
    rank 3: 3F0 3BW0 3F1 3BW1 3F2 3BW2 3F3 3BW3 3F4 3BW4 3F5 3BW5 3F6 3BW6 3F7 3BW7
    """
    assert rows_of(to_text(generate("1f1b", 4, 8))) == [r.strip()[8:] for r in expected.strip().splitlines()]


def test_gpipe_golden_all_forwards_then_fifo_backwards() -> None:
    schedule = generate("gpipe", 2, 3)
    assert row_text(schedule, 0) == "0F0 0F1 0F2 0BW0 0BW1 0BW2"
    assert row_text(schedule, 1) == "1F0 1F1 1F2 1BW0 1BW1 1BW2"


def test_megatron_microbatch_table_matches_code_comment_pp2_n3_m5_vp2() -> None:
    table = microbatch_table(num_microbatches=5, num_chunks=2, group=3)
    assert [j for j, _ in table] == [0, 1, 2, 0, 1, 2, 3, 4, 3, 4]
    assert [c for _, c in table] == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]


def test_interleaved_golden_p2_m4_v2() -> None:
    schedule = generate("interleaved", 2, 4, 2)
    assert row_text(schedule, 0) == "0F0 0F1 2F0 2F1 0F2 2BW0 0F3 2BW1 2F2 0BW0 2F3 0BW1 2BW2 2BW3 0BW2 0BW3"
    assert row_text(schedule, 1) == "1F0 1F1 3F0 3BW0 3F1 3BW1 1F2 1BW0 1F3 1BW1 3F2 3BW2 3F3 3BW3 1BW2 1BW3"


def test_interleaved_forward_order_follows_group_table() -> None:
    schedule = generate("interleaved", 2, 5, 2, microbatch_group_size=3)
    forwards = [a for a in schedule.steps[0] if a.kind == "F"]
    assert [(a.microbatch, a.stage // 2) for a in forwards] == microbatch_table(5, 2, 3)


def test_zb_h1_matches_paper_figure_3() -> None:
    schedule = generate("zb-h1", 4, 8)
    device_1 = "F1 F2 F3 F4 B1 W1 F5 B2 W2 F6 B3 W3 F7 B4 W4 F8 B5 W5 B6 W6 B7 W7 B8 W8"
    device_4 = "F1 B1 F2 B2 F3 B3 F4 B4 W1 F5 B5 W2 F6 B6 W3 F7 B7 W4 F8 B8 W5 W6 W7 W8"
    assert kinds_and_microbatches(schedule, 0) == one_indexed(device_1)
    assert kinds_and_microbatches(schedule, 3) == one_indexed(device_4)
    assert row_text(schedule, 1) == "1F0 1F1 1F2 1B0 1F3 1B1 1W0 1F4 1B2 1W1 1F5 1B3 1W2 1F6 1B4 1W3 1F7 1B5 1W4 1B6 1W5 1B7 1W6 1W7"


def test_zb_h2_matches_paper_figure_3() -> None:
    schedule = generate("zb-h2", 4, 8)
    device_1 = "F1 F2 F3 F4 F5 F6 F7 B1 W1 F8 B2 W2 B3 W3 B4 W4 B5 W5 B6 W6 B7 W7 B8 W8"
    device_4 = "F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7 W1 F8 B8 W2 W3 W4 W5 W6 W7 W8"
    assert kinds_and_microbatches(schedule, 0) == one_indexed(device_1)
    assert kinds_and_microbatches(schedule, 3) == one_indexed(device_4)


def test_zb_v_golden_p4_m8_rank0_and_last() -> None:
    schedule = generate("zb-v", 4, 8)
    assert row_text(schedule, 0) == (
        "0F0 0F1 0F2 0F3 0F4 0F5 0F6 7F0 7B0 7W0 7F1 7B1 7W1 7F2 7B2 7W2 7F3 7B3 7W3 0F7 0B0 0W0 7F4 7B4 7W4 "
        "0B1 0W1 7F5 7B5 7W5 0B2 0W2 7F6 7B6 7W6 0B3 0W3 7F7 7B7 7W7 0B4 0W4 0B5 0W5 0B6 0W6 0B7 0W7"
    )
    assert row_text(schedule, 3).startswith("3F0 4F0 3F1 4F1 3F2 4F2 3F3 4F3 4B0 4W0 3F4 3B0 3W0")


def test_zb_v_drops_padding_microbatches() -> None:
    small = generate("zb-v", 4, 3)
    assert max(a.microbatch for row in small.steps for a in row) == 2
    validate(small)


def test_dualpipe_golden_p4_m8_rank0() -> None:
    schedule = generate("dualpipe", 4, 8)
    assert row_text(schedule, 0) == (
        "0F0 0F1 0F2 3F0@1 3B0@1 3W0@1 3F1@1 0F3&3BW1@1 3F2@1&0BW0 3BW2@1 3F3@1&0BW1 3BW3@1 0B2 0W2 0B3 0W3"
    )
    # rank 3 mirrors rank 0 with the paths swapped
    assert row_text(schedule, 3) == (
        "0F0@1 0F1@1 0F2@1 3F0 3B0 3W0 3F1 0F3@1&3BW1 3F2&0BW0@1 3BW2 3F3&0BW1@1 3BW3 0B2@1 0W2@1 0B3@1 0W3@1"
    )


def test_dualpipe_middle_rank_does_not_overlap_first_main_step() -> None:
    row = generate("dualpipe", 4, 8).steps[1]
    first_pair = next(i for i, step in enumerate(row) if isinstance(step, Overlap))
    assert row[first_pair - 2:first_pair] == (Action("F", 1, 2), Action("BW", 2, 0, path=1))


def test_dualpipev_golden_p4_m10_last_rank() -> None:
    schedule = generate("dualpipev", 4, 10)
    assert row_text(schedule, 3).startswith("3F0 4F0 3F1 4F1 3F2 4F2 3F3 4F3 3F4 4BW0 4F4&3BW0 3F5&4BW1")
    assert schedule.rank_of(0, 4) == 3 and schedule.rank_of(0, 7) == 0


# --- registry and constraint errors --------------------------------------------------------------

def test_registry_lists_every_schedule() -> None:
    assert set(SCHEDULES) == {"gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2", "zb-v", "dualpipe", "dualpipev"}


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="unknown name 'pipedream'.*1f1b.*zb-v"):
        generate("pipedream", 4, 8)


@pytest.mark.parametrize("name, p, m, v, pattern", [
    ("interleaved", 4, 6, 2, r"multiple of the pipeline size \(got m=6, p=4\)"),
    ("interleaved", 4, 2, 2, r"num_microbatches >= p \(got m=2, p=4\)"),
    ("interleaved", 1, 4, 2, r"at least 2 pipeline ranks"),
    ("interleaved", 4, 8, 0, r"number of chunks >= 1"),
    ("dualpipe", 3, 12, None, r"even number of ranks"),
    ("dualpipe", 4, 9, None, r"num_microbatches even and >= 2\*ranks"),
    ("dualpipe", 4, 6, None, r"num_microbatches even and >= 2\*ranks"),
    ("dualpipev", 4, 7, None, r"dualpipev needs num_microbatches >= 2\*ranks"),
    ("zb-h2", 4, 6, None, r"num_microbatches >= 2\*p-1"),
    ("1f1b", 0, 4, None, r"num_ranks: 1f1b needs an integer >= 1"),
    ("gpipe", 2, 0, None, r"num_microbatches: gpipe needs an integer >= 1"),
    ("1f1b", 4, 8, 2, r"exactly 1 model chunk"),
    ("zb-v", 4, 8, 3, r"exactly 2 model chunk"),
])
def test_constraint_violations_raise_config_error(name: str, p: int, m: int, v: int | None, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        generate(name, p, m, v)


@pytest.mark.parametrize("group, m, pattern", [
    (3, 8, r"p <= microbatch_group_size <= m"),
    (9, 8, r"p <= microbatch_group_size <= m"),
    (6, 8, r"m % N to be 0 or >= p"),
])
def test_interleaved_group_size_rules(group: int, m: int, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        generate("interleaved", 4, m, 2, microbatch_group_size=group)


def test_interleaved_accepts_remainder_of_at_least_p() -> None:
    validate(generate("interleaved", 2, 5, 2, microbatch_group_size=3))  # 5 % 3 = 2 >= p


def test_edge_sizes_are_valid() -> None:
    for schedule in (generate("1f1b", 1, 3), generate("zb-v", 1, 1), generate("dualpipev", 1, 2),
                     generate("dualpipe", 2, 4), generate("zb-h2", 1, 1)):
        validate(schedule)


# --- validator -------------------------------------------------------------------------------

def with_rows(schedule: Schedule, rows: list[list]) -> Schedule:
    return dataclasses.replace(schedule, steps=tuple(tuple(r) for r in rows))


def rows_list(schedule: Schedule) -> list[list]:
    return [list(r) for r in schedule.steps]


def test_validator_reports_op_on_wrong_rank_with_grid() -> None:
    base = generate("1f1b", 2, 2)
    rows = rows_list(base)
    rows[0][0] = Action("F", 1, 0)
    with pytest.raises(ConfigError, match=r"runs 1F0, but stage 1 of path 0 belongs to rank 1") as err:
        validate(with_rows(base, rows))
    assert "[1F0]" in str(err.value)


def test_validator_reports_duplicates_and_missing_ops() -> None:
    base = generate("zb-h1", 2, 2)
    rows = rows_list(base)
    rows[1].append(Action("W", 1, 1))
    with pytest.raises(ConfigError, match=r"W of \(path, stage, microbatch\) \(0, 1, 1\) appears 2 times"):
        validate(with_rows(base, rows))
    rows = rows_list(base)
    rows[0].remove(Action("W", 0, 1))
    with pytest.raises(ConfigError, match=r"stage 0 microbatch 1 \(rank 0\) needs one F and one BW or B\+W, has 1 F, 1 B"):
        validate(with_rows(base, rows))


def test_validator_reports_backward_before_forward_and_w_before_b() -> None:
    base = generate("zb-h1", 2, 2)
    rows = rows_list(base)
    rows[1][0], rows[1][1] = rows[1][1], rows[1][0]  # 1B0 before 1F0
    with pytest.raises(ConfigError, match=r"rank 1 step 0 runs 1B0 before F"):
        validate(with_rows(base, rows))
    rows = rows_list(base)
    i = rows[0].index(Action("W", 0, 0))
    rows[0].insert(0, rows[0].pop(i))
    with pytest.raises(ConfigError, match=r"runs 0W0 before B"):
        validate(with_rows(base, rows))


def test_validator_reports_out_of_order_microbatches() -> None:
    base = generate("1f1b", 3, 4)
    rows = rows_list(base)
    rows[1][0], rows[1][1] = rows[1][1], rows[1][0]
    with pytest.raises(ConfigError, match=r"F of microbatch 0 on stage 1 after microbatch 1") as err:
        validate(with_rows(base, rows))
    assert "[1F0]" in str(err.value)


def test_validator_reports_deadlock_and_marks_stuck_steps() -> None:
    bad = from_text("rank 0: 0F0 0BW0 0F1 0BW1\nrank 1: 1F0 1F1 1BW0 1BW1\n")
    with pytest.raises(ConfigError, match=r"deadlock") as err:
        validate(bad)
    text = str(err.value)
    assert "[0BW0]" in text and "[1F1]" in text
    assert "rank 1 step 1 (1F1) waits for 0F1" in text


def test_validator_reports_out_of_range_microbatch() -> None:
    base = generate("1f1b", 2, 2)
    rows = rows_list(base)
    rows[0].append(Action("F", 0, 5))
    with pytest.raises(ConfigError, match=r"has microbatch 5, but the schedule has only 2"):
        validate(with_rows(base, rows))


# --- dependency rules ------------------------------------------------------------------------

def test_cross_deps_1f1b() -> None:
    s = generate("1f1b", 4, 4)
    assert cross_deps(s, Action("F", 0, 2)) == []
    (dep,) = cross_deps(s, Action("F", 2, 3))
    assert dep.action == Action("F", 1, 3) and dep.crosses_ranks
    last = cross_deps(s, Action("BW", 3, 1))
    assert [(d.action, d.crosses_ranks) for d in last] == [(Action("F", 3, 1), False)]
    mid = cross_deps(s, Action("BW", 1, 1))
    assert [(d.action, d.crosses_ranks) for d in mid] == [(Action("F", 1, 1), False), (Action("BW", 2, 1), True)]


def test_cross_deps_use_the_schedules_backward_kind_and_w_needs_b() -> None:
    s = generate("zb-h1", 3, 3)
    deps = cross_deps(s, Action("B", 0, 2))
    assert [d.action for d in deps] == [Action("F", 0, 2), Action("B", 1, 2)]
    (w_dep,) = cross_deps(s, Action("W", 1, 0))
    assert w_dep.action == Action("B", 1, 0) and not w_dep.crosses_ranks


def test_cross_deps_v_shape_turn_stays_on_rank() -> None:
    s = generate("zb-v", 4, 8)
    (dep,) = cross_deps(s, Action("F", 4, 0))
    assert dep.action == Action("F", 3, 0) and not dep.crosses_ranks  # stages 3 and 4 live on rank 3
    b = cross_deps(s, Action("B", 6, 0))
    assert [(d.action.stage, d.crosses_ranks) for d in b] == [(6, False), (7, True)]


def test_cross_deps_dualpipe_second_path_runs_backwards_over_ranks() -> None:
    s = generate("dualpipe", 4, 8)
    assert s.rank_of(1, 0) == 3 and s.rank_of(1, 3) == 0
    (dep,) = cross_deps(s, Action("F", 1, 0, path=1))
    assert dep.action == Action("F", 0, 0, path=1) and dep.crosses_ranks


# --- dry run ---------------------------------------------------------------------------------

def test_dry_run_exact_times_with_comm() -> None:
    result = dry_run(generate("1f1b", 2, 1), t_f=1.0, t_b=1.5, t_w=0.5, comm=0.25)
    assert result.step_times == (((0.0, 1.0), (4.5, 6.5)), ((1.25, 2.25), (2.25, 4.25)))
    assert result.makespan == 6.5
    assert result.busy == (3.0, 3.0)
    assert result.span == (6.5, 3.0)
    assert result.idle == (3.5, 3.5)


def test_dry_run_overlap_costs_t_fb_and_finishes_both() -> None:
    schedule = generate("dualpipe", 2, 4)
    plain = dry_run(schedule, 1.0, 1.0, 1.0)
    overlapped = dry_run(schedule, 1.0, 1.0, 1.0, t_fb=2.0)
    pairs = sum(isinstance(step, Overlap) for step in schedule.steps[0])
    assert pairs > 0
    assert plain.busy[0] - overlapped.busy[0] == pytest.approx(pairs * 1.0)
    assert plain.busy[0] == pytest.approx(4 * (1.0 + 2.0))  # N (F + B_full) per rank


def test_dry_run_figures_1f1b_uniform() -> None:
    p, m = 4, 8
    result = dry_run(generate("1f1b", p, m), 1.0, 1.0, 1.0)
    assert result.makespan == (m + p - 1) * 3
    assert result.bubble_fraction_ideal == pytest.approx((p - 1) / m)
    assert result.bubble_fraction_total == pytest.approx((p - 1) / (m + p - 1))
    assert result.peak_activations == (4, 3, 2, 1)


def test_dry_run_single_rank_has_no_bubble() -> None:
    result = dry_run(generate("1f1b", 1, 5), 1.0, 2.0, 0.5)
    assert result.makespan == pytest.approx(5 * 3.5)
    assert result.idle == (0.0,)
    assert result.bubble_fraction_ideal == 0.0


def test_dry_run_raises_deadlock_listing_stuck_steps() -> None:
    bad = from_text("rank 0: 0F0 0BW0 0F1 0BW1\nrank 1: 1F0 1F1 1BW0 1BW1\n")
    with pytest.raises(DeadlockError, match=r"rank 0 step 1 \(0BW0\) waits for 1BW0"):
        dry_run(bad, 1.0, 1.0, 1.0)


@pytest.mark.parametrize("costs", [(-1.0, 1.0, 1.0), (1.0, float("nan"), 1.0), (1.0, 1.0, float("inf"))])
def test_dry_run_rejects_bad_costs(costs: tuple[float, float, float]) -> None:
    with pytest.raises(ConfigError, match="op cost must be a finite number >= 0"):
        dry_run(generate("1f1b", 2, 2), *costs)


def test_dualpipe_readme_figure_bubbles() -> None:
    # DeepSeek README figures: F = B = W = 1, F&B = 3 -> 6 idle cells
    assert max(dry_run(generate("dualpipe", 8, 20), 1, 1, 1, t_fb=3).idle) == pytest.approx(6)
    assert max(dry_run(generate("dualpipev", 4, 10), 1, 1, 1, t_fb=3).idle) == pytest.approx(6)


def test_zb_h1_reference_example_p8_m24() -> None:
    result = dry_run(generate("zb-h1", 8, 24), 1.0, 1.2, 0.6)
    assert max(result.span) - 24 * 2.8 == pytest.approx(11.2)


def test_zb_v_handcrafted_bubble_with_unequal_costs() -> None:
    result = dry_run(generate("zb-v", 4, 8), 1.0, 1.2, 0.6)
    assert max(result.span) - 2 * 8 * 2.8 == pytest.approx(3.6)


# --- grid and text ---------------------------------------------------------------------------

def test_render_grid_steps_and_time() -> None:
    schedule = generate("1f1b", 2, 2)
    steps = render_grid(schedule)
    assert steps.splitlines()[1].split() == ["rank", "0", "|", "0F0", "0F1", "0BW0", "0BW1"]
    timed = render_grid(schedule, dry_run(schedule, 1, 1, 1)).splitlines()
    assert timed[0].split() == ["0", "1", "2", "3", "4", "5", "6", "7", "8"]
    assert timed[2].split() == ["rank", "1", "|", ".", "1F0", "1BW0", "-", "1F1", "1BW1", "-", ".", "."]


def test_render_grid_wraps_to_width() -> None:
    text = render_grid(generate("1f1b", 2, 16), width=60)
    assert max(len(line) for line in text.splitlines()) <= 60
    assert text.count("rank 0 |") > 1


def test_text_tokens_and_header_free_parsing() -> None:
    schedule = from_text("rank 0: 0F0 1F0@1&0BW3\nrank 1: 2W1 0BW0\n", layout="dual")
    assert schedule.steps[0][1] == Overlap(Action("F", 1, 0, 1), Action("BW", 0, 3))
    assert (schedule.num_paths, schedule.num_microbatches, schedule.num_chunks) == (2, 8, 2)


@pytest.mark.parametrize("text, pattern", [
    ("rank 0: 0X0\n", "bad action '0X0'"),
    ("rank 1: 0F0\n", "start line 0 with 'rank 0:'"),
    ("rank 0: 0F0&0B0&0W0\n", "exactly two actions"),
    ("rank 0: 0B0&0F0\n", "forward then a backward"),
    ("# nonsense\nrank 0: 0F0\n", "bad header"),
])
def test_text_parse_errors(text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        from_text(text)
