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
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

from petrosa_pipelines.checks.audit import CheckOutcome
from petrosa_pipelines.landing import layout

#: metadata ``status`` of a check that cannot judge its partition
NOT_APPLICABLE = "not_applicable"
#: datasets no exchange serves history of: only what the ingest landed exists
NO_HISTORY_DATASETS: tuple[str, ...] = ("depth",)
#: "the ingest has landed nothing yet": its start lies after every day
NOTHING_LANDED = 2**63 - 1


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
