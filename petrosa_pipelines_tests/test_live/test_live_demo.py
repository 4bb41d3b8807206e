"""Issue 14's "done when": ``petrosa live-demo`` (``tooling/socket_client_feed.live_demo``) run
for a few seconds against the real NATS and Redis.

The local exchange feeds the socket-client stand-in, which publishes envelopes on a subject of
this test's own; the NATS-sourced ingest lands them, its live outputs publish clean records
under this test's subject prefix into this test's JetStream stream and keep the latest state
under this test's Redis prefix (``PETROSA_LIVE_*``, as an operator would set them), and the
day's depth partition is materialised from that landing. The stream and keys are deleted
afterwards (``live_names``).
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from petrosa_pipelines.exchanges.base import (
    DepthSnapshotRecord,
    DepthUpdateRecord,
    RawTradeRecord,
)
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines.live.subjects import stream_subjects
from petrosa_pipelines.local_exchange import MarketConfig
from petrosa_pipelines.tooling.socket_client_feed import live_demo
from petrosa_pipelines_tests.servers import unique_name
from petrosa_pipelines_tests.test_live.conftest import stream_info, stream_messages

pytestmark = pytest.mark.slow  # Dagster's import and one materialisation: tens of seconds

SYMBOL = "BTCUSDT"


@pytest.fixture
def restored_environ():
    """``live_demo`` writes settings into ``os.environ`` (``_point_settings_at``, the URLs'
    defaults): put the environment back as it was."""
    saved = os.environ.copy()
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_live_demo_publishes_lands_keeps_latest_and_materialises(
    tmp_path, nats_url, redis_url, live_names, restored_environ
):
    os.environ.update(
        {
            "PETROSA_NATS_URL": nats_url,
            "PETROSA_REDIS_URL": redis_url,
            "PETROSA_LIVE_SUBJECT_PREFIX": live_names["prefix"],
            "PETROSA_LIVE_STREAM": live_names["stream"],
            "PETROSA_LIVE_REDIS_PREFIX": live_names["redis"],
            "PETROSA_LIVE_REDIS_INTERVAL_S": "0.05",
        }
    )
    lines: list[str] = []
    # the feed's core-NATS subject: not under ``petrosa.>`` (a stream on the shared server
    # captures it) nor under this test's prefix (its own stream captures that)
    subject = f"test.{unique_name('demo')}"
    report = live_demo(
        seconds=4.0,
        symbols=(SYMBOL,),
        workdir=tmp_path,
        subject=subject,
        # a busy market (~35 raw trades/s): the default one trades ~0.35/s, often none in 4 s
        market=MarketConfig(symbols=(SYMBOL,), trades_per_day=2_000_000),
        log=lambda *a, **_: lines.append(" ".join(map(str, a))),
    )
    text = "\n".join(lines)
    # the clean messages are counted on the live settings' prefix, not a hard-coded one
    assert report["watch"] == f"{live_names['prefix']}.binance-usdm.*.{SYMBOL}"
    assert report["published"] > 0, text
    assert report["landed"] > 0, text
    seen = report["seen"]
    assert seen.get("raw_trades", 0) > 0 and seen.get("depth", 0) > 0, text

    # the demo's stream (this test's) holds what was counted, under this test's prefix only
    prefix = live_names["prefix"]
    info = asyncio.run(stream_info(nats_url, live_names["stream"]))
    assert info.config.subjects == stream_subjects(prefix)
    subjects = [s for s, _, _ in asyncio.run(stream_messages(nats_url, live_names["stream"]))]
    assert subjects and all(s.startswith(f"{prefix}.") for s in subjects)
    market = {
        s.split(".")[-2] for s in subjects if s.startswith(f"{prefix}.binance-usdm.")
        and s.endswith(f".{SYMBOL}")
    }  # fmt: skip
    assert set(seen) <= market and {"raw_trades", "depth"} <= market, market

    # raw trades and partial depth were landed
    store = LandingStore(report["landing"])
    now = time.time_ns() // 1_000_000
    recs = list(store.read_records("binance", now - 86_400_000, now + 3_600_000, [SYMBOL]))
    raw = [r for r in recs if type(r) is RawTradeRecord]
    assert raw and any(isinstance(r, DepthSnapshotRecord | DepthUpdateRecord) for r in recs)

    # latest() (the public API, PETROSA_LIVE_REDIS_PREFIX) answers the last market trade
    lat = report["latest"]
    assert lat.instrument == f"binance-usdm:{SYMBOL}"
    last = max(r.trade_id for r in raw if r.is_market)
    assert lat["trade"] is not None and lat["trade"]["trade_id"] == str(last), text
    assert lat["book"] is not None and lat.age_s["trade"] is not None
    assert report["materialized"] is True, text
    assert report["materialized_depth_rows"] > 0, text  # the landed top-20 snapshots, as rows
