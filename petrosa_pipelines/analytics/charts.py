"""Charts for the Dagster UI: readable PNGs inside markdown metadata, plus a one-line summary.

Why: people read a volatility curve or a liquidity heatmap faster than a table. The UI renders
``MetadataValue.md``, and markdown can carry a ``data:image/png;base64`` image (the UI's
sanitiser allows ``data:`` image sources), so no extra storage is needed.

Where it shows (Dagster 1.13's UI, ``ui-core/src/metadata/MetadataEntry.tsx`` in
https://github.com/dagster-io/dagster): a markdown entry shorter than 1,000 characters is
rendered inline in the asset's metadata tables (latest materialisation, partition view); a
longer one, like any PNG, sits behind "[Show Markdown]" in a dialog titled with the entry's key.
So every chart comes as two entries: ``summary`` (the title and the key figures, under 1,000
characters, rendered inline) and ``chart: <what is plotted>`` (the figure; its key is the
dialog's title).

Figures are 960 x 420 px at 100 dpi with 11-13 pt text, titled with instrument, date and what is
plotted, with axis labels and units; the correlation matrix uses a diverging colour scale centred
on 0 over [-1, 1] with a colour bar. They use matplotlib's object API (``Figure``), not pyplot, so
no global state leaks between runs or threads. Without matplotlib (``available()`` is False) a
chart falls back to a markdown table of the same data, so assets never fail for want of a plot.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd

FIGSIZE = (9.6, 4.2)  # inches: 960 x 420 px at DPI
DPI = 100
FONT = 11
TITLE_FONT = 13
#: the UI renders markdown inline only below this many characters (MetadataEntry.tsx)
INLINE_MD_LIMIT = 1000
_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "USD", "BTC", "ETH")


def available() -> bool:
    """True when matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


@dataclass(frozen=True)
class ChartContext:
    """What a chart is about: the partition's UTC day and instrument (None: all instruments).

    ``symbol`` is the venue's symbol (its units: base and quote asset); ``instrument`` the id
    the label shows (``bybit-linear:BTCUSDT``: the same symbol trades on several venues)."""

    day: dt.date
    symbol: str | None = None
    instrument: str | None = None

    @property
    def label(self) -> str:
        name = self.instrument or self.symbol
        return f"{name} {self.day}" if name else f"{self.day}, all instruments"

    @property
    def quote(self) -> str:
        """Quote asset (price unit), e.g. USDT for BTCUSDT."""
        return next((q for q in _QUOTES if self.symbol and self.symbol.endswith(q)), "quote")

    @property
    def base(self) -> str:
        """Base asset (quantity unit), e.g. BTC for BTCUSDT."""
        q = self.quote
        return self.symbol[: -len(q)] if self.symbol and q != "quote" else "base"


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    return fig, fig.subplots()


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=TITLE_FONT)
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.tick_params(labelsize=FONT - 1)
    ax.grid(True, alpha=0.3)


def _utc_naive(x: Sequence | pd.Index | pd.Series) -> np.ndarray | list:
    """Datetimes as naive UTC ``datetime64`` (what matplotlib plots); other values unchanged."""
    s = pd.Series(list(x))
    if pd.api.types.is_datetime64_any_dtype(s) or (
        len(s) and isinstance(s.iloc[0], pd.Timestamp | dt.datetime)
    ):
        return pd.to_datetime(s, utc=True).dt.tz_convert(None).to_numpy()
    return list(x)


def _time_axis(ax) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=12)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))


def png_markdown(fig, title: str) -> dg.MetadataValue:
    """The figure as a PNG inside markdown (the whole figure, laid out tightly)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


def png_size(md: dg.MetadataValue) -> tuple[int, int]:
    """(width, height) in pixels of the PNG inside a chart's markdown (from its IHDR chunk)."""
    png = base64.b64decode(str(md.value).split("base64,", 1)[1].rstrip(")"))
    if not png.startswith(b"\x89PNG"):
        raise ValueError("not a PNG chart")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _fmt(value: object) -> str:
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else f"{value:.6g}"
    return str(value)


