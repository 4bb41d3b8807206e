"""Hostile sources (issue 11, items 2, 3, 4, 12 and the hostile-source suite).

A loopback venue answers the REST and archive clients with each failure in turn. Whatever it
does, no partition ever shrinks, and a run that cannot prove a day complete fails or reports
the missing ranges: completeness comes from the rows (inside the day, consecutive trade ids,
1440 closed candles), never from a source having answered.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from petrosa_pipelines.catalog.schemas import TRADES
from petrosa_pipelines.exchanges.base import MessageError
from petrosa_pipelines.exchanges.binance.rest import BinanceRestClient
from petrosa_pipelines.exchanges.binance.vision import parse_klines_csv
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.lib.timeutil import DAY_MS, MINUTE_MS, day_start_ms
from petrosa_pipelines.market_data.assets import candles, trades
from petrosa_pipelines.market_data.datasets import TradesSpec
from petrosa_pipelines.market_data.fill import (
    HistorySource,
    PartitionWindow,
    SourceAnswer,
    fill_partition,
)
from petrosa_pipelines.market_data.sources import RestSource, rest_reach_ms, venue_capabilities
from petrosa_pipelines.settings import ExchangeEndpoints, RestSettings
from petrosa_pipelines_tests.test_exchanges.fake_binance import FakeServer, Reply
from petrosa_pipelines_tests.test_market_data.hostile_venue import (
    AGG_HEADER,
    KLINE_HEADER,
    MODES,
    SYMBOL,
    HostileVenue,
    Truth,
)
from resources import ExchangeResource, LakeIOManager, LandingResource

#: what Binance USD-M declares (REST reach per dataset): the fill asks the venue, not a client
BINANCE = venue_capabilities("binance")
#: a closed day well inside REST's one-year reach of aggTrades
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=20)
KEY = f"{DAY}|{SYMBOL}"
TRUTH = Truth.build(DAY)
TRUE_ROWS = {"trades": int(TRUTH.in_day().sum()), "candles": 1440}
ASSETS = {"trades": trades, "candles": candles}
RECORDING = (
    Path(__file__).parents[1] / "fixtures/binance_spot/ws/cryptofeed_2021-04-04/aggTrade.jsonl"
)


@pytest.fixture(autouse=True)
def _no_retries(monkeypatch):
    """A hostile answer is final: no backoff sleeps between attempts."""
    monkeypatch.setenv("PETROSA_REST_MAX_RETRIES", "0")
    monkeypatch.setenv("PETROSA_REST_TIMEOUT_SECONDS", "10")


def _resources(venue: HostileVenue, tmp_path) -> dict:
    return {
        "exchange": ExchangeResource(rest_base_url=venue.url, vision_base_url=venue.url),
        "landing": LandingResource(root=str(tmp_path / "landing")),
        "io_manager": LakeIOManager(base_path=str(tmp_path / "lake")),
    }


def _run(dataset: str, resources: dict, instance) -> tuple[bool, dict]:
    instance.add_dynamic_partitions("symbols", [SYMBOL])
    result = dg.materialize(
        [ASSETS[dataset]],
        partition_key=KEY,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    meta = {}
    for event in result.get_asset_materialization_events():
        meta = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
    return result.success, meta


def _lake_frame(tmp_path, dataset: str) -> pd.DataFrame | None:
    lake = LocalLake(tmp_path / "lake")
    path = lake_path(f"market_data/{dataset}", "binance", SYMBOL, str(DAY))
    return lake.read_frame(path) if lake.exists(path) else None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dataset", ["trades", "candles"])
@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_fresh_partition_never_claims_a_day_it_cannot_prove(
    dataset, mode, tmp_path, dagster_instance
):
    with HostileVenue(TRUTH, rest_mode=mode, archive_mode=mode) as venue:
        ok, meta = _run(dataset, _resources(venue, tmp_path), dagster_instance)
    if mode == "honest":
        assert ok and meta["dagster/row_count"] == TRUE_ROWS[dataset]
        assert meta["missing_range_count"] == 0, meta["missing_ranges"]
        return
    if ok:
        complete = meta["missing_range_count"] == 0
        assert not complete or meta["dagster/row_count"] == TRUE_ROWS[dataset], (mode, meta)
    if ok and mode == "invalid":
        assert meta["rejected_rows"] > 0 and meta["missing_range_count"] > 0


@pytest.mark.parametrize("mode", [m for m in MODES if m != "honest"])
@pytest.mark.parametrize("dataset", ["trades", "candles"])
@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_no_hostile_source_ever_shrinks_a_partition(dataset, mode, tmp_path, dagster_instance):
    with HostileVenue(TRUTH) as venue:
        ok, meta = _run(dataset, _resources(venue, tmp_path), dagster_instance)
    assert ok and meta["missing_range_count"] == 0
    before = _lake_frame(tmp_path, dataset)
    assert len(before) == TRUE_ROWS[dataset]
    with HostileVenue(TRUTH, rest_mode=mode, archive_mode=mode) as venue:
        ok, meta = _run(dataset, _resources(venue, tmp_path), dagster_instance)
    after = _lake_frame(tmp_path, dataset)
    assert len(after) >= len(before), (mode, meta)
    if not ok:
        pd.testing.assert_frame_equal(after, before)
    if mode == "error":
        assert not ok, "every source failed: the run must fail, not report success"


# -- item 2: completeness proven by content -----------------------------------------------------


def test_checksum_valid_archive_of_700_minutes_reports_the_rest_missing(tmp_path, dagster_instance):
    with HostileVenue(TRUTH, rest_mode="error", archive_mode="partial") as venue:
        ok, meta = _run("candles", _resources(venue, tmp_path), dagster_instance)
    assert ok and meta["dagster/row_count"] == 700
    start = pd.Timestamp(TRUTH.start + 700 * MINUTE_MS, unit="ms", tz="UTC")
    assert meta["missing_range_count"] == 1
    assert meta["missing_ranges"][0].startswith(start.strftime("%Y-%m-%dT%H:%M"))


def test_archive_of_another_day_is_not_an_empty_complete_day(tmp_path, dagster_instance):
    with HostileVenue(TRUTH, rest_mode="error", archive_mode="wrong_day") as venue:
        ok, meta = _run("trades", _resources(venue, tmp_path), dagster_instance)
    assert ok and meta["dagster/row_count"] == 0
    assert meta["missing_range_count"] == 1
    archive = next(a for a in meta["sources_tried"] if a["source"] == "archive")
    assert "WrongDayError" in archive["error"]


@pytest.mark.parametrize("rest_mode", ["empty", "wrong_day"])
def test_empty_or_wrong_day_rest_inside_reach_is_not_complete(
    rest_mode, tmp_path, dagster_instance
):
    for dataset in ("trades", "candles"):
        with HostileVenue(TRUTH, rest_mode=rest_mode, archive_mode="error") as venue:
            ok, meta = _run(dataset, _resources(venue, tmp_path / dataset), dagster_instance)
        assert ok and meta["dagster/row_count"] < TRUE_ROWS[dataset]
        assert meta["missing_range_count"] >= 1, (dataset, meta)


def test_garbage_first_row_is_not_dropped_as_a_header():
    _, csv = HostileVenue(TRUTH)._kline_archive()
    body = csv.split(b"\n", 1)[1]  # the rows without their header
    assert len(parse_klines_csv(body, SYMBOL, "1m")) == 1440
    assert len(parse_klines_csv(csv, SYMBOL, "1m")) == 1440  # a real header is skipped
    garbage = b"garbage" + body[body.index(b",") :]
    with pytest.raises(MessageError):
        parse_klines_csv(garbage, SYMBOL, "1m")
    assert KLINE_HEADER.startswith("open_time") and AGG_HEADER.startswith("agg_trade_id")


# -- item 12: REST and archive rows validated like websocket rows --------------------------------


@pytest.mark.parametrize(
    ("dataset", "rest_mode", "archive_mode", "reason"),
    [
        ("candles", "invalid", "error", "high < max(open, close)"),
        ("candles", "error", "invalid", "low > min(open, close)"),
        ("trades", "error", "invalid", "price not > 0"),
    ],
)
def test_invalid_rows_are_rejected_counted_and_left_missing(
    dataset, rest_mode, archive_mode, reason, tmp_path, dagster_instance
):
    with HostileVenue(TRUTH, rest_mode=rest_mode, archive_mode=archive_mode) as venue:
        ok, meta = _run(dataset, _resources(venue, tmp_path), dagster_instance)
    assert ok
    bad = meta["rejected_rows"]
    assert bad > 0 and meta["rejected_reasons"] == {reason: bad}
    assert meta["dagster/row_count"] == TRUE_ROWS[dataset] - bad
    assert meta["missing_range_count"] >= 1


# -- item 4: REST reaches a year back for aggTrades -----------------------------------------------


def test_closed_day_without_archive_is_repaired_from_rest_within_a_year(tmp_path, dagster_instance):
    assert rest_reach_ms(BINANCE, "trades") == 365 * DAY_MS
    with HostileVenue(TRUTH, archive_mode="error") as venue:
        ok, meta = _run("trades", _resources(venue, tmp_path), dagster_instance)
    assert ok and meta["missing_range_count"] == 0, meta["missing_ranges"]
    assert meta["dagster/row_count"] == TRUE_ROWS["trades"]
    assert meta["source_mix"] == {"rest": TRUE_ROWS["trades"]}
    frame = _lake_frame(tmp_path, "trades")
    assert (frame["agg_trade_id"].diff().dropna() == 1).all()


def test_rest_is_not_asked_beyond_its_reach():
    class Client:
        def agg_trades_from_id(self, *a, **k):  # pragma: no cover - must not be called
            raise AssertionError("asked beyond the reach")

        first_agg_page = agg_trades_before_id = agg_trades_from_id

    old = PartitionWindow(DAY, SYMBOL, now_ms=day_start_ms(DAY) + 400 * DAY_MS)
    source = RestSource(Client(), "trades", rest_reach_ms(BINANCE, "trades"))
    result = fill_partition(TradesSpec(), old, [source])
    assert result.attempts == [{"source": "rest", "skipped": "not available for this window"}]
    assert result.missing == [(old.start_ms, old.end_ms)]


# -- item 3: repair by id, not time ----------------------------------------------------------------


def _recorded_trades() -> list[dict]:
    """Real Binance aggTrades (fixtures/binance_spot/PROVENANCE.md), BTCUSDT."""
    rows = [json.loads(line)["data"] for line in RECORDING.read_text().splitlines()]
    return [
        {k: r[k] for k in ("a", "p", "q", "f", "l", "T", "m")} for r in rows if r["s"] == SYMBOL
    ]


class _Landed(HistorySource):
    name = "ws"

    def __init__(self, frame):
        self.frame = frame

    def fetch(self, window, missing):
        return SourceAnswer(self.frame, [])


def test_trade_lost_in_the_millisecond_of_the_last_landed_one_is_repaired():
    recorded = _recorded_trades()
    # the first cut where the next trade shares the last landed trade's millisecond
    cut = next(i for i in range(500, len(recorded)) if recorded[i]["T"] == recorded[i - 1]["T"])
    truth = recorded[: cut + 1]  # the venue's history up to now; the last trade was lost
    server = FakeServer()

    def agg_trades(req):
        q = req.query
        if "fromId" in q:
            rows = [t for t in truth if t["a"] >= int(q["fromId"])]
        else:
            rows = [t for t in truth if int(q["startTime"]) <= t["T"] <= int(q["endTime"])]
        return Reply(200, rows[: int(q["limit"])])

    server.routes["/fapi/v1/aggTrades"] = agg_trades
    landed = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": SYMBOL,
            "agg_trade_id": [t["a"] for t in truth[:cut]],
            "price": [float(t["p"]) for t in truth[:cut]],
            "quantity": [float(t["q"]) for t in truth[:cut]],
            "first_trade_id": [t["f"] for t in truth[:cut]],
            "last_trade_id": [t["l"] for t in truth[:cut]],
            "trade_time": pd.to_datetime([t["T"] for t in truth[:cut]], unit="ms", utc=True),
            "is_buyer_maker": [t["m"] for t in truth[:cut]],
            "source": "ws",
            "received_at": pd.NaT,
        },
        columns=TRADES.column_names,
    )
    day = dt.date(2021, 4, 4)
    window = PartitionWindow(day, SYMBOL, now_ms=truth[-1]["T"] + 1)
    with server:
        client = BinanceRestClient(
            ExchangeEndpoints(rest_base_url=server.url), RestSettings(max_retries=0)
        )
        rest = RestSource(client, "trades", rest_reach_ms(BINANCE, "trades"))
        result = fill_partition(TradesSpec(), window, [_Landed(landed), rest])
    ids = result.frame["agg_trade_id"].tolist()
    assert len(landed) == cut and len(ids) == cut + 1, f"{len(ids)} of {cut + 1} after repair"
    assert ids == [t["a"] for t in truth]
    assert truth[-1]["T"] == truth[-2]["T"]
    assert result.source_mix() == {"rest": 1, "ws": cut}
