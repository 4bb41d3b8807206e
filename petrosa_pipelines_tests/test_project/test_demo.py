"""The non-interactive demo (the CI form of the README's first command) exits 0, and shows a
real order-book day end to end on both venues (Binance USD-M and Bybit linear): depth, liquidity
and the liquidity heatmap of yesterday, every check passing."""

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from petrosa_pipelines.instruments import parse_instrument, partition_key_str
from petrosa_pipelines.tooling.demo import demo_days, demo_instruments
from petrosa_pipelines_tests.demo_run import (
    DAYS,
    DEMO_TEST_TIMEOUT_S,
    INSTRUMENTS,
    SYMBOL,
    run_demo_cli,
)


def test_demo_days_are_closed_days_oldest_first():
    import datetime as dt

    days = demo_days(3, today=dt.date(2024, 3, 1))
    assert days == [dt.date(2024, 2, 27), dt.date(2024, 2, 28), dt.date(2024, 2, 29)]


def test_a_bare_demo_symbol_is_taken_on_every_venue():
    assert demo_instruments(["BTCUSDT", "bybit-linear:ETHUSDT", "binance:ethusdt"]) == [
        "binance-usdm:BTCUSDT",
        "bybit-linear:BTCUSDT",
        "bybit-linear:ETHUSDT",
        "binance-usdm:ETHUSDT",
    ]
    assert demo_instruments([SYMBOL]) == list(INSTRUMENTS)


def test_symbols_options_take_instrument_ids():
    import argparse

    from petrosa_pipelines.lib.argtypes import instrument_list

    assert instrument_list("btcusdt, bybit-linear:ETHUSDT,binance:solusdt,BTCUSDT") == (
        "BTCUSDT",
        "bybit-linear:ETHUSDT",
        "binance-usdm:SOLUSDT",
    )
    for bad in ("../../etc", "okx:BTCUSDT", "bybit-linear:*", " , ", "bybit-linear:BTC/USDT"):
        with pytest.raises(argparse.ArgumentTypeError):
            instrument_list(bad)


def lake_frame(
    workdir: Path, dataset: str, day: dt.date, instrument: str = INSTRUMENTS[0]
) -> pd.DataFrame:
    """One partition the demo wrote (``market_data/depth``, ``analytics/liquidity``)."""
    inst = parse_instrument(instrument)
    path = workdir / "lake" / dataset / inst.exchange / inst.symbol / f"{day}.parquet"
    return pd.read_parquet(path)


def _market_data_lines(stdout: str) -> dict[str, str]:
    """Partition key -> the demo's ``market data [n/N] <key> ...`` line."""
    lines = [line for line in stdout.splitlines() if line.startswith("market data [")]
    return {line.split()[3]: line for line in lines}


