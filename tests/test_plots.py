"""PNG plots: files written under fixed names, deterministic bytes, downsampling, input checks."""
from __future__ import annotations

from pathlib import Path

import pytest

from moesim.engine.recorder import Recorder
from moesim.errors import ConfigError
from moesim.plots import plot_expert_load, plot_timeline, plot_utilization, write_plots
from moesim.plots.charts import expert_load_array
from moesim.plots.style import category_color
from moesim.plots.timeline import downsample, time_unit
from moesim.trace.synthetic import synthetic_recorder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_MAGIC) and len(data) > 2000


def test_write_plots_uses_fixed_names(tmp_path: Path) -> None:
    written = write_plots(synthetic_recorder(1, 4, 40), tmp_path, expert_loads=[5, 10, 3, 40])
    assert {k: p.name for k, p in written.items()} == {
        "timeline": "timeline.png", "utilization": "utilization.png", "expert_load": "expert_load.png"}
    assert all(_is_png(p) for p in written.values())


def test_same_input_same_png(tmp_path: Path) -> None:
    rec = synthetic_recorder(2, 3, 30)
    a = plot_timeline(rec, tmp_path / "a.png").read_bytes()
    b = plot_timeline(synthetic_recorder(2, 3, 30), tmp_path / "b.png").read_bytes()
    assert a == b


def test_utilization_plot_handles_many_streams_and_no_links(tmp_path: Path) -> None:
    assert _is_png(plot_utilization(synthetic_recorder(3, 24, 120), tmp_path / "many.png"))
    assert _is_png(plot_utilization(Recorder(), tmp_path / "empty.png"))


def test_timeline_downsamples_to_the_cap(tmp_path: Path) -> None:
    boxes = {"forward": [(0, 0, 10), (0, 11, 20), (0, 100, 200)], "send": [(1, 0, 5)]}
    assert downsample(boxes, 2000, 10) is boxes
    assert downsample(boxes, 2000, 3) == {"forward": [(0, 0, 20), (0, 100, 200)], "send": [(1, 0, 5)]}
    assert downsample(boxes, 2000, 1) == {"forward": [(0, 100, 200)]}
    assert _is_png(plot_timeline(synthetic_recorder(4, 4, 200), tmp_path / "small.png", max_spans=25))


def test_time_unit_and_colors_are_fixed() -> None:
    assert [time_unit(ns)[0] for ns in (5_000, 50_000, 50_000_000)] == ["ns", "us", "ms"]
    assert category_color("forward") == "#4C72B0"
    assert category_color("mystery") == category_color("mystery")


def test_expert_load_inputs(tmp_path: Path) -> None:
    assert expert_load_array({0: 3, 2: 5}).tolist() == [3.0, 0.0, 5.0]
    assert _is_png(plot_expert_load({0: 3, 2: 5}, tmp_path / "load.png"))
    for bad in ([], [1, -2], {-1: 4}):
        with pytest.raises(ConfigError, match="loads"):
            expert_load_array(bad)
