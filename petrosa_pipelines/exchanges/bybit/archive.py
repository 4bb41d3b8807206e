"""Bybit's public daily archives: trades (``public.bybit.com/trading``) and order-book history.

**Trades**: ``{base}/trading/<SYM>/<SYM><YYYY-MM-DD>.csv.gz``, one gzip CSV per symbol and day
with a header row ``timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,
homeNotional,foreignNotional`` (newer files add ``RPI``). ``timestamp`` is epoch seconds with
up to four decimals (``1787356800.2296``), ``side`` the taker side, ``trdMatchID`` the trade id
(the websocket's ``i``). No checksums are published. This follows Bybit's download page
(https://www.bybit.com/derivatives/en/history-data, linked from
https://bybit-exchange.github.io/docs/v5/market/recent-trade) and the format as peer code
reads it; no real file was available to the tests (their fixture is built from it, see
``petrosa_pipelines_tests/fixtures/bybit/PROVENANCE.md``).

Rows carry no ``seq``, so by the shared contract ``agg_trade_id`` (and first/last) is 0 and
the natural key is ``trade_id`` (Bybit's ids are not consecutive). ``trade_time`` is the
timestamp floored to the millisecond, computed without float error: seconds with four
decimals are an exact integer of 0.1 ms after rounding (``rint(t * 10_000)``).

**Order book**: ``<book host>/orderbook/linear/<SYM>/<YYYY-MM-DD>_<SYM>_ob<depth>.data.zip``
(``quote-saver.bycsi.com`` live, depth 500 in older files and 200 in newer ones): one zip
member of JSON lines, CRLF, each line the websocket ``orderbook`` message (the day's 00:00
snapshot, then deltas). ``iter_book_history`` turns its lines into the same records the live
parser gives; ``daily_book_records`` returns a ``BookHistory`` that streams them from the
downloaded zip (a busy day is ~864,000 messages), which the partition fill replays through the
generic book sync and samples (``market_data.sources.BookArchiveSource``).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import logging
import random
import re
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import requests

from petrosa_pipelines.catalog import schemas
from petrosa_pipelines.exchanges.base import (
    DepthSnapshotRecord,
    DepthUpdateRecord,
    MessageError,
    Record,
    Source,
)
from petrosa_pipelines.exchanges.bybit.fastpath import BybitFastPath
from petrosa_pipelines.exchanges.bybit.schemas import (
    DECODERS,
    EXCHANGE,
    to_book,
    validation_error,
)
from petrosa_pipelines.exchanges.transport import download
from petrosa_pipelines.lib.endpoints import RestSettings

log = logging.getLogger(__name__)

#: statuses worth a retry besides 5xx: the CDN's refusals under load
RETRY_STATUSES = frozenset({403, 429})

LIVE_BASE = "https://public.bybit.com"
LIVE_BOOK_BASE = "https://quote-saver.bycsi.com"
#: book history depths, newest format first
BOOK_DEPTHS = (200, 500)
_BOOK_DECODER = DECODERS["orderbook"]
_COLUMNS = {"timestamp": pa.float64(), "symbol": pa.string(), "side": pa.string()}
_ARROW_COLUMN = re.compile(r"column #(\d+)")
_COLUMNS |= {"size": pa.float64(), "price": pa.float64(), "trdMatchID": pa.string()}


def trades_path(symbol: str, day: dt.date) -> str:
    return f"trading/{symbol}/{symbol}{day.isoformat()}.csv.gz"


def book_path(symbol: str, day: dt.date, depth: int) -> str:
    return f"orderbook/linear/{symbol}/{day.isoformat()}_{symbol}_ob{depth}.data.zip"


def seconds_to_ms(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds with up to four decimals -> ms, floored, exact (see the module docstring)."""
    tenths_of_ms = np.rint(np.asarray(seconds, dtype=np.float64) * 10_000).astype(np.int64)
    return tenths_of_ms // 10


