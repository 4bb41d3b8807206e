"""The warehouse on a real PostgreSQL: versioned schema, atomic idempotent partition loads."""

import datetime as dt
import threading

import numpy as np
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa

from petrosa_pipelines.catalog.depth_layout import to_long
from petrosa_pipelines.serving import pgcopy
from petrosa_pipelines.serving import warehouse as warehouse_mod
from petrosa_pipelines.serving.schema import (
    LATEST_VERSION,
    SCHEMA,
    TABLE_SPECS,
    V1_DEPTH_COLUMNS,
    depth_table_layout,
    hypertable_statements,
    metadata,
)
from petrosa_pipelines.serving.warehouse import (
    PartitionMismatchError,
    Warehouse,
    WarehouseError,
    analytics_to_long,
    analytics_to_wide,
    libpq_url,
    normalise_url,
)
from petrosa_pipelines_tests.test_storage import frames

DAY = dt.date(2024, 1, 2)
START = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
END = START + dt.timedelta(days=1)


def count(wh, table="trades", where="true"):
    with wh.engine.connect() as conn:
        return conn.execute(
            sa.text(f"select count(*) from {SCHEMA}.{table} where {where}")
        ).scalar()


def read_trades(wh, symbol="BTCUSDT"):
    return wh.read("trades", exchange="binance", symbols=[symbol], start=START, end=END)


# -- schema ---------------------------------------------------------------------------------------
def test_migrations_are_ordered_recorded_and_idempotent(postgres_db):
    wh = Warehouse(postgres_db)
    try:
        assert wh.version() == 0
        assert wh.migrate() == LATEST_VERSION
        assert wh.migrate() == LATEST_VERSION
        with wh.engine.connect() as conn:
            rows = conn.execute(
                sa.text(f"select version, description from {SCHEMA}.schema_version order by 1")
            ).fetchall()
        assert [r.version for r in rows] == list(range(1, LATEST_VERSION + 1))
        assert "skipped: timescaledb extension not available" in rows[2].description
    finally:
        wh.dispose()


def test_migrated_database_matches_the_table_definitions(warehouse):
    """Drift guard: a table change without a migration fails here."""
    insp = sa.inspect(warehouse.engine)
    for table in metadata.sorted_tables:
        db_cols = {c["name"]: c for c in insp.get_columns(table.name, schema=SCHEMA)}
        assert list(db_cols) == [c.name for c in table.columns], table.name
        for col in table.columns:
            assert db_cols[col.name]["nullable"] == col.nullable, (table.name, col.name)
            assert type(db_cols[col.name]["type"]).__name__ == type(col.type).__name__ or (
                col.type.compile(dialect=warehouse.engine.dialect)
                == db_cols[col.name]["type"].compile(dialect=warehouse.engine.dialect)
            ), (table.name, col.name)
    uniques = {u["name"] for u in insp.get_unique_constraints("trades", schema=SCHEMA)}
    assert "uq_trades_natural_key" in uniques
    assert "ix_trades_symbol_time" in {i["name"] for i in insp.get_indexes("trades", schema=SCHEMA)}


def test_newer_database_is_refused(warehouse):
    with warehouse.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"insert into {SCHEMA}.schema_version "
                f"values ({LATEST_VERSION + 1}, 'future', now())"
            )
        )
    with pytest.raises(WarehouseError, match="newer than this code"):
        warehouse.migrate()


def test_loading_before_migrating_says_what_to_do(postgres_db):
    wh = Warehouse(postgres_db)
    try:
        with pytest.raises(WarehouseError, match="migrate"):
            wh.load_partition(
                "trades", frames.trades(n=3), exchange="binance", symbol="BTCUSDT", day=DAY
            )
    finally:
        wh.dispose()


def test_hypertable_ddl_adds_time_to_keys_that_lack_it():
    trades = hypertable_statements(TABLE_SPECS["trades"])
    assert "UNIQUE (exchange, symbol, trade_id, trade_time)" in trades[1]
    assert "create_hypertable('petrosa.trades', 'trade_time'" in trades[-1]
    assert len(hypertable_statements(TABLE_SPECS["candles"])) == 1
    assert hypertable_statements(TABLE_SPECS["health"]) == []


