"""Files, bytes and read times of closed history months, day files against compacted months:

    python benchmarks/compaction_bench.py [--instruments 100] [--repeat 3]

The lake holds one closed month (30 days) of ``--instruments`` quiet instruments, candles and
funding, as the fill writes them (``catalog.schemas.conform``, ``Lake.write_frame``). Each
candle day is a real Binance USD-M 1m day from ``petrosa_pipelines_tests/fixtures/analytics``
(Binance Vision archives, 6 days of BTCUSDT and ETHUSDT, cycled; provenance in that folder),
moved to the benchmark's day; funding is 3 settlements a day. The lake is measured as day files,
then every month is compacted (``market_data/compaction.py``) and the same things measured again,
in the same run:

- files and bytes on disk;
- reading one day in a fresh process-like state (a new ``LocalLake``: nothing cached);
- reading a month's 30 days one after another (what a warehouse history load does);
- listing one instrument's days (``Lake.list``), and planning the roll for every instrument
  (``history.lake_days``).

Prints one JSON line; ``*_ratio`` is compacted / day files (below 1: the compacted lake is
smaller or faster).
"""

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from timing import median_seconds  # noqa: E402

FIXTURES = ROOT / "petrosa_pipelines_tests" / "fixtures" / "analytics"
MONTH = "2024-02"
DAYS = 29  # February 2024
MB = 1024 * 1024


def real_candle_days() -> list[pd.DataFrame]:
    from petrosa_pipelines.exchanges.binance.vision import parse_klines_csv

    out = []
    for path in sorted(FIXTURES.glob("*-1m-*.csv")):
        symbol = path.name.split("-", 1)[0]
        out.append(parse_klines_csv(path.read_bytes(), symbol, "1m"))
    return out


def candles(template: pd.DataFrame, symbol: str, day: dt.date) -> pd.DataFrame:
    from petrosa_pipelines.catalog.schemas import CANDLES, conform

    frame = template.copy()
    shift = pd.Timestamp(day, tz="UTC") - frame["open_time"].iloc[0].normalize()
    for col in ("open_time", "close_time"):
        frame[col] = frame[col] + shift
    frame["symbol"] = symbol
    frame["exchange"] = "binance"
    return conform(frame, CANDLES)


def funding(symbol: str, day: dt.date, rng: np.random.Generator) -> pd.DataFrame:
    from petrosa_pipelines.catalog.schemas import FUNDING, conform

    times = pd.date_range(pd.Timestamp(day, tz="UTC"), periods=3, freq="8h")
    return conform(
        pd.DataFrame(
            {
                "exchange": "binance",
                "symbol": symbol,
                "funding_time": times,
                "funding_rate": rng.normal(1e-4, 5e-5, 3),
                "mark_price": rng.uniform(0.5, 2.0, 3),
                "source": "rest",
                "received_at": times + pd.Timedelta(seconds=1),
            }
        ),
        FUNDING,
    )


def build(base: Path, instruments: int) -> list[str]:
    from petrosa_pipelines.lake import LocalLake, lake_path

    lake = LocalLake(base)
    templates = real_candle_days()
    rng = np.random.default_rng(13)
    folders = []
    for i in range(instruments):
        symbol = f"Q{i:04d}USDT"
        for d in range(DAYS):
            day = dt.date(2024, 2, 1) + dt.timedelta(days=d)
            frame = candles(templates[(i + d) % len(templates)], symbol, day)
            lake.write_frame(lake_path("market_data/candles", "binance", symbol, str(day)), frame)
            lake.write_frame(
                lake_path("market_data/funding", "binance", symbol, str(day)),
                funding(symbol, day, rng),
            )
        folders += [f"market_data/{ds}/binance/{symbol}" for ds in ("candles", "funding")]
    return folders


def disk(base: Path) -> tuple[int, int]:
    files = [p for p in base.rglob("*.parquet")]
    return len(files), sum(p.stat().st_size for p in files)


def measure(base: Path, instruments: int, repeat: int) -> dict[str, float]:
    from petrosa_pipelines.lake import LocalLake
    from petrosa_pipelines.market_data.history import lake_days

    sym = f"Q{instruments // 2:04d}USDT"
    folder = f"market_data/candles/binance/{sym}"
    day = f"{folder}/{MONTH}-15.parquet"
    month_days = [f"{folder}/{MONTH}-{d:02d}.parquet" for d in range(1, DAYS + 1)]
    files, size = disk(base)

    def one_day() -> None:
        assert len(LocalLake(base).read_frame(day)) == 1440

    def whole_month() -> None:
        lake = LocalLake(base)
        assert sum(len(lake.read_frame(p)) for p in month_days) == 1440 * DAYS

    def listing() -> None:
        assert len(LocalLake(base).list(folder + "/")) == DAYS

    def plan() -> None:
        lake = LocalLake(base)
        for i in range(instruments):
            for ds in ("candles", "funding"):
                assert lake_days(lake, ds, f"binance-usdm:Q{i:04d}USDT")

    return {
        "files": files,
        "bytes": size,
        "read_day_s": median_seconds(one_day, repeat * 5),
        "read_month_s": median_seconds(whole_month, repeat),
        "list_instrument_s": median_seconds(listing, repeat * 5),
        "plan_roll_s": median_seconds(plan, repeat),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.instruments < 1 or args.repeat < 1:
        parser.error("--instruments and --repeat must be at least 1")
    from petrosa_pipelines.lake import LocalLake
    from petrosa_pipelines.market_data.compaction import COMPACTED, compact_month
    from petrosa_pipelines.tooling.migrate_partitions import lake_fingerprint

    with tempfile.TemporaryDirectory(prefix="compaction-bench-") as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        folders = build(base, args.instruments)
        build_s = time.perf_counter() - t0
        lake = LocalLake(base)
        before_rows = lake_fingerprint(lake)
        days = measure(base, args.instruments, args.repeat)
        t0 = time.perf_counter()
        done = [compact_month(lake, f, MONTH, 64 * MB) for f in folders]
        compact_s = time.perf_counter() - t0
        assert all(d.status == COMPACTED for d in done), {d.status for d in done}
        same_rows = lake_fingerprint(LocalLake(base)) == before_rows
        months = measure(base, args.instruments, args.repeat)
    out: dict[str, object] = {
        "instruments": args.instruments,
        "month_days": DAYS,
        "datasets": ["candles", "funding"],
        "build_s": round(build_s, 1),
        "compact_s": round(compact_s, 2),
        "compact_per_instrument_month_ms": round(1000 * compact_s / len(folders), 1),
        "same_rows_after": same_rows,
        "cpu_count": os.cpu_count(),
    }
    for key in days:
        out[f"day_files_{key}"] = days[key]
        out[f"compacted_{key}"] = months[key]
        out[f"{key}_ratio"] = round(months[key] / days[key], 4) if days[key] else None
    print(json.dumps(out))
    return 0 if same_rows else 1


if __name__ == "__main__":
    sys.exit(main())
