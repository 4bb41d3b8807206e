"""Charts a person can read at a glance: titled, labelled with units, 960 x 420 px, legible text;
the correlation matrix on a diverging scale centred at 0 with a colour bar. A PNG in markdown,
or a table preview when matplotlib is missing."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from petrosa_pipelines.analytics import charts, correlation
from petrosa_pipelines.analytics.charts import ChartContext

FRAME = pd.DataFrame(
    {
        "t": pd.date_range("2024-01-01", periods=4, freq="5min", tz="UTC"),
        "p": [1.0, 2.0, 1.0, 2.0],
        "q": [3.0, 1.0, 2.0, float("nan")],
    }
)
TITLE = "BTCUSDT 2024-01-01: quoted spread per minute"


def _texts(fig) -> list:
    """Every piece of text on the figure: titles, axis labels, tick labels, colour bars."""
    out = []
    for ax in fig.axes:
        out += [ax.title, ax.xaxis.label, ax.yaxis.label]
        out += ax.get_xticklabels() + ax.get_yticklabels() + list(ax.texts)
    return [t for t in out if t.get_text()]


def _assert_readable(fig, title: str, xlabel: str, ylabel: str) -> None:
    ax = fig.axes[0]
    assert ax.get_title() == title
    assert ax.get_xlabel() == xlabel and ax.get_ylabel() == ylabel
    assert tuple(fig.get_size_inches() * fig.dpi) == (960, 420)
    assert min(t.get_fontsize() for t in _texts(fig)) >= 10


def test_line_chart_is_titled_labelled_legible_and_960_by_420():
    fig = charts.line_figure(FRAME["t"], {"q": FRAME["q"]}, TITLE, "quoted spread (bps)")
    _assert_readable(fig, TITLE, "time (UTC)", "quoted spread (bps)")
    # times read as UTC clock times, not epoch numbers or a 1970 axis
    fig.canvas.draw()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert ticks and all(len(t) == 5 and t[2] == ":" for t in ticks), ticks
    md = charts.line_chart(FRAME["t"], {"q": FRAME["q"]}, TITLE, "quoted spread (bps)")
    assert md.value.startswith(f"![{TITLE}](data:image/png;base64,")
    assert charts.png_size(md) == (960, 420)


def test_bar_and_heatmap_charts_have_units_and_a_colour_bar():
    fig = charts.bar_figure(["a", "b"], [1, 2], "bars", "volume (BTC)", "price (USDT)", True)
    _assert_readable(fig, "bars", "price (USDT)", "volume (BTC)")
    heat = charts.heatmap_figure(
        FRAME, "t", "p", "q", "heat", "time (UTC)", "price bucket (USDT)", "quantity (BTC)"
    )
    _assert_readable(heat, "heat", "time (UTC)", "price bucket (USDT)")
    assert len(heat.axes) == 2 and heat.axes[1].get_ylabel() == "quantity (BTC)"  # colour bar
    assert charts.png_size(charts.heatmap_chart(FRAME, "t", "p", "q", "heat")) == (960, 420)


def test_correlation_is_diverging_centred_at_zero_with_a_colour_bar():
    pairs = pd.DataFrame(
        {"symbol_a": ["BTCUSDT", "BTCUSDT"], "symbol_b": ["ETHUSDT", "SOLUSDT"],
         "correlation": [0.005, -0.8]}
    )  # fmt: skip
    m = correlation.matrix(pairs)
    fig = charts.correlation_figure(m, "2024-01-01, all instruments: correlation")
    axis = "instrument (venue:symbol)"
    _assert_readable(fig, "2024-01-01, all instruments: correlation", axis, axis)
    # bare symbols of older rows are Binance USD-M's: the matrix names instruments
    assert list(m.columns) == [f"binance-usdm:{s}" for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")]
    image = fig.axes[0].images[0]
    assert image.norm.vmin == -1 and image.norm.vmax == 1
    assert len(fig.axes) == 2 and "correlation" in fig.axes[1].get_ylabel()
    # 0.005 is (almost) white, the diagonal and -0.8 saturated at opposite ends
    near_zero = np.array(image.cmap(image.norm(0.005))[:3])
    assert near_zero.min() > 0.9, near_zero
    red, blue = image.cmap(image.norm(1.0)), image.cmap(image.norm(-0.8))
    assert red[0] > red[2] and blue[2] > blue[0]
    # every cell carries its value
    assert {t.get_text() for t in fig.axes[0].texts} >= {"0.01", "-0.80", "1.00"}


def test_chart_context_names_instrument_date_and_units():
    ctx = ChartContext(dt.date(2024, 1, 1), "BTCUSDT")
    assert (ctx.label, ctx.base, ctx.quote) == ("BTCUSDT 2024-01-01", "BTC", "USDT")
    assert ChartContext(dt.date(2024, 1, 1)).label == "2024-01-01, all instruments"
    ctx = ChartContext(dt.date(2024, 1, 1), "BTCUSDT", "bybit-linear:BTCUSDT")
    assert (ctx.label, ctx.base, ctx.quote) == ("bybit-linear:BTCUSDT 2024-01-01", "BTC", "USDT")


def test_summary_stays_short_enough_to_render_inline():
    md = charts.summary(TITLE, ["x" * 50] * 40).value
    assert md.startswith(f"**{TITLE}**") and len(md) < charts.INLINE_MD_LIMIT


def test_without_matplotlib_every_chart_is_a_table(monkeypatch):
    monkeypatch.setattr(charts, "available", lambda: False)
    md = charts.line_chart(FRAME["t"], {"q": FRAME["q"]}, "q").value
    assert md.startswith("**q** (4 rows)") and "| x | q |" in md and "| 3 |" in md
    assert "| value |" in charts.bar_chart(["a"], [1.5], "bars").value
    assert "heat" in charts.heatmap_chart(FRAME, "t", "p", "q", "heat").value
    long = charts.table_preview(pd.DataFrame({"a": range(100)}), "long", max_rows=4).value
    assert long.count("\n| ") == 5  # header + 2 head + 2 tail rows
