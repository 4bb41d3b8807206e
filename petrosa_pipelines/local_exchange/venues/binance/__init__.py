"""Binance USD-M futures on the local exchange: REST (``/fapi/v1``), websocket streams (``/ws``,
``/stream``) and the Vision archive tree (``/vision``)."""
