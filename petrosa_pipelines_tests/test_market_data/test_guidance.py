"""What a materialisation launched from the UI tells its user: unknown instruments are refused
by name, depth says when it cannot hold data, and the run config documents itself."""

from __future__ import annotations

import datetime as dt
import re

import dagster as dg
import pytest

from petrosa_pipelines.lib.timeutil import day_window_ms
from petrosa_pipelines.market_data.assets import MARKET_DATA_ASSETS, MarketDataConfig
from petrosa_pipelines.market_data.guidance import depth_history_metadata
from petrosa_pipelines.market_data.partitions import (
    UnknownInstrumentError,
    check_instrument,
    instrument_problem,
)
from resources import ExchangeResource, LakeIOManager, LandingResource

ALLOW = ("BTCUSDT", "ETHUSDT")


def _failure_messages(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {
        e.step_key: e.step_failure_data.error.message
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    }


@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        (
            "JUNKUSDT",
            r"'binance-usdm:JUNKUSDT' is not in the PETROSA_SYMBOLS allow-list "
            r"\['binance-usdm:BTCUSDT', 'binance-usdm:ETHUSDT'\]",
        ),
        ("btc-usdt", r"'btc-usdt' is malformed"),
        ("btcusdt", r"'btcusdt' is malformed .*did you mean binance-usdm:BTCUSDT\?"),
        ("bybit-linear:JUNKUSDT", r"'bybit-linear:JUNKUSDT' is not in the PETROSA_SYMBOLS"),
    ],
)
def test_a_partition_of_an_unknown_instrument_is_refused_by_name(
    tmp_path, dagster_instance, monkeypatch, symbol, expected
):
    """The UI's "Add a partition" accepts any text; materialising it must fail, saying why."""
    monkeypatch.setenv("PETROSA_SYMBOLS", ",".join(ALLOW))
    monkeypatch.setenv("PETROSA_REST_MAX_RETRIES", "0")  # a regression fails fast, not slowly
    dagster_instance.add_dynamic_partitions("symbols", [symbol])
    result = dg.materialize(
        MARKET_DATA_ASSETS,
        partition_key=f"2024-03-02|{symbol}",
        instance=dagster_instance,
        resources={
            # nothing may be asked of any source: these endpoints do not exist
            "exchange": ExchangeResource(
                rest_base_url="http://127.0.0.1:9", vision_base_url="http://127.0.0.1:9"
            ),
            "landing": LandingResource(root=str(tmp_path / "landing")),
            "io_manager": LakeIOManager(base_path=str(tmp_path / "lake")),
        },
        raise_on_error=False,
    )
    assert not result.success
    failures = _failure_messages(result)
    assert len(failures) == 4, failures  # every dataset refuses it, before any source is asked
    for message in failures.values():
        assert "refused to materialise" in message
        assert re.search(expected, message), message
    assert not (tmp_path / "lake").exists() or not list((tmp_path / "lake").rglob("*.parquet"))


def test_instrument_rules():
    assert instrument_problem("BTCUSDT", ALLOW) is None
    assert instrument_problem("1000PEPEUSDT", ()) is None  # "*": every well-formed symbol
    assert "malformed" in instrument_problem("../etc", ())
    assert "allow-list" in instrument_problem("SOLUSDT", ALLOW)
    with pytest.raises(UnknownInstrumentError, match="'binance-usdm:SOLUSDT'"):
        check_instrument("SOLUSDT", ALLOW)


DAY = dt.date(2024, 3, 2)
START, END = day_window_ms(DAY)


def test_depth_of_a_day_before_the_ingest_says_it_cannot_be_backfilled():
    meta = depth_history_metadata(DAY, "BTCUSDT", START, END, 0, ingest_started_ms=END + 1)
    assert meta["history_available"] is False and meta["backfillable"] is False
    assert meta["landed_coverage"] == "none"
    assert meta["not_applicable"] == (
        "not applicable: no book history exists before the ingest started 2024-03-03"
    )
    assert "cannot be backfilled" in meta["note"] and "BTCUSDT on 2024-03-02" in meta["note"]


def test_depth_of_a_covered_day_is_not_marked_not_applicable():
    started_midday = START + 12 * 3_600_000
    partial = depth_history_metadata(DAY, "BTCUSDT", START, END, 500, started_midday)
    assert partial["landed_coverage"] == "partial" and "not_applicable" not in partial
    assert "12:00Z" in partial["note"]
    full = depth_history_metadata(DAY, "BTCUSDT", START, END, 500, START - 1)
    assert full["landed_coverage"] == "landed" and "note" not in full
    # the ingest was running, yet nothing landed for this symbol: empty, but a real hole
    hole = depth_history_metadata(DAY, "BTCUSDT", START, END, 0, START - 1)
    assert hole["landed_coverage"] == "none" and "not_applicable" not in hole
    assert "nothing landed for BTCUSDT on 2024-03-02" in hole["note"]


def test_market_data_run_config_is_typed_with_defaults_and_descriptions():
    """The launchpad scaffolds defaults ("Scaffold all default config") and shows descriptions."""
    from petrosa_pipelines.definitions import defs

    job = defs.resolve_job_def("market_data_job")
    ops = job.run_config_schema.config_type.fields["ops"].config_type.fields
    fields = set(MarketDataConfig.model_fields)
    for dataset in ("trades", "candles", "depth", "funding"):
        config = ops[f"market_data__{dataset}"].config_type.fields["config"]
        assert not config.is_required, dataset
        schema = config.config_type.fields
        assert set(schema) == fields
        for name, field in schema.items():
            assert field.default_provided and not field.is_required, (dataset, name)
            assert field.description, (dataset, name)
    depth = next(a for a in MARKET_DATA_ASSETS if a.key.path[-1] == "depth")
    assert "Backfillable only where the venue keeps book history" in (
        depth.specs_by_key[depth.key].description
    )
