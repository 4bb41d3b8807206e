"""Depth sequence and funding mark price judged by what the venue declares (issue 12).

Bybit's REST funding history has no mark price (https://bybit-exchange.github.io/docs/v5/
market/history-fund-rate), so its rows are excused where Binance's REST rows are not; and
Bybit restarts its book numbering with an in-stream snapshot at ``u=1``
(https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook), which the depth
sequence counts as a restart, not as two books spliced. Binance's rules are unchanged.
"""

import datetime as dt
from pathlib import Path

import msgspec
import numpy as np
import orjson
import pandas as pd
import pytest

from petrosa_pipelines.checks.audit_book import audit_dataset, depth_sequence, funding_mark_price
from petrosa_pipelines.checks.health import health_metadata
from petrosa_pipelines.checks.settings import AuditSettings
from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, DepthUpdateRecord, Source
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter
from petrosa_pipelines.exchanges.bybit.bodies import parse_funding, result_of
from petrosa_pipelines.exchanges.frames import records_to_frame
from petrosa_pipelines.landing.book import BookSync
from petrosa_pipelines.landing.store import depth_samples_to_frame
from petrosa_pipelines.lib.timeutil import HOUR_MS, day_window_ms
from petrosa_pipelines_tests.test_checks.data import depth_frame, funding_frame

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bybit"
BYBIT = BybitLinearAdapter.capabilities
BINANCE = BinanceUsdmAdapter.capabilities
S = AuditSettings()
TOP_N = 10


def _by_name(outcomes):
    return {o.name: o for o in outcomes}


# ------------------------------------------------------------------------------------- funding


def _bybit_rest_funding(day: dt.date) -> pd.DataFrame:
    """The day's three settlements as Bybit's REST funding history answers them (the docs'
    body, ``fixtures/bybit/rest/doc_funding-history.json``, with this day's rows)."""
    body = orjson.loads((FIXTURES / "rest" / "doc_funding-history.json").read_bytes())
    start = day_window_ms(day)[0]
    body["result"]["list"] = [
        {
            "symbol": "BTCUSDT",
            "fundingRate": rate,
            "fundingRateTimestamp": str(start + i * 8 * HOUR_MS),
        }
        for i, rate in reversed(list(enumerate(["0.0001", "-0.00005", "0.000125"])))
    ]
    _, _, result = result_of(body)
    return records_to_frame("funding", parse_funding(result, "BTCUSDT"))


def test_declared_mark_price_sources():
    assert BINANCE.funding_mark_price_sources == {Source.WS, Source.REST}
    assert BYBIT.funding_mark_price_sources == {Source.WS}


def test_bybit_rest_funding_is_not_held_to_a_mark_price_and_says_so():
    day = dt.date(2026, 8, 9)
    start, end = day_window_ms(day)
    frame = _bybit_rest_funding(day)
    assert len(frame) == 3 and frame["mark_price"].isna().all()
    assert (frame["source"] == "rest").all() and (frame["exchange"] == "bybit-linear").all()
    o = funding_mark_price(frame, capabilities=BYBIT)
    assert o.passed and o.checked == 0 and o.counts["rows_excused"] == 3
    assert o.extra == {"excused_without_mark": {"rest": 3}, "sources_with_mark": ["ws"]}
    assert "3 rest row(s)" in o.note
    # through the partition audit, by the partition's venue: every check and health pass
    outs = audit_dataset("funding", frame, start, end, end + HOUR_MS, S, exchange="bybit-linear")
    assert all(x.passed for x in outs), {x.name: x.examples for x in outs if not x.passed}
    assert _by_name(outs)["funding_mark_price_present"].counts["rows_excused"] == 3
    meta = health_metadata(outs, S.health_weights, rows=3, data_expected=True, min_score=90.0)
    assert meta["status"] == "passed", meta


def test_bybit_ws_funding_without_a_mark_price_still_offends():
    frame = _bybit_rest_funding(dt.date(2026, 8, 9))
    ws = frame.assign(source="ws")
    ws.loc[1, "mark_price"] = 65114.2
    o = funding_mark_price(ws, capabilities=BYBIT)
    assert not o.passed and (o.checked, o.offending) == (3, 2)
    assert [e["source"] for e in o.examples] == ["ws", "ws"]


def test_binance_rules_unchanged():
    day = dt.date(2024, 5, 1)
    clean = funding_frame(day)
    bad = clean.copy()
    bad.loc[2, "mark_price"] = np.nan  # a REST row of Binance has a mark price
    for caps in (BINANCE, None):  # declared, and an unknown venue (Binance's old rule)
        o = funding_mark_price(bad, capabilities=caps)
        assert not o.passed and o.offending == 1 and o.counts["rows_excused"] == 0
        archive = clean.assign(source="archive", mark_price=np.nan)
        o = funding_mark_price(archive, capabilities=caps)
        assert o.passed and o.counts["archive_rows_without_mark"] == 3
        assert o.extra["excused_without_mark"] == {"archive": 3}
    start, end = day_window_ms(day)
    outs = _by_name(audit_dataset("funding", bad, start, end, end + HOUR_MS, S))
    assert not outs["funding_mark_price_present"].passed  # the rows' venue: binance


