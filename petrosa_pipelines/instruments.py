"""Instrument identity: an instrument is (venue, symbol), written ``<venue>:<SYMBOL>``.

A venue is an exchange and market (``binance-usdm``, ``bybit-linear``, later ``okx-swap``), so
Binance ``BTCUSDT`` and Bybit ``BTCUSDT`` are different instruments: ``binance-usdm:BTCUSDT``
and ``bybit-linear:BTCUSDT``. This module is the one owner of how instrument ids, partition
keys (``YYYY-MM-DD|<instrument>``), market-data asset keys and the dataset list are built and
parsed; everything else calls it instead of formatting strings.

Keys written before venues existed hold a bare Binance USD-M symbol (``2024-05-01|BTCUSDT``).
They keep working: a bare symbol reads as ``LEGACY_VENUE`` (the migration in
``tooling/migrate.py`` renames such partitions without rebuilding anything). Symbols are
validated by their venue's adapter (``ExchangeAdapter.symbol_pattern``), not by one regex.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import cache

from petrosa_pipelines.exchanges import EXCHANGES, adapter_class
from petrosa_pipelines.exchanges.base import Dataset

#: the venue of a bare symbol (every key written before venues had ids was Binance USD-M)
LEGACY_VENUE = "binance-usdm"
#: separates venue and symbol in an instrument id
VENUE_SEP = ":"
#: separates day and instrument in a partition key (Dagster's multi-partition separator)
KEY_SEP = "|"
#: the four curated datasets, in pipeline order: the one tuple every layer iterates
DATASETS: tuple[str, ...] = tuple(d.value for d in Dataset)
#: the asset-key prefix of the curated datasets (``market_data/<dataset>``)
MARKET_DATA = "market_data"


class InstrumentError(ValueError):
    """An instrument id that is malformed, of an unknown venue, or not the venue's symbol form."""


@dataclass(frozen=True, order=True)
class Instrument:
    """One tradable instrument on one venue."""

    venue: str
    symbol: str

    def __str__(self) -> str:
        return f"{self.venue}{VENUE_SEP}{self.symbol}"

    @property
    def id(self) -> str:
        return str(self)

    @property
    def exchange(self) -> str:
        """The venue's directory in the lake, landing zone and warehouse (its records' exchange)."""
        return storage_name(self.venue)


@cache
def storage_name(venue: str) -> str:
    """The lake/landing/warehouse name of a venue (Binance USD-M keeps its historic ``binance``)."""
    return adapter_class(venue).name


def venues() -> list[str]:
    """Every registered venue id."""
    return sorted(EXCHANGES)


def parse_instrument(text: str, default_venue: str = LEGACY_VENUE) -> Instrument:
    """``venue:SYMBOL`` (or a bare symbol, read on ``default_venue``) as an ``Instrument``.

    The venue may be given by id or storage name (``binance`` -> ``binance-usdm``). Raises
    ``InstrumentError`` saying what is wrong and what would be right.
    """
    if not isinstance(text, str) or not text.strip():
        raise InstrumentError(f"instrument {text!r} is empty: expected '<venue>:<SYMBOL>'")
    venue_text, sep, symbol = text.strip().rpartition(VENUE_SEP)
    if not sep:
        venue_text = default_venue
    try:
        cls = adapter_class(venue_text.lower())
    except ValueError:
        raise InstrumentError(
            f"instrument {text!r} names unknown venue {venue_text!r}; venues: {venues()}"
        ) from None
    if not cls.symbol_pattern.fullmatch(symbol):
        hint = (
            f" (did you mean {cls.venue}{VENUE_SEP}{symbol.upper()}?)"
            if cls.symbol_pattern.fullmatch(symbol.upper())
            else ""
        )
        raise InstrumentError(
            f"instrument {text!r}: {symbol!r} is not a {cls.venue} symbol "
            f"(pattern {cls.symbol_pattern.pattern}){hint}"
        )
    return Instrument(cls.venue, symbol)


def instrument_id(text: str | Instrument, default_venue: str = LEGACY_VENUE) -> str:
    """The canonical id of an instrument given as an id, a bare symbol or an ``Instrument``."""
    if isinstance(text, Instrument):
        return text.id
    return parse_instrument(text, default_venue).id


