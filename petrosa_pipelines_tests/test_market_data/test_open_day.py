"""Today's partition (the open day): it exists, builds the day so far from the landing zone,
grows on each rebuild, and its checks judge it as of its build (simulated clock)."""

import datetime as dt

import orjson
import pandas as pd

from petrosa_pipelines.checks.applicability import as_of_from_metadata, judged_now_ms
from petrosa_pipelines.checks.audit_book import audit_dataset
from petrosa_pipelines.checks.settings import AuditSettings
from petrosa_pipelines.landing import LandingWriter
from petrosa_pipelines.lib.timeutil import HOUR_MS, MINUTE_MS, day_window_ms
from petrosa_pipelines.market_data.assets import MarketDataConfig, materialise_partition
from petrosa_pipelines.market_data.partitions import (
    closed_day_keys,
    daily_partitions,
    is_open_day,
    last_closed_day,
    utc_today,
)
from petrosa_pipelines_tests.test_checks.data import real_candles
from resources import LandingResource

DAY = dt.date(2024, 3, 3)
START, END = day_window_ms(DAY)
KEY = f"{DAY}|binance-usdm:BTCUSDT"


class NoHistory:
    """An exchange whose archive has nothing and whose REST is down: only landing counts."""

    def settings(self):
        from petrosa_pipelines.settings import Settings

        return Settings()

    def archive(self, venue=None):
        return self

    def rest(self, venue=None):
        return self

    def daily_klines(self, symbol, day):
        return None

    def klines(self, symbol, start_ms, end_ms):
        raise ConnectionError("no REST in this test")


def kline_frames(candles: pd.DataFrame) -> list[tuple[int, bytes]]:
    """Closed Binance kline frames of ``candles``, received 2 s after each minute closes."""
    out = []
    for c in candles.itertuples(index=False):
        t = int(c.open_time.value // 1_000_000)
        k = {
            "t": t,
            "T": t + MINUTE_MS - 1,
            "s": "BTCUSDT",
            "i": "1m",
            "f": 1,
            "L": 2,
            "o": str(c.open),
            "c": str(c.close),
            "h": str(c.high),
            "l": str(c.low),
            "v": str(c.volume),
            "n": int(c.trade_count),
            "x": True,
            "q": str(c.quote_volume),
            "V": str(c.taker_buy_volume),
            "Q": str(c.taker_buy_quote_volume),
            "B": "0",
        }
        data = {"e": "kline", "E": t + MINUTE_MS, "s": "BTCUSDT", "k": k}
        raw = orjson.dumps({"stream": "btcusdt@kline_1m", "data": data})
        out.append((t + MINUTE_MS + 2_000, raw))
    return out


def land_until(root, candles: pd.DataFrame, until_ms: int) -> None:
    """What the ingest has landed by ``until_ms``: the candles closed by then."""
    opens = candles["open_time"].astype("datetime64[ms, UTC]").astype("int64")
    with LandingWriter(root, "binance", "test") as writer:
        for recv, raw in kline_frames(candles[opens + MINUTE_MS <= until_ms]):
            assert writer.put(recv, raw)


def build(root, now_ms, previous=None):
    return materialise_partition(
        "candles",
        KEY,
        MarketDataConfig(),
        NoHistory(),
        LandingResource(root=str(root)),
        now_ms=now_ms,
        previous=previous,
    )


def test_todays_partition_exists_and_backfills_leave_it_out():
    before = utc_today()
    last = daily_partitions.get_last_partition_key()
    assert last in {before.isoformat(), utc_today().isoformat()}  # midnight may pass between
    assert is_open_day(last, dt.datetime.combine(dt.date.fromisoformat(last), dt.time(12), dt.UTC))
    now = dt.datetime(2024, 3, 3, 12, tzinfo=dt.UTC)
    assert last_closed_day(now) == dt.date(2024, 3, 2)
    keys = ["2024-03-02|binance-usdm:BTCUSDT", KEY, "2024-03-03"]
    assert closed_day_keys(keys, now) == ["2024-03-02|binance-usdm:BTCUSDT"]


def test_the_open_day_builds_the_day_so_far_and_its_checks_pass(tmp_path):
    candles = real_candles("BTCUSDT-1m-2022-05-01.csv", DAY)
    noon = START + 12 * HOUR_MS
    land_until(tmp_path, candles, noon)
    frame, meta = build(tmp_path, noon + 30_000)
    assert len(frame) == 720 and meta["missing_range_count"] == 0
    assert meta["source_mix"].value == {"ws": 720}
    assert meta["window_closed"] is False and meta["day_state"] == "open"
    assert "partial" in meta["partial_day"] and meta["as_of_ms"] == noon + 30_000

    # audited five minutes later, as the scheduled audit does: judged as of the build
    later = noon + 5 * MINUTE_MS
    judged = judged_now_ms(later, as_of_from_metadata(meta))
    assert judged == noon + 30_000
    outcomes = audit_dataset("candles", frame, START, END, judged, AuditSettings())
    failed = [o.name for o in outcomes if not o.passed]
    assert failed == []
    fresh = next(o for o in outcomes if o.name == "fresh")
    assert not fresh.not_applicable  # the open day is where freshness means something
    # judged against the wall clock instead, the minutes since the build would count missing
    unjudged = audit_dataset("candles", frame, START, END, later, AuditSettings())
    assert "candles_complete" in [o.name for o in unjudged if not o.passed]


def test_the_open_day_grows_and_the_no_shrink_rule_lets_it(tmp_path):
    candles = real_candles("BTCUSDT-1m-2022-05-01.csv", DAY)
    noon = START + 12 * HOUR_MS
    land_until(tmp_path / "a", candles, noon)
    morning, _ = build(tmp_path / "a", noon + 30_000)
    evening_ms = START + 18 * HOUR_MS
    land_until(tmp_path / "b", candles, evening_ms)
    frame, meta = build(tmp_path / "b", evening_ms + 30_000, previous=morning)
    assert len(frame) == 18 * 60 and meta["missing_range_count"] == 0
    assert meta["kept_rows"] == 0  # every earlier row is in the landing zone still
    assert meta["partial_day"].startswith("open day 2024-03-03, partial")


def test_a_closed_build_records_the_day_end_as_its_as_of(tmp_path):
    candles = real_candles("BTCUSDT-1m-2022-05-01.csv", DAY)
    land_until(tmp_path, candles, END)
    frame, meta = build(tmp_path, END + HOUR_MS)
    assert len(frame) == 1440 and meta["day_state"] == "closed" and "partial_day" not in meta
    assert meta["as_of_ms"] == END  # judged as before: the whole day
