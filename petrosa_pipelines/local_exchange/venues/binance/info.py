"""Binance USD-M's ``/fapi/v1/exchangeInfo`` body for the local market."""

from __future__ import annotations

from typing import Any

from petrosa_pipelines.local_exchange.generator import MarketGenerator


def exchange_info(market: MarketGenerator, now_ms: int, weight_limit: int = 2400) -> dict[str, Any]:
    """``/fapi/v1/exchangeInfo`` shaped like the real one (rateLimits, assets, symbol filters)."""
    symbols = []
    for sym, spec in market.specs.items():
        base = sym[:-4] if sym.endswith("USDT") else sym[:-3]
        tick, step = str(spec.tick_size), str(spec.step_size)
        symbols.append(
            {
                "symbol": sym,
                "pair": sym,
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000,
                "onboardDate": market.start_ms,
                "status": "TRADING",
                "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000",
                "baseAsset": base,
                "quoteAsset": "USDT",
                "marginAsset": "USDT",
                "pricePrecision": spec.price_decimals,
                "quantityPrecision": spec.qty_decimals,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "settlePlan": 0,
                "triggerProtect": "0.0500",
                "liquidationFee": "0.012500",
                "marketTakeBound": "0.05",
                "filters": [
                    {
                        "minPrice": tick,
                        "maxPrice": "4529764",
                        "filterType": "PRICE_FILTER",
                        "tickSize": tick,
                    },
                    {"stepSize": step, "filterType": "LOT_SIZE", "maxQty": "1000", "minQty": step},
                    {
                        "stepSize": step,
                        "filterType": "MARKET_LOT_SIZE",
                        "maxQty": "120",
                        "minQty": step,
                    },
                    {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
                    {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
                    {"notional": "5", "filterType": "MIN_NOTIONAL"},
                    {
                        "multiplierDown": "0.9500",
                        "multiplierUp": "1.0500",
                        "multiplierDecimal": "4",
                        "filterType": "PERCENT_PRICE",
                    },
                ],
                "orderTypes": [
                    "LIMIT",
                    "MARKET",
                    "STOP",
                    "STOP_MARKET",
                    "TAKE_PROFIT",
                    "TAKE_PROFIT_MARKET",
                    "TRAILING_STOP_MARKET",
                ],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            }
        )
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [
            {"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"},
            {"asset": "BTC", "marginAvailable": True, "autoAssetExchange": "-0.10000000"},
        ],
        "symbols": symbols,
    }
