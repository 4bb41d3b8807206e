"""Partitioned market-data assets: trades, candles (1m), depth and funding per symbol-day."""
