"""argparse ``type=`` checkers for the command lines (``petrosa``, the local exchange).

argparse turns an ``ArgumentTypeError`` into ``argument --port: -1 is not between 0 and
65535`` plus the usage and exit status 2, so a bad value names its option and never ends in a
traceback (https://docs.python.org/3/library/argparse.html#type).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
from collections.abc import Callable

_SYMBOL = re.compile(r"[A-Z0-9]{2,30}")


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi] (no upper bound when ``hi`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{value} is not {bound}")
        return value

    return parse


def float_in(
    lo: float, hi: float | None = None, *, lo_open: bool = False
) -> Callable[[str], float]:
    """A finite number in [lo, hi] (``(lo, hi]`` with ``lo_open``); nan and inf refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = value <= lo if lo_open else value < lo
        if not math.isfinite(value) or too_low or (hi is not None and value > hi):
            low = f"> {lo:g}" if lo_open else f">= {lo:g}"
            bound = f"{low} and <= {hi:g}" if hi is not None else low
            raise argparse.ArgumentTypeError(f"{text} is not a finite number {bound}")
        return value

    return parse


def iso_date(text: str) -> str:
    """A ``YYYY-MM-DD`` date, returned as given."""
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None
    return text


def iso_time(text: str) -> str:
    """An ISO 8601 date or time (``2024-01-03T00:00:00Z``), returned as given."""
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time (UTC)") from None
    return text


def symbol_list(text: str) -> tuple[str, ...]:
    """Comma-separated venue symbols, upper-cased; symbols name files and directories, so
    nothing but A-Z and 0-9 (``../../etc`` is refused)."""
    symbols = tuple(dict.fromkeys(s.strip().upper() for s in text.split(",") if s.strip()))
    if not symbols:
        raise argparse.ArgumentTypeError(f"{text!r} holds no symbol")
    for sym in symbols:
        if not _SYMBOL.fullmatch(sym):
            raise argparse.ArgumentTypeError(f"{sym!r} is not a symbol (A-Z, 0-9, e.g. BTCUSDT)")
    return symbols


def instrument_list(text: str) -> tuple[str, ...]:
    """Comma-separated instruments: ids (``bybit-linear:BTCUSDT``, ``binance:ethusdt`` gives
    ``binance-usdm:ETHUSDT``) or bare symbols, kept bare (upper-cased) for the caller to place
    (a backfill reads them as Binance USD-M, the demo on every venue). Every symbol is checked
    against its venue's pattern (``petrosa_pipelines.instruments``): ``../../etc`` is refused."""
    from petrosa_pipelines.instruments import VENUE_SEP, InstrumentError, parse_entry

    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            venue, symbol = parse_entry(part)
        except InstrumentError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if symbol is None:
            raise argparse.ArgumentTypeError(f"{part!r}: name instruments, not a wildcard")
        out.append(f"{venue}{VENUE_SEP}{symbol}" if VENUE_SEP in part else symbol)
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} holds no instrument")
    return tuple(dict.fromkeys(out))


__all__ = ["float_in", "instrument_list", "int_in", "iso_date", "iso_time", "symbol_list"]
