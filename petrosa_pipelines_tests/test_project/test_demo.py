"""The non-interactive demo (the CI form of the README's first command) exits 0, and shows a
real order-book day end to end: depth, liquidity and the liquidity heatmap of yesterday."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from petrosa_pipelines.demo import demo_days

REPO = Path(__file__).resolve().parents[2]


def test_demo_days_are_closed_days_oldest_first():
    import datetime as dt

    days = demo_days(3, today=dt.date(2024, 3, 1))
    assert days == [dt.date(2024, 2, 27), dt.date(2024, 2, 28), dt.date(2024, 2, 29)]


def run_demo_cli(workdir: Path, ingest_seconds: int, *args: str, **settings: str):
    """``petrosa demo --no-ui`` for one symbol-day in a clean environment plus ``settings``.

    The deadline is generous: streaming a whole day and building its 3.4 million book rows
    took about 2 minutes on a loaded 2-core machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PETROSA_", "DAGSTER_HOME"))}
    env.update(settings)
    return subprocess.run(
        [str(Path(sys.executable).parent / "petrosa"), "demo", "--no-ui", "--days", "1",
         "--symbols", "BTCUSDT", "--workdir", str(workdir),
         "--ingest-seconds", str(ingest_seconds), *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def lake_frame(workdir: Path, dataset: str, day: dt.date) -> pd.DataFrame:
    """One BTCUSDT partition the demo wrote (``market_data/depth``, ``analytics/liquidity``)."""
    path = workdir / "lake" / dataset / "binance" / "BTCUSDT" / f"{day}.parquet"
    return pd.read_parquet(path)


@pytest.mark.slow  # streams a whole day through the ingest
def test_demo_no_ui_materialises_everything(tmp_path):
    out = run_demo_cli(tmp_path, ingest_seconds=4)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "market data [1/1]" in out.stdout and "candles=1440" in out.stdout
    assert "analytics [1/1]" in out.stdout and "volatility=" in out.stdout
    assert "all 4 runs succeeded" in out.stdout and "health [1/1]" in out.stdout
    assert "ingest: " in out.stdout and "today so far from the landing zone, BTCUSDT" in out.stdout
    assert list((tmp_path / "landing").rglob("seg-*"))
    assert list((tmp_path / "lake" / "market_data" / "candles").rglob("*.parquet"))
    # yesterday streamed through the ingest, whole: a real book, liquidity and a heatmap
    (day,) = demo_days(1)
    assert f"depth day {day}: " in out.stdout and " 0 gaps recorded" in out.stdout
    depth = lake_frame(tmp_path, "market_data/depth", day)
    snapshots = depth["snapshot_time"].nunique()
    assert snapshots >= 0.95 * 86_400, snapshots  # the depth_coverage threshold
    liquidity = lake_frame(tmp_path, "analytics/liquidity", day)
    assert len(liquidity) >= 0.95 * 1_440
    assert liquidity[["mid", "spread_bps", "bid_depth", "ask_depth"]].notna().all().all()
    heatmap = lake_frame(tmp_path, "analytics/liquidity_heatmap", day)
    assert len(heatmap) > 0 and heatmap["quantity"].gt(0).all()
    # today: what the live ingest landed, in words
    assert "today so far from the landing zone, BTCUSDT: " in out.stdout
    # partitions start at the demo's first day, not at 2024-01-01
    assert (tmp_path / "start_date").read_text() == day.isoformat()


def test_demo_start_date_keeps_the_earliest_day_across_runs(tmp_path):
    import datetime as dt

    from petrosa_pipelines.demo import demo_start_date

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
    assert "warehouse [1/1]" in out.stdout
    with psycopg.connect(postgres_db) as conn:
        candles = conn.execute("select count(*) from petrosa.candles").fetchone()[0]
        runs = conn.execute("select count(*) from runs").fetchone()[0]  # Dagster's own table
    assert candles == 1440
    assert runs >= 4
