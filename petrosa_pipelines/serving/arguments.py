"""Checking the arguments of the Python API and the launch helpers: instruments and date ranges.

Instruments are given as ids (``bybit-linear:BTCUSDT``) or bare symbols (of Binance USD-M, or
the caller's default venue), checked by their venue's symbol form
(``petrosa_pipelines.instruments``).

One owner for both (``api`` reads, ``serving/launch`` starts materialisations): every bad value
raises an error naming the argument, and junk never becomes a partition.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from petrosa_pipelines.instruments import (
    LEGACY_VENUE,
    Instrument,
    InstrumentError,
    parse_entry,
)

_EXPECTED = (
    "pass an instrument id, a symbol or a list of them "
    "(e.g. ['binance-usdm:BTCUSDT'] or ['BTCUSDT'])"
)
#: the longest range one call may ask for (about ten years of days); Binance USD-M history
#: starts in 2019, and an open-ended range (0001..9999) would walk 3.6 million days
MAX_RANGE_DAYS = 3660


class DataError(ValueError):
    """Base of the API's errors: each message says what was asked and what exists."""


class UnknownSymbolError(DataError):
    pass


class InvalidRangeError(DataError):
    pass


def to_utc(value: dt.datetime | dt.date | str | pd.Timestamp, name: str) -> dt.datetime:
    """A timezone-aware UTC datetime; naive datetimes are refused (which zone did you mean?).

    Every bad value raises ``InvalidRangeError`` naming the argument (``start=...``).
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                value = dt.date.fromisoformat(text)
            else:
                value = pd.Timestamp(text)
        except (ValueError, OverflowError) as exc:
            raise InvalidRangeError(
                f"{name}={value!r} is not an ISO date or datetime ({exc})"
            ) from None
    if value is pd.NaT or (isinstance(value, float) and value != value):
        raise InvalidRangeError(f"{name}={value!r} is not a date or datetime")
    if isinstance(value, dt.datetime):  # includes pd.Timestamp
        if value.tzinfo is None:
            raise InvalidRangeError(
                f"{name}={value!r} is naive; pass a timezone-aware datetime (e.g. tzinfo=UTC)"
            )
        try:
            return pd.Timestamp(value).tz_convert("UTC").to_pydatetime()
        except (ValueError, OverflowError) as exc:
            raise InvalidRangeError(f"{name}={value!r} is out of range ({exc})") from None
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    raise InvalidRangeError(f"{name}={value!r} is not a date or datetime")


def checked_range(start: Any, end: Any) -> tuple[dt.datetime, dt.datetime]:
    lo, hi = to_utc(start, "start"), to_utc(end, "end")
    if hi <= lo:
        raise InvalidRangeError(f"end {hi.isoformat()} is not after start {lo.isoformat()}")
    if hi - lo > dt.timedelta(days=MAX_RANGE_DAYS):
        raise InvalidRangeError(
            f"[start, end) = [{lo.date()}, {hi.date()}) spans {(hi - lo).days} days, more than "
            f"the {MAX_RANGE_DAYS} one call may read; split the range"
        )
    return lo, hi


def days_between(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """UTC days overlapping [start, end)."""
    last = (end - dt.timedelta(microseconds=1)).date()
    return [d.date() for d in pd.date_range(start.date(), last, freq="D")]


def instruments_of(
    symbols: str | Iterable[str], default_venue: str = LEGACY_VENUE
) -> list[Instrument]:
    """``symbols`` (instrument ids or bare symbols of ``default_venue``, any case) as distinct
    ``Instrument``s, in the order given, checked for form by their venue (not for existence).

    Anything else (None, bytes, a number, ``"../x"``, an unknown venue) is an
    ``UnknownSymbolError`` naming ``symbols``.
    """
    if isinstance(symbols, str):
        wanted: list[Any] = [symbols]
    elif symbols is None or isinstance(symbols, bytes | bytearray | Mapping):
        raise UnknownSymbolError(f"symbols={symbols!r}: {_EXPECTED}")
    else:
        try:
            wanted = list(symbols)
        except TypeError:
            raise UnknownSymbolError(f"symbols={symbols!r}: {_EXPECTED}") from None
    if not wanted:
        raise UnknownSymbolError("symbols is empty: no symbols given")
    out = []
    for s in wanted:
        if not isinstance(s, str):
            raise UnknownSymbolError(f"symbols: {s!r} is not a symbol ({_EXPECTED})")
        try:
            venue, symbol = parse_entry(s, default_venue)
        except InstrumentError as exc:
            raise UnknownSymbolError(f"symbols: {s!r} is not a symbol ({exc})") from None
        if symbol is None:
            raise UnknownSymbolError(f"symbols: {s!r} is a wildcard; name the instruments")
        out.append(Instrument(venue, symbol))
    return list(dict.fromkeys(out))


def symbol_names(symbols: str | Iterable[str], default_venue: str = LEGACY_VENUE) -> list[str]:
    """``symbols`` as distinct canonical instrument ids (``btcusdt`` ->
    ``binance-usdm:BTCUSDT``): what partition keys and the ``symbols`` partitions hold."""
    return [i.id for i in instruments_of(symbols, default_venue)]
