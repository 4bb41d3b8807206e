"""The deterministic market's numbers in Bybit v5 linear's formats (ids, sequences, payloads).

The same venue-neutral generator feeds Binance and Bybit, so a Bybit symbol's prices equal the
generator's, formatted Bybit's way. Field sets and order copy the real recordings in
petrosa_pipelines_tests/fixtures/bybit/ws/cryptofeed_2026-08-09 (see its PROVENANCE.md):
book/trade/ticker prices are zero-padded to the instrument's price scale, kline numbers trimmed;
trade ids are version-5 UUIDs; one taker order's fills share one ``seq``; ``seq`` (book, trades)
and ``cs`` (tickers) rise in one range per symbol, so they order trades against book updates.
"""

from __future__ import annotations

import datetime as dt
import uuid
from bisect import bisect_right
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

from petrosa_pipelines.local_exchange.arrays import DayTrades, KlineArrays
from petrosa_pipelines.local_exchange.generator import MarketGenerator
from petrosa_pipelines.local_exchange.units import (
    DAY_MS,
    INTERVALS_MS,
    MINUTE_MS,
    day_start_ms,
    fmt_fixed,
    mix,
    mix_int,
    stable_hash,
    to_date,
)

#: Bybit kline interval names -> the generator's
KLINE_INTERVALS = {
    "1": "1m",
    "3": "3m",
    "5": "5m",
    "15": "15m",
    "30": "30m",
    "60": "1h",
    "120": "2h",
    "240": "4h",
    "360": "6h",
    "720": "12h",
    "D": "1d",
}
#: ``seq`` = base + (ms - SEQ_EPOCH_MS) * SEQ_PER_MS + slot: trade messages take slots 0..11 of
#: their millisecond, the book message of a step slot 14, the ticker slot 15 (strictly rising per
#: symbol). Real BTCUSDT seqs are ~7.5e11; ours stay below 2**53 / 1000 (the project's trade id
#: is seq * 1000 + index) for times from 2020 to 2035
SEQ_EPOCH_MS = 1_577_836_800_000  # 2020-01-01
SEQ_PER_MS = 16
TRADE_SLOTS = 12
BOOK_SLOT = 14
TICKER_SLOT = 15
_TICKS = ("PlusTick", "ZeroPlusTick", "MinusTick", "ZeroMinusTick")
_UUID_NS = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # RFC 4122 URL namespace


def fmt_trimmed(value: int, decimals: int) -> str:
    """Exact decimal without trailing zeros (Bybit's kline numbers: ``"65119.9"``, ``"0"``)."""
    text = fmt_fixed(value, decimals)
    return text.rstrip("0").rstrip(".") if "." in text else text


