"""The utilisation chart's per-stream-name bars when every GPU has the same busy fraction."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

from moesim.plots.charts import MAX_STREAM_BARS, _stream_bars  # noqa: E402
from moesim.plots.style import new_figure  # noqa: E402


def test_equal_fractions_on_many_gpus_draw_without_negative_error_bars() -> None:
    # 0.7 x 64: numpy's mean is 0.7 + 1.1e-16, so max - mean was negative and matplotlib refused it
    streams = [SimpleNamespace(resource=f"gpu{r} {s}", stream=s, fraction=0.7, rank=r)
               for r in range(64) for s in ("compute", "comm")]
    assert len(streams) > MAX_STREAM_BARS
    ax = new_figure(6, 4).add_subplot(1, 1, 1)
    _stream_bars(ax, SimpleNamespace(streams=streams))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["comm (x64)", "compute (x64)"]
