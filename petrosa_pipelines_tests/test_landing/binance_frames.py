"""Builders of Binance USD-M combined-stream frames (the exact wire format) for landing tests."""

from __future__ import annotations

import orjson


def _frame(stream: str, data: dict) -> bytes:
    return orjson.dumps({"stream": stream, "data": data})


def agg_trade(symbol: str, agg_id: int, t: int, price: str = "100.5", qty: str = "0.01") -> bytes:
    return _frame(
        f"{symbol.lower()}@aggTrade",
        {
            "e": "aggTrade", "E": t + 1, "a": agg_id, "s": symbol, "p": price, "q": qty,
            "f": agg_id * 2, "l": agg_id * 2 + 1, "T": t, "m": agg_id % 2 == 0,
        },
    )  # fmt: skip


def kline(symbol: str, open_time: int, closed: bool, event_time: int | None = None) -> bytes:
    return _frame(
        f"{symbol.lower()}@kline_1m",
        {
            "e": "kline", "E": event_time or open_time + 60_000, "s": symbol,
            "k": {
                "t": open_time, "T": open_time + 59_999, "s": symbol, "i": "1m", "f": 1, "L": 2,
                "o": "100.0", "c": "101.0", "h": "102.0", "l": "99.5", "v": "3.5", "n": 2,
                "x": closed, "q": "350.0", "V": "1.5", "Q": "150.0", "B": "0",
            },
        },
    )  # fmt: skip


def depth_update(
    symbol: str,
    first: int,
    final: int,
    prev: int,
    t: int,
    bids: list[tuple[str, str]] = (),
    asks: list[tuple[str, str]] = (),
) -> bytes:
    return _frame(
        f"{symbol.lower()}@depth@100ms",
        {
            "e": "depthUpdate", "E": t, "T": t - 1, "s": symbol, "U": first, "u": final,
            "pu": prev, "b": [list(b) for b in bids], "a": [list(a) for a in asks],
        },
    )  # fmt: skip


def mark_price(symbol: str, t: int, rate: str, next_funding: int, mark: str = "100.0") -> bytes:
    return _frame(
        f"{symbol.lower()}@markPrice@1s",
        {
            "e": "markPriceUpdate", "E": t, "s": symbol, "p": mark, "P": mark, "i": mark,
            "r": rate, "T": next_funding,
        },
    )  # fmt: skip
