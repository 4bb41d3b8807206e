"""Binance USD-M's REST answers and Vision archive: endpoints, weights, limits, bans, errors.

Weights, limits, headers and error bodies follow Binance
(https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info) so a client
written against the local exchange behaves the same against the real one (and vice versa).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.http11 import Response

from petrosa_pipelines.local_exchange.responses import json_response, response
from petrosa_pipelines.local_exchange.units import INTERVALS_MS, fmt_fixed
from petrosa_pipelines.local_exchange.venues.base import Host
from petrosa_pipelines.local_exchange.venues.binance.info import exchange_info
from petrosa_pipelines.local_exchange.venues.binance.vision import VisionArchive

HOUR_MS = 3_600_000
DEPTH_LIMIT_WEIGHTS = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
MAX_BAN_SECONDS = 3 * 24 * 3600


class BinanceHost(Host, Protocol):
    """The server knobs Binance's limits read."""

    weight_limit_per_minute: int
    ban_seconds: float
    aggtrades_recent_hours: float


class ApiError(Exception):
    """A Binance error answer: HTTP status plus ``{"code": ..., "msg": ...}``."""

    def __init__(self, code: int, msg: str, status: int = 400):
        self.code, self.msg, self.status = code, msg, status
        super().__init__(msg)


@dataclass
class _IpState:
    minute: int = -1
    used: int = 0
    blocked_until: float = 0.0  # wall time until which a 429 told the client to wait
    banned_until: float = 0.0
    ban_seconds: float = 0.0
    funding_window: list[float] = field(default_factory=list)


