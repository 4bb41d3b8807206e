"""Binance USD-M REST history client: klines, aggTrades, funding, depth, exchangeInfo.

Returns lake frames (``catalog.schemas``) rather than records because history comes in pages
of up to 1500 rows and goes straight to parquet (the bodies are read in ``bodies.py``). Every
request goes through the shared ``RestTransport``/``WeightBudget`` under Binance's
``rate_model`` so a backfill can never push the IP into a 418 ban.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import requests

from petrosa_pipelines.catalog import schemas
from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, ExchangeInfo, MessageError, Source
from petrosa_pipelines.exchanges.binance.bodies import (
    EXCHANGE,
    KLINE_DECIMALS,
    concat_pages,
    frame_from,
    parse_agg_trades,
    parse_depth,
    parse_exchange_info,
    parse_funding,
    parse_klines,
    parse_server_time,
)
from petrosa_pipelines.exchanges.ratelimit import RateModel, WeightBudget
from petrosa_pipelines.exchanges.transport import RestTransport, TransportClient
from petrosa_pipelines.lib.endpoints import ExchangeEndpoints, RestSettings
from petrosa_pipelines.lib.timeutil import HOUR_MS, MINUTE_MS

KLINES_PATH = "/fapi/v1/klines"
AGG_TRADES_PATH = "/fapi/v1/aggTrades"
FUNDING_PATH = "/fapi/v1/fundingRate"
DEPTH_PATH = "/fapi/v1/depth"
EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
TIME_PATH = "/fapi/v1/time"

#: the IP's used request weight in the current 1-minute window, on every answer
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
#: the shortest IP ban, the wait for a 418 without Retry-After. Bans "scale in duration for
#: repeat offenders, from 2 minutes to 3 days"; 429 is the warning before them
#: (https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info)
MIN_BAN_SECONDS = 120.0
#: USD-M's request-weight limit per minute when exchangeInfo ``rateLimits`` has not been read
WEIGHT_LIMIT_PER_MINUTE = 2400


def error_code(body: Any) -> int | None:
    """Binance's error ``code`` from a ``{"code": -1121, "msg": ...}`` body, if any."""
    if isinstance(body, dict) and isinstance(body.get("code"), int):
        return body["code"]
    return None


def error_message(body: Any) -> str | None:
    """Binance's error ``msg``, if any."""
    return str(body["msg"]) if isinstance(body, dict) and "msg" in body else None


def rate_model(limit_per_minute: int = WEIGHT_LIMIT_PER_MINUTE) -> RateModel:
    """USD-M's IP limit: request weight per fixed minute, followed through the used-weight
    header; 429 asks to slow down, 418 is a ban. Errors come as HTTP 4xx with ``code``/``msg``.

    Named "binance": the shared budget file keeps the name it had before venues were
    qualified, so processes of both versions on one machine keep sharing it.
    """
    return RateModel(
        name="binance",
        limit=limit_per_minute,
        window_seconds=60.0,
        used_weight_header=USED_WEIGHT_HEADER,
        rate_limit_statuses=frozenset({429, 418}),
        ban_seconds={418: MIN_BAN_SECONDS},
        error_code=error_code,
        error_message=error_message,
    )


def budget_from_settings(
    rest: RestSettings,
    *,
    shared_dir: str | os.PathLike[str] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> WeightBudget:
    """Binance's budget: ``rest.weight_limit_per_minute`` (``PETROSA_WEIGHT_LIMIT_PER_MINUTE``)
    is USD-M's weight limit until exchangeInfo tells the live one."""
    model = rate_model(rest.weight_limit_per_minute)
    return WeightBudget.from_settings(rest, model, shared_dir=shared_dir, clock=clock, sleep=sleep)


#: request weights: aggTrades 20 on USD-M, the rest 1 unless by limit
#: (https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api)
AGG_TRADES_WEIGHT = 20
FUNDING_WEIGHT = 1
EXCHANGE_INFO_WEIGHT = 1
TIME_WEIGHT = 1
AGG_TRADES_LIMIT = 1000
FUNDING_LIMIT = 1000
#: aggTrades by startTime/endTime must span less than one hour
AGG_TRADES_WINDOW_MS = HOUR_MS
#: how far back each history endpoint answers (None: as far as the listing). USD-M aggTrades
#: "support querying futures trade histories that are not older than one year" (Binance docs,
#: https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Compressed-Aggregate-Trades-List);
#: klines and fundingRate page by time from the listing on.
HISTORY_REACH_MS: dict[str, int | None] = {
    "trades": 365 * 24 * HOUR_MS,
    "candles": None,
    "funding": None,
}
DEPTH_WEIGHTS: dict[int, int] = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
#: the top of each klines weight tier: 1500@10, 1000@5, 499@2, 99@1
KLINE_LIMIT_CHOICES = (1500, 1000, 499, 99)

_INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS,
    "1d": 24 * HOUR_MS,
    "3d": 72 * HOUR_MS,
    "1w": 168 * HOUR_MS,
    "1M": 31 * 24 * HOUR_MS,  # upper bound; only used to estimate the number of rows
}


