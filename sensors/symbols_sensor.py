"""Keep the ``symbols`` dynamic partitions in step with the allow-list and the exchange.

Wanted = trading perpetuals from ``exchangeInfo`` intersected with the ``PETROSA_SYMBOLS``
allow-list (every trading perpetual when the list is empty). Missing ones are added, and ones
no longer wanted (delisted, settling, removed from the allow-list) are removed; the ingest runs
that follow the partitions resubscribe on their next poll without touching the other symbols.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from petrosa_pipelines.market_data.partitions import symbols_partitions


def _settings() -> Any:
    from petrosa_pipelines.settings import from_env

    return from_env()


def _client(settings: Any) -> Any:
    from petrosa_pipelines.exchanges import get_adapter

    return get_adapter(settings.exchange).rest_client(settings)


def wanted_symbols(perpetuals: set[str], allow_list: tuple[str, ...]) -> set[str]:
    """Allow-list x trading perpetuals; all trading perpetuals when the allow-list is empty."""
    return perpetuals & {s.upper() for s in allow_list} if allow_list else set(perpetuals)


def build_symbols_sensor(
    settings: Callable[[], Any] = _settings,
    client_factory: Callable[[Any], Any] = _client,
    *,
    name: str = "symbols_sync",
    minimum_interval_seconds: int = 300,
    remove_unwanted: bool = True,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The symbols sensor (settings and REST client injectable for tests)."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Sync the symbols partitions with the allow-list and exchangeInfo.",
    )
    def _symbols(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        s = settings()
        client = client_factory(s)
        try:
            info = client.exchange_info()
        finally:
            close = getattr(client, "close", None)
            if close is not None:
                close()
        wanted = wanted_symbols(set(info.perpetual_symbols()), tuple(s.symbols))
        current = set(context.instance.get_dynamic_partitions(symbols_partitions.name))
        add = sorted(wanted - current)
        remove = sorted(current - wanted) if remove_unwanted else []
        requests: list[Any] = []
        if add:
            requests.append(symbols_partitions.build_add_request(add))
        if remove:
            requests.append(symbols_partitions.build_delete_request(remove))
        if not requests:
            return dg.SensorResult(skip_reason=f"{len(current)} symbols already in step")
        done = f"added {add}, removed {remove}: {len(current | set(add)) - len(remove)} symbols"
        context.log.info(f"symbols: {done}")
        # a tick without runs shows as skipped in Dagster 1.13: the reason says what changed
        return dg.SensorResult(dynamic_partitions_requests=requests, skip_reason=done)

    return _symbols


symbols_sensor = build_symbols_sensor()

__all__ = ["build_symbols_sensor", "symbols_sensor", "wanted_symbols"]
