"""The health grid: day x symbol x dataset at a glance, the failing check named in each cell.

Dagster's Partitions tab colours a partition by its materialisation only (an empty depth day
with three failed checks is green there), so ``checks/health`` carries this grid over the
recent materialised partitions: as a table (``MetadataValue.table`` renders inline in the
asset's metadata, unlike markdown over 1,000 characters, which hides behind "[Show
Markdown]"; see dagster-io/dagster ``js_modules/dagster-ui/packages/ui-core/src/metadata/
MetadataEntry.tsx``) and as a PNG heatmap drawn like ``analytics/charts.py`` (matplotlib's
object API, PNG inside markdown). Pure functions: records in, cells and pictures out.

Today's row is the open day (``market_data.partitions``): its label says "open" and its cells
"so far", since its checks judge the day up to its latest build, not a finished day.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from petrosa_pipelines.instruments import KEY_SEP, split_key
from petrosa_pipelines.market_data.partitions import is_open_day

#: marks of a cell, worst first
FAILING, WARNING, OK, NOT_APPLICABLE, NOT_AUDITED, NOT_BUILT = "❌", "⚠️", "✅", "➖", "…", "—"
LEGEND = (
    f"{OK} health at or above the threshold, every check passes; {WARNING} a check fails, "
    f"health still at or above the threshold; {FAILING} health below the threshold; "
    f"{NOT_APPLICABLE} not applicable (the data cannot exist); {NOT_AUDITED} built, not "
    f"audited yet; {NOT_BUILT} not materialised; a day marked (open) is today, judged as the "
    "day so far"
)
#: appended to the label of the open day's rows and the text of its cells
OPEN_LABEL, OPEN_CELL = " (open)", " (so far)"


def day_label(day: str, today: dt.date | None = None) -> str:
    """``day`` as a row label: today's (the open day, ``today`` None: the clock's) marked."""
    return day + (OPEN_LABEL if is_open_day(day, _now(today)) else "")


def _now(today: dt.date | None) -> dt.datetime | None:
    return None if today is None else dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Cell:
    """One dataset of one symbol-day: its mark, score (NaN when none) and text."""

    mark: str
    score: float
    text: str
    #: the first failing check (or "health" when only the score fails), for the heatmap
    failing: str = ""


def cell(record: Mapping[str, Any] | None, built: bool, min_score: float) -> Cell:
    """The cell of one dataset-partition from its latest ``health`` check metadata.

    ``record`` holds ``score``, ``status``, ``reason`` and ``failed_checks`` as the health
    check writes them (``checks/health.py``); None when the partition was never audited.
    """
    if record is None:
        return (
            Cell(NOT_AUDITED, np.nan, f"{NOT_AUDITED} not audited")
            if built
            else Cell(NOT_BUILT, np.nan, NOT_BUILT)
        )
    failed = [str(c) for c in record.get("failed_checks") or []]
    reason = str(record.get("reason") or "")
    if record.get("status") == "not_applicable" or record.get("score") is None:
        why = reason.removeprefix("not applicable: ") or "not applicable"
        return Cell(NOT_APPLICABLE, np.nan, f"{NOT_APPLICABLE} n/a: {why}")
    score = float(record["score"])
    if score < min_score:
        named = ", ".join(failed) if failed else f"health ({reason})"
        return Cell(
            FAILING, score, f"{FAILING} {score:g} {named}", failed[0] if failed else "health"
        )
    if failed:
        return Cell(WARNING, score, f"{WARNING} {score:g} {', '.join(failed)}", failed[0])
    return Cell(OK, score, f"{OK} {score:g}")


def health_grid(
    records: Mapping[tuple[str, str, str], Mapping[str, Any]],
    built: set[tuple[str, str, str]],
    rows: Sequence[tuple[str, str]],
    datasets: Sequence[str],
    min_score: float,
    today: dt.date | None = None,
) -> dict[tuple[str, str], dict[str, Cell]]:
    """Cells per (day, symbol) row and dataset; the open day's (``today``, None: the clock's)
    built cells say "so far".

    ``records`` and ``built`` are keyed (day, symbol, dataset): the latest health metadata and
    the materialised partitions.
    """
    out = {}
    for day, sym in rows:
        is_open = is_open_day(day, _now(today))
        cells = {}
        for ds in datasets:
            c = cell(records.get((day, sym, ds)), (day, sym, ds) in built, min_score)
            if is_open and c.mark != NOT_BUILT:
                c = Cell(c.mark, c.score, c.text + OPEN_CELL, c.failing)
            cells[ds] = c
        out[(day, sym)] = cells
    return out


def grid_frame(
    grid: Mapping[tuple[str, str], Mapping[str, Cell]], today: dt.date | None = None
) -> pd.DataFrame:
    """The grid as text: one row per symbol-day (the open day's labelled), one column per
    dataset."""
    out = [
        {"day": day_label(day, today), "symbol": sym, **{ds: c.text for ds, c in cells.items()}}
        for (day, sym), cells in grid.items()
    ]
    return pd.DataFrame(out)


def grid_markdown(grid: Mapping[tuple[str, str], Mapping[str, Cell]]) -> str:
    """The grid as a markdown table with its legend (for docs and the heatmap's fallback)."""
    frame = grid_frame(grid)
    if frame.empty:
        return "No materialised market-data partition yet."
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
    return "\n".join([*lines, "", LEGEND])


def recent_rows(partitions: Sequence[str], days: int, max_rows: int) -> list[tuple[str, str]]:
    """(day, instrument) of the ``days`` most recent days among ``YYYY-MM-DD|<instrument>``
    keys (the instrument as in the key: an id, or a legacy bare symbol), newest day first,
    instruments in order, at most ``max_rows``."""
    pairs = {_pair(pk) for pk in partitions if KEY_SEP in str(pk)}
    recent = sorted({d for d, _ in pairs}, reverse=True)[:days]
    keep = set(recent)
    rows = sorted((p for p in pairs if p[0] in keep), key=lambda p: (-_ordinal(p[0]), p[1]))
    return rows[:max_rows]  # type: ignore[return-value]


def _pair(key: str) -> tuple[str, str]:
    day, inst = split_key(str(key))
    return day.isoformat(), inst


def _ordinal(day: str) -> int:
    return int(day.replace("-", ""))


def heatmap_png(
    grid: Mapping[tuple[str, str], Mapping[str, Cell]],
    min_score: float,
    title: str,
    today: dt.date | None = None,
) -> bytes | None:
    """A PNG heatmap of the scores (red 0 to green 100, grey n/a), each cell annotated with
    its score and failing check; None without matplotlib or rows."""
    if not grid or importlib.util.find_spec("matplotlib") is None:
        return None
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    labels = [f"{day_label(d, today)} {s}" for d, s in grid]
    datasets = list(next(iter(grid.values())))
    scores = np.array([[c.score for c in cells.values()] for cells in grid.values()], float)
    fig = Figure(figsize=(1.9 * len(datasets) + 2.4, 0.42 * len(labels) + 1.3), dpi=100)
    ax = fig.subplots()
    cmap = ListedColormap(["#c0392b", "#e67e22", "#f1c40f", "#27ae60"]).with_extremes(bad="#d5d8dc")
    bounds = np.array([0.0, min_score / 2, min_score, min_score + (100 - min_score) / 2, 100.0])
    binned = np.digitize(np.nan_to_num(scores, nan=-1), bounds[1:-1]).astype(float)
    binned[np.isnan(scores)] = np.nan
    image = ax.imshow(binned, cmap=cmap, vmin=-0.5, vmax=3.5, aspect="auto")
    for i, cells in enumerate(grid.values()):
        for j, c in enumerate(cells.values()):
            top = (
                "n/a"
                if c.mark == NOT_APPLICABLE
                else c.mark
                if np.isnan(c.score)
                else f"{c.score:g}"
            )
            text = top + (f"\n{c.failing}" if c.failing else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(datasets)), datasets, fontsize=9)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.xaxis.tick_top()
    ax.set_title(title, fontsize=10, pad=22)
    bar = fig.colorbar(image, ax=ax, ticks=[0, 1, 2, 3], fraction=0.04)
    edges = [f"{b:g}" for b in bounds]
    bar.ax.set_yticklabels([f"{a}-{b}" for a, b in zip(edges, edges[1:], strict=False)], fontsize=8)
    bar.set_label("health score (0-100)", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def png_markdown(png: bytes, title: str) -> str:
    """A PNG as inline markdown (what ``analytics/charts.py`` does for its charts)."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
