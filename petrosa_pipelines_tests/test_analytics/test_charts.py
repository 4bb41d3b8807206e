"""Charts render as a PNG in markdown, or as a table preview when matplotlib is missing."""

from __future__ import annotations

import base64

import pandas as pd
import pytest

from petrosa_pipelines.analytics import charts

FRAME = pd.DataFrame(
    {
        "t": pd.date_range("2024-01-01", periods=4, freq="5min", tz="UTC"),
        "p": [1.0, 2.0, 1.0, 2.0],
        "q": [3.0, 1.0, 2.0, float("nan")],
    }
)


@pytest.mark.skipif(not charts.available(), reason="matplotlib not installed")
def test_png_charts_are_small_base64_images():
    for md in (
        charts.line_chart(FRAME["t"], {"q": FRAME["q"]}, "q"),
        charts.bar_chart(["a", "b"], [1, 2], "bars"),
        charts.heatmap_chart(FRAME, "t", "p", "q", "heat"),
    ):
        head, data = md.value.split("base64,", 1)
        assert head.startswith("![") and data.endswith(")")
        png = base64.b64decode(data[:-1])
        assert png.startswith(b"\x89PNG") and len(png) < 60_000


def test_without_matplotlib_every_chart_is_a_table(monkeypatch):
    monkeypatch.setattr(charts, "available", lambda: False)
    md = charts.line_chart(FRAME["t"], {"q": FRAME["q"]}, "q").value
    assert md.startswith("**q** (4 rows)") and "| x | q |" in md and "| 3 |" in md
    assert "| value |" in charts.bar_chart(["a"], [1.5], "bars").value
    assert "heat" in charts.heatmap_chart(FRAME, "t", "p", "q", "heat").value
    long = charts.table_preview(pd.DataFrame({"a": range(100)}), "long", max_rows=4).value
    assert long.count("\n| ") == 5  # header + 2 head + 2 tail rows
