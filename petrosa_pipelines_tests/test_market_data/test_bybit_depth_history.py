"""Bybit depth history: the daily order-book files fill the depth partitions the ingest did not.

Bybit publishes one file per symbol and day (``orderbook/linear/<SYM>/<day>_<SYM>_ob200.data.zip``,
ob500 in older ones; https://www.bybit.com/derivatives/en/history-data): JSON lines, the day's
snapshot then deltas, the websocket ``orderbook`` message shape. The parser is held to the real
file (petrosa_pipelines_tests/fixtures/bybit/PROVENANCE.md: nautilus' 2024-12-01 XRPUSDT ob500,
byte for byte); the fill is held to the local exchange, whose files are its websocket book's
messages: a day with no ingest is the exchange's book at every cadence tick, a day with a partial
ingest is landing where it landed and archive elsewhere with no overlap and no hole, and a missing
file is a named source failure that never shrinks a kept partition.

The fill is driven as ``market_data.assets.materialise_partition`` drives it (``sources_for`` with
the venue's archive client, the gap ledger as known gaps, ``refuse_to_shrink``), with a small
simulated day (20 book levels, a 10 s book step and cadence) so each test takes seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from decimal import Decimal
from io import BytesIO
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
from websockets.sync.client import connect

from petrosa_pipelines import settings as settings_mod
from petrosa_pipelines.catalog.depth_layout import from_long, to_long
from petrosa_pipelines.checks.applicability import NOTHING_LANDED
from petrosa_pipelines.checks.audit_book import audit_dataset
from petrosa_pipelines.checks.settings import AuditSettings
from petrosa_pipelines.exchanges.base import Dataset, DepthSnapshotRecord, DepthUpdateRecord
from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter
from petrosa_pipelines.exchanges.bybit.archive import BookHistory, parse_book_history
from petrosa_pipelines.instruments import parse_instrument
from petrosa_pipelines.landing import GapRecord, LandingStore, LandingWriter
from petrosa_pipelines.lib.timeutil import day_window_ms
from petrosa_pipelines.local_exchange import LocalExchange, MarketConfig, SimulatedClock
from petrosa_pipelines.market_data.assets import refuse_to_shrink
from petrosa_pipelines.market_data.datasets import DepthSpec
from petrosa_pipelines.market_data.fill import FillResult, PartitionWindow, fill_partition
from petrosa_pipelines.market_data.sources import BookArchiveSource, sources_for

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bybit" / "historical_orderbook"
REAL_LINES = (FIXTURES / "2024-12-01_XRPUSDT_ob500.data").read_bytes()
REAL_ZIP = (FIXTURES / "xrpusdt-ob500.data.zip").read_bytes()

INST = parse_instrument("bybit-linear:BTCUSDT")
SYM, EXCHANGE = INST.symbol, INST.exchange
DAY = dt.date(2024, 1, 2)
DAY_START, DAY_END = day_window_ms(DAY)
#: the day after: the clock stands there, so DAY is closed and its files published
NOW = DAY_END + 30_000
BOOK_STEP_MS = 10_000
CADENCE_MS = 10_000
TOP_N = 5
BOOK_LEVELS = 20
HOUR = 3_600_000


# -- the parser, on the real file ---------------------------------------------------------------


def _levels(raw: list[list[str]]) -> tuple[tuple[Decimal, Decimal], ...]:
    return tuple((Decimal(p), Decimal(q)) for p, q in raw)


def test_parser_is_exact_on_every_line_of_the_real_ob500_file():
    """Every field of every record is the line's own: type, ``ts`` (event time), ``cts``
    (transaction time), ``u`` (and ``u - 1`` before a delta), every level as its decimal text;
    the real zip streams the same records (``BookHistory``, what the client returns)."""
    lines = REAL_LINES.split(b"\r\n")
    assert lines[-1] == b"" and all(lines[:-1])  # CRLF after every line, the last one too
    records = parse_book_history(REAL_LINES)
    assert len(records) == len(lines) - 1 == 50
    for line, rec in zip(lines[:-1], records, strict=True):
        msg = json.loads(line)
        data = msg["data"]
        assert list(msg) == ["topic", "type", "ts", "data", "cts"]
        assert list(data) == ["s", "b", "a", "u", "seq"]
        assert (rec.exchange, rec.symbol) == (EXCHANGE, data["s"])
        assert (rec.event_time, rec.transaction_time) == (msg["ts"], msg["cts"])
        assert (rec.bids, rec.asks) == (_levels(data["b"]), _levels(data["a"]))
        assert rec.received_at is None
        if msg["type"] == "snapshot":
            assert type(rec) is DepthSnapshotRecord and rec.last_update_id == data["u"]
        else:
            assert type(rec) is DepthUpdateRecord
            assert (rec.first_update_id, rec.final_update_id) == (data["u"], data["u"])
            assert rec.prev_final_update_id == data["u"] - 1
    history = BookHistory(REAL_ZIP, "orderbook/linear/XRPUSDT/2024-12-01_XRPUSDT_ob500.data.zip")
    assert len(history) == 50 and list(history.exact()) == records  # streamed, re-iterable
    # what the fill replays: the same records with float levels, as the book keeps them
    floats = [
        type(r)(
            *(
                tuple((float(p), float(q)) for p, q in v) if f in ("bids", "asks") else v
                for f, v in zip(r.__struct_fields__, msgspec.structs.astuple(r), strict=True)
            )
        )
        for r in records
    ]
    assert list(history) == floats == list(history)


def test_the_real_file_is_sampled_like_the_landing_rebuild():
    """Replayed by the fill: a sample at tick T is the book after every message with
    ``ts <= T`` (the ingest's rule, ``landing.book.BookSync``), computed here independently by
    applying the lines to a dict book; ticks the file cannot give stay missing and are named."""
    lines = [json.loads(x) for x in REAL_LINES.split(b"\r\n") if x]
    day = dt.date(2024, 12, 1)
    start, end = day_window_ms(day)

    class Client:
        def daily_book_records(self, symbol: str, when: dt.date) -> BookHistory:
            assert (symbol, when) == ("XRPUSDT", day)
            return BookHistory(REAL_ZIP, "xrpusdt-ob500.data.zip")

    window = PartitionWindow(day, "XRPUSDT", end + HOUR)
    source = BookArchiveSource(Client(), EXCHANGE, cadence_ms=1_000, top_n=3)
    result = fill_partition(DepthSpec(1_000), window, [source])
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    expected = []
    for i, msg in enumerate(lines):
        for book, side in ((bids, "b"), (asks, "a")):
            for p, q in _levels(msg["data"][side]):
                if q:
                    book[p] = q
                else:
                    del book[p]  # the file never deletes an unknown level (quirk 23)
        nxt = lines[i + 1]["ts"] if i + 1 < len(lines) else None
        for tick in range(-(-msg["ts"] // 1000) * 1000, nxt or 0, 1000):
            if nxt is not None and tick < nxt:
                top_b = sorted(bids.items(), reverse=True)[:3]
                top_a = sorted(asks.items())[:3]
                expected += [
                    (tick, msg["data"]["u"], "bid", n, p, q) for n, (p, q) in enumerate(top_b)
                ]
                expected += [
                    (tick, msg["data"]["u"], "ask", n, p, q) for n, (p, q) in enumerate(top_a)
                ]
    frame = result.frame
    assert not frame.duplicated(["snapshot_time"]).any()  # one row per sampled tick
    rows = to_long(frame)
    got = list(
        zip(
            _ms(rows["snapshot_time"]).tolist(),
            rows["last_update_id"].tolist(),
            rows["side"].tolist(),
            rows["level"].tolist(),
            rows["price"].tolist(),
            rows["quantity"].tolist(),
            strict=True,
        )
    )
    want = [(t, u, s, n, float(p), float(q)) for t, u, s, n, p, q in expected]
    key = lambda r: (r[0], r[2], r[3])  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)
    assert sorted({r[0] for r in got}) == [start + k * 1000 for k in range(1, 6)]
    assert (frame["source"] == "archive").all() and (frame["exchange"] == EXCHANGE).all()
    # the head before the 00:00:00.691 snapshot and the tail after the last line are missing
    assert result.missing == [(start, lines[0]["ts"]), (start + 6_000, end)]
    attempt = result.attempts[0]
    assert attempt["book_messages"] == 50 and attempt["sequence_breaks"] == 0


# -- the local exchange's files ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ex():
    market = MarketConfig(
        seed=11,
        symbols=(SYM,),
        start_date="2024-01-01",
        trades_per_day=20_000,
        book_levels=BOOK_LEVELS,
        book_step_ms=BOOK_STEP_MS,
    )
    with LocalExchange(market=market, clock=SimulatedClock(NOW)) as exchange:
        yield exchange


def _wire(ex: LocalExchange):
    return ex.wires["bybit-linear"]


def _archive_client(ex: LocalExchange):
    """The venue's archive client as a run builds it: from the settings, with the archive base
    URL set (``PETROSA_BYBIT_LINEAR_ARCHIVE_BASE_URL``) to the local exchange."""
    env = {
        "PETROSA_SYMBOLS": f"{INST.venue}:{SYM}",
        "PETROSA_BYBIT_LINEAR_ARCHIVE_BASE_URL": ex.rest_base_url,
    }
    venue_settings = settings_mod.from_env(env).for_venue(INST.venue)
    return BybitLinearAdapter().archive_client(venue_settings)


def _ms(col: pd.Series) -> np.ndarray:
    return col.astype("datetime64[ms, UTC]").astype("int64").to_numpy()


def _fill(
    ex: LocalExchange, store: LandingStore, previous: pd.DataFrame | None = None
) -> FillResult:
    """One depth partition of DAY, as ``materialise_partition`` builds it."""
    window = PartitionWindow(DAY, SYM, ex.now_ms())
    sources = sources_for(
        "depth",
        landing=store,
        archive=_archive_client(ex),
        rest=None,
        exchange=EXCHANGE,
        previous=previous,
    )
    ledger = store.gaps(EXCHANGE, window.start_ms, window.end_ms, "depth", SYM)
    known = [(max(g.start_ms, window.start_ms), min(g.end_ms, window.end_ms)) for g in ledger]
    return fill_partition(DepthSpec(CADENCE_MS), window, sources, known_gaps=known)


def _store(root: Path) -> LandingStore:
    return LandingStore(root, depth_cadence_ms=CADENCE_MS, depth_top_n=TOP_N)


def _truth(ex: LocalExchange, ticks: list[int]) -> pd.DataFrame:
    """The exchange's book at each tick (top N), as the websocket published it: the last book
    message with ``ts <= tick``; ``u`` as the websocket numbered it."""
    formats, wire = _wire(ex).formats, _wire(ex)
    spec = ex.market.spec(SYM)
    rows = []
    for tick in ticks:
        step = tick // BOOK_STEP_MS
        if formats.book_ts(step) > tick:
            step -= 1
        st = ex.market.book_state(SYM, step)
        u = wire.archive_book_u(step)
        for side, ticks_, qty in (
            ("bid", st.bid_ticks, st.bid_qty),
            ("ask", st.ask_ticks, st.ask_qty),
        ):
            for n in range(TOP_N):
                price = int(ticks_[n]) * spec.tick_units / 10**spec.price_decimals
                rows.append((tick, u, side, n, price, int(qty[n]) / 10**spec.qty_decimals))
    frame = pd.DataFrame(
        rows, columns=["ms", "last_update_id", "side", "level", "price", "quantity"]
    )
    return frame.sort_values(["ms", "side", "level"]).reset_index(drop=True)


def _as_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The partition's levels as the long rows ``_truth`` gives (``depth_layout.to_long``)."""
    rows = to_long(frame)
    out = rows.assign(ms=_ms(rows["snapshot_time"]))[
        ["ms", "last_update_id", "side", "level", "price", "quantity"]
    ]
    return out.sort_values(["ms", "side", "level"]).reset_index(drop=True)


def test_the_day_file_is_the_websocket_book_byte_for_byte(ex, tmp_path):
    """The file's lines are the messages ``orderbook.200`` sends: the websocket's deltas across
    a minute of the next day equal that day's file lines byte for byte (``ts``, ``cts``, ``u``,
    ``seq``, every level), the zip holds one member named as Bybit names it, CRLF line ends."""
    clock = ex.clock
    next_day = DAY + dt.timedelta(days=1)
    at = day_window_ms(next_day)[0] + 5 * 60_000
    try:
        clock.set(at)
        with connect(ex.ws_base_url + "/v5/public/linear") as ws:
            topic = f"orderbook.200.{SYM}"
            ws.send(json.dumps({"op": "subscribe", "args": [topic], "req_id": "1"}))
            assert json.loads(ws.recv(timeout=30))["success"]
            assert json.loads(ws.recv(timeout=30))["type"] == "snapshot"
            frames = []
            clock.set(at + 60_000)  # the server streams what happened in between
            while len(frames) < 6:
                raw = ws.recv(timeout=30)
                raw = raw.encode() if isinstance(raw, str) else raw
                if raw.startswith(b'{"topic"') and b'"type":"delta"' in raw:
                    frames.append(raw)
        clock.set(day_window_ms(next_day)[1] + 30_000)  # the next day closes: its file exists
        status, body = _get(ex, f"/orderbook/linear/{SYM}/{next_day}_{SYM}_ob200.data.zip")
    finally:
        clock.set(NOW)
    assert status == 200
    with zipfile.ZipFile(BytesIO(body)) as zf:
        assert zf.namelist() == [f"{next_day}_{SYM}_ob200.data"]
        data = zf.read(zf.namelist()[0])
    lines = data.split(b"\r\n")
    assert lines[-1] == b"" and b"\n" not in b"".join(lines)
    first = json.loads(lines[0])
    assert (first["type"], first["cts"]) == ("snapshot", day_window_ms(next_day)[0])
    assert len(lines) - 1 == 86_400_000 // BOOK_STEP_MS  # a snapshot, then a delta per step
    by_u = {json.loads(x)["data"]["u"]: x for x in lines[1:-1]}
    for raw in frames:
        assert by_u[json.loads(raw)["data"]["u"]] == raw


def _get(ex: LocalExchange, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(ex.rest_base_url + path, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_a_day_without_ingest_is_the_exchanges_book_at_every_tick(ex, tmp_path):
    """Nothing landed: the partition is the archive's, the exchange's book (top N) at every
    cadence tick of the day but 00:00:00, before the day file's first message, which stays
    missing, named. The checks judge it by coverage (Bybit declares book history), not "not
    applicable"."""
    result = _fill(ex, _store(tmp_path))
    frame = result.frame
    ticks = [DAY_START + k * CADENCE_MS for k in range(1, 86_400_000 // CADENCE_MS)]
    assert (frame["source"] == "archive").all() and (frame["exchange"] == EXCHANGE).all()
    assert len(frame) == len(ticks) and not frame.duplicated(["snapshot_time"]).any()
    pd.testing.assert_frame_equal(_as_rows(frame), _truth(ex, ticks), check_dtype=False)
    first_ts = _wire(ex).formats.book_ts(DAY_START // BOOK_STEP_MS)
    assert result.missing == [(DAY_START, first_ts)]
    (attempt,) = [a for a in result.attempts if a["source"] == "archive"]
    assert attempt["spans"]["archive"] == [
        f"{DAY}T00:00:10Z/{DAY + dt.timedelta(days=1)}T00:00:00Z"
    ]
    assert result.source_spans(DepthSpec(CADENCE_MS), PartitionWindow(DAY, SYM, NOW)) == {
        "archive": [(DAY_START + CADENCE_MS, DAY_END)]
    }
    audit = AuditSettings(depth_cadence_ms=CADENCE_MS)
    outs = {
        o.name: o
        for o in audit_dataset(
            "depth", frame, DAY_START, DAY_END, NOW, audit, [], NOTHING_LANDED, exchange=EXCHANGE
        )
    }
    assert outs["depth_coverage"].status == "passed" and outs["depth_coverage"].checked == 8640
    judged = {n: o.status for n, o in outs.items() if n != "fresh"}
    assert set(judged.values()) == {"passed"}, judged  # freshness judges only the open day
    empty = audit_dataset(
        "depth",
        frame.iloc[:0],
        DAY_START,
        DAY_END,
        NOW,
        audit,
        [],
        NOTHING_LANDED,
        exchange=EXCHANGE,
    )
    coverage = next(o for o in empty if o.name == "depth_coverage")
    # an empty Bybit day is a hole to fill, not "not applicable"
    assert coverage.status == "failed" and not coverage.not_applicable


def _land_ws(root: Path, ex: LocalExchange, spans: list[tuple[int, int]]) -> None:
    """The websocket's ``orderbook.50`` messages for each [first, last] step span as the ingest
    lands them (each span opens with the connection's snapshot), a ``disconnect`` ledger entry
    between spans, as ``ingest`` records a cut."""
    formats, wire = _wire(ex).formats, _wire(ex)
    topic = f"orderbook.50.{SYM}"
    with LandingWriter(root, EXCHANGE, "g1") as w:
        prev_last = None
        for first, last in spans:
            if prev_last is not None:
                gap = GapRecord(
                    "depth",
                    SYM,
                    formats.book_ts(prev_last),
                    formats.book_ts(first),
                    "disconnect",
                    formats.book_ts(first) + 10,
                    "g1",
                )
                assert w.record_gap(gap)
            st = ex.market.book_state(SYM, first)
            b = formats.levels(SYM, st.bid_ticks[:50], st.bid_qty[:50])
            a = formats.levels(SYM, st.ask_ticks[:50], st.ask_qty[:50])
            msg = formats.book_message(topic, SYM, "snapshot", first, wire.book_u(first), b, a)
            assert w.put(formats.book_ts(first) + 7, msg)
            for step, b, a in formats.book_deltas(SYM, first + 1, last, 50):
                msg = formats.book_message(topic, SYM, "delta", step, wire.book_u(step), b, a)
                assert w.put(formats.book_ts(step) + 7, msg)
            prev_last = last


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_a_partial_ingest_and_the_archive_meet_with_no_overlap_and_no_hole(ex, tmp_path):
    """The ingest landed 12:00-18:00 with a 5-minute cut at 15:00 (its ledger says so): the
    landing rows are kept for what they cover, the archive fills before, inside the cut and
    after, every tick but the day's first exactly once, every one the exchange's book; the
    archive's metadata names the spans it filled and the ones held."""
    s = DAY_START // BOOK_STEP_MS
    per_hour = HOUR // BOOK_STEP_MS
    spans = [
        (s + 12 * per_hour, s + 15 * per_hour),
        (s + 15 * per_hour + 30, s + 18 * per_hour - 1),
    ]
    _land_ws(tmp_path, ex, spans)
    store = _store(tmp_path)
    landed = store.read_frame(EXCHANGE, "depth", SYM, DAY_START, DAY_END)
    assert len(landed)
    result = _fill(ex, store)
    frame = result.frame
    ticks = [DAY_START + k * CADENCE_MS for k in range(1, 86_400_000 // CADENCE_MS)]
    # each snapshot whole from one source: one row per tick, whichever source gave it
    assert len(frame) == len(ticks) and not frame.duplicated(["snapshot_time"]).any()
    pd.testing.assert_frame_equal(_as_rows(frame), _truth(ex, ticks), check_dtype=False)
    ms = _ms(frame["snapshot_time"])
    ws_ticks = set(ms[frame["source"].to_numpy() == "ws"].tolist())
    assert ws_ticks == set(
        _ms(landed["snapshot_time"]).tolist()
    )  # the landing wins where it landed
    spans_by_source = result.source_spans(DepthSpec(CADENCE_MS), PartitionWindow(DAY, SYM, NOW))
    ws_at = lambda h, m=0, sec=0: DAY_START + (h * 3600 + m * 60 + sec) * 1000  # noqa: E731
    assert spans_by_source["ws"] == [
        (ws_at(12, 0, 10), ws_at(15, 0, 10)),
        (ws_at(15, 5, 10), ws_at(18)),
    ]
    assert spans_by_source["archive"] == [
        (ws_at(0, 0, 10), ws_at(12, 0, 10)),
        (ws_at(15, 0, 10), ws_at(15, 5, 10)),
        (ws_at(18), DAY_END),
    ]
    assert result.missing == [(DAY_START, _wire(ex).formats.book_ts(s))]  # the head only
    (attempt,) = [a for a in result.attempts if a["source"] == "archive"]
    assert attempt["spans"]["held"] == [
        f"{DAY}T12:00:10Z/{DAY}T15:00:10Z",
        f"{DAY}T15:05:10Z/{DAY}T18:00:00Z",
    ]
    assert len(attempt["spans"]["archive"]) == 3


@pytest.mark.slow  # 12 s: the full suite, not the fast lane
def test_repairing_the_morning_reads_the_file_only_up_to_it(ex, tmp_path):
    """The ingest landed from 02:00 to the end of the day: the archive is asked only for the
    morning, so its replay stops at the first message past 02:00 (a fraction of the day's
    messages) and the day is still the exchange's book at every tick, each once."""
    s = DAY_START // BOOK_STEP_MS
    per_hour = HOUR // BOOK_STEP_MS
    _land_ws(tmp_path, ex, [(s + 2 * per_hour, s + 24 * per_hour - 1)])
    result = _fill(ex, _store(tmp_path))
    ticks = [DAY_START + k * CADENCE_MS for k in range(1, 86_400_000 // CADENCE_MS)]
    frame = result.frame
    assert len(frame) == len(ticks) and not frame.duplicated(["snapshot_time"]).any()
    pd.testing.assert_frame_equal(_as_rows(frame), _truth(ex, ticks), check_dtype=False)
    (attempt,) = [a for a in result.attempts if a["source"] == "archive"]
    # one book message per book step; the replay read a little over two hours of them
    assert 2 * per_hour <= attempt["book_messages"] <= 2 * per_hour + 3, attempt
    assert attempt["spans"]["archive"] == [f"{DAY}T00:00:10Z/{DAY}T02:00:10Z"]
    assert result.missing == [(DAY_START, _wire(ex).formats.book_ts(s))]


def test_a_missing_file_is_a_named_failure_and_never_shrinks_the_partition(ex, tmp_path):
    """The archive withholds the day (not published): the run names the failure in
    ``sources_tried``; with a partition already in the lake, the fill keeps its rows and the
    run refuses to publish (the existing protection); without one, the empty result still
    says why it is empty."""
    books = _wire(ex).rest.books
    books.unpublished.add((SYM, DAY))
    try:
        bare = _fill(ex, _store(tmp_path / "a"))
        previous = _truth(ex, [DAY_START + 10 * CADENCE_MS, DAY_START + 11 * CADENCE_MS])
        previous = from_long(
            previous.assign(
                exchange=EXCHANGE,
                symbol=SYM,
                snapshot_time=pd.to_datetime(previous["ms"], unit="ms", utc=True),
                source="archive",
                received_at=pd.NaT,
            ).drop(columns="ms")
        )
        kept = _fill(ex, _store(tmp_path / "b"), previous=previous)
    finally:
        books.unpublished.discard((SYM, DAY))
    (error,) = bare.errors()
    assert error["source"] == "archive" and error["error"].startswith("ArchiveMissingError")
    assert f"{SYM} on {DAY}" in error["error"]
    assert bare.frame.empty and bare.missing == [(DAY_START, DAY_END)]
    assert len(previous) == 2  # two snapshots (v2: one row each)
    assert len(kept.frame) == len(previous) and kept.errors()
    refusal = refuse_to_shrink("depth", f"{DAY}|{INST.venue}:{SYM}", kept, previous)
    assert refusal and "archive: ArchiveMissingError" in refusal and "kept the existing" in refusal


def test_capabilities_declare_the_book_archive():
    caps = BybitLinearAdapter.capabilities
    assert caps.depth_history
    spec = caps.archive_for(Dataset.DEPTH)
    assert spec is not None and not spec.checksums and spec.granularity == "daily"
    assert spec.url == "https://quote-saver.bycsi.com/orderbook/linear/"
    # a venue without book history keeps depth to the landing zone alone
    from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter

    present = object()
    assert [s.name for s in sources_for("depth", present, present, present, "binance")] == ["ws"]
    assert [s.name for s in sources_for("depth", present, present, present, EXCHANGE)] == [
        "ws",
        "archive",
    ]
    assert not BinanceUsdmAdapter.capabilities.depth_history


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_materialise_partition_fills_a_bybit_depth_day_from_the_archive(ex, tmp_path, monkeypatch):
    """Through the asset body: a Bybit depth day with nothing landed is the archive's, its
    metadata says where each span came from and that the day has history; Binance's stays
    landing-only."""
    from petrosa_pipelines.market_data.assets import MarketDataConfig, materialise_partition
    from resources import ExchangeResource, LandingResource

    monkeypatch.setenv("PETROSA_SYMBOLS", f"{INST.venue}:{SYM},binance-usdm:{SYM}")
    monkeypatch.setenv("PETROSA_BYBIT_LINEAR_ARCHIVE_BASE_URL", ex.rest_base_url)
    exchange = ExchangeResource(
        rest_base_url=ex.rest_base_url,
        ws_base_url=ex.ws_base_url,
        vision_base_url=ex.vision_base_url,
    )
    landing = LandingResource(root=str(tmp_path))
    frame, meta = materialise_partition(
        "depth", f"{DAY}|{INST.venue}:{SYM}", MarketDataConfig(), exchange, landing, now_ms=NOW
    )
    assert len(frame) and (frame["source"] == "archive").all()
    assert meta["history_available"] is True and "not_applicable" not in meta
    assert meta["source_spans"].value == {"archive": [f"{DAY}T00:00:01Z/{DAY}T23:59:51Z"]}
    # the file's last message is at 23:59:50 (a 10 s book step): nothing proves the book
    # after it, so the ticks to midnight stay missing, named
    assert meta["missing_ranges"].value[-1].endswith("/2024-01-03T00:00:00Z")
    (attempt,) = meta["sources_tried"].value[1:]
    assert attempt["source"] == "archive" and attempt["sequence_breaks"] == 0
    frame, meta = materialise_partition(
        "depth", f"{DAY}|binance-usdm:{SYM}", MarketDataConfig(), exchange, landing, now_ms=NOW
    )
    assert frame.empty and meta["history_available"] is False
    assert [a["source"] for a in meta["sources_tried"].value] == ["ws"]