class BinanceRest:
    """``/fapi/v1/...`` and ``/vision/...`` of one server."""

    def __init__(self, host: BinanceHost):
        self.host = host
        self.market = host.market
        self.faults = host.faults
        self.archive = VisionArchive(self.market, host.now_ms, self.faults)
        self._ips: dict[str, _IpState] = {}
        self._routes: dict[str, Callable[[dict[str, str]], tuple[int, Any]]] = {
            "/fapi/v1/ping": self._ping,
            "/fapi/v1/time": self._time,
            "/fapi/v1/exchangeInfo": self._exchange_info,
            "/fapi/v1/klines": self._klines,
            "/fapi/v1/aggTrades": self._agg_trades,
            "/fapi/v1/fundingRate": self._funding_rate,
            "/fapi/v1/depth": self._depth,
            "/fapi/v1/premiumIndex": self._premium_index,
        }

    def vision(self, key: str, query: dict[str, str]) -> Response:
        if not key:
            try:
                max_keys = max(1, min(int(query.get("max-keys", "1000")), 1000))
            except ValueError:
                max_keys = 1000
            body = self.archive.list_objects(
                query.get("prefix", ""),
                query.get("delimiter", ""),
                query.get("marker", query.get("start-after", "")),
                max_keys,
            )
            status, ctype = 200, "application/xml"
        else:
            status, body, ctype = self.archive.get(key)
        self.host.log_request(("/vision/" + key, query, 0, status))
        return response(status, body, ctype, {})

    def rest(self, ip: str, method: str, path: str, query: dict[str, str]) -> Response:
        route = self._routes.get(path)
        if route is None:
            self.host.log_request((path, query, 0, 404))
            return response(404, b"", "text/html", {})
        if method != "GET":
            self.host.log_request((path, query, 0, 405))
            return json_response(405, {"code": -1101, "msg": "Method not allowed."}, {})
        weight = self._weight(path, query)
        wall = time.time()
        st = self._ips.setdefault(ip, _IpState())
        minute = int(wall // 60)
        if st.minute != minute:
            st.minute, st.used = minute, 0
        st.used += weight
        headers = {"X-MBX-USED-WEIGHT-1M": str(st.used)}
        status, body = self._limits(ip, st, wall, path)
        if status == 200:
            try:
                status, body = route(query)
            except ApiError as err:
                status, body = err.status, {"code": err.code, "msg": err.msg}
        if status in (418, 429):
            headers["Retry-After"] = str(body.pop("retry_after"))
        self.host.log_request((path, query, weight, status))
        return json_response(status, body, headers)

    def _limits(self, ip: str, st: _IpState, wall: float, path: str) -> tuple[int, Any]:
        """Injected bursts, bans and the per-minute weight limit, in Binance's order."""
        if st.banned_until > wall:
            return 418, _ban_body(ip, st.banned_until)
        if self.faults.take_rate_limit():
            return 429, _too_many(
                ip, self.host.weight_limit_per_minute, self.faults.retry_after_seconds
            )
        if st.used > self.host.weight_limit_per_minute:
            if st.blocked_until > wall:  # kept hammering after a 429: ban, doubling each time
                st.ban_seconds = min(
                    st.ban_seconds * 2 if st.ban_seconds else self.host.ban_seconds, MAX_BAN_SECONDS
                )
                st.banned_until = wall + st.ban_seconds
                return 418, _ban_body(ip, st.banned_until)
            st.blocked_until = (math.floor(wall / 60) + 1) * 60
            wait = max(1, math.ceil(st.blocked_until - wall))
            return 429, _too_many(ip, self.host.weight_limit_per_minute, wait)
        if path == "/fapi/v1/fundingRate":  # 500 requests / 5 min / IP, shared with fundingInfo
            st.funding_window = [t for t in st.funding_window if t > wall - 300]
            if len(st.funding_window) >= 500:
                wait = max(1, math.ceil(st.funding_window[0] + 300 - wall))
                return 429, _too_many(ip, 500, wait)
            st.funding_window.append(wall)
        return 200, None

    def _weight(self, path: str, query: dict[str, str]) -> int:
        if path == "/fapi/v1/klines":
            limit = _safe_int(query.get("limit"), 500)
            return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        if path == "/fapi/v1/aggTrades":
            return 20
        if path == "/fapi/v1/depth":
            return DEPTH_LIMIT_WEIGHTS.get(_safe_int(query.get("limit"), 500), 20)
        if path == "/fapi/v1/premiumIndex":
            return 1 if query.get("symbol") else 10
        return 1

    # -- REST endpoints ------------------------------------------------------------------------

    def _now(self) -> int:
        return self.host.now_ms()

    def _ping(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, set())
        return 200, {}

    def _time(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, set())
        return 200, {"serverTime": self._now()}

    def _exchange_info(self, q: dict[str, str]) -> tuple[int, Any]:
        return 200, exchange_info(self.market, self._now(), self.host.weight_limit_per_minute)

    def _symbol(self, q: dict[str, str]) -> str:
        sym = q.get("symbol", "")
        if not sym:
            raise ApiError(-1102, _mandatory("symbol"))
        if sym.upper() not in self.market.specs or sym != sym.upper():
            raise ApiError(-1121, "Invalid symbol.")
        return sym

    def _klines(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, {"symbol", "interval", "startTime", "endTime", "limit"})
        sym = self._symbol(q)
        interval = q.get("interval", "")
        if not interval:
            raise ApiError(-1102, _mandatory("interval"))
        if interval not in INTERVALS_MS:
            raise ApiError(-1120, "Invalid interval.")
        limit = _limit(q, 500, 1500)
        start, end = _int(q, "startTime"), _int(q, "endTime")
        _order(start, end)
        iv, now = INTERVALS_MS[interval], self._now()
        if start is not None:  # before the listing, Binance answers from the first candle
            first = -(-max(start, self.market.start_ms) // iv) * iv
            last = min(first + (limit - 1) * iv, end if end is not None else now)
        else:
            last = (min(end, now) if end is not None else now) // iv * iv
            first = last - (limit - 1) * iv
        return 200, self.market.kline_rows(sym, interval, first, last, now_ms=now)[:limit]

    def _agg_trades(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, {"symbol", "fromId", "startTime", "endTime", "limit"})
        sym = self._symbol(q)
        limit = _limit(q, 500, 1000)
        from_id, start, end = _int(q, "fromId"), _int(q, "startTime"), _int(q, "endTime")
        now = self._now()
        if from_id is not None:
            if start is not None or end is not None:
                raise ApiError(-1128, "Combination of optional parameters invalid.")
            t = self.market.trades_from_id(sym, from_id, limit, now)
        else:
            _order(start, end)
            if start is not None and end is not None and end - start > HOUR_MS:
                raise ApiError(-1127, "More than 1 hours between startTime and endTime.")
            oldest = now - int(self.host.aggtrades_recent_hours * HOUR_MS)
            if start is None and end is None:
                t = self.market.trades_between(sym, max(now - HOUR_MS, oldest), now)
                t = t.slice(max(len(t) - limit, 0), len(t))
            else:
                start = start if start is not None else end - HOUR_MS  # type: ignore[operator]
                end = end if end is not None else start + HOUR_MS
                # time-window queries reach one year back, like Binance's (older: Vision)
                t = self.market.trades_between(sym, max(start, oldest), min(end, now))
                t = t.slice(0, limit)
        spec = self.market.spec(sym)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        return 200, [
            {
                "a": a,
                "p": fmt_fixed(p, pd_),
                "q": fmt_fixed(qq, qd),
                "f": f,
                "l": last,
                "T": tt,
                "m": m,
            }
            for a, p, qq, f, last, tt, m in t.rows()
        ]

    def _funding_rate(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, {"symbol", "startTime", "endTime", "limit"})
        symbols = [self._symbol(q)] if "symbol" in q else sorted(self.market.specs)
        limit = _limit(q, 100, 1000)
        start, end = _int(q, "startTime"), _int(q, "endTime")
        _order(start, end)
        now = self._now()
        hi = min(end, now) if end is not None else now
        span = limit * 8 * HOUR_MS
        rows = []
        if start is not None:
            start = max(start, self.market.start_ms)
        for sym in symbols:
            if start is not None:
                rows += self.market.funding_rows(sym, start, min(hi, start + span))
            else:
                rows += self.market.funding_rows(sym, max(hi - span, 0), hi)
        rows.sort(key=lambda r: (r["fundingTime"], r["symbol"]))
        return 200, rows[:limit] if start is not None else rows[-limit:]

    def _depth(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, {"symbol", "limit"})
        sym = self._symbol(q)
        limit = _limit(q, 500, 1000)
        if limit not in DEPTH_LIMIT_WEIGHTS:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        return 200, self.market.book(sym, self._now(), limit)

    def _premium_index(self, q: dict[str, str]) -> tuple[int, Any]:
        _only(q, {"symbol"})
        symbols = [self._symbol(q)] if "symbol" in q else sorted(self.market.specs)
        now = self._now()
        out = []
        for sym in symbols:
            ev = self.market.mark_price_event(sym, now // 1000 * 1000)
            out.append(
                {
                    "symbol": sym,
                    "markPrice": ev["p"],
                    "indexPrice": ev["i"],
                    "estimatedSettlePrice": ev["P"],
                    "lastFundingRate": ev["r"],
                    "interestRate": "0.00010000",
                    "nextFundingTime": ev["T"],
                    "time": now,
                }
            )
        return 200, out[0] if "symbol" in q else out


def _too_many(ip: str, limit: int, retry_after: int) -> dict[str, Any]:
    return {
        "code": -1003,
        "msg": f"Too many requests; current limit of IP({ip}) is {limit} requests per minute. "
        "Please use the websocket for live updates to avoid polling the API.",
        "retry_after": retry_after,
    }


def _ban_body(ip: str, until: float) -> dict[str, Any]:
    return {
        "code": -1003,
        "msg": f"Way too many requests; IP({ip}) banned until {int(until * 1000)}. "
        "Please use the websocket for live updates to avoid bans.",
        "retry_after": max(1, math.ceil(until - time.time())),
    }


def _mandatory(name: str) -> str:
    return f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."


def _safe_int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def _int(q: dict[str, str], name: str) -> int | None:
    raw = q.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,20}", raw):
        legal = "'^[0-9]{1,20}$'"
        raise ApiError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is {legal}."
        )
    return int(raw)


def _limit(q: dict[str, str], default: int, maximum: int) -> int:
    value = _int(q, "limit")
    if value is None:
        return default
    if not 1 <= value <= maximum:
        raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
    return value


def _order(start: int | None, end: int | None) -> None:
    if start is not None and end is not None and start > end:
        raise ApiError(-1023, "Start time is greater than end time.")


def _only(q: dict[str, str], allowed: set[str]) -> None:
    extra = set(q) - allowed
    if extra:
        raise ApiError(
            -1104,
            f"Not all sent parameters were read; read '{len(set(q) & allowed)}' parameter(s) "
            f"but was sent '{len(q)}'.",
        )
