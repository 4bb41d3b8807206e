"""BybitLinearAdapter on the real recorded v5 linear messages: exact fields, book replay,
ticker merging, the subscribe protocol, and malformed frames naming their field."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    DepthSnapshotRecord,
    DepthUpdateRecord,
    MarkPriceRecord,
    MessageError,
    TradeRecord,
    UnknownMessageError,
)
from petrosa_pipelines.exchanges.bybit.adapter import (
    MAX_ARGS_PER_REQUEST,
    BybitLinearAdapter,
    MultiRecordFrameError,
)

pytestmark = pytest.mark.playback

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bybit"
WS = FIXTURES / "ws" / "cryptofeed_2026-08-09"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT")


def _lines(name: str) -> list[bytes]:
    return (WS / f"linear_{name}.jsonl").read_bytes().splitlines()


# -- trades -------------------------------------------------------------------------------------


def test_every_trade_exact_against_its_raw_json():
    adapter = BybitLinearAdapter()
    n_trades = 0
    ids: set[str] = set()
    for line in _lines("publicTrade"):
        raw = json.loads(line)
        records = adapter.parse_frame(line, received_at=123)
        assert len(records) == len(raw["data"])
        for n, (rec, t) in enumerate(zip(records, raw["data"], strict=True)):
            agg = t["seq"] * 1000 + n
            assert rec == TradeRecord(
                exchange="bybit-linear",
                symbol=raw["topic"].split(".")[1],
                agg_trade_id=agg,
                price=Decimal(t["p"]),
                quantity=Decimal(t["v"]),
                first_trade_id=agg,
                last_trade_id=agg,
                trade_time=t["T"],
                is_buyer_maker=t["S"] == "Sell",
                event_time=raw["ts"],
                source="ws",
                received_at=123,
                trade_id=t["i"],
            )
            assert str(rec.price) == t["p"]  # zero padding kept (quirk 25)
            ids.add(t["i"])
            n_trades += 1
    assert n_trades == 327 and len(ids) == 327


def test_parse_keeps_one_record_contract_and_never_drops_fills():
    adapter = BybitLinearAdapter()
    single = next(line for line in _lines("publicTrade") if len(json.loads(line)["data"]) == 1)
    multi = next(line for line in _lines("publicTrade") if len(json.loads(line)["data"]) == 46)
    assert isinstance(adapter.parse(single), TradeRecord)
    with pytest.raises(MultiRecordFrameError) as err:
        adapter.parse(multi)
    assert err.value.field == "data"
    assert err.value.records == adapter.parse_frame(multi)
    assert len(err.value.records) == 46


def test_parse_many_flattens_frames_and_collects_errors():
    adapter = BybitLinearAdapter()
    lines = _lines("publicTrade")
    records, errors = adapter.parse_many([*lines, b"not json", (lines[0], 7)])
    assert len(records) == 327 + 1 and records[-1].received_at == 7
    assert [e.field for e in errors] == ["<message>"]


# -- candles ------------------------------------------------------------------------------------


def test_klines_exact_and_minute_roll_gives_closed_and_new_candle():
    adapter = BybitLinearAdapter()
    candles: list[CandleRecord] = []
    for line in _lines("kline"):
        raw = json.loads(line)
        got = adapter.parse_frame(line)
        for rec, k in zip(got, raw["data"], strict=True):
            assert (rec.open_time, rec.close_time, rec.is_closed) == (
                k["start"],
                k["end"],
                k["confirm"],
            )
            assert (rec.open, rec.high, rec.low, rec.close) == tuple(
                Decimal(k[f]) for f in ("open", "high", "low", "close")
            )
            assert (rec.volume, rec.quote_volume) == (Decimal(k["volume"]), Decimal(k["turnover"]))
            assert rec.interval == "1m" and rec.event_time == raw["ts"]
            # Bybit publishes no trade count or taker-buy volume
            assert (rec.trade_count, rec.taker_buy_volume, rec.taker_buy_quote_volume) == (0, 0, 0)
        candles.extend(got)
    assert len(candles) == 75
    closed = [c for c in candles if c.is_closed]
    assert sorted(c.symbol for c in closed) == sorted(SYMBOLS)
    eth = next(c for c in closed if c.symbol == "ETHUSDT")
    assert (eth.open_time, eth.close, eth.volume) == (
        1786310760000,
        Decimal("1922.48"),
        Decimal("15.7"),
    )


# -- book ---------------------------------------------------------------------------------------


def _apply(side: dict[Decimal, Decimal], levels) -> None:
    for p, q in levels:
        if q == 0:
            assert p in side, "a delete is only ever for a known level (quirk 23)"
            del side[p]
        else:
            side[p] = q


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_orderbook_replay_keeps_200_levels_never_crosses_and_u_is_continuous(symbol):
    adapter = BybitLinearAdapter()
    lines = [line for line in _lines("orderbook") if f'"orderbook.200.{symbol}"'.encode() in line]
    records = [adapter.parse(line) for line in lines]
    first, rest = records[0], records[1:]
    assert isinstance(first, DepthSnapshotRecord) and len(first.bids) == len(first.asks) == 200
    assert all(isinstance(r, DepthUpdateRecord) for r in rest)
    bids, asks = dict(first.bids), dict(first.asks)
    last_u = first.last_update_id
    for rec, line in zip(rest, lines[1:], strict=True):
        raw = json.loads(line)
        assert rec.first_update_id == rec.final_update_id == raw["data"]["u"]
        assert rec.prev_final_update_id == last_u  # u rises by exactly 1 (quirk 21)
        assert (rec.event_time, rec.transaction_time) == (raw["ts"], raw["cts"])
        last_u = rec.final_update_id
        _apply(bids, rec.bids)
        _apply(asks, rec.asks)
        assert len(bids) == len(asks) == 200
        assert max(bids) < min(asks)
    assert adapter.book_seq[symbol] == json.loads(lines[-1])["data"]["seq"]


def test_orderbook_snapshot_levels_exact():
    line = _lines("orderbook")[0]
    raw = json.loads(line)
    snap = BybitLinearAdapter().parse(line)
    assert snap.last_update_id == raw["data"]["u"]
    assert snap.bids == tuple((Decimal(p), Decimal(q)) for p, q in raw["data"]["b"])
    assert snap.asks == tuple((Decimal(p), Decimal(q)) for p, q in raw["data"]["a"])


# -- tickers ------------------------------------------------------------------------------------


def test_tickers_merge_deltas_into_complete_mark_price_records():
    adapter = BybitLinearAdapter()
    state: dict[str, dict[str, str]] = {}
    emitted = 0
    for line in _lines("tickers"):
        raw = json.loads(line)
        d = raw["data"]
        fields = {
            k: d[k] for k in ("markPrice", "indexPrice", "fundingRate", "nextFundingTime") if k in d
        }
        if raw["type"] == "snapshot":
            state[d["symbol"]] = dict(fields)
        else:
            state[d["symbol"]].update(fields)
        got = adapter.parse_frame(line, received_at=5)
        if not fields:
            assert got == []
            continue
        s = state[d["symbol"]]
        assert got == [
            MarkPriceRecord(
                exchange="bybit-linear",
                symbol=d["symbol"],
                event_time=raw["ts"],
                mark_price=Decimal(s["markPrice"]),
                index_price=Decimal(s["indexPrice"]),
                estimated_settle_price=None,
                funding_rate=Decimal(s["fundingRate"]),
                next_funding_time=int(s["nextFundingTime"]),
                received_at=5,
            )
        ]
        emitted += 1
    assert emitted == 140


def test_ticker_delta_before_any_snapshot_yields_nothing():
    delta = next(
        line for line in _lines("tickers") if b'"delta"' in line and b"markPrice" not in line
    )
    assert BybitLinearAdapter().parse_frame(delta) == []


def test_control_frames_are_none():
    adapter = BybitLinearAdapter()
    pong = b'{"success":true,"ret_msg":"pong","conn_id":"x","req_id":"","op":"ping"}'
    for line in [*_lines("control"), pong, b'{"op":"pong","args":["1672916271846"]}']:
        assert adapter.parse(line) is None


# -- protocol -----------------------------------------------------------------------------------


def test_topics_subscribe_frames_chunked_and_ping():
    adapter = BybitLinearAdapter()
    topics = adapter.stream_names(SYMBOLS, ["trades", "candles", "depth", "funding"])
    assert topics[:4] == [
        "publicTrade.BTCUSDT",
        "kline.1.BTCUSDT",
        "orderbook.50.BTCUSDT",
        "tickers.BTCUSDT",
    ]
    assert adapter.combined_stream_url("wss://stream.bybit.com/", topics) == (
        "wss://stream.bybit.com/v5/public/linear"
    )
    frames = [orjson.loads(f) for f in adapter.initial_messages(topics, 40)]
    assert [len(f["args"]) for f in frames] == [10, 6]
    assert [f["req_id"] for f in frames] == ["40", "41"]
    assert all(f["op"] == "subscribe" for f in frames)
    assert [a for f in frames for a in f["args"]] == topics
    assert orjson.loads(adapter.ping_message()) == {"op": "ping"}
    assert orjson.loads(adapter.unsubscribe_message(topics[:2], 3)) == {
        "op": "unsubscribe",
        "args": topics[:2],
        "req_id": "3",
    }
    with pytest.raises(ValueError, match="per request"):
        adapter.subscribe_message(topics, 1)
    assert len(topics) > MAX_ARGS_PER_REQUEST


def test_depth_is_configurable_and_checked():
    assert BybitLinearAdapter(depth=200).stream_names(["BTCUSDT"], ["depth"]) == [
        "orderbook.200.BTCUSDT"
    ]
    with pytest.raises(ValueError, match="depth"):
        BybitLinearAdapter(depth=25)
    with pytest.raises(ValueError, match="symbol"):
        BybitLinearAdapter().stream_names(["btc usdt"], ["trades"])


def test_symbol_pattern_accepts_every_instrument_of_instruments_info():
    body = json.loads((FIXTURES / "rest" / "instruments-info_linear_cut.json").read_bytes())
    symbols = [row["symbol"] for row in body["result"]["list"]]
    assert {"1000PEPEUSDT", "BTCPERP", "BTCUSDT-25DEC26"} <= set(symbols)
    pattern = BybitLinearAdapter.symbol_pattern
    assert all(pattern.fullmatch(s) for s in symbols)
    assert not any(pattern.fullmatch(s) for s in ("btcusdt", "BTC-USDT-SWAP", "B", "BTC/USDT"))


# -- malformed ----------------------------------------------------------------------------------

_TRADE = json.loads(_lines("publicTrade")[0])
_BOOK = json.loads(_lines("orderbook")[1])
_KLINE = json.loads(_lines("kline")[0])
_TICKER = json.loads(_lines("tickers")[0])


def _with(msg: dict, path: list, value) -> bytes:
    msg = json.loads(json.dumps(msg))
    target = msg
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(msg, separators=(",", ":")).encode()


_DELETE = object()

MALFORMED = [
    (_with(_TRADE, ["data", 0, "p"], "abc"), "data[0].p"),
    (_with(_TRADE, ["data", 0, "p"], "-1"), "data[0].p"),
    (_with(_TRADE, ["data", 0, "v"], "0"), "data[0].v"),
    (_with(_TRADE, ["data", 0, "p"], "NaN"), "data[0].p"),
    (_with(_TRADE, ["data", 0, "T"], _DELETE), "data[0].T"),
    (_with(_TRADE, ["data", 0, "S"], "Up"), "data[0].S"),
    (_with(_TRADE, ["data", 0, "s"], "ETHUSDT"), "data[0].s"),
    (_with(_TRADE, ["data", 0, "i"], ""), "data[0].i"),
    (_with(_TRADE, ["data", 0, "seq"], -5), "data[0].seq"),
    (_with(_BOOK, ["data", "s"], "ETHUSDT"), "data.s"),
    (_with(_BOOK, ["data", "b"], [["65000.1", "-1"]]), "data.b[0][1]"),
    (_with(_BOOK, ["data", "a"], [["0", "1"]]), "data.a[0][0]"),
    (_with(_BOOK, ["data", "u"], "15076953"), "data.u"),
    (_with(_BOOK, ["type"], "partial"), "type"),
    (_with(_BOOK, ["ts"], 10**15), "ts"),
    (_with(_KLINE, ["data", 0, "interval"], "7"), "data[0].interval"),
    (_with(_KLINE, ["data", 0, "high"], "0"), "data[0].high"),
    (_with(_KLINE, ["data", 0, "confirm"], "yes"), "data[0].confirm"),
    (_with(_TICKER, ["data", "fundingRate"], "2"), "data.fundingRate"),
    (_with(_TICKER, ["data", "nextFundingTime"], "soon"), "data.nextFundingTime"),
    (_with(_TICKER, ["data", "symbol"], "ETHUSDT"), "data.symbol"),
    (_with(_TRADE, ["topic"], "publicTrade"), "topic"),
    (b'{"topic": 5}', "topic"),
    (b'{"success":false,"ret_msg":"error:handler not found","op":"subscribe"}', "success"),
    (b"\xff\xfe", "<message>"),
    (b"[" * 100_000, "<message>"),
    (b"{}", "<message>"),
]


@pytest.mark.parametrize(("raw", "field"), MALFORMED, ids=[f for _, f in MALFORMED])
def test_malformed_frames_name_their_field(raw, field):
    with pytest.raises(MessageError) as err:
        BybitLinearAdapter().parse_frame(raw)
    assert err.value.field == field
    assert err.value.raw is not None


def test_unknown_topic_is_unknown_message():
    raw = b'{"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":1,"data":[]}'
    with pytest.raises(UnknownMessageError) as err:
        BybitLinearAdapter().parse_frame(raw)
    assert err.value.field == "topic"


def test_reserialised_frame_with_spaces_parses_the_same():
    line = _lines("publicTrade")[1]
    spaced = json.dumps(json.loads(line), indent=1).encode()
    adapter = BybitLinearAdapter()
    assert adapter.parse_frame(spaced) == adapter.parse_frame(line)
    assert adapter.parse_frame(line.decode()) == adapter.parse_frame(line)
