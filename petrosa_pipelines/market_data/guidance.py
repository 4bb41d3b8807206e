"""What a market-data materialisation tells a user who launched it from the UI.

The backfill dialog cannot warn that depth has no history, and "Add a partition" accepts any
text. So the run says it: a depth partition that cannot hold data says why in its metadata
(the same judgement the checks use, ``checks/applicability.py``), and a partition of an
unknown or malformed instrument is refused before any source is asked
(``partitions.check_instrument``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import dagster as dg

from petrosa_pipelines.market_data.partitions import instrument_problem


def refuse_unknown_instrument(symbol: str, allow_list: tuple[str, ...] | list[str]) -> None:
    """Fail the run (no retries: the same symbol fails again) when ``symbol`` is not accepted;
    the message names the symbol and what to do."""
    problem = instrument_problem(symbol, allow_list)
    if problem:
        raise dg.Failure(
            description=f"refused to materialise: {problem}",
            metadata={"symbol": symbol, "allow_list": dg.MetadataValue.json(sorted(allow_list))},
            allow_retries=False,
        )


def depth_history_metadata(
    day: dt.date,
    symbol: str,
    start_ms: int,
    end_ms: int,
    rows: int,
    ingest_started_ms: int | None,
    book_history: bool = False,
) -> dict[str, Any]:
    """Metadata of a depth materialisation: whether history exists, and how much the ingest
    landed.

    ``book_history``: the venue publishes order-book history files (``Capabilities
    .depth_history``, Bybit), which the fill replays: the day is backfillable and judged like
    any dataset with history. Otherwise ``landed_coverage`` is ``none`` (no rows), ``partial``
    (the ingest started during the day) or ``landed``; ``not_applicable`` carries the reason
    when the day ended before the ingest ever landed anything, i.e. no book data for it can
    exist anywhere.
    """
    from petrosa_pipelines.checks.applicability import history_applicability

    if book_history:
        return {"history_available": True, "backfillable": True}
    app = history_applicability("depth", start_ms, end_ms, rows, ingest_started_ms)
    meta: dict[str, Any] = {"history_available": False, "backfillable": False}
    if rows == 0:
        meta["landed_coverage"] = "none"
    elif app.from_ms is not None:
        meta["landed_coverage"] = "partial"
    else:
        meta["landed_coverage"] = "landed"
    if not app.applicable:
        meta["not_applicable"] = app.reason
        meta["note"] = (
            "No order-book history exists on the exchange's REST API or archives, so depth of "
            f"{symbol} on {day.isoformat()} cannot be backfilled: this partition is empty by "
            f"necessity ({app.reason.removeprefix('not applicable: ')}); re-materialising it "
            "stays empty."
        )
    elif rows == 0:
        meta["note"] = (
            "No order-book history exists on the exchange's REST API or archives: this "
            "partition holds only what the websocket ingest landed, and nothing landed for "
            f"{symbol} on {day.isoformat()}."
        )
    elif app.from_ms is not None:
        meta["note"] = f"Depth {app.reason}: before that the ingest was not running."
    return meta


def depth_metadata(landing: Any, exchange: str, window: Any, rows: int) -> dict[str, Any]:
    """``depth_history_metadata`` of a partition window, with the ingest's start read from the
    landing zone (``landing`` is the run's ``LandingPort``, or None)."""
    from petrosa_pipelines.checks.applicability import ingest_started_ms
    from petrosa_pipelines.market_data.sources import has_book_archive, venue_capabilities

    history = has_book_archive(venue_capabilities(exchange))
    started = ingest_started_ms(landing.path(), exchange) if landing is not None else None
    return depth_history_metadata(
        window.day, window.symbol, window.start_ms, window.end_ms, rows, started, history
    )


__all__ = ["depth_history_metadata", "depth_metadata", "refuse_unknown_instrument"]
