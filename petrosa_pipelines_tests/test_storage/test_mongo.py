"""MongoDB sink: pure mapping/index/query functions always; a real server only when configured.

No MongoDB server can be installed on this machine, so the integration tests run only when
PETROSA_TEST_MONGODB_URL points at one (MongoDB 7.0+ for the upsert test).
"""

import datetime as dt
import os
import uuid

import bson
import pandas as pd
import pytest

from petrosa_pipelines.serving import mongo
from petrosa_pipelines_tests.test_storage import frames

DAY = dt.date(2024, 1, 2)
START = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
END = START + dt.timedelta(days=1)


@pytest.mark.parametrize(
    "dataset, make",
    [
        ("trades", frames.trades),
        ("candles", frames.candles),
        ("funding", frames.funding),
        ("depth", frames.depth),
    ],
)
def test_documents_roundtrip_exactly(dataset, make):
    frame = make()
    docs = mongo.frame_to_documents(dataset, frame, "L1")
    assert len(docs) == len(frame)
    bson.encode(docs[0])  # plain Python types only: pymongo can send them
    assert all(d["meta"]["load"] == "L1" and d["meta"]["day"] == "2024-01-02" for d in docs)
    back = mongo.documents_to_frame(dataset, docs)
    time_col = mongo.timeseries_options(dataset)["timeField"]
    expected = frame.sort_values([time_col, "symbol"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected)


def test_nulls_are_left_out_of_documents():
    docs = mongo.frame_to_documents("funding", frames.funding(), "L")
    assert "mark_price" not in docs[1] and "received_at" not in docs[1]
    assert docs[0]["mark_price"] == 42000.1


def test_candle_interval_is_series_identity():
    doc = mongo.frame_to_documents("candles", frames.candles(n=1), "L")[0]
    assert doc["meta"] == {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "interval": "1m",
        "day": "2024-01-02",
        "load": "L",
    }
    assert "interval" not in doc and "symbol" not in doc


def test_timeseries_options_and_index_specs():
    assert mongo.timeseries_options("candles") == {
        "timeField": "open_time",
        "metaField": "meta",
        "granularity": "minutes",
    }
    specs = dict((o["name"], k) for k, o in mongo.index_specs("trades"))
    assert specs["trades_load_series_time"] == [
        ("meta.load", 1),
        ("meta.exchange", 1),
        ("meta.symbol", 1),
        ("trade_time", 1),
    ]
    assert specs["trades_natural_key"] == [
        ("meta.exchange", 1),
        ("meta.symbol", 1),
        ("agg_trade_id", 1),
    ]
    assert all(not o.get("unique") for _, o in mongo.index_specs("depth"))


def test_queries_filter_on_meta_and_time():
    flt = mongo.partition_filter("candles", "binance", "BTCUSDT", DAY, "1m")
    assert flt == {
        "meta.exchange": "binance",
        "meta.symbol": "BTCUSDT",
        "meta.day": "2024-01-02",
        "meta.interval": "1m",
    }
    q = mongo.read_query("trades", "binance", ["BTCUSDT"], START, END, ["a", "b"])
    assert q["meta.load"] == {"$in": ["a", "b"]}
    assert q["trade_time"] == {"$gte": START, "$lt": END}
    with pytest.raises(ValueError, match="timezone-aware"):
        mongo.read_query("trades", "binance", ["BTCUSDT"], START.replace(tzinfo=None), END, [])


def test_upserts_match_on_natural_key_within_the_current_load():
    doc = mongo.frame_to_documents("trades", frames.trades(n=1), "L9")[0]
    op = mongo.upsert_operations("trades", [doc])[0]
    assert op._filter == {
        "meta.load": "L9",
        "meta.exchange": "binance",
        "meta.symbol": "BTCUSDT",
        "agg_trade_id": 1,
    }
    assert op._upsert is True and op._doc is doc


# -- integration (real server) ---------------------------------------------------------------
MONGO_URL = os.environ.get("PETROSA_TEST_MONGODB_URL")
needs_mongo = pytest.mark.skipif(
    not MONGO_URL,
    reason="PETROSA_TEST_MONGODB_URL is not set (no MongoDB server can be installed here; "
    "point it at a MongoDB 7.0+ to run the sink against a real server)",
)


@pytest.fixture
def sink():
    s = mongo.MongoSink.from_url(MONGO_URL, f"petrosa_test_{uuid.uuid4().hex[:8]}")
    s.ensure()
    yield s
    s.client.drop_database(s.db.name)
    s.client.close()


@needs_mongo
@pytest.mark.integration
def test_replace_partition_twice_keeps_one_copy(sink):
    frame = frames.trades(n=200)
    sink.replace_partition("trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY)
    sink.replace_partition("trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY)
    back = sink.read("trades", exchange="binance", symbols=["BTCUSDT"], start=START, end=END)
    pd.testing.assert_frame_equal(back, frame.sort_values("trade_time").reset_index(drop=True))
    assert sink.db["trades"].count_documents({}) == 200


@needs_mongo
@pytest.mark.integration
def test_upsert_by_natural_key(sink):
    sink.replace_partition(
        "trades", frames.trades(n=10), exchange="binance", symbol="BTCUSDT", day=DAY
    )
    changed = frames.trades(n=12, seed=5)
    sink.upsert("trades", changed, exchange="binance")
    back = sink.read("trades", exchange="binance", symbols=["BTCUSDT"], start=START, end=END)
    assert len(back) == 12 and back["price"].tolist() == changed["price"].tolist()
