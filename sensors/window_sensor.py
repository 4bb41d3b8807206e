"""Once a UTC day has closed (plus a grace period), materialise its partitions, once.

For every instrument with landed data that day (every registered venue's landing directory),
one run of the ``trades``, ``candles``, ``depth`` and ``funding`` partitions
``YYYY-MM-DD|<venue>:<SYMBOL>``. The cursor is the last day handled and each request has a
deterministic ``run_key`` (exchange, day, symbol), so re-ticks, overlapping ticks and daemon
restarts never request an instrument-day twice. Today's partition exists too (the open day,
``market_data.partitions``) but is never requested here: only days that have ended (plus the
grace) are, through ``partitions.last_closed_day``. Instruments not yet registered in the
``symbols`` dynamic partitions are added in the same tick (Dagster applies those first); one
registered in its legacy bare form (an install not yet migrated) is requested under that key.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import dagster as dg

from petrosa_pipelines.instruments import (
    DATASETS,
    Instrument,
    market_data_path,
    partition_value,
    storage_name,
)
from petrosa_pipelines.market_data.partitions import (
    PARTITIONS_START,
    last_closed_day,
    partition_key,
    symbols_partitions,
)

ASSET_KEYS = [dg.AssetKey(market_data_path(d)) for d in DATASETS]
#: landing segments close at least every 15 s and the last candle arrives just after midnight
DEFAULT_GRACE_S = 30.0
#: at most this many days are caught up per tick (the rest next tick)
MAX_DAYS_PER_TICK = 3


def _landing_root() -> str:
    from petrosa_pipelines.settings import from_env

    return from_env().landing_path


def _venues() -> list[str]:
    from petrosa_pipelines.exchanges import EXCHANGES

    return sorted(EXCHANGES)


def newest_closed_day(now_s: float, grace_s: float) -> dt.date:
    """The latest UTC day whose end is at least ``grace_s`` in the past (never the open day)."""
    return last_closed_day(now_s - grace_s)


def build_window_sensor(
    landing_root: Callable[[], str] = _landing_root,
    *,
    venues: Callable[[], list[str]] = _venues,
    name: str = "market_data_window",
    grace_s: float = DEFAULT_GRACE_S,
    clock: Callable[[], float] = time.time,
    minimum_interval_seconds: int = 20,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The window sensor (landing root, clock and grace injectable for tests)."""
    first_day = dt.date.fromisoformat(PARTITIONS_START)

    @dg.sensor(
        name=name,
        asset_selection=dg.AssetSelection.assets(*ASSET_KEYS),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Materialise each closed day's partitions for every symbol that landed data.",
    )
    def _window(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        from petrosa_pipelines.landing import LandingStore

        newest = newest_closed_day(clock(), grace_s)
        if context.cursor:
            start = dt.date.fromisoformat(context.cursor) + dt.timedelta(days=1)
        else:
            start = newest  # first tick: the newest closed day only; history is a backfill
        start = max(start, first_day)
        if start > newest:
            return dg.SensorResult(skip_reason=f"no newly closed day (next: {start})")
        days = [start + dt.timedelta(days=i) for i in range((newest - start).days + 1)]
        days = days[:MAX_DAYS_PER_TICK]
        store = LandingStore(landing_root())
        registered = set(context.instance.get_dynamic_partitions(symbols_partitions.name))
        requests: list[dg.RunRequest] = []
        new_symbols: set[str] = set()
        for day in days:
            for venue in venues():
                exchange = storage_name(venue)
                for symbol in sorted(store.symbols_with_data(exchange, day)):
                    inst = Instrument(venue, symbol)
                    value = partition_value(inst, registered)
                    if value not in registered:
                        new_symbols.add(value)
                    requests.append(
                        dg.RunRequest(
                            run_key=f"window:{exchange}:{day.isoformat()}:{symbol}",
                            partition_key=partition_key(day, value),
                            asset_selection=ASSET_KEYS,
                            tags={
                                "petrosa/window_day": day.isoformat(),
                                "petrosa/symbol": symbol,
                                "petrosa/instrument": inst.id,
                            },
                        )
                    )
        dyn = [symbols_partitions.build_add_request(sorted(new_symbols))] if new_symbols else []
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=dyn,
            cursor=days[-1].isoformat(),
            skip_reason=None if requests else f"no landed data for {[str(d) for d in days]}",
        )

    return _window


window_sensor = build_window_sensor()

__all__ = ["ASSET_KEYS", "build_window_sensor", "newest_closed_day", "window_sensor"]