def table_preview(frame: pd.DataFrame, title: str, max_rows: int = 12) -> dg.MetadataValue:
    """Markdown table of the first and last rows (the fallback chart)."""
    head = (
        frame
        if len(frame) <= max_rows
        else pd.concat([frame.head(max_rows // 2), frame.tail(max_rows - max_rows // 2)])
    )
    cols = [str(c) for c in head.columns]
    lines = [
        f"**{title}** ({len(frame)} rows)",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for row in head.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def summary(title: str, facts: Sequence[str]) -> dg.MetadataValue:
    """The inline entry: the chart's title in bold and its key figures, cut to render inline."""
    text = f"**{title}**" + ("  \n" + " · ".join(facts) if facts else "")
    if len(text) >= INLINE_MD_LIMIT:
        text = text[: INLINE_MD_LIMIT - 2] + "…"
    return dg.MetadataValue.md(text)


def line_figure(
    x: Sequence | pd.Index | pd.Series,
    series: Mapping[str, Sequence],
    title: str,
    ylabel: str,
    xlabel: str = "time (UTC)",
):
    """One line per named series against x (times are drawn as HH:MM UTC)."""
    fig, ax = _figure()
    xs = _utc_naive(x)
    for name, values in series.items():
        ax.plot(xs, np.asarray(list(values), dtype="float64"), label=name, linewidth=1.2)
    _style(ax, title, xlabel, ylabel)
    if isinstance(xs, np.ndarray) and np.issubdtype(xs.dtype, np.datetime64):
        _time_axis(ax)
    if len(series) > 1:
        ax.legend(fontsize=FONT - 1)
    return fig


def line_chart(
    x: Sequence | pd.Index | pd.Series,
    series: Mapping[str, Sequence],
    title: str,
    ylabel: str = "",
    xlabel: str = "time (UTC)",
) -> dg.MetadataValue:
    """:func:`line_figure` as markdown (a table without matplotlib)."""
    if not available():
        return table_preview(pd.DataFrame({"x": list(x), **series}), title)
    return png_markdown(line_figure(x, series, title, ylabel, xlabel), title)


def bar_figure(
    labels: Sequence,
    values: Sequence,
    title: str,
    ylabel: str,
    xlabel: str,
    horizontal: bool = False,
):
    """Bars (e.g. a volume profile or a seasonality profile); ``ylabel``/``xlabel`` as drawn."""
    fig, ax = _figure()
    pos = np.arange(len(values))
    (ax.barh if horizontal else ax.bar)(pos, list(values))
    ticks = [str(v) for v in labels]
    step = max(1, len(ticks) // (16 if horizontal else 24))
    (ax.set_yticks if horizontal else ax.set_xticks)(pos[::step], ticks[::step])
    _style(ax, title, xlabel, ylabel)
    return fig


def bar_chart(
    labels: Sequence,
    values: Sequence,
    title: str,
    ylabel: str = "",
    horizontal: bool = False,
    xlabel: str = "",
) -> dg.MetadataValue:
    """:func:`bar_figure` as markdown (a table without matplotlib)."""
    if not available():
        return table_preview(pd.DataFrame({"label": list(labels), "value": list(values)}), title)
    return png_markdown(bar_figure(labels, values, title, ylabel, xlabel, horizontal), title)


def heatmap_figure(
    frame: pd.DataFrame,
    x: str,
    y: str,
    value: str,
    title: str,
    xlabel: str,
    ylabel: str,
    colorbar_label: str,
):
    """Colour grid of ``value`` (summed) over x (columns) and y (rows) on real axes: times as
    HH:MM UTC, numbers as numbers, with a colour bar."""
    grid = frame.pivot_table(index=y, columns=x, values=value, aggfunc="sum").sort_index()
    fig, ax = _figure()
    cols = _utc_naive(grid.columns)
    timed = isinstance(cols, np.ndarray) and np.issubdtype(cols.dtype, np.datetime64)
    xs = _edges(np.asarray(cols)) if timed else np.arange(len(grid.columns) + 1) - 0.5
    ys = _edges(grid.index.to_numpy(dtype="float64"))
    mesh = ax.pcolormesh(xs, ys, np.ma.masked_invalid(grid.to_numpy()), cmap="viridis")
    bar = fig.colorbar(mesh, ax=ax)
    bar.set_label(colorbar_label, fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT - 1)
    _style(ax, title, xlabel, ylabel)
    ax.grid(False)
    if timed:
        _time_axis(ax)
    else:
        ax.set_xticks(np.arange(len(grid.columns)), [str(c) for c in grid.columns])
    return fig


def _edges(centers: np.ndarray) -> np.ndarray:
    """Cell edges around sorted left edges (the last cell as wide as the one before it)."""
    if len(centers) == 1:
        step = np.timedelta64(5, "m") if centers.dtype.kind == "M" else 1.0
        return np.array([centers[0], centers[0] + step])
    return np.concatenate([centers, [centers[-1] + (centers[-1] - centers[-2])]])


def heatmap_chart(
    frame: pd.DataFrame,
    x: str,
    y: str,
    value: str,
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    colorbar_label: str = "",
) -> dg.MetadataValue:
    """:func:`heatmap_figure` as markdown (a table without matplotlib)."""
    if not available():
        grid = frame.pivot_table(index=y, columns=x, values=value, aggfunc="sum").sort_index()
        return table_preview(grid.reset_index(), title)
    fig = heatmap_figure(frame, x, y, value, title, xlabel, ylabel, colorbar_label)
    return png_markdown(fig, title)


def correlation_figure(matrix: pd.DataFrame, title: str):
    """A correlation matrix on a diverging scale centred at 0 over [-1, 1], values written in
    each cell, with a colour bar (so 0.005 is white, not the darkest colour)."""
    fig, ax = _figure()
    values = matrix.to_numpy(dtype="float64")
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    names = [str(c) for c in matrix.columns]
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")  # ids are long
    ax.set_yticks(np.arange(len(matrix.index)), [str(i) for i in matrix.index])
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            colour = "white" if abs(v) > 0.6 else "black"
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=FONT, color=colour)
    bar = fig.colorbar(image, ax=ax, ticks=[-1, -0.5, 0, 0.5, 1])
    bar.set_label("Pearson correlation of 1m log returns", fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT - 1)
    _style(ax, title, "instrument (venue:symbol)", "instrument (venue:symbol)")
    ax.grid(False)
    return fig


def correlation_chart(matrix: pd.DataFrame, title: str) -> dg.MetadataValue:
    """:func:`correlation_figure` as markdown (a table without matplotlib)."""
    if not available():
        return table_preview(matrix.reset_index(), title)
    return png_markdown(correlation_figure(matrix, title), title)
