"""Bybit v5 linear perpetuals on the local exchange: REST (``/v5/market``), the public websocket
(``/v5/public/linear``), the public trade archive (``/trading``) and the daily order-book history
files (``/orderbook/linear``)."""
