"""MongoDB sink: pure mapping/index/query functions and the sink's control flow (against a
fake client that evaluates filters, ``fake_mongo.py``) always; a real server only when
configured.

No MongoDB server can be installed on this machine, so the integration tests run only when
PETROSA_TEST_MONGODB_URL points at one (MongoDB 7.0+ for the upsert test).
"""

import datetime as dt
import os
import uuid

import bson
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines.catalog.depth_layout import to_long
from petrosa_pipelines.catalog.schemas import DEPTH, conform
from petrosa_pipelines.market_data.assets import asset_key
from petrosa_pipelines.market_data.partitions import (
    SYMBOLS_PARTITIONS_NAME,
    daily_symbol_partitions,
)
from petrosa_pipelines.serving import mongo
from petrosa_pipelines.serving.assets import (
    build_mongo_asset,
    build_storage_assets,
    mongo_asset_key,
)
from petrosa_pipelines_tests.test_storage import frames
from petrosa_pipelines_tests.test_storage.fake_mongo import FakeClient, FakeOperationFailure
from resources.mongo_sink import MongoSinkResource

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
    if dataset == "depth":
        frames.assert_depth_equal(back, expected)
    else:
        pd.testing.assert_frame_equal(back, expected)


def test_a_depth_document_is_one_snapshot_with_its_levels_as_arrays():
    frame = frames.depth(snapshots=2, levels=3)
    frame.at[1, "ask_price"], frame.at[1, "ask_quantity"] = np.empty(0), np.empty(0)
    docs = mongo.frame_to_documents("depth", frame, "L")
    assert len(docs) == 2
    assert docs[0]["bid_price"] == [41999.9, 41999.8, 41999.7]
    assert docs[0]["ask_quantity"] == [1.0, 2.0, 3.0]
    assert docs[1]["ask_price"] == [] and docs[1]["ask_quantity"] == []
    assert all(type(v) is float for v in docs[0]["bid_price"])
    assert not {"side", "level", "price", "quantity"} & set(docs[0])
    frames.assert_depth_equal(mongo.documents_to_frame("depth", docs), frame)


def _v1_depth_documents(frame, load):
    """What the sink wrote for depth before v2: one document per level."""
    long = to_long(frame)
    docs = []
    for row in long.itertuples(index=False):
        day = row.snapshot_time.strftime("%Y-%m-%d")
        meta = {"exchange": row.exchange, "symbol": row.symbol, "day": day, "load": load}
        docs.append(
            {
                "snapshot_time": row.snapshot_time.to_pydatetime(),
                "last_update_id": int(row.last_update_id),
                "side": row.side,
                "level": int(row.level),
                "price": float(row.price),
                "quantity": float(row.quantity),
                "source": row.source,
                "received_at": row.received_at.to_pydatetime(),
                "meta": meta,
            }
        )
    return docs


def test_depth_documents_of_v1_loads_read_as_snapshots_beside_v2_ones():
    old, new = frames.depth(snapshots=3, levels=4), frames.depth(snapshots=2, levels=4)
    new["snapshot_time"] += pd.Timedelta(hours=1)
    new["received_at"] += pd.Timedelta(hours=1)
    new = conform(new, DEPTH)
    docs = _v1_depth_documents(old, "L1") + mongo.frame_to_documents("depth", new, "L2")
    assert len(docs) == 3 * 8 + 2
    frames.assert_depth_equal(
        mongo.documents_to_frame("depth", docs),
        pd.concat([old, new], ignore_index=True),
    )
    frames.assert_depth_equal(mongo.documents_to_frame("depth", docs[:24]), old)


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
    assert mongo.natural_key_index("trades") == "trades_natural_key_v2"
    assert mongo.natural_key_index("candles") == "candles_natural_key"
    assert specs["trades_natural_key_v2"] == [
        ("meta.exchange", 1),
        ("meta.symbol", 1),
        ("trade_id", 1),
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
        "trade_id": "1",
    }
    assert op._upsert is True and op._doc is doc


# -- the sink against a fake client that evaluates filters ---------------------------------
@pytest.fixture
def fake_sink():
    s = mongo.MongoSink(FakeClient(), "petrosa")
    s.ensure()
    return s


def _docs(sink, dataset="trades"):
    return sink.db[dataset].docs


def _read_day(sink, dataset="trades"):
    return sink.read(dataset, exchange="binance", symbols=["BTCUSDT"], start=START, end=END)


