"""Small charts for the Dagster UI: a PNG inside markdown metadata, or a table preview.

Why: people read a volatility curve or a liquidity heatmap faster than a table. The UI renders
``MetadataValue.md``, and markdown can carry a ``data:image/png;base64`` image, so no extra
storage is needed. matplotlib is optional: without it (``available()`` is False) every chart
falls back to a markdown table of the same data, so assets never fail for want of a plot.
Figures use matplotlib's object API (``Figure``), not pyplot, so no global state leaks between
runs or threads; they are kept small (about 480x190 px, a few tens of kB).
"""

from __future__ import annotations

import base64
import importlib.util
import io
from collections.abc import Mapping, Sequence

import dagster as dg
import numpy as np
import pandas as pd

FIGSIZE = (6.0, 2.4)
DPI = 80


def available() -> bool:
    """True when matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    return fig, fig.subplots()


def _png_markdown(fig, title: str) -> dg.MetadataValue:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


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


def line_chart(
    x: Sequence | pd.Index, series: Mapping[str, Sequence], title: str, ylabel: str = ""
) -> dg.MetadataValue:
    """One line per named series against x."""
    if not available():
        return table_preview(pd.DataFrame({"x": list(x), **series}), title)
    fig, ax = _figure()
    for name, values in series.items():
        ax.plot(list(x), list(values), label=name, linewidth=1)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return _png_markdown(fig, title)


def bar_chart(
    labels: Sequence, values: Sequence, title: str, ylabel: str = "", horizontal: bool = False
) -> dg.MetadataValue:
    """Bars (e.g. a volume profile or a seasonality profile)."""
    if not available():
        return table_preview(pd.DataFrame({"label": list(labels), "value": list(values)}), title)
    fig, ax = _figure()
    pos = np.arange(len(values))
    (ax.barh if horizontal else ax.bar)(pos, list(values))
    ticks = [str(v) for v in labels]
    step = max(1, len(ticks) // 12)
    (ax.set_yticks if horizontal else ax.set_xticks)(pos[::step], ticks[::step], fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    return _png_markdown(fig, title)


def heatmap_chart(frame: pd.DataFrame, x: str, y: str, value: str, title: str) -> dg.MetadataValue:
    """Colour grid of ``value`` over x (columns) and y (rows), e.g. resting liquidity."""
    grid = frame.pivot_table(index=y, columns=x, values=value, aggfunc="sum").sort_index()
    if not available():
        return table_preview(grid.reset_index(), title)
    fig, ax = _figure()
    ax.imshow(
        grid.to_numpy(), aspect="auto", origin="lower", cmap="viridis", interpolation="nearest"
    )
    ax.set_title(title, fontsize=9)
    ys = [_fmt(v) for v in grid.index]
    step = max(1, len(ys) // 6)
    ax.set_yticks(np.arange(len(ys))[::step], ys[::step], fontsize=7)
    xs = [str(v)[11:16] if isinstance(v, pd.Timestamp) else str(v) for v in grid.columns]
    xstep = max(1, len(xs) // 8)
    ax.set_xticks(np.arange(len(xs))[::xstep], xs[::xstep], fontsize=7)
    return _png_markdown(fig, title)
