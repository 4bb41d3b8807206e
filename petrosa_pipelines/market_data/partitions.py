"""Partitions shared by every market-data asset: a UTC day x a dynamic symbol.

Dimension names are part of every partition key (``date|symbol``, alphabetical order) and of
the lake layout: renaming them silently changes both, so they are constants.

The first day is the ``PETROSA_START_DATE`` setting, read once when the definitions load (a
partitions definition is fixed for the life of a code location): this module is its only
owner, and everything else imports ``PARTITIONS_START`` from here. The number of partitions
per asset is days since the start x symbols; docs/scale.md gives the limit (100,000 per asset).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence

import dagster as dg

DATE_DIM = "date"
SYMBOL_DIM = "symbol"
SYMBOLS_PARTITIONS_NAME = "symbols"
START_DATE_SETTING = "PETROSA_START_DATE"


def partitions_start(environ: Mapping[str, str] | None = None, today: dt.date | None = None) -> str:
    """First partition day, ``YYYY-MM-DD``: ``PETROSA_START_DATE``, else the settings' default.

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


#: first partition day (``PETROSA_START_DATE``, default 2024-01-01)
PARTITIONS_START = partitions_start()

symbols_partitions = dg.DynamicPartitionsDefinition(name=SYMBOLS_PARTITIONS_NAME)
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
daily_symbol_partitions = dg.MultiPartitionsDefinition(
    {DATE_DIM: daily_partitions, SYMBOL_DIM: symbols_partitions}
)


def partition_key(day: dt.date | str, symbol: str) -> dg.MultiPartitionKey:
    """The multi-partition key of one symbol-day."""
    date = day if isinstance(day, str) else day.isoformat()
    return dg.MultiPartitionKey({DATE_DIM: date, SYMBOL_DIM: symbol})


def split_partition_key(key: str) -> tuple[dt.date, str]:
    """(day, symbol) of a ``date|symbol`` key."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dt.date.fromisoformat(dims[DATE_DIM]), dims[SYMBOL_DIM]
    date, _, symbol = key.partition("|")
    if not symbol:
        raise ValueError(f"partition key {key!r} is not 'YYYY-MM-DD|SYMBOL'")
    return dt.date.fromisoformat(date), symbol


class UnknownInstrumentError(ValueError):
    """A partition's symbol that is malformed or outside the ``PETROSA_SYMBOLS`` allow-list."""


def instrument_problem(symbol: str, allow_list: Sequence[str]) -> str | None:
    """Why ``symbol`` must not be materialised (None: it may).

    The UI's "Add a partition" accepts any text, bypassing the allow-list that the symbols
    sensor keeps the partitions in step with (sensors/symbols_sensor.py). A symbol is accepted
    when it has the venue's form (``settings.SYMBOL_PATTERN``: A-Z and 0-9, 2-30 characters)
    and, unless the allow-list is ``*`` (empty: every trading perpetual), is on the list.
    """
    from petrosa_pipelines.settings import SYMBOL_PATTERN

    allowed = sorted({s.upper() for s in allow_list})
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.fullmatch(symbol):
        hint = (
            f" (did you mean {symbol.upper()!r}?)"
            if isinstance(symbol, str) and SYMBOL_PATTERN.fullmatch(symbol.upper())
            else ""
        )
        return (
            f"instrument {symbol!r} is malformed{hint}: a symbol is 2-30 characters A-Z and 0-9, "
            "e.g. BTCUSDT. Delete this partition from the `symbols` partitions "
            "(Dagster UI: the asset's Partitions tab) and add the venue's symbol."
        )
    if allowed and symbol not in allowed:
        return (
            f"instrument {symbol!r} is not in the PETROSA_SYMBOLS allow-list {allowed}: add it "
            "to PETROSA_SYMBOLS (and restart the code location) to collect it, or delete this "
            "partition from the `symbols` partitions."
        )
    return None


def check_instrument(symbol: str, allow_list: Sequence[str]) -> None:
    """Raise ``UnknownInstrumentError`` (its message names the symbol) unless it is accepted."""
    problem = instrument_problem(symbol, allow_list)
    if problem:
        raise UnknownInstrumentError(problem)
