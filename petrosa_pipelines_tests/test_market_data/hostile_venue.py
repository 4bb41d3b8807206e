"""A loopback venue (127.0.0.1 only) that answers the REST and archive clients honestly or with
one failure at a time: HTTP errors, empty answers, another day's rows, a partial day, garbage
rows, a bad checksum. Not a test module (no ``test_`` prefix).

The truth is one deterministic day of aggregate trades (ids consecutive, bursts sharing a
millisecond, neighbours before and after the day so ids can prove its edges) and its 1440
one-minute candles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import time
import zipfile
from dataclasses import dataclass

import numpy as np

from petrosa_pipelines.exchanges.binance.vision import agg_trades_path, klines_path
from petrosa_pipelines.lib.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, day_start_ms
from petrosa_pipelines_tests.test_exchanges.fake_binance import FakeServer, Reply, Request

SYMBOL = "BTCUSDT"
FIRST_ID = 5_000_000
MODES = ("honest", "error", "empty", "wrong_day", "partial", "garbage", "invalid", "bad_checksum")


@dataclass
class Truth:
    """The venue's real history around one day."""

    day: dt.date
    ids: np.ndarray
    times: np.ndarray

    @classmethod
    def build(cls, day: dt.date, per_day: int = 3_000, seed: int = 5) -> Truth:
        rng = np.random.default_rng(seed)
        start = day_start_ms(day) - 2 * HOUR_MS
        span = DAY_MS + 4 * HOUR_MS
        n = per_day * span // DAY_MS
        times = np.sort(start + rng.integers(0, span, n))
        for i in np.flatnonzero(rng.random(n) < 0.2)[1:]:  # bursts sharing one millisecond
            times[i] = times[i - 1]
        times = np.maximum.accumulate(times)
        return cls(day, FIRST_ID + np.arange(n, dtype=np.int64), times.astype(np.int64))

    @property
    def start(self) -> int:
        return day_start_ms(self.day)

    @property
    def end(self) -> int:
        return self.start + DAY_MS

    def in_day(self) -> np.ndarray:
        return (self.times >= self.start) & (self.times < self.end)

    def trade_rows(self, mask: np.ndarray) -> list[dict]:
        return [
            {
                "a": int(a),
                "p": "100.5",
                "q": "0.010",
                "f": int(a) * 2,
                "l": int(a) * 2 + 1,
                "T": int(t),
                "m": bool(a % 2),
            }
            for a, t in zip(self.ids[mask], self.times[mask], strict=True)
        ]

    def kline_rows(self, opens: list[int]) -> list[list]:
        return [
            [
                t,
                "100.0",
                "101.0",
                "99.0",
                "100.5",
                "3.0",
                t + MINUTE_MS - 1,
                "300.0",
                7,
                "1.0",
                "100.0",
                "0",
            ]
            for t in opens
        ]


def _csv(header: str, rows: list[list]) -> bytes:
    lines = [header] + [
        ",".join(str(v).lower() if isinstance(v, bool) else str(v) for v in r) for r in rows
    ]
    return ("\n".join(lines) + "\n").encode()


