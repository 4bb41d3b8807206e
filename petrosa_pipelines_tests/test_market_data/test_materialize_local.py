"""Partitions materialised end to end, in process, against the local exchange."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.market_data.assets import MARKET_DATA_ASSETS, candles, funding, trades
from petrosa_pipelines_tests.test_market_data.conftest import TRADES_PER_DAY

DAY = "2024-03-02"
KEY = f"{DAY}|BTCUSDT"
REPO = Path(__file__).resolve().parents[2]


def materialise(assets, key, resources, instance):
    symbol = key.split("|")[1]
    instance.add_dynamic_partitions("symbols", [symbol])
    result = dg.materialize(assets, partition_key=key, resources=resources, instance=instance)
    assert result.success
    return {
        e.event_specific_data.materialization.asset_key.path[-1]: {
            k: v.value for k, v in e.event_specific_data.materialization.metadata.items()
        }
        for e in result.get_asset_materialization_events()
    }


def read(resources, dataset, key=KEY):
    date, symbol = key.split("|")
    lake = LocalLake(resources["io_manager"].base_path)
    return lake.read_frame(lake_path(f"market_data/{dataset}", "binance", symbol, date))


def test_closed_day_of_every_dataset(resources, dagster_instance):
    meta = materialise(MARKET_DATA_ASSETS, KEY, resources, dagster_instance)
    assert meta["candles"]["dagster/row_count"] == 1440
    assert meta["trades"]["dagster/row_count"] == TRADES_PER_DAY
    assert meta["funding"]["dagster/row_count"] == 3
    assert meta["depth"]["dagster/row_count"] == 0
    assert meta["depth"]["history_available"] is False
    assert "No order-book history" in meta["depth"]["note"]
    assert meta["candles"]["source_mix"] == {"archive": 1440}
    for dataset in ("candles", "trades", "funding"):
        assert meta[dataset]["missing_range_count"] == 0, meta[dataset]["missing_ranges"]
        assert meta[dataset]["dagster/column_schema"].columns

    frame = read(resources, "candles")
    minutes = frame["open_time"].diff().dropna().unique()
    assert list(minutes) == [pd.Timedelta(minutes=1)]
    assert frame["open_time"].iloc[0] == pd.Timestamp(DAY, tz="UTC")
    assert (
        (frame["low"] <= frame[["open", "close"]].min(axis=1))
        & (frame["high"] >= frame[["open", "close"]].max(axis=1))
    ).all()

    tr = read(resources, "trades")
    assert tr["agg_trade_id"].is_monotonic_increasing
    assert (tr["agg_trade_id"].diff().dropna() == 1).all()
    # the archive's klines are exactly the aggregation of its trades
    assert tr["quantity"].sum() == pytest.approx(frame["volume"].sum(), rel=1e-12)


def test_same_partition_twice_gives_identical_rows(resources, dagster_instance):
    materialise([candles, trades, funding], KEY, resources, dagster_instance)
    first = {d: read(resources, d) for d in ("candles", "trades", "funding")}
    materialise([candles, trades, funding], KEY, resources, dagster_instance)
    for dataset, frame in first.items():
        again = read(resources, dataset)
        pd.testing.assert_frame_equal(frame, again)
        key_cols = {
            "candles": ["open_time"],
            "trades": ["agg_trade_id"],
            "funding": ["funding_time"],
        }
        assert not again.duplicated(key_cols[dataset]).any()


def test_bad_archive_checksum_falls_back_to_rest(resources, dagster_instance, local_exchange):
    local_exchange.faults.bad_checksum = True
    meta = materialise([candles, funding], "2024-03-05|ETHUSDT", resources, dagster_instance)
    tried = meta["candles"]["sources_tried"]
    assert any("ChecksumMismatch" in a.get("error", "") for a in tried), tried
    assert meta["candles"]["source_mix"] == {"rest": 1440}
    assert meta["funding"]["source_mix"] == {"rest": 3}


def test_unknown_symbol_partition_is_refused(resources, dagster_instance):
    with pytest.raises(dg.DagsterUnknownPartitionError):
        dg.materialize(
            [candles],
            partition_key=f"{DAY}|NOPEUSDT",
            resources=resources,
            instance=dagster_instance,
        )


def test_cli_materialize_one_candles_partition(local_exchange, tmp_path):
    """`dagster asset materialize` of one candles partition gives exactly 1440 rows."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PETROSA_REST_BASE_URL": local_exchange.rest_base_url,
        "PETROSA_WS_BASE_URL": local_exchange.ws_base_url,
        "PETROSA_VISION_BASE_URL": local_exchange.vision_base_url,
        "PETROSA_LAKE_PATH": str(tmp_path / "lake"),
        "PETROSA_LANDING_PATH": str(tmp_path / "landing"),
    }
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbols", ["BTCUSDT"])
    bin_dir = Path(sys.executable).parent
    out = subprocess.run(
        [
            str(bin_dir / "dagster"),
            "asset",
            "materialize",
            "-m",
            "petrosa_pipelines.definitions",
            "--select",
            "market_data/candles",
            "--partition",
            KEY,
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    frame = LocalLake(tmp_path / "lake").read_frame(
        lake_path("market_data/candles", "binance", "BTCUSDT", DAY)
    )
    assert len(frame) == 1440
    assert frame["open_time"].min() == pd.Timestamp(dt.date.fromisoformat(DAY), tz="UTC")