def test_ensure_creates_time_series_collections_once(fake_sink):
    fake_sink.ensure()
    created = [c for c in fake_sink.client.calls if c[1] == "create_collection"]
    assert sorted(c[0] for c in created) == ["candles", "depth", "funding", "trades"]
    assert fake_sink.db["candles"].timeseries == mongo.timeseries_options("candles")
    assert set(fake_sink.db["trades"].indexes) == {
        "trades_load_series_time",
        "trades_natural_key_v2",
    }
    assert not [c for c in fake_sink.client.calls if c[1] == "drop_index"]


#: the trades natural-key index as v1 created it (keyed by the aggregate id)
_V1_TRADES_INDEX = [("meta.exchange", 1), ("meta.symbol", 1), ("agg_trade_id", 1)]


def test_ensure_replaces_the_v1_trades_natural_key_index():
    """A database set up by v1 holds ``trades_natural_key`` on the aggregate id: MongoDB would
    refuse that name with the v2 keys, so ensure drops it and creates the versioned name."""
    s = mongo.MongoSink(FakeClient(), "petrosa")
    s.db.create_collection("trades", timeseries=mongo.timeseries_options("trades"))
    s.db["trades"].create_index(_V1_TRADES_INDEX, name="trades_natural_key")
    with pytest.raises(FakeOperationFailure, match="different keys"):
        s.db["trades"].create_index([("trade_id", 1)], name="trades_natural_key")
    s.ensure()
    s.ensure()
    indexes = s.db["trades"].indexes
    assert set(indexes) == {"trades_load_series_time", "trades_natural_key_v2"}
    assert indexes["trades_natural_key_v2"][0][-1] == ("trade_id", 1)
    drops = [c for c in s.client.calls if c[1] == "drop_index"]
    assert drops == [("trades", "drop_index", "trades_natural_key")]


def test_ensure_replaces_the_v1_depth_natural_key_index():
    """Depth v1 was keyed by side and level too: its index name is retired like trades'."""
    s = mongo.MongoSink(FakeClient(), "petrosa")
    s.db.create_collection("depth", timeseries=mongo.timeseries_options("depth"))
    v1_keys = [("meta.exchange", 1), ("meta.symbol", 1), ("snapshot_time", 1), ("side", 1)]
    s.db["depth"].create_index(v1_keys, name="depth_natural_key")
    s.ensure()
    indexes = s.db["depth"].indexes
    assert set(indexes) == {"depth_load_series_time", "depth_natural_key_v2"}
    assert indexes["depth_natural_key_v2"][0] == [
        ("meta.exchange", 1),
        ("meta.symbol", 1),
        ("snapshot_time", 1),
    ]


def test_a_v1_depth_partition_is_counted_in_snapshots_and_replaced_by_v2(fake_sink):
    """A partition a v1 sink published (a document per level) reads as its snapshots; the
    shrink guard counts its snapshots, not its 40x documents; a replace swaps it for v2."""
    frame = frames.depth(snapshots=5, levels=4)
    pid = mongo.partition_id("depth", "binance", "BTCUSDT", DAY)
    fake_sink.db["depth"].insert_many(_v1_depth_documents(frame, "OLD"))
    fake_sink.db[mongo.PARTITIONS].update_one({"_id": pid}, {"$set": {"load": "OLD"}}, True)
    frames.assert_depth_equal(_read_day(fake_sink, "depth"), frame)
    with pytest.raises(mongo.ShrinkRefusedError, match="refusing to replace 5 documents"):
        fake_sink.replace_partition(
            "depth", frame.iloc[:4], exchange="binance", symbol="BTCUSDT", day=DAY,
            never_fewer=True,
        )  # fmt: skip
    load = fake_sink.replace_partition(
        "depth", frame, exchange="binance", symbol="BTCUSDT", day=DAY, never_fewer=True
    )
    assert (load.rows, load.replaced_rows) == (5, 5)
    assert len(_docs(fake_sink, "depth")) == 5
    assert all("level" not in d for d in _docs(fake_sink, "depth"))
    frames.assert_depth_equal(_read_day(fake_sink, "depth"), frame)


def test_replace_twice_keeps_one_copy_and_moves_the_pointer(fake_sink):
    frame = frames.trades(n=200)
    first = fake_sink.replace_partition(
        "trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY
    )
    second = fake_sink.replace_partition(
        "trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY
    )
    assert (first.rows, first.replaced_rows) == (200, 0)
    assert (second.rows, second.replaced_rows) == (200, 200)
    assert len(_docs(fake_sink)) == 200
    assert {d["meta"]["load"] for d in _docs(fake_sink)} == {second.load_id}
    pointer = fake_sink.db[mongo.PARTITIONS].find_one({"_id": second.partition})
    assert pointer["load"] == second.load_id and pointer["rows"] == 200
    pd.testing.assert_frame_equal(_read_day(fake_sink), frame)