def interval_ms(interval: str) -> int:
    """Length of a Binance kline interval in ms (``1M`` is approximated by 31 days)."""
    try:
        return _INTERVAL_MS[interval]
    except KeyError:
        raise ValueError(
            f"unknown kline interval {interval!r}; known: {list(_INTERVAL_MS)}"
        ) from None


def kline_weight(limit: int) -> int:
    """USD-M klines weight by limit: [1,100)=1, [100,500)=2, [500,1000]=5, >1000=10."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def plan_kline_limit(remaining_rows: int) -> tuple[int, int]:
    """(limit, weight) of the next klines page that fetches ``remaining_rows`` cheapest.

    Compares the top of each weight tier by the total weight of the pages it needs (ties go to
    fewer requests): a 1440-row day costs 3x499@2 = 6 instead of 1x1500@10.
    """
    remaining = max(1, remaining_rows)
    best: tuple[int, int, int, int] | None = None  # (cost, pages, limit, weight)
    for top in KLINE_LIMIT_CHOICES:
        limit = min(top, remaining)
        pages = math.ceil(remaining / limit)
        weight = kline_weight(limit)
        candidate = (pages * weight, pages, limit, weight)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    assert best is not None
    return best[2], best[3]


def depth_weight(limit: int) -> int:
    try:
        return DEPTH_WEIGHTS[limit]
    except KeyError:
        raise ValueError(
            f"depth limit must be one of {sorted(DEPTH_WEIGHTS)}, got {limit}"
        ) from None


class BinanceRestClient(TransportClient):
    """History from ``fapi`` REST, within the weight budget, as lake frames.

    Time ranges are half-open ``[start_ms, end_ms)`` on the dataset's time column. ``clock``
    (seconds) and ``sleep`` are injectable so tests can run against a simulated exchange clock.
    """

    #: venue capability: how far back each history endpoint answers (see HISTORY_REACH_MS)
    history_reach_ms: Mapping[str, int | None] = HISTORY_REACH_MS

    def __init__(
        self,
        endpoints: ExchangeEndpoints,
        rest: RestSettings,
        budget: WeightBudget | None = None,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.endpoints = endpoints
        self.rest = rest
        self.budget = budget or budget_from_settings(rest, clock=clock, sleep=sleep)
        self._clock = clock
        self.transport = RestTransport(
            endpoints.rest_base_url,
            rest,
            rate_model(rest.weight_limit_per_minute),
            self.budget,
            session=session,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _get(self, path: str, params: Mapping[str, Any], weight: int) -> tuple[Any, int]:
        body, _headers = self.transport.get(path, params, weight)
        return body, self._now_ms()

    # -- candles ----------------------------------------------------------------------------

    def klines(self, symbol: str, start_ms: int, end_ms: int, interval: str = "1m") -> pd.DataFrame:
        """CLOSED candles with ``start_ms <= open_time < end_ms`` (CANDLES frame, source=rest).

        Pages by open time with the cheapest limit per remaining row (``plan_kline_limit``).
        "Closed" is judged against the exchange's clock (one ``/fapi/v1/time`` call, weight 1),
        not ours: a skewed local clock must never let an in-progress candle into the lake.
        """
        step = interval_ms(interval)
        parts: list[pd.DataFrame] = []
        cursor = start_ms
        server_now = self.server_time()
        stop = min(end_ms, server_now)
        while cursor < stop:
            limit, weight = plan_kline_limit(math.ceil((stop - cursor) / step))
            params = {
                "symbol": symbol,
                "interval": interval,
                "startTime": cursor,
                "endTime": end_ms - 1,
                "limit": limit,
            }
            body, received = self._get(KLINES_PATH, params, weight)
            cols = parse_klines(body)
            opens = cols["open_time"]
            if not opens:
                break
            frame = frame_from(
                cols,
                KLINE_DECIMALS,
                schemas.CANDLES,
                {
                    "exchange": EXCHANGE,
                    "symbol": symbol,
                    "interval": interval,
                    "source": str(Source.REST),
                    "received_at": received,
                },
            )
            open_ms = np.asarray(opens, dtype=np.int64)
            close_ms = np.asarray(cols["close_time"], dtype=np.int64)
            keep = (open_ms >= start_ms) & (open_ms < end_ms) & (close_ms < server_now)
            parts.append(frame[keep])
            if len(opens) < limit or not keep[-1]:
                break  # range exhausted, or we reached the candle still in progress
            if opens[-1] < cursor:
                raise MessageError("klines went backwards", field="open_time")
            cursor = opens[-1] + (1 if interval == "1M" else step)  # months vary in length
        return concat_pages(parts, schemas.CANDLES, ("open_time",))

    # -- trades -----------------------------------------------------------------------------

    def agg_trades(self, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Aggregate trades with ``start_ms <= trade_time < end_ms`` (TRADES frame, source=rest).

        One time-window request (< 1 h, moving hour by hour over empty hours) finds the first
        id; then ``fromId = last + 1`` pages, which cannot skip or repeat a trade the way time
        windows at page boundaries can.
        """
        first = self.first_agg_page(symbol, start_ms, end_ms)
        parts = [first]
        if not first.empty and int(first["trade_time"].iloc[-1].value // 1_000_000) < end_ms:
            # the first page came from a time window: short does not mean done
            more, _ = self.agg_trades_from_id(
                symbol, int(first["agg_trade_id"].iloc[-1]) + 1, stop_ms=end_ms
            )
            parts.append(more)
        frame = concat_pages(parts, schemas.TRADES, ("agg_trade_id",))
        start = pd.Timestamp(start_ms, unit="ms", tz="UTC")
        end = pd.Timestamp(end_ms, unit="ms", tz="UTC")
        keep = (frame["trade_time"] >= start) & (frame["trade_time"] < end)
        return frame[keep].reset_index(drop=True)

    def first_agg_page(self, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """The first page of aggregate trades with ``start_ms <= T < end_ms``: time windows
        under an hour, moving hour by hour over empty hours; empty when the venue shows none."""
        window = start_ms
        while window < end_ms:
            window_end = min(window + AGG_TRADES_WINDOW_MS, end_ms)
            params = {
                "symbol": symbol,
                "startTime": window,
                "endTime": window_end - 1,
                "limit": AGG_TRADES_LIMIT,
            }
            body, received = self._get(AGG_TRADES_PATH, params, AGG_TRADES_WEIGHT)
            cols = parse_agg_trades(body)
            if cols["agg_trade_id"]:
                return self._agg_frame(cols, symbol, received)
            window = window_end
        return schemas.TRADES.empty_frame()

    def _agg_frame(self, cols: dict[str, list[Any]], symbol: str, received: int) -> pd.DataFrame:
        extra = {"exchange": EXCHANGE, "symbol": symbol, "source": str(Source.REST)}
        return frame_from(
            cols, ("price", "quantity"), schemas.TRADES, extra | {"received_at": received}
        )

    def _agg_page(self, symbol: str, from_id: int, limit: int) -> pd.DataFrame:
        params = {"symbol": symbol, "fromId": from_id, "limit": limit}
        body, received = self._get(AGG_TRADES_PATH, params, AGG_TRADES_WEIGHT)
        cols = parse_agg_trades(body)
        ids = cols["agg_trade_id"]
        if ids and (ids[0] < from_id or any(b <= a for a, b in zip(ids, ids[1:], strict=False))):
            raise MessageError(
                f"aggTrades page from id {from_id} is not ascending from fromId", field="a"
            )
        return self._agg_frame(cols, symbol, received)

    def agg_trades_from_id(
        self,
        symbol: str,
        from_id: int,
        *,
        stop_ms: int | None = None,
        stop_id: int | None = None,
    ) -> tuple[pd.DataFrame, bool]:
        """Trades from ``from_id`` on, paged by ``fromId``: until one at or after ``stop_ms``
        (kept: it proves the range before it complete), an id >= ``stop_id``, or a short page
        (caught up with the present: the second value is True).

        Ids, not times: a lost trade sharing the millisecond of the last one held is found.
        """
        parts: list[pd.DataFrame] = []
        cursor = from_id
        while True:
            page = self._agg_page(symbol, cursor, AGG_TRADES_LIMIT)
            if page.empty:
                return concat_pages(parts, schemas.TRADES, ("agg_trade_id",)), True
            parts.append(page)
            last_id = int(page["agg_trade_id"].iloc[-1])
            last_ms = int(page["trade_time"].iloc[-1].value // 1_000_000)
            if (stop_ms is not None and last_ms >= stop_ms) or (
                stop_id is not None and last_id >= stop_id
            ):
                return concat_pages(parts, schemas.TRADES, ("agg_trade_id",)), False
            if len(page) < AGG_TRADES_LIMIT:
                return concat_pages(parts, schemas.TRADES, ("agg_trade_id",)), True
            cursor = last_id + 1

    def agg_trades_before_id(self, symbol: str, before_id: int, start_ms: int) -> pd.DataFrame:
        """Trades with ids below ``before_id``, paged backwards by ``fromId`` until one earlier
        than ``start_ms`` (kept: it proves the range after it) or id 0 (the first trade)."""
        parts: list[pd.DataFrame] = []
        upper = before_id
        while upper > 0:
            lo = max(upper - AGG_TRADES_LIMIT, 0)
            page = self._agg_page(symbol, lo, upper - lo)
            page = page[page["agg_trade_id"] < upper]
            if page.empty:
                break
            parts.append(page)
            if int(page["trade_time"].iloc[0].value // 1_000_000) < start_ms:
                break
            upper = int(page["agg_trade_id"].iloc[0])
            if upper != lo:  # the venue skipped ids below this page: do not page forever
                break
        return concat_pages(parts, schemas.TRADES, ("agg_trade_id",))

    # -- funding ----------------------------------------------------------------------------

    def funding_rates(self, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Settled funding with ``start_ms <= funding_time < end_ms`` (FUNDING frame)."""
        parts: list[pd.DataFrame] = []
        cursor = start_ms
        while cursor < end_ms:
            params = {
                "symbol": symbol,
                "startTime": cursor,
                "endTime": end_ms - 1,
                "limit": FUNDING_LIMIT,
            }
            body, received = self._get(FUNDING_PATH, params, FUNDING_WEIGHT)
            cols = parse_funding(body)
            times = cols["funding_time"]
            if not times:
                break
            parts.append(
                frame_from(
                    cols,
                    ("funding_rate", "mark_price"),
                    schemas.FUNDING,
                    {
                        "exchange": EXCHANGE,
                        "symbol": symbol,
                        "source": str(Source.REST),
                        "received_at": received,
                    },
                )
            )
            if len(times) < FUNDING_LIMIT:
                break
            if times[-1] < cursor:
                raise MessageError("funding went backwards", field="fundingTime")
            cursor = times[-1] + 1
        frame = concat_pages(parts, schemas.FUNDING, ("funding_time",))
        start = pd.Timestamp(start_ms, unit="ms", tz="UTC")
        end = pd.Timestamp(end_ms, unit="ms", tz="UTC")
        in_range = (frame["funding_time"] >= start) & (frame["funding_time"] < end)
        return frame[in_range].reset_index(drop=True)

    # -- book, metadata ---------------------------------------------------------------------

    def depth_snapshot(self, symbol: str, limit: int = 1000) -> DepthSnapshotRecord:
        """A REST book snapshot (the seed of the local order book; Binance's procedure:
        https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/How-to-manage-a-local-order-book-correctly)."""
        body, received = self._get(
            DEPTH_PATH, {"symbol": symbol, "limit": limit}, depth_weight(limit)
        )
        return parse_depth(body, symbol, received)

    def exchange_info(self) -> ExchangeInfo:
        """Symbols, filters and rate limits; also adopts the live weight limit in the budget."""
        body, _ = self._get(EXCHANGE_INFO_PATH, {}, EXCHANGE_INFO_WEIGHT)
        info = parse_exchange_info(body)
        self.budget.set_limit(info.weight_limit_per_minute(self.budget.limit))
        return info

    def server_time(self) -> int:
        """The exchange's clock in ms."""
        body, _ = self._get(TIME_PATH, {}, TIME_WEIGHT)
        return parse_server_time(body)