def test_urls_of_any_driver_become_psycopg3():
    assert normalise_url("postgresql+psycopg2://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert normalise_url("postgresql://h/db") == "postgresql+psycopg://h/db"
    assert libpq_url("postgresql+psycopg://u:p@h/db") == "postgresql://u:p@h/db"
    with pytest.raises(WarehouseError):
        normalise_url("mysql://h/db")


# -- loads ----------------------------------------------------------------------------------------
def test_load_roundtrips_exactly_and_twice_changes_nothing(warehouse):
    frame = frames.trades(n=2000)
    first = warehouse.load_partition("trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY)
    snapshot = read_trades(warehouse)
    second = warehouse.load_partition(
        "trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY
    )
    assert (first.rows, first.replaced_rows, second.replaced_rows) == (2000, 0, 2000)
    pd.testing.assert_frame_equal(read_trades(warehouse), snapshot)
    expected = frame.sort_values(["trade_time", "agg_trade_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(snapshot, expected)
    assert count(warehouse) == 2000
    assert warehouse.loaded("trades", exchange="binance", symbols=["BTCUSDT"], days=[DAY]) == {
        ("BTCUSDT", DAY): 2000
    }


def test_trades_of_one_millisecond_read_back_in_numeric_id_order(warehouse):
    """Binance ids 9, 10, 11 in one millisecond: their text keys sort "10" < "11" < "9", the
    lake orders them by the numeric id, and so must a read."""
    frame = frames.trades(n=12, first_id=1)
    frame["trade_time"] = frame["trade_time"].iloc[0]
    warehouse.load_partition("trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY)
    back = read_trades(warehouse)
    assert back["agg_trade_id"].tolist() == list(range(1, 13))
    pd.testing.assert_frame_equal(back, frame)


def test_replace_touches_only_its_partition(warehouse):
    other_day = DAY + dt.timedelta(days=1)
    load = warehouse.load_partition
    load("trades", frames.trades(n=100), exchange="binance", symbol="BTCUSDT", day=DAY)
    load("trades", frames.trades("ETHUSDT", n=50), exchange="binance", symbol="ETHUSDT", day=DAY)
    load(
        "trades",
        frames.trades(day=other_day, n=70, first_id=1000),
        exchange="binance",
        symbol="BTCUSDT",
        day=other_day,
    )
    load("trades", frames.trades(n=10, seed=3), exchange="binance", symbol="BTCUSDT", day=DAY)
    assert count(warehouse, where="symbol='BTCUSDT' and trade_time < '2024-01-03'") == 10
    assert count(warehouse, where="symbol='ETHUSDT'") == 50
    assert count(warehouse, where="trade_time >= '2024-01-03'") == 70
    load("trades", frames.trades(n=0), exchange="binance", symbol="BTCUSDT", day=DAY)
    assert count(warehouse) == 120
    assert warehouse.loaded("trades", exchange="binance", symbols=["BTCUSDT"], days=[DAY]) == {
        ("BTCUSDT", DAY): 0
    }


def test_candle_intervals_are_separate_partitions(warehouse):
    one_m = frames.candles(n=60)
    one_h = one_m.iloc[:1].assign(interval="1h")
    warehouse.load_partition("candles", one_m, exchange="binance", symbol="BTCUSDT", day=DAY)
    warehouse.load_partition("candles", one_h, exchange="binance", symbol="BTCUSDT", day=DAY)
    warehouse.load_partition(
        "candles", one_m.head(5), exchange="binance", symbol="BTCUSDT", day=DAY
    )
    assert count(warehouse, "candles", "interval='1m'") == 5
    assert count(warehouse, "candles", "interval='1h'") == 1
    back = warehouse.read(
        "candles", exchange="binance", symbols=["BTCUSDT"], start=START, end=END, qualifier="1m"
    )
    pd.testing.assert_frame_equal(back, one_m.head(5).reset_index(drop=True))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.assign(symbol="ETHUSDT"), "symbol='ETHUSDT'"),
        (lambda f: f.assign(exchange="bybit"), "exchange='bybit'"),
        (lambda f: f.assign(trade_time=f.trade_time + pd.Timedelta(days=1)), "outside"),
        (lambda f: f.drop(columns=["price"]), "lacks columns"),
    ],
)
def test_rows_outside_the_partition_are_refused_before_anything_changes(warehouse, mutate, message):
    warehouse.load_partition(
        "trades", frames.trades(n=10), exchange="binance", symbol="BTCUSDT", day=DAY
    )
    with pytest.raises(PartitionMismatchError, match=message):
        warehouse.load_partition(
            "trades", mutate(frames.trades(n=5)), exchange="binance", symbol="BTCUSDT", day=DAY
        )
    assert count(warehouse) == 10


def test_duplicate_natural_keys_fail_and_keep_the_previous_state(warehouse):
    warehouse.load_partition(
        "trades", frames.trades(n=10), exchange="binance", symbol="BTCUSDT", day=DAY
    )
    dup = pd.concat([frames.trades(n=5), frames.trades(n=5)], ignore_index=True)
    with pytest.raises(psycopg.errors.UniqueViolation):
        warehouse.load_partition("trades", dup, exchange="binance", symbol="BTCUSDT", day=DAY)
    assert count(warehouse) == 10


def test_exception_mid_copy_leaves_previous_state(warehouse, monkeypatch):
    before = frames.trades(n=3000)
    warehouse.load_partition("trades", before, exchange="binance", symbol="BTCUSDT", day=DAY)
    snapshot = read_trades(warehouse)
    real = pgcopy.encode_frame

    def failing(frame, columns, **kw):
        for i, chunk in enumerate(real(frame, columns, chunk_rows=500)):
            if i == 3:
                raise RuntimeError("injected mid-COPY")
            yield chunk

    monkeypatch.setattr(warehouse_mod.pgcopy, "encode_frame", failing)
    with pytest.raises(RuntimeError, match="injected"):
        warehouse.load_partition(
            "trades", frames.trades(n=3000, seed=9), exchange="binance", symbol="BTCUSDT", day=DAY
        )
    pd.testing.assert_frame_equal(read_trades(warehouse), snapshot)
    assert warehouse.loaded("trades", exchange="binance", symbols=["BTCUSDT"], days=[DAY]) == {
        ("BTCUSDT", DAY): 3000
    }


def test_connection_killed_mid_copy_leaves_previous_state(warehouse, monkeypatch, postgres_db):
    warehouse.load_partition(
        "trades", frames.trades(n=1000), exchange="binance", symbol="BTCUSDT", day=DAY
    )
    snapshot = read_trades(warehouse)
    real = pgcopy.encode_frame

    def killed(frame, columns, **kw):
        for i, chunk in enumerate(real(frame, columns, chunk_rows=200)):
            if i == 2:  # the COPY is under way: terminate this backend from outside
                with psycopg.connect(libpq_url(postgres_db), autocommit=True) as admin:
                    admin.execute(
                        "select pg_terminate_backend(pid) from pg_stat_activity "
                        "where datname = current_database() and query ilike 'COPY%%' "
                        "and pid <> pg_backend_pid()"
                    )
            yield chunk

    monkeypatch.setattr(warehouse_mod.pgcopy, "encode_frame", killed)
    with pytest.raises((psycopg.OperationalError, sa.exc.OperationalError, sa.exc.DBAPIError)):
        warehouse.load_partition(
            "trades", frames.trades(n=1000, seed=4), exchange="binance", symbol="BTCUSDT", day=DAY
        )
    monkeypatch.undo()
    pd.testing.assert_frame_equal(read_trades(warehouse), snapshot)
    # the pool recovers: the next load works
    warehouse.load_partition(
        "trades", frames.trades(n=7), exchange="binance", symbol="BTCUSDT", day=DAY
    )
    assert count(warehouse) == 7


def test_concurrent_loads_of_different_partitions(warehouse):
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
    errors = []

    def load(i, sym):
        try:
            for k, day in enumerate((DAY, DAY + dt.timedelta(days=1))):
                frame = frames.trades(sym, day, n=500 + i, seed=i, first_id=1 + 10_000 * k)
                warehouse.load_partition("trades", frame, exchange="binance", symbol=sym, day=day)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(i, s)) for i, s in enumerate(symbols)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, sym in enumerate(symbols):
        assert count(warehouse, where=f"symbol='{sym}'") == 2 * (500 + i)
    assert (
        count(warehouse) == count(warehouse, where="true") == sum(2 * (500 + i) for i in range(4))
    )


def test_concurrent_loads_of_the_same_partition_serialise(warehouse):
    variants = [frames.trades(n=300 + 100 * i, seed=i) for i in range(4)]
    errors = []

    def load(frame):
        try:
            warehouse.load_partition("trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(f,)) for f in variants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(warehouse) in {len(f) for f in variants}  # exactly one whole load, never a mix
    assert count(warehouse) == len(read_trades(warehouse).drop_duplicates("agg_trade_id"))


def test_readers_never_see_half_a_partition(warehouse):
    small, large = frames.trades(n=1000), frames.trades(n=5000, seed=2)
    warehouse.load_partition("trades", small, exchange="binance", symbol="BTCUSDT", day=DAY)
    seen, stop = set(), threading.Event()

    def poll():
        while not stop.is_set():
            seen.add(count(warehouse))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(6):
            warehouse.load_partition(
                "trades",
                large if i % 2 == 0 else small,
                exchange="binance",
                symbol="BTCUSDT",
                day=DAY,
            )
    finally:
        stop.set()
        reader.join()
    assert seen <= {1000, 5000} and seen


# -- analytics and health --------------------------------------------------------------------------
def test_analytics_long_and_back(warehouse):
    ts = pd.date_range("2024-01-02", periods=24, freq="h", tz="UTC")
    wide = pd.DataFrame({"ts": ts, "parkinson": [0.01 * i for i in range(24)], "yang_zhang": 0.5})
    wide.loc[3, "parkinson"] = float("nan")
    report = warehouse.load_analytics(
        "volatility", wide, exchange="binance", symbol="BTCUSDT", day=DAY
    )
    assert report.rows == 48
    long = warehouse.read(
        "analytics",
        exchange="binance",
        symbols=["BTCUSDT"],
        start=START,
        end=END,
        qualifier="volatility",
    )
    back = analytics_to_wide(long)
    assert list(back.columns) == ["symbol", "ts", "parkinson", "yang_zhang"]
    pd.testing.assert_series_equal(back["parkinson"], wide["parkinson"], check_names=False)
    assert (back["ts"].to_numpy() == wide["ts"].astype("datetime64[ms, UTC]").to_numpy()).all()


def test_analytics_without_a_time_column_is_refused():
    with pytest.raises(WarehouseError, match="time_column"):
        analytics_to_long("x", pd.DataFrame({"v": [1.0]}), exchange="binance", symbol="BTCUSDT")


def test_health_rows_load_with_json_details(warehouse):
    health = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "dataset": ["trades", "candles"],
            "day": pd.Timestamp("2024-01-02", tz="UTC"),
            "score": [0.99, 1.0],
            "completeness": [0.98, 1.0],
            "validity": [1.0, 1.0],
            "consistency": [1.0, None],
            "freshness": [0.9, 1.0],
            "details": ['{"gaps": 2}', '{"gaps": 0}'],
            "evaluated_at": pd.Timestamp("2024-01-03T00:05", tz="UTC"),
        }
    )
    warehouse.load_partition("health", health, exchange="binance", symbol="BTCUSDT", day=DAY)
    back = warehouse.read("health", exchange="binance", symbols=["BTCUSDT"], start=START, end=END)
    assert sorted(back["dataset"]) == ["candles", "trades"]
    assert back.set_index("dataset").loc["trades", "details"] == {"gaps": 2}


