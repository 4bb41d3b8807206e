"""Partitions shared by every market-data asset: a UTC day x a dynamic instrument.

Dimension names are part of every partition key (``date|symbol``, alphabetical order) and of
the lake layout: renaming them silently changes both, so they are constants. The second
dimension keeps its historic name ``symbol`` (and the dynamic partitions theirs, ``symbols``),
but its values are instrument ids (``binance-usdm:BTCUSDT``, ``petrosa_pipelines.instruments``).
A bare symbol written before venues existed still reads as Binance USD-M (same files);
``petrosa migrate-instruments`` renames such partitions without rebuilding any.

Two families share the instruments (docs/scale.md, "The partition scheme", has the numbers):

- **day x instrument** for a rolling window of ``PETROSA_DAILY_WINDOW_DAYS`` days (default 56)
  ending today: what the ingest lands, the window sensor builds, the checks judge and the
  analytics read. Its first day, ``PARTITIONS_START``, is today - (window - 1), never before
  ``PETROSA_START_DATE``; a window of 0 makes every day since the start a day partition.
- **month x instrument** for the history before it (``monthly_symbol_partitions``, the
  ``market_data/history/*`` assets): the same per-day lake files, tracked and checked by month.

Both are computed once when the definitions load (a partitions definition is fixed for the life
of a code location), so the window moves when the code location reloads; until then it grows by
a day a day. This module is the only owner of both: everything else imports ``PARTITIONS_START``
(the first day partition), ``HISTORY_START`` and ``history_days`` from here. Dagster recommends
at most 100,000 partitions per asset: window x instruments, and months x instruments.

The last day is today (UTC), the open day (``end_offset=1``): the ingest keeps landing it, so it
can be browsed and built as it grows (a partial day, its metadata says so). Everything that
means "a finished day" (the window sensor, the auto-backfill, a backfill of "all") asks
``closed_day_keys``/``last_closed_day`` here, never the partitions' own last key.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence

import dagster as dg

from petrosa_pipelines.exchanges import adapter_class
from petrosa_pipelines.instruments import (
    LEGACY_VENUE,
    WILDCARD,
    Instrument,
    InstrumentError,
    instrument_id,
    is_legacy_key,
    parse_entry,
    parse_instrument,
    parse_partition_key,
)

DATE_DIM = "date"
MONTH_DIM = "month"
SYMBOL_DIM = "symbol"
SYMBOLS_PARTITIONS_NAME = "symbols"
START_DATE_SETTING = "PETROSA_START_DATE"
WINDOW_SETTING = "PETROSA_DAILY_WINDOW_DAYS"


def partitions_start(environ: Mapping[str, str] | None = None, today: dt.date | None = None) -> str:
    """First day kept, ``YYYY-MM-DD``: ``PETROSA_START_DATE``, else the settings' default.

    Only this setting is read (through ``settings.from_env``, which validates it), so a bad
    value elsewhere fails where it is used rather than every import. A start after today (UTC)
    would give assets no partitions at all, so it is refused, naming the setting.
    """
    from petrosa_pipelines.settings import SettingError, from_env

    env = os.environ if environ is None else environ
    start = from_env({k: env[k] for k in (START_DATE_SETTING,) if k in env}).start_date
    day = dt.date.fromisoformat(start)
    today = today or dt.datetime.now(tz=dt.UTC).date()
    if day > today:
        raise SettingError(
            START_DATE_SETTING, start, f"a date YYYY-MM-DD not after today ({today})"
        )
    return day.isoformat()


def daily_window_days(environ: Mapping[str, str] | None = None) -> int:
    """``PETROSA_DAILY_WINDOW_DAYS`` (validated by ``settings``; 0: no window)."""
    from petrosa_pipelines.settings import from_env

    env = os.environ if environ is None else environ
    return from_env({k: env[k] for k in (WINDOW_SETTING,) if k in env}).daily_window_days


def window_start(start: str, window_days: int, today: dt.date | None = None) -> str:
    """First day partition: ``window_days`` days ending today (UTC), never before ``start``
    (the first day kept); ``window_days`` 0: ``start`` itself."""
    first = dt.date.fromisoformat(start)
    if window_days <= 0:
        return first.isoformat()
    today = today or dt.datetime.now(tz=dt.UTC).date()
    return max(first, today - dt.timedelta(days=window_days - 1)).isoformat()


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def next_month(day: dt.date) -> dt.date:
    return (month_start(day) + dt.timedelta(days=32)).replace(day=1)


def history_months(history_start: str, daily_start: str) -> tuple[str, str]:
    """[first, end) months (``YYYY-MM-01``) holding the days before the window: empty (first ==
    end) when the window starts on the first day kept."""
    first = month_start(dt.date.fromisoformat(history_start))
    last_day = dt.date.fromisoformat(daily_start) - dt.timedelta(days=1)
    if last_day < dt.date.fromisoformat(history_start):
        return first.isoformat(), first.isoformat()
    return first.isoformat(), next_month(last_day).isoformat()


#: first day kept (``PETROSA_START_DATE``, default 2024-01-01): the first history day
HISTORY_START = partitions_start()
#: days of the rolling window (``PETROSA_DAILY_WINDOW_DAYS``, default 56; 0: no window)
DAILY_WINDOW_DAYS = daily_window_days()
#: first day partition: the start of the rolling window (``HISTORY_START`` when it reaches it)
PARTITIONS_START = window_start(HISTORY_START, DAILY_WINDOW_DAYS)

#: the daily dimension ends with today, the open day (Dagster's default stops at yesterday)
OPEN_DAY_OFFSET = 1

symbols_partitions = dg.DynamicPartitionsDefinition(name=SYMBOLS_PARTITIONS_NAME)
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=PARTITIONS_START, timezone="UTC", end_offset=OPEN_DAY_OFFSET
)
daily_symbol_partitions = dg.MultiPartitionsDefinition(
    {DATE_DIM: daily_partitions, SYMBOL_DIM: symbols_partitions}
)
_first_month, _end_month = history_months(HISTORY_START, PARTITIONS_START)
#: the months before the window (none when the window reaches the first day kept)
monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=_first_month, end_date=_end_month, timezone="UTC"
)
monthly_symbol_partitions = dg.MultiPartitionsDefinition(
    {MONTH_DIM: monthly_partitions, SYMBOL_DIM: symbols_partitions}
)


def history_days(
    month: dt.date | str, first: str = HISTORY_START, window_start_day: str = PARTITIONS_START
) -> list[dt.date]:
    """The days of ``month`` that are history: kept (from ``first``) and before the window."""
    month = month if isinstance(month, dt.date) else dt.date.fromisoformat(str(month)[:10])
    lo = max(month_start(month), dt.date.fromisoformat(first))
    hi = min(next_month(month), dt.date.fromisoformat(window_start_day))
    return [lo + dt.timedelta(days=i) for i in range((hi - lo).days)]


def is_history_day(day: dt.date | str, window_start_day: str = PARTITIONS_START) -> bool:
    """Whether ``day`` is before the window (tracked by its month, not as a day partition)."""
    day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)[:10])
    return day < dt.date.fromisoformat(window_start_day)


def utc_today(now: dt.datetime | float | None = None) -> dt.date:
    """The open day: the UTC date of ``now`` (a datetime or epoch seconds; None: the clock)."""
    if now is None:
        return dt.datetime.now(tz=dt.UTC).date()
    if isinstance(now, dt.datetime):
        return now.astimezone(dt.UTC).date()
    return dt.datetime.fromtimestamp(now, tz=dt.UTC).date()


def last_closed_day(now: dt.datetime | float | None = None) -> dt.date:
    """The newest day that has ended at ``now``: yesterday (UTC)."""
    return utc_today(now) - dt.timedelta(days=1)


def is_open_day(day: dt.date | str, now: dt.datetime | float | None = None) -> bool:
    """Whether ``day`` has not ended at ``now`` (today; a future day is not a partition)."""
    day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)[:10])
    return day >= utc_today(now)


def closed_day_keys(keys: Sequence[str], now: dt.datetime | float | None = None) -> list[str]:
    """``keys`` (``YYYY-MM-DD`` or ``YYYY-MM-DD|<instrument>``) without the open day's: what
    backfills and repairs iterate, since a day still landing is not a finished day."""
    return [k for k in keys if not is_open_day(str(k)[:10], now)]


def partition_key(day: dt.date | str, instrument: Instrument | str) -> dg.MultiPartitionKey:
    """The multi-partition key of one instrument-day: ``YYYY-MM-DD|<venue>:<SYMBOL>``.

    ``instrument``: an ``Instrument`` or an id (its venue written as the id: ``binance:BTCUSDT`` ->
    ``binance-usdm:BTCUSDT``). A bare symbol string is kept as given: it names a legacy
    partition of an install not yet migrated (``instruments.partition_value`` chooses between
    the two forms by what is registered).
    """
    date = day if isinstance(day, str) else day.isoformat()
    value = instrument.id if isinstance(instrument, Instrument) else str(instrument)
    if not is_legacy_key(value) or isinstance(instrument, Instrument):
        value = instrument_id(value)
    return dg.MultiPartitionKey({DATE_DIM: date, SYMBOL_DIM: value})


def split_partition_key(key: str) -> tuple[dt.date, Instrument]:
    """(day, instrument) of a ``date|instrument`` key.

    An ``Instrument``, not text, so callers take ``.symbol`` (what the venue's clients and the
    landing zone want), ``.exchange`` (the lake/warehouse directory) or ``.id`` without
    parsing again. A legacy bare key (``2024-05-01|BTCUSDT``) gives the same instrument as
    ``2024-05-01|binance-usdm:BTCUSDT``: both read the same lake and landing files.
    """
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dt.date.fromisoformat(dims[DATE_DIM]), parse_instrument(dims[SYMBOL_DIM])
    return parse_partition_key(key)


class UnknownInstrumentError(ValueError):
    """A partition's instrument that is malformed or outside the ``PETROSA_SYMBOLS`` allow-list."""


