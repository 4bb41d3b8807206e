"""Warehouse load vs bare psycopg COPY (same table, same run); API read of a month of candles.

Usage: python benchmarks/warehouse_bench.py [--rows 1000000] [--repeat 3]
PostgreSQL: PETROSA_BENCH_POSTGRES_URL, else postgresql://postgres@127.0.0.1:5432/postgres
(a scratch database is created and dropped).

Baselines, both into the same table with the same indexes, truncated before every run:
- "bare COPY (pre-encoded)": the exact binary stream the warehouse sends, built before the
  clock starts; only psycopg's COPY is timed. The floor: nothing can load faster.
- "bare COPY write_row": what a hand-written psycopg loader does (set_types + write_row).
The warehouse figure includes everything: partition checks, advisory lock, delete, encoding,
COPY, ledger row and commit. Target: >= 70% of the bare COPY rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from petrosa_pipelines import api  # noqa: E402
from petrosa_pipelines.catalog.schemas import CANDLES, TRADES, conform  # noqa: E402
from petrosa_pipelines.lake import LocalLake, lake_path  # noqa: E402
from petrosa_pipelines.serving import pgcopy  # noqa: E402
from petrosa_pipelines.serving.schema import TABLE_SPECS  # noqa: E402
from petrosa_pipelines.serving.warehouse import Warehouse  # noqa: E402

DAY = dt.date(2024, 1, 2)
DAY_MS = 1_704_153_600_000


def trades(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    t = DAY_MS + np.sort(rng.integers(0, 86_400_000, n))
    src = np.where(rng.random(n) < 0.9, "ws", "rest")
    recv = pd.to_datetime(t + rng.integers(1, 50, n), unit="ms", utc=True)
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "agg_trade_id": np.arange(1, n + 1, dtype=np.int64),
            "price": np.round(rng.uniform(40_000, 45_000, n), 1),
            "quantity": np.round(rng.uniform(0.001, 3, n), 3),
            "first_trade_id": np.arange(n, dtype=np.int64) * 2,
            "last_trade_id": np.arange(n, dtype=np.int64) * 2 + 1,
            "trade_time": pd.to_datetime(t, unit="ms", utc=True),
            "is_buyer_maker": rng.random(n) < 0.5,
            "source": src,
            "received_at": recv.where(src == "ws"),
        }
    )
    return conform(frame, TRADES)


def candles_month() -> list[tuple[dt.date, pd.DataFrame]]:
    rng = np.random.default_rng(3)
    out = []
    for d in range(31):
        day = dt.date(2024, 1, 1) + dt.timedelta(days=d)
        start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
        o = np.round(rng.uniform(40_000, 45_000, 1440), 1)
        c = np.round(o + rng.normal(0, 5, 1440), 1)
        frame = pd.DataFrame(
            {
                "exchange": "binance",
                "symbol": "BTCUSDT",
                "interval": "1m",
                "open_time": pd.to_datetime(start + np.arange(1440) * 60_000, unit="ms", utc=True),
                "close_time": pd.to_datetime(
                    start + np.arange(1440) * 60_000 + 59_999, unit="ms", utc=True
                ),
                "open": o,
                "high": np.maximum(o, c) + 1,
                "low": np.minimum(o, c) - 1,
                "close": c,
                "volume": rng.uniform(1, 100, 1440),
                "quote_volume": rng.uniform(1e4, 1e6, 1440),
                "trade_count": rng.integers(10, 1000, 1440),
                "taker_buy_volume": rng.uniform(0, 1, 1440),
                "taker_buy_quote_volume": rng.uniform(0, 1e4, 1440),
                "source": "archive",
                "received_at": pd.NaT,
            }
        )
        out.append((day, conform(frame, CANDLES)))
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = os.environ.get(
        "PETROSA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    name = f"petrosa_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.rpartition("/")[0] + f"/{name}"
    try:
        run(url, args.rows, args.repeat)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(url: str, rows: int, repeat: int) -> None:
    wh = Warehouse(url)
    wh.migrate()
    frame = trades(rows)
    spec = TABLE_SPECS["trades"]
    cols = ", ".join(spec.column_names)
    copy_sql = f"COPY {spec.qualified_name} ({cols}) FROM STDIN (FORMAT BINARY)"
    encoded = [bytes(c) for c in pgcopy.encode_frame(frame, spec.columns)]
    conn = psycopg.connect(url)

    def truncate() -> None:
        conn.execute(f"TRUNCATE {spec.qualified_name}; TRUNCATE petrosa.loaded_partitions")
        conn.commit()

    def bare_pre_encoded() -> None:
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for chunk in encoded:
                copy.write(chunk)
        conn.commit()

    def bare_write_row() -> None:
        values = [frame[c].tolist() for c in spec.column_names]
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.set_types([c.kind for c in spec.columns])
            for row in zip(*values, strict=True):
                copy.write_row(row)
        conn.commit()

    def warehouse_load() -> None:
        wh.load_partition("trades", frame, exchange="binance", symbol="BTCUSDT", day=DAY)

    results: dict[str, list[float]] = {"warehouse": [], "bare_pre_encoded": []}
    for i in range(repeat):  # interleaved, order alternating, so machine noise hits both alike
        order = [("bare_pre_encoded", bare_pre_encoded), ("warehouse", warehouse_load)]
        for key, fn in order if i % 2 == 0 else order[::-1]:
            truncate()
            results[key].append(timed(fn))
    truncate()
    results["bare_write_row"] = [timed(bare_write_row)]
    truncate()
    warehouse_load()
    results["warehouse_replace"] = [timed(warehouse_load) for _ in range(max(1, repeat - 1))]
    conn.close()
    wh.dispose()

    print(
        f"warehouse load of {rows:,} trades (median of {repeat}; the table has its unique key "
        "and time index)"
    )
    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        "  samples (s): " + "; ".join(f"{k} {[round(x, 2) for x in v]}" for k, v in results.items())
    )
    for key, label in (
        ("bare_pre_encoded", "bare psycopg COPY BINARY, pre-encoded (floor)"),
        ("bare_write_row", "bare psycopg COPY BINARY, write_row (1 run)"),
        ("warehouse", "warehouse.load_partition, empty partition"),
        ("warehouse_replace", "warehouse.load_partition, replacing the same partition"),
    ):
        print(f"  {label:58s} {med[key]:7.3f} s  {rows / med[key] / 1e6:6.3f} M rows/s")
    print(
        "  ratio warehouse / bare pre-encoded COPY: "
        f"{med['bare_pre_encoded'] / med['warehouse']:.0%} (target >= 70%)"
    )
    print(
        f"  ratio warehouse / bare write_row COPY:   {med['bare_write_row'] / med['warehouse']:.0%}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        lake = LocalLake(tmp)
        month = candles_month()
        for day, f in month:
            lake.write_frame(
                lake_path("market_data/candles", "binance", "BTCUSDT", day.isoformat()), f
            )
        src = api.DataSources(
            lake=lake, symbols=("BTCUSDT",), now=lambda: dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
        )
        start, end = dt.date(2024, 1, 1), dt.date(2024, 2, 1)
        times = [
            timed(lambda: api.load_candles("BTCUSDT", start, end, sources=src))
            for _ in range(repeat)
        ]
        bare = [
            timed(
                lambda: pd.concat(
                    [
                        lake.read_frame(
                            lake_path("market_data/candles", "binance", "BTCUSDT", d.isoformat())
                        )
                        for d, _ in month
                    ]
                )
            )
            for _ in range(repeat)
        ]
        result = api.load_candles("BTCUSDT", start, end, sources=src)
        n = len(result.frame)
        t, b = statistics.median(times), statistics.median(bare)
        print(
            f"API read of a month of 1m candles, one symbol, local lake ({n:,} rows, complete="
            f"{result.complete})"
        )
        print(f"  api.load_candles          {t:7.3f} s  {n / t / 1e3:8.1f} k rows/s")
        print(
            f"  bare parquet read+concat  {b:7.3f} s  {n / b / 1e3:8.1f} k rows/s  "
            f"(API at {b / t:.0%} of it: checks, conform, trim, sort)"
        )


if __name__ == "__main__":
    main()
