"""Bybit archives: the public trading CSV (doc-built fixture of real trades), exact
second -> millisecond conversion, Bybit's own order-book history file (real), the float reader
held to the full parser (same records, same errors, deltas on the fast route), and the client's
404/retry behaviour against a fake host."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import zipfile
from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
import pytest

from petrosa_pipelines.catalog import schemas
from petrosa_pipelines.exchanges.base import DepthSnapshotRecord, DepthUpdateRecord, MessageError
from petrosa_pipelines.exchanges.bybit import archive
from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter
from petrosa_pipelines.exchanges.bybit.archive import (
    BookHistory,
    BybitArchiveClient,
    iter_book_history,
    iter_book_history_floats,
    parse_book_history,
    parse_trades_csv,
    seconds_to_ms,
    trades_columns,
)
from petrosa_pipelines.lib.endpoints import RestSettings
from petrosa_pipelines.local_exchange import Market, MarketConfig
from petrosa_pipelines.local_exchange.units import day_start_ms
from petrosa_pipelines.local_exchange.venues.bybit.book_file import book_history_zip, member_name
from petrosa_pipelines.local_exchange.venues.bybit.frames import BybitFormats
from petrosa_pipelines_tests.test_exchanges.fake_binance import FakeServer, Reply
from petrosa_pipelines_tests.test_exchanges.test_bybit_fastpath import byte_edits

pytestmark = pytest.mark.playback

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bybit"
CSV_GZ = (FIXTURES / "archive" / "BTCUSDT2026-08-09.csv.gz").read_bytes()
BOOK = (FIXTURES / "historical_orderbook" / "2024-12-01_XRPUSDT_ob500.data").read_bytes()
HEADER = (
    "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,"
    "foreignNotional"
)


def _ws_btc_trades():
    adapter = BybitLinearAdapter()
    lines = (FIXTURES / "ws" / "cryptofeed_2026-08-09" / "linear_publicTrade.jsonl").read_bytes()
    return [
        t
        for line in lines.splitlines()
        if b"publicTrade.BTCUSDT" in line
        for t in adapter.parse_frame(line)
    ]


def test_archive_rows_equal_the_websocket_trades():
    cols = trades_columns(gzip.decompress(CSV_GZ), "BTCUSDT")
    ws = _ws_btc_trades()
    assert list(cols["trade_id"]) == [t.trade_id for t in ws]
    assert list(cols["trade_time"]) == [t.trade_time for t in ws]
    assert list(cols["is_buyer_maker"]) == [t.is_buyer_maker for t in ws]
    assert list(cols["price"]) == [float(t.price) for t in ws]
    assert list(cols["quantity"]) == [float(t.quantity) for t in ws]


def test_archive_frame_conforms_with_zero_ids_and_archive_source():
    frame = parse_trades_csv(gzip.decompress(CSV_GZ), "BTCUSDT")
    assert list(frame.columns) == schemas.TRADES.column_names
    assert len(frame) == 56
    assert (frame["agg_trade_id"] == 0).all() and (frame["source"] == "archive").all()
    assert frame["received_at"].isna().all() and frame["trade_time"].is_monotonic_increasing
    assert frame["trade_id"].tolist() == [t.trade_id for t in _ws_btc_trades()]


def test_seconds_with_four_decimals_become_exact_floored_ms():
    base = 1_787_356_800
    texts = [f"{base}.{f:04d}" for f in range(10_000)]
    ms = seconds_to_ms(np.array([float(t) for t in texts]))
    assert np.array_equal(ms, base * 1000 + np.arange(10_000) // 10)
    data = (
        HEADER + "\n1585180700,BTCUSDT,Buy,0.002,6680.5,PlusTick,x1,1336100,0.002,13.361\n"
    ).encode()
    assert trades_columns(data, "BTCUSDT")["trade_time"].tolist() == [1_585_180_700_000]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("1.5,ETHUSDT,Buy,1,1,PlusTick,x,1,1,1", "symbol"),
        ("1.5,BTCUSDT,Long,1,1,PlusTick,x,1,1,1", "side"),
        ("1.5,BTCUSDT,Buy,1,0,PlusTick,x,1,1,1", "price"),
        ("1.5,BTCUSDT,Buy,-1,1,PlusTick,x,1,1,1", "size"),
        ("1.5,BTCUSDT,Buy,1,abc,PlusTick,x,1,1,1", "price"),
        ("1.5,BTCUSDT,Buy,1,1,PlusTick,,1,1,1", "trdMatchID"),
    ],
)
def test_bad_rows_name_their_column(row, field):
    with pytest.raises(MessageError) as err:
        trades_columns(f"{HEADER}\n{row}\n".encode(), "BTCUSDT")
    assert err.value.field == field


def test_missing_column_and_corrupt_gzip():
    with pytest.raises(MessageError) as err:
        trades_columns(b"timestamp,symbol,side,size\n1,BTCUSDT,Buy,1\n", "BTCUSDT")
    assert err.value.field == "<csv>"
    with FakeServer() as server:
        server.routes["/trading/BTCUSDT/BTCUSDT2026-08-09.csv.gz"] = [Reply(200, CSV_GZ[:40])]
        with pytest.raises(MessageError) as err:
            BybitArchiveClient(server.url, RestSettings()).daily_agg_trades(
                "BTCUSDT", dt.date(2026, 8, 9)
            )
    assert err.value.field == "<gzip>"


def test_book_history_file_replays_like_the_live_stream():
    records = parse_book_history(BOOK)
    assert len(records) == 50
    snap, deltas = records[0], records[1:]
    assert isinstance(snap, DepthSnapshotRecord) and len(snap.bids) == len(snap.asks) == 500
    first = json.loads(BOOK.splitlines()[0])
    assert snap.bids[0] == tuple(map(Decimal, first["data"]["b"][0]))
    assert (snap.last_update_id, snap.event_time) == (first["data"]["u"], first["ts"])
    bids, asks = dict(snap.bids), dict(snap.asks)
    last = snap.last_update_id
    for d in deltas:
        assert isinstance(d, DepthUpdateRecord) and d.prev_final_update_id == last
        last = d.final_update_id
        for side, levels in ((bids, d.bids), (asks, d.asks)):
            for p, q in levels:
                if q == 0:
                    del side[p]
                else:
                    side[p] = q
        assert len(bids) == len(asks) == 500 and max(bids) < min(asks)


def test_book_history_bad_line_names_line_and_field():
    bad = (
        BOOK.splitlines()[0]
        + b"\r\n"
        + b'{"topic":"orderbook.500.XRPUSDT","type":"delta","ts":1,'
        + b'"data":{"s":"XRPUSDT","b":[["x","1"]],"a":[],"u":2}}\r\n'
    )
    with pytest.raises(MessageError) as err:
        parse_book_history(bad)
    assert err.value.field == "data.b[0][0]" and err.value.reason.startswith("line 2:")


# -- the float reader: what the full parser accepts, nothing else ----------------------------------

BOOK_LINES = BOOK.splitlines()
SNAPSHOT, DELTAS = BOOK_LINES[0], BOOK_LINES[1:]
#: a real delta of the file (its first): 13 bids, 22 asks
DELTA = DELTAS[0]
assert DELTA.startswith(b'{"topic":"orderbook.500.XRPUSDT","type":"delta","ts":1733011200693,')
assert b'["1.9531","6198"]' in DELTA and b'"u":20254870,"seq":130020239261},' in DELTA
assert DELTA.endswith(b',"cts":1733011200691}')
#: the shortest real delta, for the single-byte edits
SHORT = min(DELTAS, key=len)
QTY = b'"6198"'  # the first bid's quantity


def _floats(rec):
    """A full-parser record as the float reader must give it (levels ``float(Decimal)``)."""
    return msgspec.structs.replace(
        rec,
        bids=tuple((float(p), float(q)) for p, q in rec.bids),
        asks=tuple((float(p), float(q)) for p, q in rec.asks),
    )


def _same(got: list, want: list) -> bool:
    """Equal, and ``repr`` equal too: ``-0.0 == 0.0`` but a book must not see a sign flip."""
    return got == want and repr(got) == repr(want)


def _full_route_lines(monkeypatch) -> list[bytes]:
    """The lines the float reader hands to the full parser from now on."""
    seen: list[bytes] = []
    full = archive.iter_book_history

    def counting(lines, start=1):
        lines = list(lines)
        seen.extend(lines)
        return full(lines, start)

    monkeypatch.setattr(archive, "iter_book_history", counting)
    return seen


def _outcome(reader, lines):
    """``("ok", records)`` or ``("error", type, reason, field, raw)``."""
    try:
        return "ok", list(reader(lines))
    except MessageError as exc:
        return "error", type(exc), exc.reason, exc.field, exc.raw


#: real-delta edits the full parser rejects; a lax float decoder of the whole line takes the
#: first ones (a string time, -1e-400 floated to -0.0, a duplicate's first value skipped)
REJECTED = {
    "ts a string": DELTA.replace(b'"ts":1733011200693', b'"ts":"1733011200693"'),
    "qty -1e-400": DELTA.replace(QTY, b'"-1e-400"'),
    "qty -1e-400 escaped minus": DELTA.replace(QTY, b'"\\u002d1e-400"'),
    "qty -1e-400 escaped e": DELTA.replace(QTY, b'"-1\\u0065-400"'),
    "qty -1e-400 bare": DELTA.replace(QTY, b"-1e-400"),
    "duplicate ts, first a string": DELTA.replace(b'"ts":', b'"ts":"1","ts":'),
    "duplicate b, first invalid": DELTA.replace(b'"b":[', b'"b":[["x","1"]],"b":[', 1),
    "duplicate u, first negative": DELTA.replace(b',"u":', b',"u":-1,"u":'),
    "duplicate type, first partial": DELTA.replace(b'"type":', b'"type":"partial","type":'),
    "cts a string": DELTA.replace(b'"cts":1733011200691', b'"cts":"1733011200691"'),
    "u a float": DELTA.replace(b'"u":20254870', b'"u":20254870.0'),
    "u zero": DELTA.replace(b'"u":20254870', b'"u":0'),
    "seq a string": DELTA.replace(b'"seq":130020239261', b'"seq":"130020239261"'),
    "price zero": DELTA.replace(b'"1.9531","6198"', b'"0","6198"'),
    "price a word": DELTA.replace(b'"1.9531","6198"', b'"abc","6198"'),
    "symbol not the topic's": DELTA.replace(b'"s":"XRPUSDT"', b'"s":"XRPUSDC"'),
    "truncated": DELTA[:-1],
}
#: valid spellings the fast route does not vouch for: the full parser's records, as floats
VALID_UNUSUAL = {
    "snapshot": SNAPSHOT,
    "key order": DELTA.replace(
        b'"type":"delta","ts":1733011200693', b'"ts":1733011200693,"type":"delta"'
    ),
    "spaces": DELTA.replace(b'"b":', b'"b": '),
    "escaped key": DELTA.replace(b'"seq":', b'"\\u0073eq":'),
    "escaped digit": DELTA.replace(QTY, b'"\\u00398"'),
    "exponent": DELTA.replace(QTY, b'"6.198e3"'),
    "negative zero qty": DELTA.replace(QTY, b'"-0"'),
    "underscore decimal": DELTA.replace(QTY, b'"6_198"'),
    "no seq": DELTA.replace(b',"seq":130020239261', b""),
    "no cts": DELTA.replace(b',"cts":1733011200691', b""),
    "extra key": DELTA.replace(b',"seq":', b',"x":1,"seq":'),
    "duplicate b, both valid": DELTA.replace(b'"b":[', b'"b":[["2","1"]],"b":[', 1),
}


def test_the_float_reader_yields_the_full_parsers_records_for_every_real_line(monkeypatch):
    full = [_floats(r) for r in iter_book_history(BOOK_LINES)]
    slow = _full_route_lines(monkeypatch)
    got = list(iter_book_history_floats(BOOK.splitlines(keepends=True)))  # CRLF, as unzipped
    assert len(got) == 50 and _same(got, full)
    assert slow == [SNAPSHOT]  # every delta took the fast route
    assert all(
        type(x) is float for r in got for side in (r.bids, r.asks) for lv in side for x in lv
    )


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_a_line_the_full_parser_rejects_raises_the_same_error(name, monkeypatch):
    bad = REJECTED[name]
    assert bad != DELTA
    lines = [SNAPSHOT, DELTA, b"", bad, DELTAS[1]]  # the bad line is line 4
    want = _outcome(iter_book_history, lines)
    assert want[0] == "error" and want[2].startswith("line 4: "), want
    slow = _full_route_lines(monkeypatch)
    assert _outcome(iter_book_history_floats, lines) == want
    assert slow == [SNAPSHOT, bad]  # the good delta before it went fast


@pytest.mark.parametrize("name", sorted(VALID_UNUSUAL))
def test_a_valid_unusual_line_yields_the_full_parsers_record_as_floats(name, monkeypatch):
    line = VALID_UNUSUAL[name]
    (rec,) = iter_book_history([line])
    slow = _full_route_lines(monkeypatch)
    assert _same(list(iter_book_history_floats([line])), [_floats(rec)])
    assert slow == [line]


def test_no_single_byte_edit_of_a_real_delta_makes_the_readers_disagree(monkeypatch):
    slow = _full_route_lines(monkeypatch)  # the float reader's hand-offs only
    fast = valid_slow = rejected = 0
    for mutated in byte_edits(SHORT):
        want = _outcome(iter_book_history, [mutated])
        before = len(slow)
        got = _outcome(iter_book_history_floats, [mutated])
        if want[0] == "error":
            rejected += 1
            assert got == want, mutated  # never accepted, and the same error
            continue
        assert got[0] == "ok" and _same(got[1], [_floats(r) for r in want[1]]), mutated
        if len(slow) == before:
            fast += 1
        else:
            valid_slow += 1
    # harmless edits (other digits...) still go fast, valid re-spellings (a space) take the
    # full parser, and most edits are rejected
    assert fast > 100 and valid_slow > 10 and rejected > 1000


#: local exchange days (``venues/bybit/book_file.py``: the websocket's own messages): a moving
#: 20-level book with book-service restarts (snapshots mid-file), and a book deeper than 200
LOCAL_DAYS = {
    "restarts": (dict(book_levels=20, book_step_ms=60_000), "BTCUSDT", (1, 700, 1_439)),
    "deep": (dict(book_levels=300, book_step_ms=240_000), "XRPUSDT", ()),
}


@pytest.mark.parametrize("case", sorted(LOCAL_DAYS))
def test_every_local_exchange_delta_takes_the_fast_route(case, monkeypatch):
    knobs, symbol, offsets = LOCAL_DAYS[case]
    day = dt.date(2024, 1, 2)
    formats = BybitFormats(Market(MarketConfig(seed=5, symbols=(symbol,), **knobs)))
    first = day_start_ms(day) // formats.market.book_step_ms
    restarts = tuple(first + k for k in offsets)
    origins = (formats.market.start_ms // formats.market.book_step_ms - 1, *restarts)
    data = book_history_zip(
        formats, symbol, day, lambda s: s - max(o for o in origins if o <= s) + 1, restarts
    )
    history = BookHistory(data, member_name(symbol, day))
    full = [_floats(r) for r in history.exact()]
    slow = _full_route_lines(monkeypatch)
    assert _same(list(history), full)
    snapshots = [r for r in full if type(r) is DepthSnapshotRecord]
    assert len(slow) == len(snapshots) == 1 + len(restarts)
    assert all(b'"type":"snapshot"' in x for x in slow) and len(full) > 300


def test_a_bad_line_in_the_zip_raises_the_same_from_both_readers():
    bad = REJECTED["ts a string"]
    history = BookHistory(_zip("x.data", b"\r\n".join([SNAPSHOT, DELTA, bad, b""])), "x.zip")
    errors = []
    for read in (history.exact, history.__iter__):
        with pytest.raises(MessageError) as err:
            list(read())
        errors.append((type(err.value), err.value.reason, err.value.field, err.value.raw))
    assert errors[0] == errors[1] and errors[0][1].startswith("line 3: Expected `int`, got `str`")


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def test_client_paths_404_retry_and_book_depth_fallback():
    day = dt.date(2026, 8, 9)
    with FakeServer() as server:
        server.routes["/trading/BTCUSDT/BTCUSDT2026-08-09.csv.gz"] = [
            Reply(503, b""),
            Reply(200, CSV_GZ),
        ]
        server.routes["/orderbook/linear/XRPUSDT/2024-12-01_XRPUSDT_ob500.data.zip"] = [
            Reply(200, _zip("2024-12-01_XRPUSDT_ob500.data", BOOK))
        ]
        client = BybitArchiveClient(
            server.url, RestSettings(max_retries=2), rng=lambda: 1.0, sleep=lambda s: None
        )
        assert len(client.daily_agg_trades("BTCUSDT", day)) == 56
        assert client.sleeps == [0.5]
        assert client.daily_agg_trades("BTCUSDT", day + dt.timedelta(days=1)) is None
        records = client.daily_book_records("XRPUSDT", dt.date(2024, 12, 1))
        assert records is not None and len(records) == 50
        assert client.daily_book_records("XRPUSDT", dt.date(2024, 12, 2)) is None
        assert (
            client.daily_klines("BTCUSDT", day) is None
            and client.daily_funding("BTCUSDT", day) is None
        )
        paths = server.paths()
    book = "/orderbook/linear/XRPUSDT/2024-12-0{}_XRPUSDT_ob{}.data.zip"
    assert paths[-4:] == [
        book.format(1, 200),
        book.format(1, 500),
        book.format(2, 200),
        book.format(2, 500),
    ]


def test_live_book_history_has_its_own_host():
    client = BybitArchiveClient()
    assert client.base_url == "https://public.bybit.com"
    assert client.book_base_url == "https://quote-saver.bycsi.com"
    assert BybitArchiveClient("http://127.0.0.1:1").book_base_url == "http://127.0.0.1:1"