def test_v3_trades_gain_the_agg_id_text_as_trade_id_and_keep_loading(postgres_db):
    """A warehouse from before trade ids: its Binance rows get the aggregate id's text (what the
    lake fills for v1 files), the key becomes (exchange, symbol, trade_id), and reloading the
    same partition leaves identical rows."""
    wh = Warehouse(postgres_db)
    try:
        wh.migrate()
        wh.load_partition(
            "trades", frames.trades(n=5), exchange="binance", symbol="BTCUSDT", day=DAY
        )
        table = f"{SCHEMA}.trades"
        with wh.engine.begin() as conn:  # back to the v3 layout, as an old database has it
            for sql in (
                f"ALTER TABLE {table} DROP CONSTRAINT uq_trades_natural_key",
                f"ALTER TABLE {table} DROP COLUMN trade_id",
                f"ALTER TABLE {table} ADD CONSTRAINT uq_trades_natural_key "
                "UNIQUE (exchange, symbol, agg_trade_id)",
                f"DELETE FROM {SCHEMA}.schema_version WHERE version >= 4",
            ):
                conn.execute(sa.text(sql))
        wh._schema_checked = False
        assert wh.version() == 3
        assert wh.migrate() == LATEST_VERSION
        before = read_trades(wh)
        assert before["trade_id"].tolist() == [str(i) for i in before["agg_trade_id"]]
        insp = sa.inspect(wh.engine)
        uniques = {
            u["name"]: u["column_names"]
            for u in insp.get_unique_constraints("trades", schema=SCHEMA)
        }
        assert uniques["uq_trades_natural_key"] == ["exchange", "symbol", "trade_id"]
        cols = [c["name"] for c in insp.get_columns("trades", schema=SCHEMA)]
        assert cols == TABLE_SPECS["trades"].column_names
        wh.load_partition(
            "trades", frames.trades(n=5), exchange="binance", symbol="BTCUSDT", day=DAY
        )
        pd.testing.assert_frame_equal(read_trades(wh), before)
    finally:
        wh.dispose()