def test_reads_see_only_the_current_load(fake_sink):
    """A crashed replace leaves documents of a load no pointer names: readers skip them."""
    fake_sink.replace_partition(
        "candles", frames.candles(n=60), exchange="binance", symbol="BTCUSDT", day=DAY
    )
    stray = mongo.frame_to_documents("candles", frames.candles(n=60, seed=9), "crashed")
    fake_sink.db["candles"].insert_many(stray)
    back = fake_sink.read(
        "candles", exchange="binance", symbols=["BTCUSDT"], start=START, end=END, qualifier="1m"
    )
    pd.testing.assert_frame_equal(back, frames.candles(n=60))


def test_a_replace_never_publishes_fewer_documents_than_it_holds(fake_sink):
    """The issue-11 rule the warehouse follows (``never_fewer``), for the MongoDB store too."""
    frame = frames.trades(n=200)
    fake_sink.replace_partition("trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY)
    with pytest.raises(mongo.ShrinkRefusedError, match="refusing to replace 200 documents"):
        fake_sink.replace_partition(
            "trades", frame.iloc[:150], exchange="binance", symbol="BTCUSDT", day=DAY,
            never_fewer=True,
        )  # fmt: skip
    pd.testing.assert_frame_equal(_read_day(fake_sink), frame)
    assert len(_docs(fake_sink)) == 200
    fake_sink.replace_partition(
        "trades", frame.iloc[:150], exchange="binance", symbol="BTCUSDT", day=DAY
    )
    assert len(_read_day(fake_sink)) == 150 and len(_docs(fake_sink)) == 150


def test_rows_outside_the_partition_are_refused_before_any_write(fake_sink):
    frame = pd.concat([frames.trades(n=5), frames.trades(n=5, day=dt.date(2024, 1, 3))])
    with pytest.raises(mongo.MongoSinkError, match="5 rows are outside the day"):
        fake_sink.replace_partition("trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY)
    with pytest.raises(mongo.MongoSinkError, match="5 rows have symbol='BTCUSDT', not 'ETHUSDT'"):
        fake_sink.replace_partition(
            "trades", frames.trades(n=5), exchange="binance", symbol="ETHUSDT", day=DAY
        )
    writes = [c for c in fake_sink.client.calls if c[1] in ("insert_many", "update_one")]
    assert writes == [] and _docs(fake_sink) == []


def test_inserts_go_in_chunks(fake_sink, monkeypatch):
    monkeypatch.setattr(mongo, "INSERT_CHUNK", 64)
    fake_sink.replace_partition(
        "trades", frames.trades(n=200), exchange="binance", symbol="BTCUSDT", day=DAY
    )
    inserts = [c[2] for c in fake_sink.client.calls if c[1] == "insert_many"]
    assert inserts == [64, 64, 64, 8]


def test_upsert_twice_is_idempotent(fake_sink):
    fake_sink.replace_partition(
        "trades", frames.trades(n=10), exchange="binance", symbol="BTCUSDT", day=DAY
    )
    changed = frames.trades(n=12, seed=5)
    assert fake_sink.upsert("trades", changed, exchange="binance") == 12  # 10 changed, 2 new
    assert fake_sink.upsert("trades", changed, exchange="binance") == 0  # nothing to do
    back = _read_day(fake_sink)
    assert len(back) == 12 and back["price"].tolist() == changed["price"].tolist()
    assert len(_docs(fake_sink)) == 12


def test_the_fake_refuses_what_a_time_series_collection_refuses(fake_sink):
    """The fake can fail: off-meta deletes (MongoDB 5.x), unique indexes, no time field."""
    coll = fake_sink.db["trades"]
    with pytest.raises(FakeOperationFailure, match="may only filter on 'meta'"):
        coll.delete_many({"trade_time": {"$lt": END}})
    with pytest.raises(FakeOperationFailure, match="unique"):
        coll.create_index([("agg_trade_id", 1)], unique=True)
    with pytest.raises(FakeOperationFailure, match="trade_time"):
        coll.insert_many([{"meta": {"load": "x"}, "price": 1.0}])
    with pytest.raises(NotImplementedError, match=r"\$regex"):
        coll.count_documents({"meta.symbol": {"$regex": "BTC"}})


# -- the serving assets, wired with a fake client ---------------------------------------------
_FAKE_SERVERS: dict[str, FakeClient] = {}


class FakeMongoSinkResource(MongoSinkResource):
    """The real resource (URL check, ensure, teardown) connected to a fake server by URL."""

    def _connect(self, url: str) -> mongo.MongoSink:
        return mongo.MongoSink(_FAKE_SERVERS.setdefault(url, FakeClient()), self.database)


def test_without_the_setting_no_mongo_asset_is_defined():
    """Off unless PETROSA_MONGODB_URL is set: no node that fails or reports nothing."""
    for env in ({}, {"PETROSA_MONGODB_URL": "  "}):
        keys = {a.key.to_user_string() for a in build_storage_assets(env)}
        assert keys == {f"storage/warehouse_{d}" for d in ("trades", "candles", "depth", "funding")}


def test_with_the_setting_the_mongo_assets_are_wired():
    assets = build_storage_assets({"PETROSA_MONGODB_URL": "mongodb://mongo:27017"})
    mongo_assets = {a.key: a for a in assets if a.key.path[-1].startswith("mongo_")}
    assert set(mongo_assets) == {
        mongo_asset_key(d) for d in ("trades", "candles", "depth", "funding")
    }
    for dataset in ("trades", "candles", "depth", "funding"):
        a = mongo_assets[mongo_asset_key(dataset)]
        spec = a.specs_by_key[a.key]
        assert spec.kinds == {"mongodb"} and spec.group_name == "storage"
        # depth's documents changed (one per snapshot): its partitions read as code-changed
        assert spec.code_version == f"mongo-{dataset}-v{2 if dataset == 'depth' else 1}"
        assert a.keys_by_input_name["frame"] == asset_key(dataset)
        assert a.partitions_def == daily_symbol_partitions
        assert a.required_resource_keys >= {"mongo_sink"}
    import resources
    from petrosa_pipelines.market_data.assets import MARKET_DATA_ASSETS

    defs = dg.Definitions(
        assets=[*MARKET_DATA_ASSETS, *assets], resources=resources.defs().resources
    )
    dg.Definitions.validate_loadable(defs)


def _materialise(frame, resource, instance, run_config=None):
    @dg.asset(key=asset_key("trades"), partitions_def=daily_symbol_partitions)
    def trades_in_the_lake() -> pd.DataFrame:
        return frame

    return dg.materialize_to_memory(
        [trades_in_the_lake, build_mongo_asset("trades")],
        partition_key=f"{DAY.isoformat()}|BTCUSDT",
        resources={"mongo_sink": resource},
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )


def _row_metadata(result):
    mats = result.asset_materializations_for_node("storage__mongo_trades")
    return [(m.metadata["dagster/row_count"].value, m.metadata["replaced_rows"].value)
            for m in mats]  # fmt: skip


def test_the_mongo_asset_loads_reruns_idempotently_and_never_shrinks():
    url = f"mongodb://fake-{uuid.uuid4().hex[:8]}:27017"
    resource = FakeMongoSinkResource(url=url)
    frame = frames.trades(n=300)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, ["BTCUSDT"])
        first = _materialise(frame, resource, instance)
        assert first.success and _row_metadata(first) == [(300, 0)]
        second = _materialise(frame, resource, instance)
        assert second.success and _row_metadata(second) == [(300, 300)]
        client = _FAKE_SERVERS[url]
        sink = mongo.MongoSink(client, "petrosa")
        pd.testing.assert_frame_equal(_read_day(sink), frame)
        assert len(_docs(sink)) == 300 and client.closed == 2  # torn down after each run

        shrunk = _materialise(frame.iloc[:100], resource, instance)
        assert not shrunk.success
        failure = next(e for e in shrunk.all_events if e.event_type_value == "STEP_FAILURE")
        assert "refusing to replace 300 documents with 100" in str(failure.event_specific_data)
        assert len(_read_day(sink)) == 300

        allowed = {"ops": {"storage__mongo_trades": {"config": {"allow_fewer_rows": True}}}}
        forced = _materialise(frame.iloc[:100], resource, instance, allowed)
        assert forced.success and _row_metadata(forced) == [(100, 300)]
        assert len(_read_day(sink)) == 100


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
def test_ensure_replaces_the_v1_trades_index_on_a_server(sink):
    sink.db["trades"].drop_index("trades_natural_key_v2")
    sink.db["trades"].create_index(_V1_TRADES_INDEX, name="trades_natural_key")
    sink.ensure()
    info = sink.db["trades"].index_information()
    assert "trades_natural_key" not in info
    assert info["trades_natural_key_v2"]["key"][-1] == ("trade_id", 1)


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


@needs_mongo
@pytest.mark.integration
def test_a_real_server_refuses_to_shrink_a_partition(sink):
    frame = frames.trades(n=50)
    sink.replace_partition("trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY)
    with pytest.raises(mongo.ShrinkRefusedError):
        sink.replace_partition(
            "trades", frame.iloc[:10], exchange="binance", symbol="BTCUSDT", day=DAY,
            never_fewer=True,
        )  # fmt: skip
    assert sink.db["trades"].count_documents({}) == 50