def _zip(name: str, csv: bytes) -> bytes:
    """The same bytes every time (a fixed entry time): the archive and its CHECKSUM are built
    by separate requests, and ``writestr(name, ...)`` would stamp each with the current time."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), csv)
    return buf.getvalue()


KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)
AGG_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"


class HostileVenue:
    """REST (``/fapi/v1/...``) and archives (``/data/futures/um/...``) of ``truth``, each
    answering in its own ``mode`` (one of ``MODES``)."""

    def __init__(self, truth: Truth, rest_mode: str = "honest", archive_mode: str = "honest"):
        self.truth, self.rest_mode, self.archive_mode = truth, rest_mode, archive_mode
        self.server = FakeServer()
        routes = self.server.routes
        routes["/fapi/v1/time"] = lambda req: Reply(200, {"serverTime": int(time.time() * 1000)})
        routes["/fapi/v1/klines"] = self._klines
        routes["/fapi/v1/aggTrades"] = self._agg_trades
        for path, builder in (
            (klines_path(SYMBOL, truth.day), self._kline_archive),
            (agg_trades_path(SYMBOL, truth.day), self._agg_archive),
        ):
            routes["/" + path] = lambda req, b=builder: self._archive(b(), checksum=False)
            routes["/" + path + ".CHECKSUM"] = lambda req, b=builder: self._archive(b(), True)

    def __enter__(self) -> HostileVenue:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    @property
    def url(self) -> str:
        return self.server.url

    # -- REST ---------------------------------------------------------------------------------

    def _klines(self, req: Request) -> Reply:
        q = req.query
        start, end, limit = int(q["startTime"]), int(q["endTime"]), int(q["limit"])
        shift = -DAY_MS if self.rest_mode == "wrong_day" else 0
        cutoff = self.truth.start + 700 * MINUTE_MS
        opens = [
            t + shift
            for t in range(start - start % MINUTE_MS, end + 1, MINUTE_MS)
            if self.truth.start <= t < self.truth.end
            and not (self.rest_mode == "partial" and t >= cutoff)
        ][:limit]
        return self._rest(self.truth.kline_rows(opens), garbage=lambda r: r.__setitem__(2, "50.0"))

    def _agg_trades(self, req: Request) -> Reply:
        q, t = req.query, self.truth
        limit = int(q["limit"])
        if "fromId" in q:
            mask = t.ids >= int(q["fromId"])
        else:
            mask = (t.times >= int(q["startTime"])) & (t.times <= int(q["endTime"]))
        if self.rest_mode == "partial":
            mask &= t.times < t.start + 12 * HOUR_MS
        idx = np.flatnonzero(mask)[:limit]
        sel = np.zeros(len(t.ids), dtype=bool)
        sel[idx] = True
        rows = t.trade_rows(sel)
        if self.rest_mode == "wrong_day":
            for r in rows:
                r["T"] -= DAY_MS
        return self._rest(rows, garbage=lambda r: r.__setitem__("p", "-1.0"))

    def _rest(self, rows: list, garbage) -> Reply:
        mode = self.rest_mode
        if mode == "error":
            return Reply(500, {"code": -1000, "msg": "hostile"})
        if mode == "empty":
            return Reply(200, [])
        if mode in ("garbage", "invalid"):
            for row in rows[::7]:
                garbage(row)
        return Reply(200, rows)

    # -- archives -----------------------------------------------------------------------------

    def _kline_archive(self) -> tuple[str, bytes]:
        t, mode = self.truth, self.archive_mode
        opens = list(range(t.start, t.end, MINUTE_MS))
        if mode == "partial":
            opens = opens[:700]
        if mode == "wrong_day":
            opens = [o - DAY_MS for o in opens]
        if mode == "empty":
            opens = []
        rows = t.kline_rows(opens)
        if mode == "garbage":
            rows[0] = ["garbage"] + rows[0][1:]
        if mode == "invalid":
            for r in rows[5::50]:
                r[3] = "102.0"  # low above the high: inconsistent OHLC
        return f"{SYMBOL}-1m-{t.day}.csv", _csv(KLINE_HEADER, rows)

    def _agg_archive(self) -> tuple[str, bytes]:
        t, mode = self.truth, self.archive_mode
        mask = t.in_day()
        if mode == "partial":
            mask &= t.times < t.start + 12 * HOUR_MS
        if mode == "empty":
            mask &= False
        rows = [
            [
                r["a"],
                r["p"],
                r["q"],
                r["f"],
                r["l"],
                r["T"] - (DAY_MS if mode == "wrong_day" else 0),
                r["m"],
            ]
            for r in t.trade_rows(mask)
        ]
        if mode == "garbage":
            rows[0] = ["xx"] + rows[0][1:]
        if mode == "invalid":
            for r in rows[3::40]:
                r[1] = "0"  # a non-positive price
        return f"{SYMBOL}-aggTrades-{t.day}.csv", _csv(AGG_HEADER, rows)

    def _archive(self, built: tuple[str, bytes], checksum: bool) -> Reply:
        mode = self.archive_mode
        if mode == "error":
            return Reply(500, b"hostile")
        name, csv = built
        data = _zip(name, csv)
        if not checksum:
            return Reply(200, data)
        digest = hashlib.sha256(data).hexdigest()
        if mode == "bad_checksum":
            digest = hashlib.sha256(data + b"x").hexdigest()
        return Reply(200, f"{digest}  {name.replace('.csv', '.zip')}\n".encode())