def is_legacy_key(text: str) -> bool:
    """True for a bare symbol written before instruments carried their venue."""
    return VENUE_SEP not in text


def partition_key_str(day: dt.date | str, instrument: str | Instrument) -> str:
    """``YYYY-MM-DD|<instrument id>`` (the market-data multi-partition key as text)."""
    date = day if isinstance(day, str) else day.isoformat()
    inst = instrument.id if isinstance(instrument, Instrument) else instrument
    return f"{date}{KEY_SEP}{inst}"


def split_key(key: str) -> tuple[dt.date, str]:
    """(day, instrument text exactly as in the key) of ``YYYY-MM-DD|<instrument>``."""
    date, sep, inst = str(key).partition(KEY_SEP)
    if not sep or not inst:
        raise ValueError(f"partition key {key!r} is not 'YYYY-MM-DD|<venue>:<SYMBOL>'")
    return dt.date.fromisoformat(date), inst


def market_data_path(dataset: str) -> list[str]:
    """The asset-key path of a curated dataset (``["market_data", dataset]``)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; datasets: {list(DATASETS)}")
    return [MARKET_DATA, dataset]


#: ``PETROSA_SYMBOLS`` entry that stands for every trading perpetual (of a venue: ``<venue>:*``)
WILDCARD = "*"


def normalise_symbol(venue: str, symbol: str) -> str:
    """``symbol`` as ``venue`` spells it: as given when it fits the venue's pattern, else
    upper-cased when that fits (``btcusdt`` -> ``BTCUSDT``, what settings always accepted);
    venue ids are never upper-cased, only the symbol part is touched."""
    pattern = adapter_class(venue).symbol_pattern
    if pattern.fullmatch(symbol):
        return symbol
    return symbol.upper() if pattern.fullmatch(symbol.upper()) else symbol


def parse_entry(text: str, default_venue: str = LEGACY_VENUE) -> tuple[str, str | None]:
    """(venue id, symbol or None for the wildcard) of one allow-list entry.

    Accepts ``<venue>:<SYMBOL>``, ``<venue>:*``, a bare symbol or ``*`` (both on
    ``default_venue``); the venue by id or storage name, in any case; raises
    ``InstrumentError``.
    """
    raw = str(text).strip()
    venue_text, sep, symbol = raw.rpartition(VENUE_SEP)
    venue_text = venue_text.strip().lower() if sep else default_venue
    try:
        venue = adapter_class(venue_text).venue
    except ValueError:
        raise InstrumentError(
            f"instrument {raw!r} names unknown venue {venue_text!r}; venues: {venues()}"
        ) from None
    symbol = symbol.strip()
    if symbol == WILDCARD:
        return venue, None
    return venue, parse_instrument(f"{venue}{VENUE_SEP}{normalise_symbol(venue, symbol)}").symbol


def parse_partition_key(key: str) -> tuple[dt.date, Instrument]:
    """(day, instrument) of a market-data partition key; a bare symbol reads as ``LEGACY_VENUE``.

    ``2024-05-01|BTCUSDT`` and ``2024-05-01|binance-usdm:BTCUSDT`` give the same instrument:
    keys written before venues existed read unchanged (same lake and landing files).
    """
    day, inst = split_key(key)
    return day, parse_instrument(inst)


def partition_value(instrument: Instrument | str, registered: Collection[str] = ()) -> str:
    """The ``symbol`` dimension value under which ``instrument`` is (to be) registered.

    Its id, unless only the legacy bare form is registered (an install not yet migrated with
    ``petrosa migrate-instruments``): then the bare symbol, so sensors keep requesting the
    partitions that exist instead of creating a duplicate of each.
    """
    inst = instrument if isinstance(instrument, Instrument) else parse_instrument(instrument)
    if inst.venue == LEGACY_VENUE and inst.id not in registered and inst.symbol in registered:
        return inst.symbol
    return inst.id


def by_venue(instruments: Iterable[Instrument | str]) -> dict[str, list[str]]:
    """Venue id -> sorted symbols of ``instruments`` (ids or bare symbols)."""
    out: dict[str, set[str]] = {}
    for item in instruments:
        inst = item if isinstance(item, Instrument) else parse_instrument(item)
        out.setdefault(inst.venue, set()).add(inst.symbol)
    return {v: sorted(s) for v, s in sorted(out.items())}
