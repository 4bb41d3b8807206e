"""The Petrosa socket-client's streams and envelope in the Binance USD-M adapter.

Parsers are checked value by value against recorded ``@trade`` frames and Binance's documented
``@depth20@100ms`` and ``@ticker`` examples (``fixtures/binance_socket/PROVENANCE.md``), plain and
inside the socket-client's envelope (keys in other orders, trace-context keys added); the local
exchange's payloads of these streams are held to the same key sets and order.
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from petrosa_pipelines.exchanges.base import (
    DepthSnapshotRecord,
    DepthUpdateRecord,
    MessageError,
    RawTradeRecord,
    TickerRecord,
    TradeRecord,
    TradeType,
)
from petrosa_pipelines.exchanges.binance.adapter import (
    SOCKET_CLIENT_PROFILE,
    STREAM_PROFILES,
    BinanceUsdmAdapter,
    envelope_received_at,
)
from petrosa_pipelines.exchanges.binance.schemas import iso_to_ms
from petrosa_pipelines.local_exchange import MarketConfig
from petrosa_pipelines.local_exchange.venues.binance.frames import BinanceMarket
from petrosa_pipelines.local_exchange.venues.binance.wire import socket_client_envelope

FIX = Path(__file__).resolve().parents[1] / "fixtures"
SOCKET = FIX / "binance_socket"
TRADES = [
    *(SOCKET / "trade_2023-04-04_first5.jsonl").read_bytes().splitlines(),
    *(SOCKET / "trade_2023-04-05_insurance_fund.jsonl").read_bytes().splitlines(),
]
(DEPTH20,) = (SOCKET / "depth20_docs_example.jsonl").read_bytes().splitlines()
(TICKER,) = (SOCKET / "ticker_docs_example.jsonl").read_bytes().splitlines()
RECV = 1_680_652_900_123
TRACE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "b3": "x"}


def _shuffled(frame: bytes, receipt_ms: int, seed: int) -> bytes:
    """An envelope with every top-level key in a random order (``stream`` anywhere)."""
    env = orjson.loads(socket_client_envelope(frame, receipt_ms, extra=TRACE, message_id="m1"))
    keys = list(env)
    random.Random(seed).shuffle(keys)
    return orjson.dumps({k: env[k] for k in keys})


def _variants(frame: bytes) -> list[bytes]:
    """The plain frame and the forms the socket-client may publish it in."""
    return [
        frame,
        socket_client_envelope(frame, RECV),
        socket_client_envelope(frame, RECV, extra=TRACE, stream_first=False),
        *(_shuffled(frame, RECV, seed) for seed in range(3)),
    ]


def _expected_trade(frame: bytes, received_at: int) -> RawTradeRecord:
    d = orjson.loads(frame)["data"]
    return RawTradeRecord(
        "binance", d["s"], d["t"], Decimal(d["p"]), Decimal(d["q"]), d["T"], d["m"],
        d["X"], d["E"], "ws", received_at,
    )  # fmt: skip


@pytest.mark.parametrize("frame", TRADES, ids=lambda f: str(orjson.loads(f)["data"]["t"]))
def test_raw_trades_parse_exactly_plain_and_enveloped(frame):
    adapter = BinanceUsdmAdapter()
    want = _expected_trade(frame, 7)
    for raw in _variants(frame):
        assert adapter.parse(raw, 7) == want
        assert adapter.parse_frame(raw, 7) == [want]
        assert adapter.frame_stream(raw) == ("BTCUSDT", "btcusdt@trade", True)


def test_a_non_market_print_is_kept_and_marked():
    adapter = BinanceUsdmAdapter(SOCKET_CLIENT_PROFILE)
    recs = [adapter.parse(socket_client_envelope(f, RECV, extra=TRACE), RECV + 5) for f in TRADES]
    fund = [r for r in recs if not r.is_market]
    assert [(r.trade_id, r.trade_type, r.price) for r in fund] == [
        (3535191080, TradeType.INSURANCE_FUND, Decimal("28722.50"))
    ]
    assert all(type(r) is RawTradeRecord for r in recs)  # never an aggregate trade
    assert not any(type(r) is TradeRecord for r in recs)


def test_the_envelope_timestamp_is_the_senders_receipt_time():
    adapter = BinanceUsdmAdapter()
    for raw in _variants(TRADES[0])[1:]:
        assert adapter.sender_received_at(raw) == RECV
        assert envelope_received_at(raw) == RECV
    assert adapter.sender_received_at(TRADES[0]) is None  # a plain frame has none
    bad = TRADES[0][:-1] + b',"timestamp":"yesterday"}'
    assert envelope_received_at(bad) is None
    assert iso_to_ms("2023-04-05T00:01:14.406000Z") == 1_680_652_874_406
    assert iso_to_ms("2023-04-05T00:01:14.406") == 1_680_652_874_406  # naive: UTC
    assert iso_to_ms("2023-04-05T02:01:14.406+02:00") == 1_680_652_874_406
    assert iso_to_ms("not a time") is None


def test_partial_depth_is_an_in_stream_snapshot_with_its_pu():
    adapter = BinanceUsdmAdapter()
    d = orjson.loads(DEPTH20)["data"]
    want = DepthSnapshotRecord(
        exchange="binance",
        symbol="BTCUSDT",
        last_update_id=390497878,
        event_time=1571889248277,
        transaction_time=1571889248276,
        bids=tuple((Decimal(p), Decimal(q)) for p, q in d["b"]),
        asks=tuple((Decimal(p), Decimal(q)) for p, q in d["a"]),
        received_at=9,
        prev_update_id=390497794,
        in_stream=True,
    )
    for raw in _variants(DEPTH20):
        assert adapter.parse(raw, 9) == want
        assert adapter.frame_stream(raw) == ("BTCUSDT", "btcusdt@depth20@100ms", True)
    assert want.bids[0] == (Decimal("7403.89"), Decimal("0.002"))
    # the same payload on the diff stream is a diff, and as a bare /ws payload too (no name)
    diff = DEPTH20.replace(b"@depth20@100ms", b"@depth@100ms")
    assert type(adapter.parse(diff, 9)) is DepthUpdateRecord
    assert type(adapter.parse(orjson.dumps(d), 9)) is DepthUpdateRecord
    for name in (b"@depth5", b"@depth10@500ms", b"@depth20"):
        rec = adapter.parse(DEPTH20.replace(b"@depth20@100ms", name), 9)
        assert type(rec) is DepthSnapshotRecord and rec.in_stream


def test_a_bad_partial_depth_level_names_its_field():
    bad = DEPTH20.replace(b'["7403.90","3.906"]', b'["-7403.90","3.906"]')
    for raw in _variants(bad):
        with pytest.raises(MessageError) as err:
            BinanceUsdmAdapter().parse(raw, 1)
        assert err.value.field == "data.b[1][0]"


def test_ticker_parses_exactly_plain_and_enveloped():
    adapter = BinanceUsdmAdapter()
    want = TickerRecord(
        "binance", "BNBUSDT", 123456789, Decimal("0.0025"), Decimal("10"), Decimal("0.0010"),
        Decimal("0.0025"), Decimal("0.0010"), Decimal("10000"), Decimal("18"), 0, 86400000,
        0, 18150, 18151, 3,
    )  # fmt: skip
    for raw in _variants(TICKER):
        assert adapter.parse(raw, 3) == want
        assert adapter.frame_stream(raw) == ("BNBUSDT", "bnbusdt@ticker", True)


def test_stream_profiles_name_the_socket_clients_streams():
    sc = BinanceUsdmAdapter(stream_profile="socket-client")
    assert sc.stream_names(["BTCUSDT", "ETHUSDT"], ["trades", "depth", sc.liveness_stream]) == [
        "btcusdt@trade", "btcusdt@depth20@100ms", "btcusdt@ticker",
        "ethusdt@trade", "ethusdt@depth20@100ms", "ethusdt@ticker",
    ]  # fmt: skip
    assert sc.stream_record_type("trades") is RawTradeRecord
    assert sc.stream_record_type("ticker") is TickerRecord
    ex = BinanceUsdmAdapter()
    assert ex.liveness_stream == "funding" and ex.stream_record_type("trades") is TradeRecord
    assert ex.stream_names(["BTCUSDT"], ["trades", "depth"]) == [
        "btcusdt@aggTrade",
        "btcusdt@depth@100ms",
    ]
    assert BinanceUsdmAdapter.channels == STREAM_PROFILES["exchange"]  # the class is unchanged
    with pytest.raises(ValueError, match="stream profile 'socket-client'"):
        sc.stream_names(["BTCUSDT"], ["candles"])
    with pytest.raises(ValueError, match="stream_profile 'nats'"):
        BinanceUsdmAdapter(stream_profile="nats")
    assert BinanceUsdmAdapter.stream_profiles == ("exchange", "socket-client")
    assert BinanceUsdmAdapter.profile_datasets("socket-client") == {"trades", "depth"}
    assert BinanceUsdmAdapter.profile_datasets("exchange") == {
        "trades",
        "candles",
        "depth",
        "funding",
    }


def test_the_fast_path_vouches_for_enveloped_trades_and_never_for_partial_depth():
    fast = BinanceUsdmAdapter().fast_path()
    agg = (FIX / "binance/ws/cryptofeed_2021-04-17/aggTrade.jsonl").read_bytes().splitlines()[0]
    plain = fast.decode(agg, 1)
    assert plain[0] is TradeRecord
    for raw in _variants(agg)[1:]:
        assert fast.decode(raw, 1) == plain  # same tuple: the envelope's keys are skipped
    for raw in _variants(DEPTH20):
        assert fast.decode(raw, 1) is None  # a snapshot: the full parser builds it
    diff = (FIX / "binance/ws/cryptofeed_2021-04-17/depthUpdate.jsonl").read_bytes().splitlines()
    assert fast.decode(diff[0], 1)[0] is DepthUpdateRecord
    assert fast.decode(socket_client_envelope(diff[0], RECV), 1) is None  # not canonical
    for raw in TRADES + [TICKER]:
        assert fast.decode(raw, 1) is None


# -- the local exchange serves these streams in Binance's formats ---------------------------------

MARKET = MarketConfig(seed=3, symbols=("BTCUSDT", "ETHUSDT"), trades_per_day=200_000)
T0 = 1_704_240_000_000  # 2024-01-03T00:00:00Z


@pytest.fixture(scope="module")
def market():
    return BinanceMarket(MARKET)


def test_local_raw_trades_expand_the_aggtrades_with_consecutive_ids(market):
    start, end = T0 + 3_600_000, T0 + 3_660_000
    trades = market.trade_events("BTCUSDT", start, end)
    aggs = market.agg_trade_events("BTCUSDT", start, end)
    want_keys = list(orjson.loads(TRADES[0])["data"])
    assert trades and all(list(t) == want_keys for t in trades)
    ids = [t["t"] for t in trades]
    assert ids == list(range(aggs[0]["f"], aggs[-1]["l"] + 1))
    adapter = BinanceUsdmAdapter()
    by_id = {a["f"]: a for a in aggs}
    for t in trades:
        rec = adapter.parse(orjson.dumps({"stream": "btcusdt@trade", "data": t}), 1)
        assert type(rec) is RawTradeRecord and rec.trade_type == "MARKET"
        a = by_id.get(t["t"])
        if a is not None:  # the first raw trade of each aggTrade
            assert (t["p"], t["T"], t["m"]) == (a["p"], a["T"], a["m"])


def test_local_partial_depth_is_the_books_top20_with_continuous_ids(market):
    msgs = market.partial_depth_events("BTCUSDT", T0 + 10_000, T0 + 12_000)
    assert len(msgs) == 20
    assert all(list(m) == list(orjson.loads(DEPTH20)["data"]) for m in msgs)
    assert all(m["pu"] == p["u"] for p, m in zip(msgs, msgs[1:], strict=False))
    adapter = BinanceUsdmAdapter()
    for m in msgs:
        assert len(m["b"]) == len(m["a"]) == 20
        rest = market.book("BTCUSDT", m["T"], limit=20)
        assert (m["b"], m["a"], m["u"]) == (rest["bids"], rest["asks"], rest["lastUpdateId"])
        rec = adapter.parse(orjson.dumps({"stream": "btcusdt@depth20@100ms", "data": m}), 1)
        assert type(rec) is DepthSnapshotRecord and rec.prev_update_id == m["pu"]


def test_local_ticker_has_binances_fields_and_the_days_statistics(market):
    (msg,) = market.ticker_events("BTCUSDT", T0 + 7_199_000, T0 + 7_200_000)
    assert list(msg) == list(orjson.loads(TICKER)["data"])
    at = T0 + 7_200_000
    aggs = market.agg_trade_events("BTCUSDT", at - 86_400_000, at)
    assert msg["c"] == aggs[-1]["p"] and msg["o"] == aggs[0]["p"]
    assert msg["h"] == max(aggs, key=lambda a: Decimal(a["p"]))["p"]
    assert Decimal(msg["v"]) == sum(Decimal(a["q"]) for a in aggs)
    assert (msg["F"], msg["L"]) == (aggs[0]["f"], aggs[-1]["l"])
    assert msg["n"] == msg["L"] - msg["F"] + 1
    rec = BinanceUsdmAdapter().parse(orjson.dumps({"stream": "btcusdt@ticker", "data": msg}), 1)
    assert type(rec) is TickerRecord and str(rec.last_price) == msg["c"]


def test_socket_client_envelope_keeps_the_frame_and_rejects_non_frames():
    env = orjson.loads(socket_client_envelope(TRADES[0], RECV, message_id="abc", extra=TRACE))
    frame = orjson.loads(TRADES[0])
    assert env["stream"] == frame["stream"] and env["data"] == frame["data"]
    assert (env["message_id"], env["source"], env["version"]) == ("abc", "binance-websocket", "1.0")
    assert env["timestamp"] == "2023-04-05T00:01:40.123000Z"
    assert env["traceparent"] == TRACE["traceparent"]
    with pytest.raises(ValueError, match="combined-stream frame"):
        socket_client_envelope(orjson.dumps(frame["data"]), RECV)
