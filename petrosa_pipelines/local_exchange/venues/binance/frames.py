"""The deterministic market's numbers in Binance USD-M's formats (REST bodies, stream payloads).

A subclass of the venue-neutral :class:`MarketGenerator` that adds what only Binance defines: the
``aggTrade``/``trade``/``kline``/``depthUpdate`` (diff and partial)/``markPriceUpdate``/
``24hrTicker`` payloads, the 12-field kline rows, the ``/fapi/v1/depth`` body and the per-symbol
``U``/``u``/``pu`` update ids. Field names and order
follow https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
and the recordings in petrosa_pipelines_tests/fixtures/binance.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from petrosa_pipelines.local_exchange.arrays import BookState, KlineArrays
from petrosa_pipelines.local_exchange.config import MarketConfig, SymbolSpec
from petrosa_pipelines.local_exchange.generator import MarketGenerator
from petrosa_pipelines.local_exchange.units import (
    DEPTH_CHUNK_STEPS,
    INTERVALS_MS,
    fmt_fixed,
    mix_int,
)

KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)


class BinanceMarket(MarketGenerator):
    """The market plus Binance USD-M's payloads of it."""

    def __init__(self, config: MarketConfig | None = None) -> None:
        super().__init__(config)
        self._sub = 256  # update-id slot per symbol per book step
        self._stride = self._sub * max(len(self.config.symbols), 1)

    # -- trades, klines, funding as Binance serves them -------------------------------------

    def trades(self, symbol: str, day: dt.date | str | int) -> pd.DataFrame:
        """One UTC day of aggTrades as a DataFrame.

        ``price`` and ``quantity`` are float64 values whose ``str()`` is the exact decimal on the
        wire (``Decimal(str(x))`` is exact); ids and ``trade_time`` are int64 ms.
        """
        spec = self.spec(symbol)
        t = self.day_trades(symbol, day)
        return pd.DataFrame(
            {
                "agg_trade_id": t.agg_id,
                "price": t.price / 10**spec.price_decimals,
                "quantity": t.qty / 10**spec.qty_decimals,
                "first_trade_id": t.first_id,
                "last_trade_id": t.last_id,
                "trade_time": t.time,
                "is_buyer_maker": t.maker,
            }
        )

    def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, now_ms: int | None = None
    ) -> pd.DataFrame:
        """Candles as a DataFrame with Binance's column names; prices/volumes as exact strings."""
        return pd.DataFrame(
            self.kline_rows(symbol, interval, start_ms, end_ms, now_ms),
            columns=list(KLINE_COLUMNS),
        ).drop(columns="ignore")

    def kline_rows(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, now_ms: int | None = None
    ) -> list[list[Any]]:
        """The 12-field rows of ``/fapi/v1/klines`` (and of Vision CSVs)."""
        return self.format_klines(
            symbol, interval, self.kline_arrays(symbol, interval, start_ms, end_ms, now_ms)
        )

    def format_klines(self, symbol: str, interval: str, k: KlineArrays) -> list[list[Any]]:
        spec = self.spec(symbol)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        iv = INTERVALS_MS[interval]
        return [
            [
                int(k.open_time[i]),
                fmt_fixed(k.open[i], pd_),
                fmt_fixed(k.high[i], pd_),
                fmt_fixed(k.low[i], pd_),
                fmt_fixed(k.close[i], pd_),
                fmt_fixed(k.volume[i], qd),
                int(k.open_time[i]) + iv - 1,
                fmt_fixed(k.quote[i], pd_ + qd),
                int(k.count[i]),
                fmt_fixed(k.taker_volume[i], qd),
                fmt_fixed(k.taker_quote[i], pd_ + qd),
                "0",
            ]
            for i in range(len(k.open_time))
        ]

    def funding(self, symbol: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Funding events (00, 08, 16 UTC) in ``[start_ms, end_ms]``; rates/marks exact strings."""
        return pd.DataFrame(
            self.funding_rows(symbol, start_ms, end_ms),
            columns=["symbol", "fundingTime", "fundingRate", "markPrice"],
        ).rename(
            columns={
                "fundingTime": "funding_time",
                "fundingRate": "funding_rate",
                "markPrice": "mark_price",
            }
        )

    def funding_rows(self, symbol: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """The objects of ``/fapi/v1/fundingRate``, ascending."""
        self.spec(symbol)
        return [
            {
                "symbol": symbol,
                "fundingTime": ft,
                "fundingRate": fmt_fixed(self.funding_rate_e8(symbol, ft), 8),
                "markPrice": fmt_fixed(self.mark_price_e8(symbol, ft), 8),
            }
            for ft in self.funding_times(start_ms, end_ms)
        ]

    def mark_price_event(self, symbol: str, second_ms: int) -> dict[str, Any]:
        """One ``markPriceUpdate`` at a whole second (``@markPrice@1s``)."""
        price = self.price_at(symbol, second_ms)  # both are of it: one look-up
        mark = self.mark_price_e8_from(symbol, second_ms, price)
        index = self.index_price_e8_from(symbol, price)
        jitter = mix_int(second_ms) % 9
        return {
            "e": "markPriceUpdate",
            "E": second_ms + jitter,
            "s": symbol,
            "p": fmt_fixed(mark, 8),
            "P": fmt_fixed((mark + index) // 2, 8),
            "i": fmt_fixed(index, 8),
            "r": fmt_fixed(self.predicted_funding_e8(symbol, second_ms), 8),
            "T": self.next_funding_time(second_ms),
        }

    # -- order book ----------------------------------------------------------------------------

    def _symbol_slot(self, symbol: str) -> int:
        return self.config.symbols.index(symbol)

    def update_ids(self, symbol: str, step: int) -> tuple[int, int]:
        """(U, u) of the book changes on one book step: one global sequence over symbols.

        Each step owns a block of ids, each symbol a slot in the block, so per symbol ``U`` is
        never ``prev u + 1`` (exactly like Binance USD-M) while ``pu == prev u`` always holds.
        """
        base = step * self._stride + self._symbol_slot(symbol) * self._sub
        j = mix_int(step * 64 + self._symbol_slot(symbol))
        lo = j % (self._sub // 4)
        hi = (j >> 20) % (self._sub // 4)
        return base + lo, base + self._sub - 1 - hi

    def book(self, symbol: str, at_ms: int, limit: int = 1000) -> dict[str, Any]:
        """The ``/fapi/v1/depth`` body at ``at_ms``: the book of the step containing it."""
        spec = self.spec(symbol)
        step = at_ms // self.book_step_ms
        st = self.book_state(symbol, step)
        pd_, qd, fmt = spec.price_decimals, spec.qty_decimals, self._formats.levels
        return {
            "lastUpdateId": self.update_ids(symbol, step)[1],
            "E": at_ms,
            "T": max(at_ms - 3, step * self.book_step_ms),
            "bids": fmt(st.bid_ticks[:limit] * spec.tick_units, st.bid_qty[:limit], pd_, qd),
            "asks": fmt(st.ask_ticks[:limit] * spec.tick_units, st.ask_qty[:limit], pd_, qd),
        }

    def depth_event(self, symbol: str, from_step: int, to_step: int) -> dict[str, Any]:
        """The ``depthUpdate`` carrying the changes of steps ``from_step+1 .. to_step``."""
        spec = self.spec(symbol)
        old, new = self.book_state(symbol, from_step), self.book_state(symbol, to_step)
        return self._depth_event_from(symbol, spec, old, new)

    def _depth_event_from(
        self, symbol: str, spec: SymbolSpec, old: BookState, new: BookState
    ) -> dict[str, Any]:
        bt, bq = self.side_diff(old.bid_ticks, old.bid_qty, new.bid_ticks, new.bid_qty)
        at, aq = self.side_diff(old.ask_ticks, old.ask_qty, new.ask_ticks, new.ask_qty)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        t = new.step * self.book_step_ms
        return {
            "e": "depthUpdate",
            "E": t + 1 + int(new.step % 7),
            "T": t,
            "s": symbol,
            "U": self.update_ids(symbol, old.step + 1)[0],
            "u": self.update_ids(symbol, new.step)[1],
            "pu": self.update_ids(symbol, old.step)[1],
            "b": self._formats.levels(bt * spec.tick_units, bq, pd_, qd),
            "a": self._formats.levels(at * spec.tick_units, aq, pd_, qd),
        }

    def depth_events(
        self, symbol: str, start_ms: int, end_ms: int, every_ms: int = 100
    ) -> list[dict[str, Any]]:
        """``depthUpdate`` diffs for the update boundaries in ``(start_ms, end_ms]``.

        A boundary every ``every_ms`` (100/250/500); each diff covers the book steps since the
        previous boundary, so ``pu`` always equals the previous event's ``u``. A boundary where
        the book did not step sends nothing (Binance pushes a diff only when the book changed).
        """
        spec = self.spec(symbol)
        bounds = np.arange(start_ms // every_ms + 1, end_ms // every_ms + 1, dtype=np.int64)
        to_steps = bounds * every_ms // self.book_step_ms
        from_steps = (bounds - 1) * every_ms // self.book_step_ms
        moved = to_steps != from_steps
        pairs = list(zip(from_steps[moved].tolist(), to_steps[moved].tolist(), strict=True))
        out: list[dict[str, Any]] = []
        for lo in range(0, len(pairs), DEPTH_CHUNK_STEPS):  # bounded memory for long ranges
            out.extend(self._depth_chunk(symbol, spec, pairs[lo : lo + DEPTH_CHUNK_STEPS]))
        return out

    def _depth_chunk(
        self, symbol: str, spec: SymbolSpec, pairs: list[tuple[int, int]]
    ) -> list[dict[str, Any]]:
        """The diffs of ``(from_step, to_step)`` pairs, from one book grid."""
        pd_, qd, tick = spec.price_decimals, spec.qty_decimals, spec.tick_units
        changes = self.book_changes(symbol, pairs)
        fmt = self._formats.levels_of_many
        bids = fmt([c.bid_ticks for c in changes], [c.bid_qty for c in changes], tick, pd_, qd)
        asks = fmt([c.ask_ticks for c in changes], [c.ask_qty for c in changes], tick, pd_, qd)
        out = []
        for ch, b, a in zip(changes, bids, asks, strict=True):
            old, new = ch.old_step, ch.new_step
            t = new * self.book_step_ms
            out.append(
                {
                    "e": "depthUpdate",
                    "E": t + 1 + int(new % 7),
                    "T": t,
                    "s": symbol,
                    "U": self.update_ids(symbol, old + 1)[0],
                    "u": self.update_ids(symbol, new)[1],
                    "pu": self.update_ids(symbol, old)[1],
                    "b": b,
                    "a": a,
                }
            )
        return out

    # -- websocket event helpers ----------------------------------------------------------------

    def agg_trade_events(self, symbol: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """``aggTrade`` payloads for trades with ``start_ms < T <= end_ms``."""
        spec = self.spec(symbol)
        t = self.trades_between(symbol, start_ms + 1, end_ms)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        return [
            {
                "e": "aggTrade",
                "E": tt + 1 + a % 37,
                "a": a,
                "s": symbol,
                "p": fmt_fixed(p, pd_),
                "q": fmt_fixed(q, qd),
                "f": f,
                "l": last,
                "T": tt,
                "m": m,
            }
            for a, p, q, f, last, tt, m in t.rows()
        ]

    def kline_payload(
        self, symbol: str, interval: str, open_time: int, at_ms: int, closed: bool
    ) -> dict[str, Any]:
        """A ``kline`` event for the candle opening at ``open_time`` as of ``at_ms``."""
        iv = INTERVALS_MS[interval]
        if closed:
            k = self.closed_candle(symbol, interval, open_time)
        else:
            k = self.live_candle(symbol, interval, open_time, at_ms)
        spec = self.spec(symbol)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        return {
            "e": "kline",
            "E": at_ms,
            "s": symbol,
            "k": {
                "t": open_time,
                "T": open_time + iv - 1,
                "s": symbol,
                "i": interval,
                "f": int(k.first_id[0]),
                "L": int(k.last_id[0]),
                "o": fmt_fixed(k.open[0], pd_),
                "c": fmt_fixed(k.close[0], pd_),
                "h": fmt_fixed(k.high[0], pd_),
                "l": fmt_fixed(k.low[0], pd_),
                "v": fmt_fixed(k.volume[0], qd),
                "n": int(k.count[0]),
                "x": closed,
                "q": fmt_fixed(k.quote[0], pd_ + qd),
                "V": fmt_fixed(k.taker_volume[0], qd),
                "Q": fmt_fixed(k.taker_quote[0], pd_ + qd),
                "B": "0",
            },
        }

    def kline_events(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, every_ms: int = 250
    ) -> list[dict[str, Any]]:
        """``kline`` updates in ``(start_ms, end_ms]``: every 250 ms while trades arrive, plus
        the final ``x: true`` candle at each close (also for a candle without trades)."""
        iv = INTERVALS_MS[interval]
        if end_ms < self.start_ms:
            return []
        t = self.trades_between(symbol, start_ms - every_ms, end_ms)
        marks = np.arange(start_ms // every_ms + 1, end_ms // every_ms + 1, dtype=np.int64)
        marks *= every_ms
        marks = marks[marks > self.start_ms]
        traded = np.searchsorted(t.time, marks, "left") > np.searchsorted(
            t.time, marks - every_ms, "left"
        )
        closes = marks % iv == 0
        sent = closes | traded
        out = []
        for m, close in zip(marks[sent].tolist(), closes[sent].tolist(), strict=True):
            if close:
                out.append(self.kline_payload(symbol, interval, m - iv, m, True))
            else:
                out.append(self.kline_payload(symbol, interval, (m // iv) * iv, m - 1, False))
        return out

    # -- the Petrosa socket-client's streams: raw trades, partial depth, 24-hour ticker ----------

    def trade_events(self, symbol: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """``trade`` payloads (``@trade``) of the raw trades with ``start_ms < T <= end_ms``.

        Each aggTrade ``a`` is its raw trades ``f..l`` (consecutive ids ``t``, the aggTrade's
        price, time and side, all ``"X":"MARKET"``), its quantity split over them in whole
        quantity steps (an aggTrade with fewer steps than raw trades gives each one step: the
        local market's one departure from the quantities summing to the aggregate's).
        """
        spec = self.spec(symbol)
        t = self.trades_between(symbol, start_ms + 1, end_ms)
        pd_, qd, step = spec.price_decimals, spec.qty_decimals, spec.step_units
        out = []
        for a, p, q, f, last, tt, m in t.rows():
            n = last - f + 1
            steps = q // step
            price = fmt_fixed(p, pd_)
            for i in range(n):
                share = steps // n + (1 if i < steps % n else 0) if steps >= n else 1
                out.append(
                    {
                        "e": "trade",
                        "E": tt + 1 + a % 37,
                        "T": tt,
                        "s": symbol,
                        "t": f + i,
                        "p": price,
                        "q": fmt_fixed(share * step, qd),
                        "X": "MARKET",
                        "m": m,
                    }
                )
        return out

    def partial_depth_event(
        self, symbol: str, from_step: int, to_step: int, levels: int = 20
    ) -> dict[str, Any]:
        """The ``@depth<levels>`` message at book step ``to_step`` (the previous one was at
        ``from_step``): the top ``levels`` of the book, ids as the diff of those steps."""
        spec = self.spec(symbol)
        st = self.book_state(symbol, to_step)
        pd_, qd, fmt = spec.price_decimals, spec.qty_decimals, self._formats.levels
        t = to_step * self.book_step_ms
        bid_ok, ask_ok = st.bid_qty > 0, st.ask_qty > 0
        bt, bq = st.bid_ticks[bid_ok][:levels], st.bid_qty[bid_ok][:levels]
        at, aq = st.ask_ticks[ask_ok][:levels], st.ask_qty[ask_ok][:levels]
        return {
            "e": "depthUpdate",
            "E": t + 1 + int(to_step % 7),
            "T": t,
            "s": symbol,
            "U": self.update_ids(symbol, from_step + 1)[0],
            "u": self.update_ids(symbol, to_step)[1],
            "pu": self.update_ids(symbol, from_step)[1],
            "b": fmt(bt * spec.tick_units, bq, pd_, qd),
            "a": fmt(at * spec.tick_units, aq, pd_, qd),
        }

    def partial_depth_events(
        self, symbol: str, start_ms: int, end_ms: int, levels: int = 20, every_ms: int = 100
    ) -> list[dict[str, Any]]:
        """``@depth<levels>@<every_ms>ms`` messages for the boundaries in ``(start_ms, end_ms]``.

        Partial book depth (https://developers.binance.com/docs/derivatives/
        usds-margined-futures/websocket-market-streams/Partial-Book-Depth-Streams): the same
        ``depthUpdate`` payload as a diff, but ``b``/``a`` are the top ``levels`` of the book.
        Like :meth:`depth_events`, a boundary where the book did not step sends nothing, so
        ``pu`` always equals the previous message's ``u``.
        """
        bounds = np.arange(start_ms // every_ms + 1, end_ms // every_ms + 1, dtype=np.int64)
        to_steps = bounds * every_ms // self.book_step_ms
        from_steps = (bounds - 1) * every_ms // self.book_step_ms
        moved = to_steps != from_steps
        return [
            self.partial_depth_event(symbol, lo, hi, levels)
            for lo, hi in zip(from_steps[moved].tolist(), to_steps[moved].tolist(), strict=True)
        ]

    def ticker_event(self, symbol: str, at_ms: int) -> dict[str, Any]:
        """One ``24hrTicker`` (``@ticker``) at ``at_ms``: statistics of the aggTrades with
        ``at_ms - 24 h < T <= at_ms`` (trade ids and count are raw trades')."""
        spec = self.spec(symbol)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        open_ms = at_ms - 86_400_000
        t = self.trades_between(symbol, open_ms + 1, at_ms)
        if len(t) == 0:
            zero_p, zero_q = fmt_fixed(0, pd_), fmt_fixed(0, qd)
            last = open_ = high = low = zero_p
            last_q, vol, quote, wavg = zero_q, zero_q, fmt_fixed(0, pd_ + qd), zero_p
            change, pct, first_id, last_id, count = zero_p, "0.000", -1, -1, 0
        else:
            p0, p1 = int(t.price[0]), int(t.price[-1])
            volume = int(t.qty.sum())
            if int(t.price.max()) * volume < 2**62:  # exact in int64
                quote_units = int(np.dot(t.price, t.qty))
            else:
                quote_units = int((t.price.astype(object) * t.qty.astype(object)).sum())
            last, open_ = fmt_fixed(p1, pd_), fmt_fixed(p0, pd_)
            high, low = fmt_fixed(int(t.price.max()), pd_), fmt_fixed(int(t.price.min()), pd_)
            last_q, vol = fmt_fixed(int(t.qty[-1]), qd), fmt_fixed(volume, qd)
            quote = fmt_fixed(quote_units, pd_ + qd)
            wavg = fmt_fixed(quote_units // volume if volume else 0, pd_)
            change = fmt_fixed(p1 - p0, pd_)
            pct = f"{(Decimal(p1 - p0) * 100 / Decimal(p0)).quantize(Decimal('0.001'))}"
            first_id, last_id = int(t.first_id[0]), int(t.last_id[-1])
            count = last_id - first_id + 1
        return {
            "e": "24hrTicker",
            "E": at_ms + 1 + at_ms % 7,
            "s": symbol,
            "p": change,
            "P": pct,
            "w": wavg,
            "c": last,
            "Q": last_q,
            "o": open_,
            "h": high,
            "l": low,
            "v": vol,
            "q": quote,
            "O": open_ms,
            "C": at_ms,
            "F": first_id,
            "L": last_id,
            "n": count,
        }

    def ticker_events(
        self, symbol: str, start_ms: int, end_ms: int, every_ms: int = 2000
    ) -> list[dict[str, Any]]:
        """``24hrTicker`` messages every ``every_ms`` (Binance USD-M: 2000 ms) in
        ``(start_ms, end_ms]``."""
        first = max(start_ms, self.start_ms) // every_ms + 1
        return [
            self.ticker_event(symbol, s * every_ms) for s in range(first, end_ms // every_ms + 1)
        ]
