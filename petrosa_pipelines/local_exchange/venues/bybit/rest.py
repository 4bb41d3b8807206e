"""Bybit v5 linear's REST market data and its public trade archive, over the local market.

REST (https://bybit-exchange.github.io/docs/v5/market/kline and siblings): every answer is the
envelope ``{"retCode","retMsg","result","retExtInfo","time"}`` with HTTP 200, errors included
(``10001`` parameter error; ``10006`` "Too many visits!" with ``X-Bapi-Limit-Reset-Timestamp``,
what ``Faults.rate_limit_burst`` injects). Every answer carries ``X-Bapi-Limit``,
``X-Bapi-Limit-Status`` and ``X-Bapi-Limit-Reset-Timestamp``; more than 600 requests in 5 s
from one IP answer HTTP 403 "access too frequent" (https://bybit-exchange.github.io/docs/v5/rate-limit).
Lists are newest first; ``kline`` and ``funding/history`` give the newest ``limit`` rows within
``[start, end]``, so clients page backwards by ``end``.

Order-book history (``/orderbook/linear/<SYM>/<YYYY-MM-DD>_<SYM>_ob200.data.zip``, as on
quote-saver.bycsi.com): ``book_archive.py``.

Archive (``/trading/<SYM>/<SYM><YYYY-MM-DD>.csv.gz``, as on public.bybit.com): a directory
listing per level and one gzip CSV per closed day, columns ``timestamp`` (seconds, four
decimals), ``symbol, side, size, price, tickDirection, trdMatchID`` (the websocket's trade id),
``grossValue`` (price x size x 1e8, ``%g``), ``homeNotional`` (size), ``foreignNotional``
(price x size), ``RPI``; rows oldest first.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from functools import lru_cache
from typing import Any

import numpy as np
from websockets.http11 import Response

from petrosa_pipelines.local_exchange.responses import json_response, response
from petrosa_pipelines.local_exchange.units import INTERVALS_MS, day_start_ms, fmt_fixed, to_date
from petrosa_pipelines.local_exchange.venues.base import Host
from petrosa_pipelines.local_exchange.venues.bybit.book_archive import BookArchive
from petrosa_pipelines.local_exchange.venues.bybit.frames import (
    BOOK_SLOT,
    KLINE_INTERVALS,
    BybitFormats,
    fmt_trimmed,
)

IP_LIMIT = 600
IP_WINDOW_S = 5.0
ARCHIVE_HEADER = (
    "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,"
    "foreignNotional,RPI"
)
_ARCHIVE_RE = re.compile(r"^/trading(?:/(?P<sym>[A-Z0-9]+)(?:/(?P<file>[^/]+))?)?/?$")


class BybitError(Exception):
    """A v5 error answer: ``retCode`` and ``retMsg`` (HTTP 200)."""

    def __init__(self, code: int, msg: str):
        self.code, self.msg = code, msg
        super().__init__(msg)


def _params(name: str) -> BybitError:
    return BybitError(10001, f"params error: {name} invalid")


class BybitRest:
    """``/v5/market/*`` and ``/trading/*`` of one server."""

    def __init__(
        self,
        host: Host,
        formats: BybitFormats,
        book_u: Callable[[int], int],
        archive_book_u: Callable[[int], int] | None = None,
        book_restarts: Callable[[], Iterable[int]] = tuple,
    ):
        self.host, self.formats, self.book_u = host, formats, book_u
        self.market = formats.market
        #: the daily order-book history files (``book_archive.py``): ``u`` of a past step by
        #: ``archive_book_u`` (default: as the websocket numbers the book now), a snapshot at
        #: each of ``book_restarts`` (the steps the book service restarted at)
        self.books = BookArchive(
            formats, archive_book_u or book_u, self.published_days, book_restarts
        )
        self._calls: dict[str, deque[float]] = {}
        self._gz = lru_cache(maxsize=16)(self._archive_file)
        self._routes: dict[str, Callable[[dict[str, str]], Any]] = {
            "/v5/market/time": self._time,
            "/v5/market/kline": self._kline,
            "/v5/market/recent-trade": self._recent_trade,
            "/v5/market/orderbook": self._orderbook,
            "/v5/market/funding/history": self._funding,
            "/v5/market/instruments-info": self._instruments,
        }

    def http(
        self, ip: str, method: str, path: str, query: dict[str, str]
    ) -> Response | Awaitable[Response]:
        """The answer; for a daily order-book file, an awaitable one (the server awaits it)."""
        if path.startswith("/trading"):
            status, body, ctype = self.archive(path)
            self.host.log_request((path, query, 0, status))
            return response(status, body, ctype, {})
        if self.books.owns(path):
            return self._book_file(path, query)
        route = self._routes.get(path)
        if route is None or method != "GET":
            status = 404 if route is None else 405
            self.host.log_request((path, query, 0, status))
            return response(status, b"", "text/html", {})
        wall = time.time()
        calls = self._calls.setdefault(ip, deque())
        while calls and calls[0] <= wall - IP_WINDOW_S:
            calls.popleft()
        if len(calls) >= IP_LIMIT:
            self.host.log_request((path, query, 1, 403))
            return response(403, b"access too frequent", "text/plain", {})
        calls.append(wall)
        headers = {
            "X-Bapi-Limit": str(IP_LIMIT),
            "X-Bapi-Limit-Status": str(IP_LIMIT - len(calls)),
            "X-Bapi-Limit-Reset-Timestamp": str(int(wall * 1000)),
        }
        code, msg, result = 0, "OK", {}
        if self.host.faults.take_rate_limit():
            code, msg = 10006, "Too many visits!"
            reset = int((wall + self.host.faults.retry_after_seconds) * 1000)
            headers.update({"X-Bapi-Limit-Status": "0", "X-Bapi-Limit-Reset-Timestamp": str(reset)})
        else:
            try:
                result = route(query)
            except BybitError as err:
                code, msg, result = err.code, err.msg, {}
        body = {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}}
        body["time"] = self.host.now_ms()
        self.host.log_request((path, query, 1, 200))
        return json_response(200, body, headers)

    async def _book_file(self, path: str, query: dict[str, str]) -> Response:
        """A daily order-book file: awaited by the server, built off its event loop."""
        data = await self.books.fetch(path)
        self.host.log_request((path, query, 0, 404 if data is None else 200))
        if data is None:
            return response(404, _NOT_FOUND, "text/html", {})
        return response(200, data, "application/zip", {})

    # -- parameters -------------------------------------------------------------------------

    def _symbol(self, q: dict[str, str]) -> str:
        if q.get("category") != "linear":
            raise _params("category")
        sym = q.get("symbol", "")
        if sym not in self.market.specs:
            raise _params("symbol")
        return sym

    @staticmethod
    def _int(q: dict[str, str], name: str, default: int | None = None) -> int | None:
        raw = q.get(name)
        if raw is None or raw == "":
            return default
        if not re.fullmatch(r"[0-9]{1,19}", raw):
            raise _params(name)
        return int(raw)

    def _limit(self, q: dict[str, str], default: int, maximum: int) -> int:
        value = self._int(q, "limit", default)
        assert value is not None
        if not 1 <= value <= maximum:
            raise _params("limit")
        return value

    # -- endpoints --------------------------------------------------------------------------

    def _time(self, q: dict[str, str]) -> dict[str, Any]:
        now = self.host.now_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def _kline(self, q: dict[str, str]) -> dict[str, Any]:
        sym = self._symbol(q)
        interval = KLINE_INTERVALS.get(q.get("interval", ""))
        if interval is None:
            raise _params("interval")
        limit = self._limit(q, 200, 1000)
        now, iv = self.host.now_ms(), INTERVALS_MS[interval]
        start, end = self._int(q, "start", 0), self._int(q, "end", now)
        assert start is not None and end is not None
        last = min(end, now) // iv * iv
        first = max(-(-max(start, self.market.start_ms) // iv) * iv, last - (limit - 1) * iv)
        rows: list[list[str]] = []
        if first <= last:
            k = self.market.kline_arrays(sym, interval, first, last, now_ms=now)
            rows = [self.formats.kline_row(sym, k, i) for i in range(len(k.open_time) - 1, -1, -1)]
        return {"symbol": sym, "category": "linear", "list": rows}

    def _recent_trade(self, q: dict[str, str]) -> dict[str, Any]:
        sym = self._symbol(q)
        limit = self._limit(q, 500, 1000)
        now = self.host.now_ms()
        rows: list[dict[str, Any]] = []
        since = now
        while len(rows) < limit and since > self.market.start_ms:  # an hour at a time back
            rows = self.formats.trade_rows(sym, since - 3_600_000, since) + rows
            since -= 3_600_000
        return {
            "category": "linear",
            "list": [
                {
                    "execId": r["i"],
                    "symbol": sym,
                    "price": r["p"],
                    "size": r["v"],
                    "side": r["S"],
                    "time": str(r["T"]),
                    "isBlockTrade": False,
                    "isRPITrade": False,
                    "seq": str(r["seq"]),
                }
                for r in reversed(rows[-limit:])
            ],
        }

    def _orderbook(self, q: dict[str, str]) -> dict[str, Any]:
        sym = self._symbol(q)
        limit = self._limit(q, 25, 500)
        now = self.host.now_ms()
        step = now // self.market.book_step_ms
        st = self.market.book_state(sym, step)
        cts = step * self.market.book_step_ms
        return {
            "s": sym,
            "b": self.formats.levels(sym, st.bid_ticks[:limit], st.bid_qty[:limit]),
            "a": self.formats.levels(sym, st.ask_ticks[:limit], st.ask_qty[:limit]),
            "ts": max(now, cts + 1),
            "u": self.book_u(step),
            "seq": self.formats.seq(sym, cts, BOOK_SLOT),
            "cts": cts,
        }

    def _funding(self, q: dict[str, str]) -> dict[str, Any]:
        sym = self._symbol(q)
        limit = self._limit(q, 200, 200)
        start, end = self._int(q, "startTime"), self._int(q, "endTime")
        if start is not None and end is None:  # the docs: "Passing only startTime returns an error"
            raise _params("endTime")
        now = self.host.now_ms()
        hi = min(end if end is not None else now, now)
        times = self.market.funding_times(start or 0, hi)[-limit:]
        return {
            "category": "linear",
            "list": [
                {
                    "symbol": sym,
                    "fundingRate": fmt_trimmed(self.market.funding_rate_e8(sym, ft), 8),
                    "fundingRateTimestamp": str(ft),
                }
                for ft in reversed(times)
            ],
        }

    def _instruments(self, q: dict[str, str]) -> dict[str, Any]:
        if q.get("category") != "linear":
            raise _params("category")
        symbols = sorted(self.market.specs)
        if q.get("symbol"):
            if q["symbol"] not in self.market.specs:
                raise _params("symbol")
            symbols = [q["symbol"]]
        limit = self._limit(q, 500, 1000)
        cursor = q.get("cursor", "")
        offset = int(cursor[len("next=") :]) if re.fullmatch(r"next=[0-9]{1,6}", cursor) else 0
        page = symbols[offset : offset + limit]
        more = offset + limit < len(symbols)
        return {
            "category": "linear",
            "list": [self._instrument(s) for s in page],
            "nextPageCursor": f"next={offset + limit}" if more else "",
        }

    def _instrument(self, sym: str) -> dict[str, Any]:
        """One ``instruments-info`` row, fields and order as the real linear body."""
        spec = self.market.spec(sym)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        tick, step = fmt_fixed(spec.tick_units, pd_), fmt_fixed(spec.step_units, qd)
        return {
            "symbol": sym,
            "contractType": "LinearPerpetual",
            "status": "Trading",
            "baseCoin": sym[:-4] if sym.endswith("USDT") else sym[:-3],
            "quoteCoin": "USDT",
            "launchTime": str(self.market.start_ms),
            "deliveryTime": "0",
            "deliveryFeeRate": "",
            "priceScale": str(pd_),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {
                "minPrice": tick,
                "maxPrice": fmt_fixed(spec.tick_units * 10**7, pd_),
                "tickSize": tick,
            },
            "lotSizeFilter": {
                "maxOrderQty": fmt_fixed(spec.step_units * 10**6, qd),
                "minOrderQty": step,
                "qtyStep": step,
                "postOnlyMaxOrderQty": fmt_fixed(spec.step_units * 10**6, qd),
                "maxMktOrderQty": fmt_fixed(spec.step_units * 10**5, qd),
                "minNotionalValue": "5",
            },
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
            "settleCoin": "USDT",
            "copyTrading": "both",
            "upperFundingRate": "0.005",
            "lowerFundingRate": "-0.005",
            "isPreListing": False,
            "preListingInfo": None,
            "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
            "displayName": "",
            "symbolType": "",
            "forbidUplWithdrawal": False,
            "symbolId": 1 + sorted(self.market.specs).index(sym),
        }

    # -- archive ----------------------------------------------------------------------------

    def published_days(self) -> list[dt.date]:
        """Closed days since the market's start (a day is published once the clock passed it)."""
        today, day, out = to_date(self.host.now_ms()), self.market.start, []
        while day < today:
            out.append(day)
            day += dt.timedelta(days=1)
        return out

    def archive(self, path: str) -> tuple[int, bytes, str]:
        m = _ARCHIVE_RE.match(path)
        if m is None or (m["sym"] and m["sym"] not in self.market.specs):
            return 404, _NOT_FOUND, "text/html"
        sym, name = m["sym"], m["file"]
        if sym is None:
            return (
                200,
                _listing("/trading/", [s + "/" for s in sorted(self.market.specs)]),
                "text/html",
            )
        days = {f"{sym}{d.isoformat()}.csv.gz": d for d in self.published_days()}
        if name is None:
            return 200, _listing(f"/trading/{sym}/", list(days)), "text/html"
        if name not in days:
            return 404, _NOT_FOUND, "text/html"
        return 200, self._gz(sym, days[name]), "application/gzip"

    def archive_csv(self, sym: str, day: dt.date) -> bytes:
        spec = self.market.spec(sym)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        t0 = day_start_ms(day)
        lines = [ARCHIVE_HEADER]
        for r in self.formats.trade_rows(sym, t0 - 1, t0 + 86_400_000 - 1):
            ms = r["T"]
            p, q = int(r["p"].replace(".", "")), int(r["v"].replace(".", ""))
            gross = float(np.float64(p) * q * 10.0 ** (8 - pd_ - qd))
            lines.append(
                f"{ms // 1000}.{ms % 1000:03d}0,{sym},{r['S']},{r['v']},{r['p']},{r['L']},"
                f"{r['i']},{gross:.6g},{r['v']},{fmt_trimmed(p * q, pd_ + qd)},0"
            )
        return ("\n".join(lines) + "\n").encode()

    def _archive_file(self, sym: str, day: dt.date) -> bytes:
        return gzip.compress(self.archive_csv(sym, day), mtime=0)


_NOT_FOUND = (
    b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    b"<center><h1>404 Not Found</h1></center>\r\n</body>\r\n</html>\r\n"
)


def _listing(where: str, names: list[str]) -> bytes:
    """A directory index page like public.bybit.com's (one ``<a href>`` per entry)."""
    rows = "".join(f'<a href="{n}">{n}</a>\r\n' for n in names)
    return (
        f"<html>\r\n<head><title>Index of {where}</title></head>\r\n<body>\r\n"
        f'<h1>Index of {where}</h1><hr><pre><a href="../">../</a>\r\n{rows}</pre><hr></body>\r\n'
        "</html>\r\n"
    ).encode()


__all__ = ["ARCHIVE_HEADER", "BybitError", "BybitRest"]
