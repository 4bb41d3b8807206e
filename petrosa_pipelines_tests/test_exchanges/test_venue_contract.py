"""The venue contract, one test body for every venue: parsers on the venue's recorded real
frames, book sync through ``landing.book.BookSync``, REST paging through the adapter's own
client factory, and capabilities that agree with what the adapter and its clients do.

Parametrised over the adapter classes directly until the registry holds Bybit; then it should
iterate ``exchanges.EXCHANGES`` (each venue still needs a ``VenueCase`` below: where its
recordings are and how a fake of its REST answers).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    Dataset,
    DepthSnapshotRecord,
    DepthUpdateRecord,
    ExchangeAdapter,
    MarkPriceRecord,
    MessageError,
    Record,
    Source,
    TradeRecord,
    UnknownMessageError,
)
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.exchanges.binance.rest import parse_depth
from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter
from petrosa_pipelines.landing.book import Applied, BookSync
from petrosa_pipelines.lib.endpoints import ExchangeEndpoints, RestSettings
from petrosa_pipelines.lib.timeutil import DAY_MS, HOUR_MS, MINUTE_MS
from petrosa_pipelines_tests.test_exchanges.fake_binance import FakeServer, Reply, Request

pytestmark = pytest.mark.playback

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: the record types that prove a dataset's stream was parsed
DATASET_RECORDS: dict[str, tuple[type, ...]] = {
    Dataset.TRADES: (TradeRecord,),
    Dataset.CANDLES: (CandleRecord,),
    Dataset.DEPTH: (DepthUpdateRecord, DepthSnapshotRecord),
    Dataset.FUNDING: (MarkPriceRecord,),
}
#: the archive client's method per archived dataset (the partition fill's names)
ARCHIVE_METHODS = {
    Dataset.TRADES: "daily_agg_trades",
    Dataset.CANDLES: "daily_klines",
    Dataset.FUNDING: "daily_funding",
    Dataset.DEPTH: "daily_book_records",
}


def frame_records(
    adapter: ExchangeAdapter, raw: bytes, received_at: int | None = None
) -> list[Record]:
    """Every record of one frame, whether the venue sends one record per frame or several."""
    parse_frame = getattr(adapter, "parse_frame", None)
    if parse_frame is not None:
        return parse_frame(raw, received_at)
    rec = adapter.parse(raw, received_at)
    return [] if rec is None else [rec]


# -- what each venue brings -----------------------------------------------------------------------


def _binance_rest(server: FakeServer, now_ms: int) -> None:
    def klines(req: Request) -> Reply:
        q = req.query
        start, end, limit = int(q["startTime"]), int(q["endTime"]), int(q["limit"])
        t, rows = -(-start // MINUTE_MS) * MINUTE_MS, []
        while t <= min(end, now_ms) and len(rows) < limit:  # oldest first
            rows.append(
                [t, "1.1", "1.2", "1.0", "1.15", "10", t + MINUTE_MS - 1, "11", 3, "5", "5.5", "0"]
            )
            t += MINUTE_MS
        return Reply(200, rows)

    def funding(req: Request) -> Reply:
        q = req.query
        start, end, limit = int(q["startTime"]), int(q["endTime"]), int(q["limit"])
        times = [
            t for t in range(start - start % (8 * HOUR_MS), end + 1, 8 * HOUR_MS) if start <= t
        ]
        return Reply(
            200,
            [
                {
                    "symbol": q["symbol"],
                    "fundingTime": t,
                    "fundingRate": "0.0001",
                    "markPrice": "1.1",
                }
                for t in times
            ][:limit],
        )

    server.routes["/fapi/v1/time"] = lambda req: Reply(200, {"serverTime": now_ms})
    server.routes["/fapi/v1/klines"] = klines
    server.routes["/fapi/v1/fundingRate"] = funding


def _bybit_rest(server: FakeServer, now_ms: int) -> None:
    def body(result: dict) -> dict:
        return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": now_ms}

    def klines(req: Request) -> Reply:
        q = req.query
        start, end, limit = int(q["start"]), int(q["end"]), int(q["limit"])
        last = min(end, now_ms) // MINUTE_MS * MINUTE_MS
        opens = list(range(last, -(-start // MINUTE_MS) * MINUTE_MS - 1, -MINUTE_MS))[
            :limit
        ]  # newest first
        return Reply(
            200, body({"list": [[str(t), "1.1", "1.2", "1.0", "1.15", "10", "11"] for t in opens]})
        )

    def funding(req: Request) -> Reply:
        q = req.query
        start, end, limit = int(q["startTime"]), int(q["endTime"]), int(q["limit"])
        times = [
            t for t in range(start - start % (8 * HOUR_MS), end + 1, 8 * HOUR_MS) if start <= t
        ]
        rows = [
            {"symbol": q["symbol"], "fundingRate": "0.0001", "fundingRateTimestamp": str(t)}
            for t in reversed(times)
        ]
        return Reply(200, body({"list": rows[:limit]}))

    server.routes["/v5/market/kline"] = klines
    server.routes["/v5/market/funding/history"] = funding


def _binance_book() -> tuple[str, list[bytes], DepthSnapshotRecord | None]:
    """DENTUSDT diffs of the 2021-04-17 recording and the REST snapshot taken during it."""
    symbol = "DENTUSDT"
    frames = (
        (FIXTURES / "binance/ws/cryptofeed_2021-04-17/depthUpdate.jsonl").read_bytes().splitlines()
    )
    body = json.loads((FIXTURES / "binance/rest/depth_DENTUSDT_2021-04-17.json").read_bytes())
    return symbol, [f for f in frames if b'"s":"DENTUSDT"' in f], parse_depth(body, symbol)


def _bybit_book() -> tuple[str, list[bytes], DepthSnapshotRecord | None]:
    frames = (
        (FIXTURES / "bybit/ws/cryptofeed_2026-08-09/linear_orderbook.jsonl")
        .read_bytes()
        .splitlines()
    )
    return "BTCUSDT", [f for f in frames if b'"orderbook.200.BTCUSDT"' in f], None


@dataclass(frozen=True)
class VenueCase:
    adapter: type[ExchangeAdapter]
    #: recorded real frames, globbed under fixtures/
    recordings: tuple[str, ...]
    #: (symbol, its depth frames in order, a REST snapshot where the stream sends none)
    book: Callable[[], tuple[str, list[bytes], DepthSnapshotRecord | None]]
    #: install a fake of the venue's REST history endpoints on a server, "now" given
    fake_rest: Callable[[FakeServer, int], None]
    #: how many diffs the book must apply (all of them after the first straddling one)
    applied: int
    #: rows per funding page (pages must be forced)
    funding_page: int


BINANCE_WS = (
    "binance/ws/cryptofeed_*/*.jsonl",
    "binance/ws/hftbacktest_2023-04-04/BTCUSDT_markPriceUpdate.jsonl",
)
BYBIT_WS = ("bybit/ws/cryptofeed_2026-08-09/linear_*.jsonl",)
CASES = [
    # DENTUSDT: 240 diffs, the first 5 older than the REST snapshot; BTCUSDT: 413 deltas
    VenueCase(BinanceUsdmAdapter, BINANCE_WS, _binance_book, _binance_rest, 235, 1000),
    VenueCase(BybitLinearAdapter, BYBIT_WS, _bybit_book, _bybit_rest, 413, 200),
]


def _ids(case: VenueCase) -> str:
    return case.adapter.venue


def _recorded(case: VenueCase) -> tuple[ExchangeAdapter, list[Record]]:
    adapter = case.adapter()
    records: list[Record] = []
    for pattern in case.recordings:
        paths = sorted(FIXTURES.glob(pattern))
        assert paths, pattern
        for path in paths:
            for n, line in enumerate(path.read_bytes().splitlines(), 1):
                try:
                    records.extend(frame_records(adapter, line, n))
                except UnknownMessageError:
                    continue
                except MessageError as exc:  # pragma: no cover - the message is the point
                    pytest.fail(f"{path.relative_to(FIXTURES)}:{n}: real frame rejected: {exc}")
    return adapter, records


# -- the contract ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_parsers_cover_every_served_dataset_on_real_frames(case):
    adapter, records = _recorded(case)
    for dataset in adapter.capabilities.datasets:
        kinds = DATASET_RECORDS[dataset]
        assert any(isinstance(r, kinds) for r in records), f"no {dataset} record from recordings"
    assert {r.exchange for r in records} == {adapter.name}
    assert all(adapter.symbol_pattern.fullmatch(r.symbol) for r in records)
    # the funding stream carries a mark price exactly where the venue says its ws rows have one
    marks = [r.mark_price for r in records if isinstance(r, MarkPriceRecord)]
    has_mark = Source.WS in adapter.capabilities.funding_mark_price_sources
    assert all((m is not None and m > 0) == has_mark for m in marks)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_trade_identity_matches_the_declared_id_capability(case):
    adapter, records = _recorded(case)
    by_symbol: dict[str, list[TradeRecord]] = defaultdict(list)
    for r in records:
        if isinstance(r, TradeRecord):
            by_symbol[r.symbol].append(r)
    for trades in by_symbol.values():
        ids = [t.agg_trade_id for t in trades]
        if adapter.capabilities.trade_ids_consecutive:
            assert ids == list(range(ids[0], ids[0] + len(ids)))
        else:  # ids are not a completeness proof: the venue's own id is the key
            assert all(t.trade_id for t in trades)
            assert len({t.trade_id for t in trades}) == len(trades)
            assert ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_book_syncs_and_never_breaks_or_crosses(case):
    adapter = case.adapter()
    symbol, frames, rest_snapshot = case.book()
    sync = BookSync(symbol, cadence_ms=1000, top_n=10)
    in_stream = [0]
    applied = 0
    for raw in frames:
        for rec in frame_records(adapter, raw):
            if isinstance(rec, DepthSnapshotRecord):
                in_stream[0] += 1
                sync.reset()  # an in-stream snapshot replaces the book (Bybit's rule)
                assert sync.on_snapshot(rec)[0]
                continue
            result, samples = sync.on_diff(rec)
            applied += result is Applied.APPLIED
            for s in samples:
                assert len(s.bid_floats) == len(s.ask_floats) == 10
                assert s.bid_floats[0][0] < s.ask_floats[0][0]
            if sync.book.synced:
                bids, asks = sync.book.top(1)
                assert bids[0][0] < asks[0][0]
    if rest_snapshot is not None:
        synced, _ = sync.on_snapshot(rest_snapshot)
        assert synced
        applied += sync.applied
    assert bool(in_stream[0]) == adapter.capabilities.book_snapshot_in_stream
    assert sync.breaks == 0 and sync.book.synced
    assert applied == case.applied


def _settings(url: str) -> SimpleNamespace:
    endpoints = ExchangeEndpoints(rest_base_url=url, ws_base_url="wss://x", vision_base_url=url)
    return SimpleNamespace(endpoints=endpoints, rest=RestSettings(max_retries=1))


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_rest_pages_a_closed_day_of_candles_and_funding(case):
    adapter = case.adapter()
    today = dt.datetime.now(dt.UTC).date()
    start = int(
        dt.datetime.combine(today - dt.timedelta(days=1), dt.time(), dt.UTC).timestamp() * 1000
    )
    with FakeServer() as server:
        case.fake_rest(server, int(time.time() * 1000))
        client = adapter.rest_client(_settings(server.url))
        candles = client.klines("BTCUSDT", start, start + DAY_MS)
        long_ago = start - (case.funding_page + 10) * 8 * HOUR_MS
        funding = client.funding_rates("BTCUSDT", long_ago, start + DAY_MS)
        client.close()
    opens = candles["open_time"].astype("datetime64[ms, UTC]").astype("int64").tolist()
    assert opens == list(range(start, start + DAY_MS, MINUTE_MS))
    times = funding["funding_time"].astype("datetime64[ms, UTC]").astype("int64").tolist()
    assert times == list(range(long_ago, start + DAY_MS, 8 * HOUR_MS))
    assert (candles["exchange"] == adapter.name).all() and (
        funding["exchange"] == adapter.name
    ).all()
    # REST funding rows carry a mark price exactly where the venue declares it (the fakes
    # answer as each venue's docs show: Binance's fundingRate has markPrice, Bybit's has none)
    has_mark = Source.REST in adapter.capabilities.funding_mark_price_sources
    assert ((funding["mark_price"] > 0) == has_mark).all()


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_capabilities_agree_with_streams_clients_and_archives(case):
    adapter = case.adapter()
    caps = adapter.capabilities
    assert set(caps.datasets) <= set(Dataset)
    for dataset in caps.datasets:  # every served dataset has a stream
        assert adapter.stream_names(["BTCUSDT"], [dataset])
    streams = adapter.stream_names(["BTCUSDT", "ETHUSDT"], caps.datasets)
    assert adapter.combined_stream_url("wss://host", streams).startswith("wss://host")
    assert all(isinstance(m, bytes) for m in adapter.initial_messages(streams, 1))
    assert set(caps.rest_reach_ms) <= set(caps.datasets)
    settings = _settings("http://127.0.0.1:9")
    rest = adapter.rest_client(settings)
    assert dict(rest.history_reach_ms) == dict(caps.rest_reach_ms)
    rest.close()
    archive = adapter.archive_client(settings)
    for spec in caps.archives:
        assert spec.dataset in caps.datasets
        assert callable(getattr(archive, ARCHIVE_METHODS[spec.dataset]))
        assert spec.url.startswith("https://")
    archive.close()
    has_depth_source = (
        caps.archive_for(Dataset.DEPTH) is not None or Dataset.DEPTH in caps.rest_reach_ms
    )
    assert caps.depth_history == has_depth_source
    assert (caps.ping_interval_s is None) == (adapter.ping_message() is None)
    assert caps.funding_mark_price_sources <= set(Source)
    if Dataset.FUNDING not in caps.datasets:
        assert not caps.funding_mark_price_sources
    if Source.REST in caps.funding_mark_price_sources:
        assert Dataset.FUNDING in caps.rest_reach_ms
    if Source.ARCHIVE in caps.funding_mark_price_sources:
        assert caps.archive_for(Dataset.FUNDING) is not None
    assert adapter.venue.startswith(adapter.name.split("-")[0])


def test_every_registered_venue_has_a_contract_case():
    """A venue registered without recorded fixtures and a case here fails, not passes silently."""
    from petrosa_pipelines.exchanges import EXCHANGES

    assert {c.adapter.venue for c in CASES} == set(EXCHANGES)


def test_stream_dataset_names_the_dataset_of_every_subscription():
    """A landing read of one dataset skips the streams ``stream_dataset`` gives to another, and
    a NATS group the channels it does not carry: every stream the ingest subscribes must be
    classified right (a depth stream called bookless would lose the book, a trades stream
    called candles the day's trades)."""
    from petrosa_pipelines.exchanges import EXCHANGES, adapter_class

    for venue in EXCHANGES:
        cls = adapter_class(venue)
        profiles = getattr(cls, "stream_profiles", (None,))
        for profile in profiles:
            adapter = cls(stream_profile=profile) if profile else cls()
            for kind in adapter.channels:
                (name,) = adapter.stream_names(["BTCUSDT"], [kind])
                assert adapter.stream_dataset(name) == str(kind), (venue, profile, name)
                assert adapter.feeds_book(name) is (kind == "depth"), (venue, profile, name)