# -- depth: one row per snapshot (catalog depth v2) ------------------------------------------------
def read_depth(wh, symbol="BTCUSDT"):
    return wh.read("depth", exchange="binance", symbols=[symbol], start=START, end=END)


def ragged_depth(snapshots=40, levels=20):
    """Top-``levels`` books, one with a thin bid side and one with no asks at all."""
    frame = frames.depth(snapshots=snapshots, levels=levels)
    frame.at[3, "bid_price"] = frame.at[3, "bid_price"][:7].copy()
    frame.at[3, "bid_quantity"] = frame.at[3, "bid_quantity"][:7].copy()
    frame.at[5, "ask_price"] = np.empty(0)
    frame.at[5, "ask_quantity"] = np.empty(0)
    return frame


def test_depth_loads_and_reads_one_row_per_snapshot(warehouse):
    frame = ragged_depth()
    report = warehouse.load_partition("depth", frame, exchange="binance", symbol="BTCUSDT", day=DAY)
    assert report.rows == 40 and count(warehouse, "depth") == 40
    frames.assert_depth_equal(read_depth(warehouse), frame)
    assert warehouse.loaded("depth", exchange="binance", symbols=["BTCUSDT"], days=[DAY]) == {
        ("BTCUSDT", DAY): 40
    }
    with warehouse.engine.connect() as conn:
        sizes = conn.execute(
            sa.text(
                f"select cardinality(bid_price), cardinality(ask_price) from {SCHEMA}.depth "
                "order by snapshot_time"
            )
        ).fetchall()
    assert sizes[0] == (20, 20) and sizes[3] == (7, 20) and sizes[5] == (20, 0)
    # a v1 (long) frame given to the loader is refused, not written level by level
    with pytest.raises(PartitionMismatchError, match="lacks columns"):
        warehouse.load_partition(
            "depth", to_long(frame), exchange="binance", symbol="BTCUSDT", day=DAY
        )


