"""What the synthetic market looks like: the per-symbol filters and the market's knobs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from petrosa_pipelines.local_exchange.units import BOOK_STEP_MS, DAY_MS, stable_hash


@dataclass(frozen=True)
class SymbolSpec:
    """Exchange filters and the character of one instrument's synthetic market."""

    price_decimals: int  # decimals on the wire (Binance ``pricePrecision``)
    tick_units: int  # tick size in units of 10**-price_decimals
    qty_decimals: int
    step_units: int  # step size in units of 10**-qty_decimals
    start_price: float
    mean_qty: float  # typical aggTrade size in base asset
    level_qty: float  # typical resting size of one book level
    #: correlation of the symbol's intraday returns with the shared market factor (0..1)
    market_loading: float = 0.75

    @property
    def tick_size(self) -> Decimal:
        return Decimal(self.tick_units).scaleb(-self.price_decimals)

    @property
    def step_size(self) -> Decimal:
        return Decimal(self.step_units).scaleb(-self.qty_decimals)


KNOWN_SYMBOLS: dict[str, SymbolSpec] = {
    "BTCUSDT": SymbolSpec(2, 10, 3, 1, 42_000.0, 0.05, 2.0, 0.93),
    "ETHUSDT": SymbolSpec(2, 1, 3, 1, 2_300.0, 0.8, 30.0, 0.92),
    "BNBUSDT": SymbolSpec(3, 10, 2, 1, 310.0, 2.0, 50.0, 0.8),
    "SOLUSDT": SymbolSpec(4, 100, 0, 1, 100.0, 20.0, 400.0, 0.82),
    "XRPUSDT": SymbolSpec(4, 1, 1, 1, 0.6, 2_000.0, 40_000.0, 0.75),
}


def symbol_spec(symbol: str, seed: int = 0) -> SymbolSpec:
    """Filters for ``symbol``: real-looking ones for majors, a sane default for the rest."""
    if symbol in KNOWN_SYMBOLS:
        return KNOWN_SYMBOLS[symbol]
    # default: 4 price decimals, whole-unit quantities, a price between 0.5 and 50
    price = 0.5 * 100 ** ((stable_hash(seed, symbol, "price") % 1000) / 1000)
    loading = 0.6 + 0.25 * (stable_hash(seed, symbol, "loading") % 1000) / 1000
    return SymbolSpec(4, 1, 0, 1, price, 200.0 / price, 5_000.0 / price, loading)


@dataclass(frozen=True)
class MarketConfig:
    """What the synthetic market looks like; everything is derived from these fields."""

    seed: int = 7
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    trades_per_day: int = 20_000
    start_date: str = "2024-01-01"
    #: underlying trades per day = trades_per_day * (1 + extra_trades_ratio): some aggTrades
    #: span several trades, and the fixed daily total keeps trade ids continuous across days
    extra_trades_ratio: float = 0.5
    #: fraction of aggTrades sharing the previous one's millisecond (bursts)
    burst_fraction: float = 0.15
    #: intraday volatility of the log price over one day
    intraday_volatility: float = 0.02
    #: book levels per side (REST depth limit=1000 needs 1000)
    book_levels: int = 1000
    #: the book changes on this grid (a multiple of 100 ms); depth streams send a diff only when
    #: it changed, so 1000 makes a whole day of depth ten times cheaper to stream (the demo)
    book_step_ms: int = BOOK_STEP_MS
    #: Vision CSV header rows: "always", "never" or "mixed" (some days without, like real ETH files)
    vision_headers: str = "always"

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbols", tuple(s.upper() for s in self.symbols))
        dt.date.fromisoformat(self.start_date)
        if self.trades_per_day < 1:
            raise ValueError("trades_per_day must be >= 1")
        if self.vision_headers not in ("always", "never", "mixed"):
            raise ValueError("vision_headers must be 'always', 'never' or 'mixed'")
        step = self.book_step_ms
        if not (isinstance(step, int) and step > 0 and step % 100 == 0 and DAY_MS % step == 0):
            raise ValueError(
                f"book_step_ms={step!r} must be a positive multiple of 100 that divides a day"
            )
