"""Keep the ``symbols`` dynamic partitions in step with the allow-list and each venue.

The partitions' values are instrument ids (``binance-usdm:BTCUSDT``; the dimension keeps its
historic name). For every venue the allow-list follows (``Settings.venues``), wanted = the
venue's trading perpetuals intersected with its allow-list (all of them for ``*`` or
``<venue>:*``). Missing ones are added, and ones no longer wanted (delisted, settling, removed
from the allow-list, of a venue no longer followed) are removed; the ingest runs that follow the
partitions resubscribe on their next poll without touching the other instruments.

A legacy bare partition (``BTCUSDT``, an install not yet migrated) counts as the Binance USD-M
instrument it names: it is neither duplicated by its id nor removed while that instrument is
wanted (``petrosa migrate-instruments`` renames it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import dagster as dg

from petrosa_pipelines.instruments import Instrument, InstrumentError, parse_instrument
from petrosa_pipelines.market_data.partitions import symbols_partitions


def _settings() -> Any:
    from petrosa_pipelines.settings import from_env

    return from_env()


def _client(settings: Any, venue: str) -> Any:
    from petrosa_pipelines.exchanges import get_adapter

    return get_adapter(venue).rest_client(settings.for_venue(venue))


def wanted_symbols(perpetuals: set[str], allow_list: tuple[str, ...]) -> set[str]:
    """Allow-list x trading perpetuals; all trading perpetuals when the allow-list is empty
    (bare symbols of one venue)."""
    return perpetuals & set(allow_list) if allow_list else set(perpetuals)


def _perpetuals(client_factory: Callable[..., Any], settings: Any, venue: str) -> set[str]:
    """The venue's trading perpetuals (``exchange_info`` of its REST client, then closed)."""
    client = client_factory(settings, venue)
    try:
        return set(client.exchange_info().perpetual_symbols())
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()


def wanted_instruments(settings: Any, client_factory: Callable[..., Any]) -> set[str]:
    """Ids of every allowed trading perpetual of every venue the allow-list follows."""
    out: set[str] = set()
    for venue in settings.venues:
        allowed = settings.allow_list(venue) or ()
        symbols = wanted_symbols(_perpetuals(client_factory, settings, venue), allowed)
        out |= {Instrument(venue, s).id for s in symbols}
    return out


def _canonical(value: str) -> str | None:
    try:
        return parse_instrument(value).id
    except InstrumentError:
        return None  # junk added through the UI: never wanted


def plan(wanted: set[str], current: Iterable[str]) -> tuple[list[str], list[str]]:
    """(ids to add, registered values to remove): a registered legacy bare value stands for
    its instrument's id."""
    current = set(current)
    held = {_canonical(v) for v in current}
    add = sorted(wanted - held)
    remove = sorted(v for v in current if _canonical(v) not in wanted)
    return add, remove


def build_symbols_sensor(
    settings: Callable[[], Any] = _settings,
    client_factory: Callable[..., Any] = _client,
    *,
    name: str = "symbols_sync",
    minimum_interval_seconds: int = 300,
    remove_unwanted: bool = True,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The symbols sensor (settings and REST client factory ``(settings, venue)`` injectable)."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Sync the symbols (instrument) partitions with the allow-list and venues.",
    )
    def _symbols(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        s = settings()
        wanted = wanted_instruments(s, client_factory)
        current = set(context.instance.get_dynamic_partitions(symbols_partitions.name))
        add, remove = plan(wanted, current)
        if not remove_unwanted:
            remove = []
        requests: list[Any] = []
        if add:
            requests.append(symbols_partitions.build_add_request(add))
        if remove:
            requests.append(symbols_partitions.build_delete_request(remove))
        if not requests:
            return dg.SensorResult(skip_reason=f"{len(current)} instruments already in step")
        done = f"added {add}, removed {remove}: {len(current | set(add)) - len(remove)} instruments"
        context.log.info(f"symbols: {done}")
        # a tick without runs shows as skipped in Dagster 1.13: the reason says what changed
        return dg.SensorResult(dynamic_partitions_requests=requests, skip_reason=done)

    return _symbols


symbols_sensor = build_symbols_sensor()

__all__ = ["build_symbols_sensor", "plan", "symbols_sensor", "wanted_instruments", "wanted_symbols"]