def test_depth_duplicate_snapshots_fail_on_the_natural_key(warehouse):
    frame = frames.depth(snapshots=3)
    dup = pd.concat([frame, frame.iloc[:1]], ignore_index=True)
    with pytest.raises(psycopg.errors.UniqueViolation):
        warehouse.load_partition("depth", dup, exchange="binance", symbol="BTCUSDT", day=DAY)


_V1_DEPTH_DDL = f"""CREATE TABLE {SCHEMA}.depth (
    exchange text COLLATE "C" NOT NULL, symbol text COLLATE "C" NOT NULL,
    snapshot_time timestamptz NOT NULL, last_update_id bigint NOT NULL,
    side text COLLATE "C" NOT NULL, level bigint NOT NULL,
    price double precision NOT NULL, quantity double precision NOT NULL,
    source text COLLATE "C" NOT NULL, received_at timestamptz,
    CONSTRAINT uq_depth_natural_key UNIQUE (exchange, symbol, snapshot_time, side, level))"""
_V1_DEPTH_COPY = [
    pgcopy.CopyColumn(c, k)
    for c, k in (
        ("exchange", "text"),
        ("symbol", "text"),
        ("snapshot_time", "timestamptz"),
        ("last_update_id", "int8"),
        ("side", "text"),
        ("level", "int8"),
        ("price", "float8"),
        ("quantity", "float8"),
        ("source", "text"),
    )
] + [pgcopy.CopyColumn("received_at", "timestamptz", nullable=True)]


