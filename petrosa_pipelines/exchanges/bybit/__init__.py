"""Bybit v5 linear contracts (USDT and USDC perpetuals): adapter, REST client and archives."""