# --------------------------------------------------------------------------------------- depth


def _bybit_book_frames() -> list:
    """BTCUSDT's real ``orderbook.200`` frames (snapshot first, then deltas, u + 1 each)."""
    path = FIXTURES / "ws" / "cryptofeed_2026-08-09" / "linear_orderbook.jsonl"
    adapter = BybitLinearAdapter()
    out = []
    for line in path.read_bytes().splitlines():
        if b'"orderbook.200.BTCUSDT"' in line:
            out.extend(adapter.parse_frame(line, None))
    assert isinstance(out[0], DepthSnapshotRecord)
    return out


def _replay(sync: BookSync, records, shift_ms: int = 0, restart: bool = False) -> list:
    """Feed ``records`` to ``sync`` as the ingest does; ``restart``: the venue's book service
    restarted, so the numbering starts at 1 (the same book moves, renumbered)."""
    base = records[0].last_update_id - 1 if restart else 0
    samples = []
    for r in records:
        if isinstance(r, DepthSnapshotRecord):
            r = msgspec.structs.replace(
                r, last_update_id=r.last_update_id - base, event_time=r.event_time + shift_ms
            )
            samples += sync.on_snapshot(r, in_stream=True)[1]
        elif isinstance(r, DepthUpdateRecord):
            r = msgspec.structs.replace(
                r,
                first_update_id=r.first_update_id - base,
                final_update_id=r.final_update_id - base,
                prev_final_update_id=r.prev_final_update_id - base,
                event_time=r.event_time + shift_ms,
            )
            samples += sync.on_diff(r)[1]
    return samples


@pytest.fixture(scope="module")
def restarted():
    """Real Bybit book samples, then the book service restarts (u from 1) and it goes on."""
    records = _bybit_book_frames()
    span = records[-1].event_time - records[0].event_time
    sync = BookSync("BTCUSDT", cadence_ms=1000, top_n=TOP_N)
    samples = _replay(sync, records)
    samples += _replay(sync, records, shift_ms=span + 2_000, restart=True)
    samples += sync.flush_until(records[-1].event_time + 2 * span + 2_000)
    return depth_samples_to_frame("bybit-linear", samples, TOP_N)


def test_a_bybit_book_restart_is_counted_not_an_error(restarted):
    assert restarted["snapshot_time"].is_unique  # depth v2: one row per sample
    ids = restarted["last_update_id"].to_numpy()
    assert ids[0] > 15_000_000 and ids.min() <= 10 and (np.diff(ids) < 0).sum() == 1
    o = depth_sequence(restarted, capabilities=BYBIT)
    assert o.passed and o.offending == 0 and o.counts["book_restarts"] == 1
    (step,) = o.extra["book_restarts"]
    assert step["previous_update_id"] > 15_000_000 and step["update_id"] <= 10
    assert "1 book restart" in o.note
    # through the partition audit, by the partition's venue
    t = (restarted["snapshot_time"].astype("int64") // 1_000_000).to_numpy()
    start = int(t.min()) // 86_400_000 * 86_400_000
    outs = audit_dataset(
        "depth", restarted, start, start + 86_400_000, int(t.max()), S, exchange="bybit-linear"
    )
    seq = _by_name(outs)["depth_sequence"]
    assert seq.passed and seq.counts["book_restarts"] == 1


def test_the_same_fall_is_an_error_where_the_venue_cannot_restart_in_stream(restarted):
    for caps in (BINANCE, None):
        o = depth_sequence(restarted, capabilities=caps)
        assert not o.passed and o.offending == 1 and o.counts["book_restarts"] == 0


def test_two_bybit_books_spliced_are_still_an_error(restarted):
    """A fall to an id the restarted numbering cannot have reached is not a restart: samples
    of two books (real ids, one 20 M ahead) interleaved offend at every fall."""
    spliced = restarted[restarted["last_update_id"] > 1_000]  # the book before the restart
    other = spliced["last_update_id"].to_numpy() + 20_000_000 * (np.arange(len(spliced)) % 2)
    spliced = spliced.assign(last_update_id=other)
    falls = int((np.diff(other) < 0).sum())
    assert falls > 10
    o = depth_sequence(spliced, capabilities=BYBIT)
    assert not o.passed and o.offending == falls and o.counts["book_restarts"] == 0


def test_binance_depth_sequence_unchanged():
    day = dt.date(2024, 5, 1)
    clean = depth_frame(day, 300)
    back = clean.copy()
    back.loc[
        back["snapshot_time"] == back["snapshot_time"].iloc[0] + pd.Timedelta(seconds=100),
        "last_update_id",
    ] = 1
    for caps in (BINANCE, None):
        assert depth_sequence(clean, capabilities=caps).passed
        o = depth_sequence(back, [{"cause": "resync"}], capabilities=caps)
        assert o.offending == 1 and o.counts["book_restarts"] == 0 and not o.extra