def trades_columns(data: bytes, symbol: str) -> dict[str, np.ndarray]:
    """A (decompressed) ``trading`` CSV -> validated columns ``trade_time`` (ms), ``price``,
    ``quantity``, ``is_buyer_maker`` and ``trade_id``, in file order.

    Columns are found by header name, so the newer ``RPI`` column (and any other) is ignored.
    A row of another symbol, a side other than ``Buy``/``Sell``, an empty id or a non-positive
    price or size raise ``MessageError`` naming the column.
    """
    if not data.strip():
        empty = np.array([], dtype=np.float64)
        return {
            "trade_time": np.array([], dtype=np.int64), "price": empty, "quantity": empty,
            "is_buyer_maker": np.array([], dtype=bool), "trade_id": np.array([], dtype=object),
        }  # fmt: skip
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(",")
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise MessageError(f"header lacks {missing}", field="<csv>", raw=data[:200])
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            convert_options=pacsv.ConvertOptions(
                column_types=_COLUMNS, include_columns=list(_COLUMNS), strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        match = _ARROW_COLUMN.search(str(exc))
        index = int(match.group(1)) if match else len(header)
        field = header[index] if index < len(header) else "<csv>"
        raise MessageError(f"{symbol} trades: {exc}", field=field) from None
    cols = {name: table.column(name) for name in _COLUMNS}
    for name, col in cols.items():
        if col.null_count:
            raise MessageError(f"{col.null_count} empty values", field=name)
    ts, size, price = (cols[c].to_numpy() for c in ("timestamp", "size", "price"))
    side = cols["side"].to_numpy(zero_copy_only=False)
    ids = cols["trdMatchID"].to_numpy(zero_copy_only=False)
    symbols = cols["symbol"].to_numpy(zero_copy_only=False)
    _check(bool(np.all(symbols == symbol)), "symbol", f"rows of another symbol than {symbol}")
    _check(bool(np.all((side == "Buy") | (side == "Sell"))), "side", "not Buy/Sell")
    _check(bool(np.all(np.isfinite(price) & (price > 0))), "price", "not a positive price")
    _check(bool(np.all(np.isfinite(size) & (size > 0))), "size", "not a positive size")
    _check(bool(np.all(np.isfinite(ts) & (ts > 0))), "timestamp", "not an epoch time")
    _check(bool(np.all(pd.Series(ids, dtype=object).str.len() > 0)), "trdMatchID", "empty id")
    return {
        "trade_time": seconds_to_ms(ts),
        "price": price,
        "quantity": size,
        "is_buyer_maker": side == "Sell",
        "trade_id": ids,
    }


def parse_trades_csv(data: bytes, symbol: str) -> pd.DataFrame:
    """A (decompressed) ``trading`` CSV -> TRADES frame (source=archive, received_at null),
    sorted by trade time; ``agg_trade_id`` and first/last are 0 (no ``seq`` in the file), and
    ``trade_id`` is kept where the lake schema has the column."""
    cols = trades_columns(data, symbol)
    zeros = np.zeros(len(cols["trade_time"]), dtype=np.int64)
    frame = pd.DataFrame(
        {
            "exchange": EXCHANGE,
            "symbol": symbol,
            "agg_trade_id": zeros,
            "price": cols["price"],
            "quantity": cols["quantity"],
            "first_trade_id": zeros,
            "last_trade_id": zeros,
            "trade_time": pd.to_datetime(cols["trade_time"], unit="ms", utc=True),
            "is_buyer_maker": cols["is_buyer_maker"],
            "source": str(Source.ARCHIVE),
            "received_at": pd.NaT,
            "trade_id": cols["trade_id"],
        }
    )
    frame = frame.sort_values("trade_time", kind="stable")
    return schemas.conform(frame, schemas.TRADES)


def _check(ok: bool, field: str, reason: str) -> None:
    if not ok:
        raise MessageError(reason, field=field)


def gunzip(data: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise MessageError(f"{name}: {exc}", field="<gzip>") from None


def _single_member(data: bytes, name: str) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [m for m in zf.namelist() if not m.endswith("/")]
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise MessageError(f"{name}: {exc}", field="<zip>") from None
    if len(members) != 1:
        raise MessageError(f"{name}: expected one member, got {members[:5]}", field="<zip>")
    return members[0]


def unzip_single(data: bytes, name: str) -> bytes:
    member = _single_member(data, name)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.read(member)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise MessageError(f"{name}: {exc}", field="<zip>") from None


def iter_book_history(lines: Iterable[bytes], start: int = 1) -> Iterator[Record]:
    """The snapshot and delta records of an order-book history file's lines (JSON lines,
    CRLF), in file order, decoded and converted as the live websocket's frames are
    (``received_at`` None). A bad line raises ``MessageError`` with ``line <n>:`` in its reason
    (``start``: the number of the first line).
    """
    for n, line in enumerate(lines, start=start):
        line = line.strip()
        if not line:
            continue
        try:
            try:
                yield to_book(_BOOK_DECODER.decode(line), None)
            except msgspec.ValidationError as exc:
                raise validation_error(exc, line) from None
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise MessageError(f"not valid JSON: {exc}", raw=line) from None
        except MessageError as exc:
            raise type(exc)(f"line {n}: {exc.reason}", field=exc.field, raw=line) from None


def parse_book_history(data: bytes) -> list[Record]:
    """A whole (unzipped) order-book history file -> its records (``iter_book_history``)."""
    return list(iter_book_history(data.splitlines()))


#: a pattern for ``BybitFastPath``, which asks it only in ``routable`` (the engine's question,
#: not this reader's): a file's records carry its topic's symbol as the full parser does
_ANY_SYMBOL = re.compile(r".+", re.DOTALL)
#: the end of every line ``BybitFastPath.decode`` vouches for (its canonical delta:
#: ``...,"cts":<cts>}``), where this reader finds the transaction time its tuple leaves out
_CTS_KEY = b',"cts":'


def _float_levels(levels: Iterable[tuple[Decimal, Decimal]]) -> tuple[tuple[float, float], ...]:
    return tuple([(float(p), float(q)) for p, q in levels])


def _with_float_levels(rec: Record) -> Record:
    """A full-parser book record with its ``Decimal`` levels as floats: ``float(Decimal)`` is
    the correctly rounded double, the value the fast route's decoder gives the same text."""
    assert isinstance(rec, DepthSnapshotRecord | DepthUpdateRecord)  # what ``to_book`` makes
    return msgspec.structs.replace(rec, bids=_float_levels(rec.bids), asks=_float_levels(rec.asks))


def iter_book_history_floats(lines: Iterable[bytes]) -> Iterator[Record]:
    """``iter_book_history`` with levels as floats, as the book keeps them
    (``landing/book.py``, "Numbers": a decimal of up to 15 significant digits round-trips, and
    the depth dataset stores float64), several times faster on a day of ~10^5-10^6 messages.

    It accepts exactly what ``iter_book_history`` accepts, with ``float(Decimal)`` of its
    levels. A delta goes the fast route only if the ingest's fast path vouches for it
    (``BybitFastPath.decode``: strictly typed envelope, the line byte for byte the canonical
    serialisation of what was decoded, levels of plain decimals only, the full parser's
    ranges); that is every delta line Bybit's files and the local exchange's hold. Snapshots
    (one a day, and one per book-service restart) and every other line go through
    ``iter_book_history`` and have their levels converted: a valid one yields the same
    record, a bad one raises its ``MessageError`` with ``line <n>:``.
    """
    decode = BybitFastPath(_ANY_SYMBOL).decode
    full = iter_book_history
    for n, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        got = decode(line, 0)
        if got is not None:
            i = line.rfind(_CTS_KEY) + len(_CTS_KEY)
            cts = line[i:-1]
            if i >= len(_CTS_KEY) and cts.isdigit():
                _, topic, ts, u, _, prev, bids, asks = got
                symbol = topic.rpartition(".")[2]
                yield DepthUpdateRecord(
                    EXCHANGE, symbol, ts, int(cts), u, u, prev, bids, asks, None
                )
                continue
        for rec in full([line], start=n):  # raises, naming line n
            yield _with_float_levels(rec)


class BookHistory:
    """One day's order-book history file, parsed as it is iterated.

    A real day of a busy symbol is ~864,000 messages (100 ms cadence, quirk 30 of
    petrosa_pipelines_tests/fixtures/bybit/PROVENANCE.md's source): held as records it would
    take gigabytes, so only the downloaded zip is kept and each iteration streams its one
    member line by line (``zipfile.ZipFile.open``). Iterable any number of times; ``len``
    counts the messages (one pass).
    """

    def __init__(self, data: bytes, name: str):
        self.name = name
        self._zip = data
        self._member = _single_member(data, name)

    def lines(self) -> Iterator[bytes]:
        try:
            with zipfile.ZipFile(io.BytesIO(self._zip)) as zf, zf.open(self._member) as f:
                yield from f
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise MessageError(f"{self.name}: {exc}", field="<zip>") from None

    def __iter__(self) -> Iterator[Record]:
        """The records, levels as floats (``iter_book_history_floats``)."""
        return iter_book_history_floats(self.lines())

    def exact(self) -> Iterator[Record]:
        """The records with ``Decimal`` levels, exactly as the live parser gives them."""
        return iter_book_history(self.lines())

    def __len__(self) -> int:
        return sum(1 for line in self.lines() if line.strip())


class BybitArchiveClient:
    """Downloads of Bybit's daily archives, parsed. Methods return None when the file does not
    exist (HTTP 404: not published yet, or the symbol was not listed that day).

    Bybit publishes no checksums: a file is trusted as far as it parses and its rows lie in
    the day (which the partition fill checks). ``daily_klines`` and ``daily_funding`` exist
    for the fill's sake and always answer None: Bybit has no such archives.
    """

    def __init__(
        self,
        base_url: str = LIVE_BASE,
        rest: RestSettings | None = None,
        book_base_url: str | None = None,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # live: the book history has its own host; anywhere else (the local exchange) both
        # archives are served by the one base
        default_book = LIVE_BOOK_BASE if self.base_url == LIVE_BASE else self.base_url
        self.book_base_url = (book_base_url or default_book).rstrip("/")
        self.rest = rest or RestSettings()
        self.session = session or requests.Session()
        self._sleep, self._rng = sleep, rng
        self.sleeps: list[float] = []

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> BybitArchiveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def daily_agg_trades(self, symbol: str, day: dt.date) -> pd.DataFrame | None:
        """One day of trades (TRADES frame), None if the file does not exist.

        Named like the Binance client's method because the fill asks for it by this name.
        """
        path = trades_path(symbol, day)
        data = self._fetch(f"{self.base_url}/{path}")
        return None if data is None else parse_trades_csv(gunzip(data, path), symbol)

    daily_trades = daily_agg_trades

    def daily_book_records(self, symbol: str, day: dt.date) -> BookHistory | None:
        """One day of order-book history (snapshot + deltas as records, parsed while iterated:
        ``BookHistory``), trying the newer ob200 file first, then ob500; None if neither
        exists. The partition fill replays it (``market_data.sources.BookArchiveSource``)."""
        for depth in BOOK_DEPTHS:
            path = book_path(symbol, day, depth)
            data = self._fetch(f"{self.book_base_url}/{path}")
            if data is not None:
                return BookHistory(data, path)
        return None

    def daily_klines(self, symbol: str, day: dt.date, interval: str = "1m") -> None:
        return None

    def daily_funding(self, symbol: str, day: dt.date) -> None:
        return None

    def _fetch(self, url: str) -> bytes | None:
        """GET bytes; None on 404; transient failures retried (``transport.download``)."""
        return download(
            self.session,
            url,
            self.rest,
            retry_statuses=RETRY_STATUSES,
            sleep=self._sleep,
            rng=self._rng,
            sleeps=self.sleeps,
        )