@pytest.mark.slow  # streams a whole day through the ingest
@pytest.mark.timeout(DEMO_TEST_TIMEOUT_S)
def test_demo_no_ui_materialises_everything(finished_demo):
    """The session's demo (``demo_run``: 2 days, BTCUSDT on Binance USD-M and Bybit linear, a
    4 s live tail), as printed and written; the UI tests look at the same run."""
    out, workdir = finished_demo, finished_demo.workdir
    assert out.returncode == 0, out.explain()
    runs = DAYS * len(INSTRUMENTS)
    for n in range(1, runs + 1):
        assert f"market data [{n}/{runs}]" in out.stdout, out.explain()
        assert f"analytics [{n}/{runs}]" in out.stdout, out.explain()
    # every instrument-day's health in ONE batched audit run, as the daemon's audit_sensor does
    assert f"health: 1 run for {runs} partitions ok" in out.stdout, out.explain()
    assert "candles=1440" in out.stdout and "volatility=" in out.stdout
    # market data and analytics per instrument-day, health once, correlation per day
    assert f"all {2 * runs + 1 + DAYS} runs succeeded" in out.stdout, out.explain()
    # the days closed when the demo picked them, which a suite running past midnight UTC must
    # not confuse with the days closed now
    first = dt.date.fromisoformat((workdir / "start_date").read_text())
    assert first in (demo_days(DAYS, out.started_on)[0], demo_days(DAYS, out.started_on)[1])
    days = demo_days(DAYS, first + dt.timedelta(days=DAYS))
    # every instrument-day materialised with every check passing (no failed check, so nothing
    # for the alert sensor to raise), Bybit's through the same assets as Binance's
    lines = _market_data_lines(out.stdout)
    keys = {partition_key_str(d, i) for d in days for i in INSTRUMENTS}
    assert set(lines) == keys, sorted(lines)
    for line in lines.values():
        assert " ok in " in line and "(failed:" not in line and " checks " in line, line
        passed, total = line.split(" checks ")[1].split()[0].split("/")
        assert passed == total and int(total) > 0, line
    assert "(failed:" not in out.stdout, out.explain()
    assert "ingest: " in out.stdout and " 0 dead letters" in out.stdout
    assert list((workdir / "landing").rglob("seg-*"))
    assert list((workdir / "lake" / "market_data" / "candles").rglob("*.parquet"))
    # yesterday streamed through the ingest, whole, on both venues: a real book, liquidity and
    # a heatmap each
    day = days[-1]
    assert f"depth day {day}: " in out.stdout and " 0 gaps recorded" in out.stdout
    for inst in INSTRUMENTS:
        for dataset in ("trades", "candles", "funding"):
            frame = lake_frame(workdir, f"market_data/{dataset}", day, inst)
            assert len(frame) and frame["exchange"].eq(parse_instrument(inst).exchange).all()
        depth = lake_frame(workdir, "market_data/depth", day, inst)
        snapshots = depth["snapshot_time"].nunique()
        assert snapshots >= 0.95 * 86_400, (inst, snapshots)  # the depth_coverage threshold
        liquidity = lake_frame(workdir, "analytics/liquidity", day, inst)
        assert len(liquidity) >= 0.95 * 1_440, inst
        assert liquidity[["mid", "spread_bps", "bid_depth", "ask_depth"]].notna().all().all()
        heatmap = lake_frame(workdir, "analytics/liquidity_heatmap", day, inst)
        assert len(heatmap) > 0 and heatmap["quantity"].gt(0).all(), inst
        # today: what the live ingest landed, in words
        assert f"today so far from the landing zone, {inst}: " in out.stdout
    # partitions start at the demo's first day, not at 2024-01-01
    assert (workdir / "start_date").read_text() == days[0].isoformat()


def test_demo_start_date_keeps_the_earliest_day_across_runs(tmp_path):
    import datetime as dt

    from petrosa_pipelines.tooling.demo import demo_start_date

    assert demo_start_date(tmp_path, dt.date(2026, 11, 28)) == dt.date(2026, 11, 28)
    assert demo_start_date(tmp_path, dt.date(2026, 11, 30)) == dt.date(2026, 11, 28)
    assert demo_start_date(tmp_path, dt.date(2026, 11, 20)) == dt.date(2026, 11, 20)


def test_demo_on_postgresql_by_settings_alone(tmp_path, postgres_db):
    """Dagster's storage and the warehouse both on PostgreSQL, chosen by two variables."""
    import psycopg

    out = run_demo_cli(
        tmp_path,
        0,
        "--no-depth-day",  # the storage is under test here, not the order book
        PETROSA_DAGSTER_POSTGRES_URL=postgres_db.replace(
            "postgresql://", "postgresql+psycopg2://", 1
        ),
        PETROSA_WAREHOUSE_URL=postgres_db,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "warehouse [1/2]" in out.stdout and "warehouse [2/2]" in out.stdout
    with psycopg.connect(postgres_db) as conn:
        candles = dict(
            conn.execute(
                "select exchange, count(*) from petrosa.candles group by exchange"
            ).fetchall()
        )
        runs = conn.execute("select count(*) from runs").fetchone()[0]  # Dagster's own table
    # one day of BTCUSDT on each venue, each under its own exchange
    assert candles == {"binance": 1440, "bybit-linear": 1440}
    assert runs >= 4 * len(INSTRUMENTS)