def _as_v4_warehouse(wh, *partitions):
    """Put the warehouse back at version 4: the depth table a row per level, holding
    ``partitions`` ((symbol, day, v2 frame)) as v1 loads left them, ledger included."""
    with wh.engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {SCHEMA}.depth"))
        conn.execute(sa.text(_V1_DEPTH_DDL))
        conn.execute(sa.text(f"DELETE FROM {SCHEMA}.schema_version WHERE version >= 5"))
        raw = conn.connection.driver_connection
        for symbol, day, frame in partitions:
            long = to_long(frame)
            with raw.cursor() as cur:
                cols = ", ".join(c.name for c in _V1_DEPTH_COPY)
                with cur.copy(f"COPY {SCHEMA}.depth ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                    for chunk in pgcopy.encode_frame(long, _V1_DEPTH_COPY):
                        cp.write(chunk)
                warehouse_mod.Warehouse._record_load(
                    cur,
                    warehouse_mod.Partition("depth", "binance", symbol, day),
                    len(long),
                    None,
                    None,
                )
    wh._schema_checked = False


def test_a_v1_depth_table_is_migrated_in_place_to_one_row_per_snapshot(postgres_db):
    """A warehouse from before depth v2: reads and loads name the pending migration, and
    migrating turns its level rows into the snapshots the lake holds, ledger counts too."""
    wh = Warehouse(postgres_db)
    try:
        wh.migrate()
        other_day = DAY + dt.timedelta(days=1)
        btc, eth = ragged_depth(), frames.depth("ETHUSDT", snapshots=5, levels=3)
        later = frames.depth(day=other_day, snapshots=4)
        _as_v4_warehouse(
            wh, ("BTCUSDT", DAY, btc), ("ETHUSDT", DAY, eth), ("BTCUSDT", other_day, later)
        )
        assert wh.version() == 4
        with wh.engine.connect() as conn:
            assert depth_table_layout(conn) == "long"
        assert count(wh, "depth") == len(to_long(btc)) + 5 * 6 + 4 * 4
        for attempt in (lambda: read_depth(wh), lambda: wh.load_partition(
            "depth", btc, exchange="binance", symbol="BTCUSDT", day=DAY
        )):  # fmt: skip
            with pytest.raises(WarehouseError, match=r"version 4.*5: depth one row per snapshot.*"
                               r"migrate\(\)"):  # fmt: skip
                attempt()
        assert wh.migrate() == LATEST_VERSION
        assert _depth_migration_note(wh) == "wide"
        assert "depth converted: 49 snapshot rows" in _depth_migration_note(wh, note=True)
        insp = sa.inspect(wh.engine)
        cols = [c["name"] for c in insp.get_columns("depth", schema=SCHEMA)]
        assert cols == TABLE_SPECS["depth"].column_names and not set(V1_DEPTH_COLUMNS) & set(cols)
        uniques = {
            u["name"]: u["column_names"] for u in insp.get_unique_constraints("depth", SCHEMA)
        }
        assert uniques == {"uq_depth_natural_key": ["exchange", "symbol", "snapshot_time"]}
        assert not insp.has_table("depth_v1", schema=SCHEMA)
        frames.assert_depth_equal(read_depth(wh), btc)
        frames.assert_depth_equal(read_depth(wh, "ETHUSDT"), eth)
        assert wh.loaded(
            "depth", exchange="binance", symbols=["BTCUSDT", "ETHUSDT"], days=[DAY, other_day]
        ) == {("BTCUSDT", DAY): 40, ("ETHUSDT", DAY): 5, ("BTCUSDT", other_day): 4}
        # the converted partition is replaced by the same lake frame: identical rows, and the
        # shrink guard compares snapshots with snapshots
        report = wh.load_partition(
            "depth", btc, exchange="binance", symbol="BTCUSDT", day=DAY, never_fewer=True
        )
        assert (report.rows, report.replaced_rows) == (40, 40)
        frames.assert_depth_equal(read_depth(wh), btc)
        assert wh.migrate() == LATEST_VERSION  # nothing left to do
    finally:
        wh.dispose()


def _depth_migration_note(wh, note: bool = False) -> str:
    """The depth table's layout, or (``note``) what migration 5 recorded about it."""
    with wh.engine.connect() as conn:
        if not note:
            return depth_table_layout(conn)
        return conn.execute(
            sa.text(f"select description from {SCHEMA}.schema_version where version = 5")
        ).scalar()


def test_a_new_database_builds_the_wide_depth_table_and_skips_the_conversion(warehouse):
    assert _depth_migration_note(warehouse) == "wide"
    assert "depth already one row per snapshot" in _depth_migration_note(warehouse, note=True)
