"""The auto-backfill closes an injected gap end to end against the local exchange.

The websocket missed an hour of trades; when the day was materialised the archive's checksum
was bad and REST was unreachable, so the id-continuity check failed. The sensor asks for exactly
that partition; once the exchange is healthy again the re-materialisation refills the hour from
the archive and the check passes.
"""

import datetime as dt

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter

from petrosa_pipelines.checks.definitions import ALL_CHECKS
from petrosa_pipelines.lib.timeutil import DAY_MS, HOUR_MS, day_start_ms
from petrosa_pipelines.market_data.assets import CANDLES_KEY, MARKET_DATA_ASSETS, TRADES_KEY
from petrosa_pipelines_tests.test_market_data.test_landing_fill import agg_trade_frames, land
from resources import ExchangeResource, LakeIOManager, LandingResource
from sensors.auto_backfill_sensor import build_auto_backfill_sensor

DAY = dt.date(2024, 3, 6)
START = day_start_ms(DAY)
PK = f"{DAY}|BTCUSDT"
ID_CHECK = dg.AssetCheckKey(TRADES_KEY, "trades_id_continuous")


def check_status(instance, key):
    rec = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [key], partition_filter=PartitionKeyFilter(key=PK)
    ).get(key)
    return rec.status.value if rec else None


def test_injected_gap_closed_by_the_auto_backfill(local_exchange, tmp_path, monkeypatch):
    monkeypatch.setenv("PETROSA_REST_MAX_RETRIES", "0")
    market = local_exchange.market.trades("BTCUSDT", DAY)
    times = market["trade_time"].to_numpy()
    hole = (times >= START + 9 * HOUR_MS) & (times < START + 10 * HOUR_MS)
    land(tmp_path / "landing", agg_trade_frames(market[~hole], "BTCUSDT"))

    healthy = ExchangeResource(
        rest_base_url=local_exchange.rest_base_url,
        ws_base_url=local_exchange.ws_base_url,
        vision_base_url=local_exchange.vision_base_url,
    )
    broken = ExchangeResource(
        rest_base_url="http://127.0.0.1:9",  # nothing listens: REST is down
        ws_base_url=local_exchange.ws_base_url,
        vision_base_url=local_exchange.vision_base_url,
    )
    common = {
        "landing": LandingResource(root=str(tmp_path / "landing")),
        "io_manager": LakeIOManager(base_path=str(tmp_path / "lake")),
    }
    trades = [a for a in MARKET_DATA_ASSETS if TRADES_KEY in a.keys]
    candles = [a for a in MARKET_DATA_ASSETS if CANDLES_KEY in a.keys]
    sensor = build_auto_backfill_sensor(
        landing=lambda: (str(tmp_path / "landing"), "binance"),
        clock=lambda: (START + DAY_MS + HOUR_MS) / 1000,
    )

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
        local_exchange.faults.bad_checksum = True
        try:
            first = dg.materialize(
                [*trades, *candles, *ALL_CHECKS],
                partition_key=PK,
                instance=instance,
                resources={**common, "exchange": broken},
                raise_on_error=False,
            )
        finally:
            local_exchange.faults.bad_checksum = False
        assert not first.success  # the blocking id check failed
        assert check_status(instance, ID_CHECK) == "FAILED"

        defs = dg.Definitions(
            assets=[*trades, *candles],
            asset_checks=ALL_CHECKS,
            sensors=[sensor],
            resources={**common, "exchange": healthy},
        )
        ctx = dg.build_sensor_context(instance=instance, definitions=defs)
        requests = sensor(ctx).run_requests
        # exactly the affected partition: its trades (id gap) and its candles (none at all)
        assert {str(r.partition_key) for r in requests} == {PK}
        assert {k for r in requests for k in r.asset_selection} == {TRADES_KEY, CANDLES_KEY}

        for req in requests:
            rerun = dg.materialize(
                [*trades, *candles, *ALL_CHECKS],
                partition_key=req.partition_key,
                instance=instance,
                selection=dg.AssetSelection.assets(*req.asset_selection)
                | dg.AssetSelection.checks(*req.asset_check_keys),
                run_config=req.run_config,
                tags=req.tags,
                resources={**common, "exchange": healthy},
            )
            assert rerun.success
        assert check_status(instance, ID_CHECK) == "SUCCEEDED"
        stored = (
            LakeIOManager(base_path=str(tmp_path / "lake"))
            .lake()
            .read_frame(f"market_data/trades/binance/BTCUSDT/{DAY}.parquet")
        )
        assert len(stored) == len(market)
        assert (stored["agg_trade_id"].diff().dropna() == 1).all()
        ctx2 = dg.build_sensor_context(instance=instance, cursor=ctx.cursor, definitions=defs)
        assert not sensor(ctx2).run_requests
