"""One row validation for every history source (REST, archives, landing, a kept partition).

The websocket parser (``petrosa_pipelines/exchanges/binance/schemas.py``: ``to_trade``,
``to_candle``, ``to_mark_price``) rejects non-finite, non-positive or implausibly large prices
and quantities, negative volumes, a last trade id below the first and a close time before the
open time. REST and archive rows arrive as whole frames, so the same rules are applied here,
vectorised, plus the OHLC consistency every candle must have (``low <= min(open, close)``,
``high >= max(open, close)``) and a trade id on every trade (the natural key). A rejected
row is never silently dropped: the fill reports its range as missing and counts it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the websocket parser's plausibility bound (``schemas._MAX``): no price, quantity or volume
#: comes near it
MAX_VALUE = 1e18
#: a funding rate of 100 % per settlement is not a rate (``schemas._MAX_RATE``)
MAX_RATE = 1.0


def _num(frame: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _text_present(frame: pd.DataFrame, col: str) -> np.ndarray:
    """Non-null, non-empty text (a frame without the column has it nowhere)."""
    if col not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    text = frame[col]
    if isinstance(text.dtype, pd.StringDtype):  # compared in arrow: no object per row
        return (text.notna() & (text != "")).to_numpy(dtype=bool, na_value=False)
    text = text.to_numpy(dtype=object)
    return pd.notna(text) & (text != "")


def _positive(frame: pd.DataFrame, col: str) -> np.ndarray:
    v = _num(frame, col)
    return (v > 0) & (v < MAX_VALUE)  # NaN compares False: rejected


def _non_negative(frame: pd.DataFrame, col: str) -> np.ndarray:
    v = _num(frame, col)
    return (v >= 0) & (v < MAX_VALUE)


def _rules(frame: pd.DataFrame, dataset: str) -> list[tuple[str, np.ndarray]]:
    """(reason, ok mask) pairs, first failing reason wins."""
    if dataset == "trades":
        first, last = _num(frame, "first_trade_id"), _num(frame, "last_trade_id")
        return [
            ("trade_time missing", frame["trade_time"].notna().to_numpy()),
            ("agg_trade_id negative", _num(frame, "agg_trade_id") >= 0),
            ("trade_id missing", _text_present(frame, "trade_id")),
            ("price not > 0", _positive(frame, "price")),
            ("quantity not > 0", _positive(frame, "quantity")),
            ("last_trade_id < first_trade_id", (first >= 0) & (last >= first)),
        ]
    if dataset == "candles":
        o, h, lo, c = (_num(frame, k) for k in ("open", "high", "low", "close"))
        rules = [("open_time missing", frame["open_time"].notna().to_numpy())]
        rules += [(f"{k} not > 0", _positive(frame, k)) for k in ("open", "high", "low", "close")]
        rules += [
            (f"{k} negative", _non_negative(frame, k))
            for k in ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
        ]
        rules += [
            ("trade_count negative", _num(frame, "trade_count") >= 0),
            ("close_time < open_time", (frame["close_time"] >= frame["open_time"]).to_numpy()),
            ("high < max(open, close)", h >= np.maximum(o, c)),
            ("low > min(open, close)", lo <= np.minimum(o, c)),
            ("high < low", h >= lo),
        ]
        return rules
    if dataset == "funding":
        rate = _num(frame, "funding_rate")
        mark = _num(frame, "mark_price")
        return [
            ("funding_time missing", frame["funding_time"].notna().to_numpy()),
            ("funding_rate not plausible", np.abs(rate) < MAX_RATE),
            ("mark_price not > 0", np.isnan(mark) | ((mark > 0) & (mark < MAX_VALUE))),
        ]
    return []


#: rows judged at a time: the rules' float copies and masks are of this many rows, not of a
#: whole day (10 M trades: six 80 MB float copies at once, 400 MB, before)
BLOCK_ROWS = 1 << 20


def reason_codes(frame: pd.DataFrame, dataset: str) -> tuple[np.ndarray, list[str]]:
    """Per row, 0 when valid else 1 + the index of the first rule it fails (uint8), and the
    rules' reasons in order; judged ``BLOCK_ROWS`` rows at a time."""
    codes = np.zeros(len(frame), dtype=np.uint8)
    names: list[str] = []
    for lo in range(0, len(frame), BLOCK_ROWS):
        rules = _rules(frame.iloc[lo : lo + BLOCK_ROWS], dataset)
        names = [reason for reason, _ in rules]
        block = codes[lo : lo + BLOCK_ROWS]
        for k in range(len(rules) - 1, -1, -1):  # last to first: the first rule wins
            block[~np.asarray(rules[k][1], dtype=bool)] = k + 1
    return codes, names


def invalid_reasons(frame: pd.DataFrame, dataset: str) -> pd.Series:
    """Per row, why it is rejected ("" when valid), aligned with ``frame``'s index."""
    codes, names = reason_codes(frame, dataset)
    reasons = np.array(["", *names], dtype=object)[codes]
    return pd.Series(reasons, index=frame.index, dtype=object)


def split_valid(frame: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(valid rows, rejected rows, {reason: count}) of a lake frame; a frame without a
    rejected row is returned as is (no copy)."""
    codes, names = reason_codes(frame, dataset)
    bad = codes != 0
    if not bad.any():
        return frame, frame.iloc[0:0], {}
    counts: dict[str, int] = {}
    for code, n in enumerate(np.bincount(codes[bad], minlength=len(names) + 1)):
        if code and n:
            counts[names[code - 1]] = counts.get(names[code - 1], 0) + int(n)
    return frame[~bad], frame[bad], dict(sorted(counts.items()))
