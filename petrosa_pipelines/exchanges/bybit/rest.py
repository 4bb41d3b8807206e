"""Bybit v5 REST history client: klines, funding history, recent trades, book, instruments.

Same public names as the Binance client where the concept matches (``klines``,
``funding_rates``, ``depth_snapshot``, ``exchange_info``, ``server_time``,
``history_reach_ms``), so the partition fill calls either. Bybit differs in three ways:

* **errors come in the body**: HTTP 200 with ``retCode != 0``
  (https://bybit-exchange.github.io/docs/v5/error). ``10006`` (too many visits) waits for
  ``X-Bapi-Limit-Reset-Timestamp`` and retries; ``10000``/``10016`` (server timeout, server
  error) back off and retry; anything else (``10001`` parameter error, ``10029`` unknown
  symbol, ...) is an ``ExchangeError`` at once;
* **the IP limit is 600 requests per 5-second window** on every market of api.bybit.com, and
  breaking it answers HTTP 403 ("access too frequent") with a 10-minute ban
  (https://bybit-exchange.github.io/docs/v5/rate-limit); HTTP 429 is "system level frequency
  protection, please retry" (https://bybit-exchange.github.io/docs/v5/error).
  ``RATE_MODEL`` declares all of it, with ``X-Bapi-Limit-Status`` (requests left) at 0
  blocking the budget until ``X-Bapi-Limit-Reset-Timestamp``; the shared ``RestTransport``
  follows it;
* **pages come newest first** (klines, funding), so paging walks ``end`` backwards; and
  ``/v5/market/recent-trade`` only returns the latest 1000 trades: trades have no REST history
  (``history_reach_ms`` leaves them out; ``recent_trades`` serves the live tail).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import requests

from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    DepthSnapshotRecord,
    ExchangeInfo,
    FundingRecord,
    MessageError,
    RateLimit,
    SymbolInfo,
)
from petrosa_pipelines.exchanges.bybit.bodies import (
    parse_funding,
    parse_instruments,
    parse_klines,
    parse_orderbook,
    parse_recent_trades,
    result_of,
)
from petrosa_pipelines.exchanges.bybit.schemas import BYBIT_INTERVALS
from petrosa_pipelines.exchanges.frames import records_to_frame
from petrosa_pipelines.exchanges.ratelimit import RateModel, WeightBudget
from petrosa_pipelines.exchanges.transport import RestTransport, TransportClient
from petrosa_pipelines.lib.endpoints import RestSettings

CATEGORY = "linear"
KLINE_PATH = "/v5/market/kline"
RECENT_TRADE_PATH = "/v5/market/recent-trade"
ORDERBOOK_PATH = "/v5/market/orderbook"
FUNDING_PATH = "/v5/market/funding/history"
INSTRUMENTS_PATH = "/v5/market/instruments-info"
TIME_PATH = "/v5/market/time"

KLINE_LIMIT = 1000
FUNDING_LIMIT = 200
RECENT_TRADES_LIMIT = 1000
INSTRUMENTS_LIMIT = 1000
#: https://bybit-exchange.github.io/docs/v5/rate-limit: 600 requests per 5 s per IP, shared by
#: every market on the host; a 403 "access too frequent" means "wait for at least 10 minutes"
IP_LIMIT_REQUESTS = 600
IP_LIMIT_WINDOW_S = 5
IP_BAN_SECONDS = 600.0
#: https://bybit-exchange.github.io/docs/v5/error: too many visits, IP rate limit, system-level
#: frequency protection; server timeout, server error
RATE_LIMIT_CODES = frozenset({10006, 10018, 10429})
RETRY_CODES = frozenset({10000, 10016})
LIMIT_STATUS_HEADER = "X-Bapi-Limit-Status"
LIMIT_RESET_HEADER = "X-Bapi-Limit-Reset-Timestamp"


def _ret_code(body: Any) -> int | None:
    """``retCode`` of a v5 body (an int or digit string), None when it has none."""
    code = body.get("retCode") if isinstance(body, dict) else None
    if isinstance(code, str) and code.lstrip("-").isdigit():
        code = int(code)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _ret_error(body: Any) -> int | None:
    """The error a 200 body carries: a ``retCode`` other than 0 (a body without one is
    ``result_of``'s to refuse)."""
    code = _ret_code(body)
    return None if code in (None, 0) else code


def _ret_msg(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    return str(body.get("retMsg", ""))[:200] or None


#: Bybit's IP limit: 600 requests in any 5 s (counted as a rolling window, so the budget keeps
#: half per aligned window), one unit per request; named "bybit" because every Bybit market on
#: api.bybit.com spends the same IP limit. 403 is the 10-minute ban, 429 a retry after backoff;
#: body codes as above.
RATE_MODEL = RateModel(
    name="bybit",
    limit=IP_LIMIT_REQUESTS,
    window_seconds=IP_LIMIT_WINDOW_S,
    rolling=True,
    remaining_header=LIMIT_STATUS_HEADER,
    reset_header=LIMIT_RESET_HEADER,
    rate_limit_statuses=frozenset({403, 429}),
    ban_seconds={403: IP_BAN_SECONDS},
    error_code=_ret_code,
    error_message=_ret_msg,
    body_error=_ret_error,
    rate_limit_codes=RATE_LIMIT_CODES,
    retry_codes=RETRY_CODES,
)

#: how far back each history endpoint answers (None: from the listing on); trades: absent
HISTORY_REACH_MS: dict[str, int | None] = {"candles": None, "funding": None}


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------


class BybitRestClient(TransportClient):
    """History from Bybit v5 REST as lake frames, within the IP limit.

    Time ranges are half-open ``[start_ms, end_ms)``. ``clock`` (seconds), ``sleep`` and
    ``session`` are injectable so tests run against a fake server and a fake clock.
    """

    history_reach_ms: Mapping[str, int | None] = HISTORY_REACH_MS

    def __init__(
        self,
        base_url: str,
        rest: RestSettings,
        budget: WeightBudget | None = None,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.rest = rest
        self.budget = budget or WeightBudget.from_settings(
            rest, RATE_MODEL, clock=clock, sleep=sleep
        )
        self._clock = clock
        self.transport = RestTransport(
            base_url,
            rest,
            RATE_MODEL,
            self.budget,
            session=session,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )

    def _call(self, path: str, params: Mapping[str, Any]) -> tuple[Any, int, int]:
        """GET ``path`` -> (result, server time ms, receipt time ms); the transport has
        already retried or raised every ``retCode`` other than 0 (``RATE_MODEL``)."""
        body, _headers = self.transport.get(path, params, 1)
        received = int(self._clock() * 1000)
        _code, _msg, result = result_of(body)  # refuses a body without an integer retCode
        server = body.get("time")
        server_ms = server if isinstance(server, int) and server > 0 else received
        return result, server_ms, received

    # -- history ----------------------------------------------------------------------------

    def klines(self, symbol: str, start_ms: int, end_ms: int, interval: str = "1m") -> pd.DataFrame:
        """CLOSED candles with ``start_ms <= open_time < end_ms`` (CANDLES frame, source=rest).

        Pages of 1000 walk ``end`` backwards (Bybit answers newest first). "Closed" is judged
        against Bybit's clock (every body's ``time``), never ours.
        """
        bybit_interval = BYBIT_INTERVALS.get(interval)
        if bybit_interval is None:
            raise ValueError(f"unknown interval {interval!r}; known {list(BYBIT_INTERVALS)}")
        records: list[CandleRecord] = []
        cursor = end_ms - 1
        while cursor >= start_ms:
            params = {
                "category": CATEGORY,
                "symbol": symbol,
                "interval": bybit_interval,
                "start": start_ms,
                "end": cursor,
                "limit": KLINE_LIMIT,
            }
            result, server_ms, received = self._call(KLINE_PATH, params)
            page = parse_klines(result, symbol, interval, server_ms, received)
            if not page:
                break
            records.extend(page)
            oldest = page[0].open_time
            if len(page) < KLINE_LIMIT or oldest <= start_ms:
                break
            if oldest > cursor:
                raise MessageError("klines page is newer than its end", field="result.list")
            cursor = oldest - 1
        records = [r for r in records if start_ms <= r.open_time < end_ms]
        return _sorted(records_to_frame("candles", records), "open_time")

    def funding_rates(self, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Settled funding with ``start_ms <= funding_time < end_ms`` (FUNDING frame, no mark
        price: Bybit's history has none). Pages of 200 walk ``endTime`` backwards."""
        records: list[FundingRecord] = []
        cursor = end_ms - 1
        while cursor >= start_ms:
            params = {
                "category": CATEGORY,
                "symbol": symbol,
                "startTime": start_ms,
                "endTime": cursor,
                "limit": FUNDING_LIMIT,
            }
            result, _, received = self._call(FUNDING_PATH, params)
            page = parse_funding(result, symbol, received)
            if not page:
                break
            records.extend(page)
            oldest = page[0].funding_time
            if len(page) < FUNDING_LIMIT or oldest <= start_ms:
                break
            if oldest > cursor:
                raise MessageError("funding page is newer than its end", field="result.list")
            cursor = oldest - 1
        records = [r for r in records if start_ms <= r.funding_time < end_ms]
        return _sorted(records_to_frame("funding", records), "funding_time")

    def recent_trades(self, symbol: str, limit: int = RECENT_TRADES_LIMIT) -> pd.DataFrame:
        """The latest ``limit`` (<= 1000) trades, oldest first (TRADES frame, source=rest).

        Not history: Bybit's REST has no older trades (the daily archive has them).
        """
        if not 1 <= limit <= RECENT_TRADES_LIMIT:
            raise ValueError(f"limit must be in [1, {RECENT_TRADES_LIMIT}], got {limit}")
        params = {"category": CATEGORY, "symbol": symbol, "limit": limit}
        result, _, received = self._call(RECENT_TRADE_PATH, params)
        return records_to_frame("trades", parse_recent_trades(result, symbol, received))

    def depth_snapshot(self, symbol: str, limit: int = 200) -> DepthSnapshotRecord:
        """A REST book snapshot; its ``u`` is the websocket book's (``orderbook.200``/``.1000``)."""
        params = {"category": CATEGORY, "symbol": symbol, "limit": limit}
        result, _, received = self._call(ORDERBOOK_PATH, params)
        return parse_orderbook(result, symbol, received)

    def exchange_info(self) -> ExchangeInfo:
        """Every linear instrument (cursor pages of 1000) and the IP limit as a rate limit."""
        symbols: list[SymbolInfo] = []
        cursor = ""
        server_ms = None
        for _ in range(1000):  # a cursor that never ends must not loop forever
            params: dict[str, Any] = {"category": CATEGORY, "limit": INSTRUMENTS_LIMIT}
            if cursor:
                params["cursor"] = cursor
            result, server_ms, _ = self._call(INSTRUMENTS_PATH, params)
            page, next_cursor = parse_instruments(result)
            symbols.extend(page)
            if not next_cursor or next_cursor == cursor or not page:
                break
            cursor = next_cursor
        limit = RateLimit(
            "RAW_REQUESTS", "SECOND", int(RATE_MODEL.window_seconds), RATE_MODEL.limit
        )
        return ExchangeInfo(server_time=server_ms, symbols=tuple(symbols), rate_limits=(limit,))

    def server_time(self) -> int:
        """Bybit's clock in ms (``/v5/market/time``)."""
        result, server_ms, _ = self._call(TIME_PATH, {})
        nano = result.get("timeNano") if isinstance(result, dict) else None
        if isinstance(nano, str) and nano.isdigit():
            return int(nano) // 1_000_000
        return server_ms


def _sorted(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Pages may overlap at their edges: one row per key, ascending."""
    frame = frame.drop_duplicates(subset=["exchange", "symbol", key], keep="first")
    return frame.sort_values(key).reset_index(drop=True)