def _allowed(inst: Instrument, allow_list: Sequence[str], default_venue: str) -> bool:
    """Whether the allow-list (ids, bare symbols of ``default_venue``, ``<venue>:*``) names it.

    An empty list is ``*``: every trading perpetual of ``default_venue``.
    """
    if not allow_list:
        return inst.venue == adapter_class(default_venue).venue
    for entry in allow_list:
        if entry.strip() == WILDCARD:
            venue, symbol = adapter_class(default_venue).venue, None
        else:
            try:
                venue, symbol = parse_entry(entry, default_venue)
            except InstrumentError:
                continue
        if venue == inst.venue and symbol in (None, inst.symbol):
            return True
    return False


def instrument_problem(
    instrument: str | Instrument, allow_list: Sequence[str], default_venue: str = LEGACY_VENUE
) -> str | None:
    """Why ``instrument`` (a partition's ``symbol`` value) must not be materialised (None: it may).

    The UI's "Add a partition" accepts any text, bypassing the allow-list that the symbols
    sensor keeps the partitions in step with (sensors/symbols_sensor.py). An instrument is
    accepted when it has its venue's symbol form (``ExchangeAdapter.symbol_pattern``) and the
    allow-list names it, compared in canonical form: a legacy bare partition ``BTCUSDT`` is
    ``binance-usdm:BTCUSDT`` and stays accepted while that instrument is allowed.
    """
    if isinstance(instrument, Instrument):
        inst = instrument
    else:
        try:
            inst = parse_instrument(instrument)
        except InstrumentError as exc:
            return (
                f"instrument {instrument!r} is malformed ({exc}). Delete this partition from the "
                "`symbols` partitions (Dagster UI: the asset's Partitions tab) and add the "
                f"instrument as <venue>:<SYMBOL>, e.g. {LEGACY_VENUE}:BTCUSDT."
            )
    if not _allowed(inst, allow_list, default_venue):
        shown = sorted(allow_list) or [f"{adapter_class(default_venue).venue}:*"]
        return (
            f"instrument {inst.id!r} is not in the PETROSA_SYMBOLS allow-list {shown}: add it "
            "to PETROSA_SYMBOLS (and restart the code location) to collect it, or delete this "
            "partition from the `symbols` partitions."
        )
    return None


def check_instrument(
    instrument: str | Instrument, allow_list: Sequence[str], default_venue: str = LEGACY_VENUE
) -> None:
    """Raise ``UnknownInstrumentError`` (its message names the instrument) unless accepted."""
    problem = instrument_problem(instrument, allow_list, default_venue)
    if problem:
        raise UnknownInstrumentError(problem)
