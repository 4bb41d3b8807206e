"""Partitions shared by every market-data asset: a UTC day x a dynamic symbol.

Dimension names are part of every partition key (``date|symbol``, alphabetical order) and of
the lake layout: renaming them silently changes both, so they are constants.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

DATE_DIM = "date"
SYMBOL_DIM = "symbol"
SYMBOLS_PARTITIONS_NAME = "symbols"
#: first partition day; ~1,060 days x ~90 symbols stays under Dagster's 100,000 per asset
PARTITIONS_START = "2024-01-01"

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
