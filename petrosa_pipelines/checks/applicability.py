"""Whether a partition's data can exist at all: where it cannot, a check is "not applicable".

Binance serves candles, trades and funding history (REST and https://data.binance.vision), but
no order-book history: its REST API returns only the current book
(https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Order-Book),
so a depth partition holds only what the websocket ingest landed. A depth day that ended before
the ingest's first landed frame has no possible book history: a check there reports "not
applicable" with the reason (passed, so alerts stay silent) instead of failing, and the
auto-backfill sensor (``sensors/auto_backfill_sensor.py``) gives such gaps up at once for the
same reason. Freshness only means something for the open partition: a closed day is judged by
its completeness checks.

The open day (today's partition) is a snapshot of the day so far: every check judges it as of
the moment it was built (``judged_now_ms``, from the build's ``as_of_ms`` metadata written by
``market_data.fill.window_metadata``), so minutes that had not happened then (or happened
since, before the next rebuild) are never counted missing, and ``fresh`` measures whether
the build reached the data that existed at that moment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from petrosa_pipelines.checks.audit import CheckOutcome
from petrosa_pipelines.landing import layout

#: metadata ``status`` of a check that cannot judge its partition
NOT_APPLICABLE = "not_applicable"
#: datasets no exchange serves history of: only what the ingest landed exists
NO_HISTORY_DATASETS: tuple[str, ...] = ("depth",)
#: "the ingest has landed nothing yet": its start lies after every day
NOTHING_LANDED = 2**63 - 1


def no_history_datasets(venue: str) -> tuple[str, ...]:
    """The datasets of which ``venue`` (id or storage name) keeps no history anywhere: depth,
    unless the venue declares book history (``Capabilities.depth_history``, e.g. a venue that
    publishes book archives); the ``no_history`` argument of ``history_applicability``."""
    from petrosa_pipelines.exchanges import adapter_class

    return () if adapter_class(venue).capabilities.depth_history else NO_HISTORY_DATASETS


def no_history_reason(dataset: str) -> str:
    """Why a gap in ``dataset`` can never be refilled (the auto-backfill sensor's words too)."""
    return f"no history exists for {dataset}"


@dataclass(frozen=True)
class Applicability:
    """Whether one partition can be judged, why not, and from when (ms) if only partly."""

    applicable: bool
    reason: str = ""
    #: the judged window starts here: later than the day's start when the ingest began that day
    from_ms: int | None = None


def _minute(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%MZ")


def history_applicability(
    dataset: str,
    start_ms: int,
    end_ms: int,
    rows: int,
    ingest_started_ms: int | None,
    no_history: tuple[str, ...] = NO_HISTORY_DATASETS,
) -> Applicability:
    """Can data of ``dataset`` exist in [start_ms, end_ms)?

    ``ingest_started_ms`` is the receipt time of the first frame the ingest ever landed
    (``NOTHING_LANDED`` when none; None when unknown, which judges as today). Only datasets
    without history depend on it. Rows present are always judged (a replayed day lands after
    its own end); an empty day that ended before the ingest started is not applicable; a day
    the ingest started in is judged from that moment on.
    """
    if dataset not in no_history or ingest_started_ms is None:
        return Applicability(True)
    if start_ms < ingest_started_ms < end_ms:
        return Applicability(True, f"judged from {_minute(ingest_started_ms)}", ingest_started_ms)
    if rows > 0 or ingest_started_ms <= start_ms:
        return Applicability(True)
    if ingest_started_ms == NOTHING_LANDED:
        why = f"not applicable: no {dataset} history exists and the ingest has landed nothing yet"
    else:
        started = dt.datetime.fromtimestamp(ingest_started_ms / 1000, tz=dt.UTC).date()
        why = (
            f"not applicable: no book history exists before the ingest started "
            f"{started.isoformat()}"
        )
    return Applicability(False, why)


def freshness_applicability(end_ms: int, now_ms: int) -> Applicability:
    """Freshness judges only the open partition; a closed day is for the completeness checks."""
    if now_ms >= end_ms:
        return Applicability(
            False,
            f"not applicable: the day closed at {_minute(end_ms)}; freshness judges only the open "
            "partition (completeness checks judge closed days)",
        )
    return Applicability(True)


def as_of_from_metadata(metadata: Mapping[str, Any] | None) -> int | None:
    """The ``as_of_ms`` a build recorded (a Dagster metadata value or a plain number), or None
    for a build from before builds recorded it (then the checks judge against now, as before)."""
    if not metadata or "as_of_ms" not in metadata:
        return None
    value = metadata["as_of_ms"]
    value = getattr(value, "value", value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def judged_now_ms(now_ms: int, as_of_ms: int | None) -> int:
    """The "now" a partition is judged at: the moment it was built, when known and earlier.

    A closed day built after its end is judged as before (its ``as_of_ms`` is the day's end);
    an open day built at 12:00 and audited at 12:05 is judged at 12:00, not failed for the
    five minutes its snapshot cannot hold.
    """
    return now_ms if as_of_ms is None else min(now_ms, as_of_ms)


def open_day_note(end_ms: int, judged_ms: int) -> str:
    """Words for a partition judged before its day ended ("" for a closed day)."""
    if judged_ms >= end_ms:
        return ""
    return f"open day, judged as of {_minute(judged_ms)} (the day so far)"


def not_applicable(o: CheckOutcome, reason: str) -> CheckOutcome:
    """``o`` as a passed "not applicable" outcome carrying ``reason`` (left out of health)."""
    return replace(o, passed=True, offending=0, examples=[], not_applicable=reason)


def ingest_started_ms(root: str | Path | None, exchange: str) -> int | None:
    """Receipt time of the oldest closed segment any ingest group landed for ``exchange``.

    Segment names start with their first line's receipt time (``landing/layout.py``), so only
    the oldest day and hour directory of each group is listed. ``NOTHING_LANDED`` when nothing
    landed; None when there is no landing root to ask.
    """
    if root is None:
        return None
    base = Path(root)
    first = NOTHING_LANDED
    for group in layout.data_groups(base, exchange):
        gdir = layout.group_dir(base, exchange, group)
        days = sorted(p for p in gdir.iterdir() if p.is_dir() and p.name[0].isdigit())
        for day in days:
            for hour in sorted(p for p in day.iterdir() if p.is_dir()):
                segments = layout.closed_segments_in(hour)
                if segments:
                    first = min(first, segments[0][0].first_recv_ms)
                    break
            else:
                continue
            break
    return first