class BybitFormats:
    """Bybit's view of one generator: ids, sequences and the payloads built from them."""

    def __init__(self, market: MarketGenerator):
        self.market = market
        self._meta = lru_cache(maxsize=16)(self._day_meta)
        self._seq_base = lru_cache(maxsize=256)(self._make_seq_base)
        self._stats_cached = lru_cache(maxsize=1024)(self._day_stats)

    # -- identity ---------------------------------------------------------------------------

    def _make_seq_base(self, symbol: str) -> int:
        return (1 + stable_hash(self.market.config.seed, symbol, "bybit-seq") % 9) * 10**11

    def seq(self, symbol: str, ms: int, slot: int) -> int:
        return self._seq_base(symbol) + (ms - SEQ_EPOCH_MS) * SEQ_PER_MS + slot

    def trade_uuid(self, symbol: str, trade_id: int) -> str:
        """The trade's id: a version-5 UUID of (seed, symbol, generator trade id), like Bybit's."""
        return str(uuid.uuid5(_UUID_NS, f"{self.market.config.seed}/{symbol}/{trade_id}"))

    def _day_meta(self, symbol: str, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
        """Per trade of the day: its tick direction (index into ``_TICKS``: up/down vs the
        previous trade's price, "zero" variants repeating the last move) and its message slot
        (runs of same-millisecond, same-side trades are one taker order: one message)."""
        t = self.market.day_trades(symbol, day)
        if not len(t):
            return np.empty(0, dtype=np.int8), np.empty(0, dtype=np.int64)
        before = self.market.price_at(symbol, day_start_ms(day) - 1)
        move = np.sign(np.diff(t.price, prepend=before))
        idx = np.maximum.accumulate(np.where(move != 0, np.arange(len(move)), -1))
        last = np.where(idx >= 0, move[np.maximum(idx, 0)], 1)
        dirs = np.where(last >= 0, 0, 2).astype(np.int8) + (move == 0)
        new_ms = np.diff(t.time, prepend=-1) != 0
        flips = np.cumsum(~new_ms & (np.diff(t.maker.astype(np.int8), prepend=0) != 0))
        first = np.maximum.accumulate(np.where(new_ms, np.arange(len(t)), 0))
        return dirs, flips - flips[first]

    # -- trades -----------------------------------------------------------------------------

    def trade_rows(self, symbol: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Trades with ``start_ms < T <= end_ms`` as websocket trade objects, oldest first."""
        out: list[dict[str, Any]] = []
        day = to_date(max(start_ms + 1, self.market.start_ms))
        while day_start_ms(day) <= end_ms:
            t = self.market.day_trades(symbol, day)
            lo = int(np.searchsorted(t.time, start_ms + 1, "left"))
            hi = int(np.searchsorted(t.time, end_ms, "right"))
            if hi > lo:
                out.extend(self._rows(symbol, t, *self._meta(symbol, day), lo, hi))
            day += dt.timedelta(days=1)
        return out

    def _rows(
        self, symbol: str, t: DayTrades, dirs: np.ndarray, slots: np.ndarray, lo: int, hi: int
    ) -> list[dict[str, Any]]:
        spec = self.market.spec(symbol)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        return [
            {
                "T": ms,
                "s": symbol,
                "S": "Sell" if maker else "Buy",
                "v": fmt_fixed(q, qd),
                "p": fmt_fixed(p, pd_),
                "L": _TICKS[d],
                "i": self.trade_uuid(symbol, a),
                "BT": False,
                "RPI": False,
                "seq": self.seq(symbol, ms, min(slot, TRADE_SLOTS - 1)),
            }
            for a, p, q, ms, maker, d, slot in zip(
                t.agg_id[lo:hi].tolist(),
                t.price[lo:hi].tolist(),
                t.qty[lo:hi].tolist(),
                t.time[lo:hi].tolist(),
                t.maker[lo:hi].tolist(),
                dirs[lo:hi].tolist(),
                slots[lo:hi].tolist(),
                strict=True,
            )
        ]

    def last_tick_direction(self, symbol: str, ms: int) -> str:
        """The tick direction of the last trade at or before ``ms`` (looking back a day)."""
        day = to_date(max(ms, 0))
        for d in (day, day - dt.timedelta(days=1)):
            view = self.market._day_view(symbol, day_start_ms(d))
            i = bisect_right(view.time, ms) - 1
            if i >= 0:
                return _TICKS[int(self._meta(symbol, d)[0][i])]
        return _TICKS[1]

    # -- candles ----------------------------------------------------------------------------

    def candle(self, symbol: str, interval: str, open_time: int, at_ms: int) -> KlineArrays:
        """The candle opening at ``open_time`` as of ``at_ms`` (flat at the previous close when
        it has no trade yet)."""
        return self.market.live_candle(symbol, interval, open_time, at_ms)

    def kline_object(
        self, symbol: str, interval: str, k: KlineArrays, i: int, confirm: bool, ts: int
    ) -> dict[str, Any]:
        spec = self.market.spec(symbol)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        start = int(k.open_time[i])
        return {
            "start": start,
            "end": start + INTERVALS_MS[KLINE_INTERVALS[interval]] - 1,
            "interval": interval,
            "open": fmt_trimmed(int(k.open[i]), pd_),
            "close": fmt_trimmed(int(k.close[i]), pd_),
            "high": fmt_trimmed(int(k.high[i]), pd_),
            "low": fmt_trimmed(int(k.low[i]), pd_),
            "volume": fmt_trimmed(int(k.volume[i]), qd),
            "turnover": fmt_trimmed(int(k.quote[i]), pd_ + qd),
            "confirm": confirm,
            "timestamp": ts,
        }

    def kline_row(self, symbol: str, k: KlineArrays, i: int) -> list[str]:
        """One ``/v5/market/kline`` row: start, open, high, low, close, volume, turnover."""
        spec = self.market.spec(symbol)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        return [
            str(int(k.open_time[i])),
            *(fmt_trimmed(int(a[i]), pd_) for a in (k.open, k.high, k.low, k.close)),
            fmt_trimmed(int(k.volume[i]), qd),
            fmt_trimmed(int(k.quote[i]), pd_ + qd),
        ]

    # -- book -------------------------------------------------------------------------------

    def levels(self, symbol: str, ticks: np.ndarray, qty: np.ndarray) -> list[list[str]]:
        spec = self.market.spec(symbol)
        return self.market._formats.levels(
            ticks * spec.tick_units, qty, spec.price_decimals, spec.qty_decimals
        )

    def book_ts(self, step: int) -> int:
        """``ts`` of the book message of ``step``: 1-20 ms after its ``cts`` (the step's start),
        as the recordings' ``ts - cts`` (quirk 24 of the shared PROVENANCE)."""
        return step * self.market.book_step_ms + 1 + mix_int(step) % 20

    def book_ts_many(self, steps: np.ndarray) -> np.ndarray:
        """:meth:`book_ts` of many steps at once (``mix`` is ``mix_int`` vectorised)."""
        jitter = (mix(steps.astype(np.uint64)) % np.uint64(20)).astype(np.int64)
        return steps * self.market.book_step_ms + 1 + jitter

    def book_deltas(
        self, symbol: str, first: int, last: int, depth: int
    ) -> list[tuple[int, list[Any], list[Any]]]:
        """(step, bids, asks) of the ``depth``-level book's delta for each step ``first..last``
        (the levels that changed since the step before; size ``"0"`` deletes), as the
        websocket sends them. Bybit never sends both sides empty (quirk 23): an unchanged step
        restates the best bid. Levels are formatted in one batch per side (a day's file is
        millions of them)."""
        pairs = [(s - 1, s) for s in range(first, last + 1)]
        changes = self.market.book_changes(symbol, pairs, depth)
        bids = self._split_levels(
            symbol, [c.bid_ticks for c in changes], [c.bid_qty for c in changes]
        )
        asks = self._split_levels(
            symbol, [c.ask_ticks for c in changes], [c.ask_qty for c in changes]
        )
        out = []
        for ch, b, a in zip(changes, bids, asks, strict=True):
            if not b and not a:
                bid, qty, _, _ = self.market.top_of_book(symbol, ch.new_step)
                one = np.array([bid], dtype=np.int64), np.array([qty], dtype=np.int64)
                b = self.levels(symbol, *one)
            out.append((ch.new_step, b, a))
        return out

    def _split_levels(
        self, symbol: str, ticks: list[np.ndarray], qty: list[np.ndarray]
    ) -> list[list[tuple[str, str]]]:
        """The levels of many level arrays at once (``[price, size]`` text pairs as tuples,
        which orjson writes as the same JSON arrays), split back per array."""
        if not ticks:
            return []
        spec = self.market.spec(symbol)
        many = self.market._formats.many
        prices = many((np.concatenate(ticks) * spec.tick_units).tolist(), spec.price_decimals)
        sizes = many(np.concatenate(qty).tolist(), spec.qty_decimals)
        flat = list(zip(prices, sizes, strict=True))
        ends = np.cumsum([len(t) for t in ticks]).tolist()
        return [flat[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]

    def book_message(
        self, topic: str, symbol: str, kind: str, step: int, u: int, b: Any, a: Any
    ) -> bytes:
        """One ``orderbook`` message of ``step``, the websocket's and the daily history file's
        alike: keys ``topic,type,ts,data{s,b,a,u,seq},cts`` in the recordings' order."""
        cts = step * self.market.book_step_ms
        return orjson.dumps(
            {
                "topic": topic,
                "type": kind,
                "ts": self.book_ts(step),
                "data": {
                    "s": symbol,
                    "b": b,
                    "a": a,
                    "u": u,
                    "seq": self.seq(symbol, cts, BOOK_SLOT),
                },
                "cts": cts,
            }
        )

    # -- tickers ----------------------------------------------------------------------------

    def _day_stats(self, symbol: str, minute_ms: int) -> tuple[int, int, int, int]:
        """(high, low, volume, quote) of the full 1m candles in the 24 h before ``minute_ms``."""
        k = self.market.kline_arrays(symbol, "1m", minute_ms - DAY_MS, minute_ms - 1)
        if not len(k.open_time):
            return 0, 0, 0, 0
        return int(k.high.max()), int(k.low.min()), int(k.volume.sum()), int(k.quote.sum())

    def ticker(self, symbol: str, ms: int) -> dict[str, str]:
        """Every field of a linear ``tickers`` snapshot at ``ms``, in the recording's order."""
        mk, spec = self.market, self.market.spec(symbol)
        pd_, qd = spec.price_decimals, spec.qty_decimals
        last = mk.price_at(symbol, ms)
        minute = ms // MINUTE_MS * MINUTE_MS
        hi, lo, vol, quote = self._stats_cached(symbol, minute)
        part = mk.open_candle_values(symbol, minute, MINUTE_MS, ms)
        if part is not None:  # open_time, open, high, low, close, volume, quote, ...
            hi = max(hi, part[2]) if hi else part[2]
            lo = min(lo, part[3]) if lo else part[3]
            vol, quote = vol + part[5], quote + part[6]
        prev24 = mk.price_at(symbol, ms - DAY_MS)
        scale = 10 ** (8 - pd_)
        mark = (mk.mark_price_e8_from(symbol, ms, last) + scale // 2) // scale
        index = mk.index_price_e8_from(symbol, last) // scale
        oi = self._open_interest(symbol, ms)
        step = ms // mk.book_step_ms
        if step * mk.book_step_ms == ms:  # on the book's grid (every live ticker)
            bid, bid_q, ask, ask_q = mk.top_of_book_at(symbol, step, last)
        else:
            bid, bid_q, ask, ask_q = mk.top_of_book(symbol, step)
        pcnt = (last - prev24) * 10**6 // prev24 if prev24 else 0
        fp, fq = mk._formats.memo(pd_), mk._formats.memo(qd)  # fmt_fixed, memoised
        prev1h = mk.price_at(symbol, ms - 3_600_000)
        return {
            "symbol": symbol,
            "tickDirection": self.last_tick_direction(symbol, ms),
            "price24hPcnt": fmt_fixed(pcnt, 6),
            "lastPrice": fp[last],
            "prevPrice24h": fp[prev24],
            "highPrice24h": fp[hi or last],
            "lowPrice24h": fp[lo or last],
            "prevPrice1h": fp[prev1h],
            "markPrice": fp[mark],
            "indexPrice": fp[index],
            "openInterest": fq[oi],
            "openInterestValue": fmt_fixed(oi * mark // 10 ** (pd_ + qd - 2), 2),
            "turnover24h": fmt_fixed(quote // 10 ** max(pd_ + qd - 4, 0), min(pd_ + qd, 4)),
            "volume24h": fmt_fixed(vol, qd),
            "fundingIntervalHour": "8",
            "fundingCap": "0.005",
            "singleOpenInterest": fq[oi // 2],
            "singleOpenInterestValue": fmt_fixed(oi // 2 * mark // 10 ** (pd_ + qd - 2), 2),
            "nextFundingTime": str(mk.next_funding_time(ms)),
            "fundingRate": fmt_trimmed(mk.predicted_funding_e8(symbol, ms // 1000 * 1000), 8),
            "bid1Price": fp[bid * spec.tick_units],
            "bid1Size": fq[bid_q],
            "ask1Price": fp[ask * spec.tick_units],
            "ask1Size": fq[ask_q],
            "preOpenPrice": "",
            "preQty": "",
            "curPreListingPhase": "",
        }

    def _open_interest(self, symbol: str, ms: int) -> int:
        """A slowly wandering open interest (qty units, even so the single side is exact)."""
        spec = self.market.spec(symbol)
        base = int(spec.level_qty * 1_000 * 10**spec.qty_decimals)
        wobble = mix_int(self.market._hash_cached(symbol, "oi") ^ (ms // MINUTE_MS)) % 1_000
        return (base + wobble * spec.step_units * 10) // 2 * 2
