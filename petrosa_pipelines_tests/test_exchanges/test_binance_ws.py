"""Binance USD-M websocket parsing, on real recorded messages (fixtures/binance/PROVENANCE.md)."""

from __future__ import annotations

import subprocess
import sys
import types
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petrosa_pipelines.exchanges.base import (
    BookTickerRecord,
    CandleRecord,
    DepthUpdateRecord,
    MarkPriceRecord,
    MessageError,
    RawTradeRecord,
    TradeRecord,
    UnknownMessageError,
)
from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter
from petrosa_pipelines.settings import ExchangeEndpoints, RestSettings, Settings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
WS = REPO / "petrosa_pipelines_tests" / "fixtures" / "binance" / "ws"
ADAPTER = BinanceUsdmAdapter()

RECORD_TYPE_BY_EVENT = {
    "aggTrade": TradeRecord,
    "kline": CandleRecord,
    "depthUpdate": DepthUpdateRecord,
    "markPriceUpdate": MarkPriceRecord,
    "trade": RawTradeRecord,  # raw @trade and bookTicker: test_raw_trades.py checks values
    "bookTicker": BookTickerRecord,
}
SUPPORTED = sorted(WS.glob("*/*.jsonl"))
#: a real Binance event type we do not parse (a liquidation order)
FORCE_ORDER = b'{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893}}'


def frames(path: Path) -> list[bytes]:
    """Each line exactly as recorded, without the newline the recorder appended."""
    return [line.rstrip(b"\n") for line in path.read_bytes().splitlines(keepends=True)]


def frames_of(event: str) -> list[bytes]:
    return [f for p in SUPPORTED for f in frames(p) if orjson.loads(f)["data"]["e"] == event]


def test_fixtures_present():
    assert len(SUPPORTED) == 11


# --- every real message parses, values exact -------------------------------------------------


@pytest.mark.parametrize("path", SUPPORTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_real_message_parses(path):
    for raw in frames(path):
        data = orjson.loads(raw)["data"]
        record = ADAPTER.parse(raw, received_at=123)
        assert type(record) is RECORD_TYPE_BY_EVENT[data["e"]]
        assert record.exchange == "binance" and record.symbol == data["s"]
        assert record.received_at == 123


def test_unhandled_events_are_unknown():
    with pytest.raises(UnknownMessageError) as err:
        ADAPTER.parse(FORCE_ORDER)
    assert err.value.field == "data.e" and err.value.raw == FORCE_ORDER


def test_agg_trade_values_exact():
    for raw in frames_of("aggTrade"):
        d = orjson.loads(raw)["data"]
        r = ADAPTER.parse(raw)
        assert str(r.price) == d["p"] and str(r.quantity) == d["q"]  # not even trailing zeros lost
        assert (r.agg_trade_id, r.first_trade_id, r.last_trade_id) == (d["a"], d["f"], d["l"])
        assert (r.trade_time, r.event_time, r.is_buyer_maker) == (d["T"], d["E"], d["m"])
        assert r.source == "ws"


def test_kline_values_exact():
    for raw in frames_of("kline"):
        k = orjson.loads(raw)["data"]["k"]
        r = ADAPTER.parse(raw)
        assert (r.interval, r.open_time, r.close_time, r.is_closed) == (
            k["i"],
            k["t"],
            k["T"],
            k["x"],
        )
        assert r.close_time == r.open_time + 59_999  # quirk 11
        got = (r.open, r.high, r.low, r.close, r.volume, r.quote_volume)
        assert [str(v) for v in got] == [k["o"], k["h"], k["l"], k["c"], k["v"], k["q"]]
        assert (str(r.taker_buy_volume), str(r.taker_buy_quote_volume)) == (k["V"], k["Q"])
        assert r.trade_count == k["n"]


def test_depth_values_exact_and_pu_chain():
    last_u: dict[tuple[str, str], int] = {}
    for path in SUPPORTED:
        if "depthUpdate" not in path.name:
            continue
        for raw in frames(path):
            d = orjson.loads(raw)["data"]
            r = ADAPTER.parse(raw)
            assert [(str(p), str(q)) for p, q in r.bids] == [tuple(x) for x in d["b"]]
            assert [(str(p), str(q)) for p, q in r.asks] == [tuple(x) for x in d["a"]]
            assert isinstance(r.bids, tuple) and all(isinstance(x, tuple) for x in r.bids)
            assert (r.first_update_id, r.final_update_id) == (d["U"], d["u"])
            assert (r.event_time, r.transaction_time) == (d["E"], d["T"])
            key = (path.parent.name, r.symbol)
            if key in last_u:  # quirk 3: ids are one global sequence; continuity is pu == prev u
                assert r.prev_final_update_id == last_u[key]
            last_u[key] = r.final_update_id
    btc = ADAPTER.parse(
        frames(WS / "hftbacktest_2023-04-04" / "BTCUSDT_depthUpdate_first500.jsonl")[0]
    )
    assert btc.final_update_id > 2**32  # int64 needed


def test_mark_price_values_and_funding_boundary():
    rows = frames(WS / "hftbacktest_2023-04-04" / "BTCUSDT_markPriceUpdate.jsonl")
    records = [ADAPTER.parse(raw) for raw in rows]
    for raw, r in zip(rows, records, strict=True):
        d = orjson.loads(raw)["data"]
        assert str(r.mark_price) == d["p"] and str(r.index_price) == d["i"]
        assert str(r.estimated_settle_price) == d["P"] and str(r.funding_rate) == d["r"]
        assert r.next_funding_time == d["T"] and r.event_time == d["E"]
    last = records[-1]  # quirk 8: last pre-settlement sample
    assert (last.event_time, last.funding_rate, last.next_funding_time) == (
        1680652799001,
        Decimal("0.00002754"),
        1680652800000,
    )


def test_mark_price_empty_strings_and_zero_next_funding_are_none():
    raw = (
        b'{"stream":"btcusdt_230630@markPrice@1s","data":{"e":"markPriceUpdate","E":1680652701000,'
        b'"s":"BTCUSDT_230630","p":"28147.2","P":"","i":"","r":"","T":0}}'
    )
    r = ADAPTER.parse(raw)
    assert (r.funding_rate, r.index_price, r.estimated_settle_price, r.next_funding_time) == (
        None,
        None,
        None,
        None,
    )
    negative = raw.replace(b'"r":""', b'"r":"-0.00031250"')
    assert ADAPTER.parse(negative).funding_rate == Decimal("-0.0003125")


# --- numbers ---------------------------------------------------------------------------------


def _all_decimal_strings() -> list[str]:
    out = []
    for path in SUPPORTED:
        for raw in frames(path):
            d = orjson.loads(raw)["data"]
            if d["e"] in ("aggTrade", "trade"):
                out += [d["p"], d["q"]]
            elif d["e"] == "bookTicker":
                out += [d[c] for c in "bBaA"]
            elif d["e"] == "kline":
                out += [d["k"][c] for c in "ochlvqVQ"]
            elif d["e"] == "depthUpdate":
                out += [x for level in d["b"] + d["a"] for x in level]
            else:
                out += [d[c] for c in "pPir"]
    return out


def test_float64_round_trip_of_every_real_decimal():
    """The lake stores float64: the shortest repr must give back the exact decimal."""
    strings = _all_decimal_strings()
    assert len(strings) > 50_000
    for s in strings:
        assert Decimal(repr(float(s))) == Decimal(s), s


def test_zero_quantity_encodings_compare_numerically():
    seen: Counter[str] = Counter()
    for path in SUPPORTED:
        if "depthUpdate" in path.name:
            for raw in frames(path):
                d = orjson.loads(raw)["data"]
                r = ADAPTER.parse(raw)
                for (_, q_text), (_, q) in zip(d["b"] + d["a"], r.bids + r.asks, strict=True):
                    if q == 0:
                        seen[q_text] += 1
    assert {"0", "0.0", "0.000"} <= set(seen)  # quirk 2
    assert Decimal("0") == Decimal("0.0") == Decimal("0.000")


def test_empty_sides():
    empty_bids = empty_asks = 0
    for raw in frames_of("depthUpdate"):
        r = ADAPTER.parse(raw)
        empty_bids += r.bids == ()
        empty_asks += r.asks == ()
    assert empty_bids > 0 and empty_asks > 0  # quirk 5


def test_closed_and_open_klines():
    closed = [ADAPTER.parse(raw) for raw in frames(WS / "cryptofeed_2021-07-22" / "kline.jsonl")]
    assert sum(r.is_closed for r in closed) == 4  # quirk 11
    opened = [ADAPTER.parse(raw) for raw in frames(WS / "cryptofeed_2021-04-17" / "kline.jsonl")]
    assert not any(r.is_closed for r in opened)


# --- frame shapes ----------------------------------------------------------------------------


def test_raw_ws_payload_equals_combined():
    for raw in frames_of("aggTrade")[:20] + frames_of("depthUpdate")[:20] + frames_of("kline")[:20]:
        inner = orjson.dumps(orjson.loads(raw)["data"])
        assert ADAPTER.parse(inner) == ADAPTER.parse(raw)


def test_key_order_spacing_str_and_buffers():
    raw = frames_of("markPriceUpdate")[0]
    msg = orjson.loads(raw)
    reordered = orjson.dumps(
        {"data": msg["data"], "stream": msg["stream"]}, option=orjson.OPT_INDENT_2
    )
    expected = ADAPTER.parse(raw)
    assert ADAPTER.parse(reordered) == expected
    assert ADAPTER.parse(raw.decode()) == expected
    assert ADAPTER.parse(bytearray(raw)) == expected
    assert ADAPTER.parse(memoryview(raw)) == expected
    with pytest.raises(MessageError):
        ADAPTER.parse(12345)  # type: ignore[arg-type]
    with pytest.raises(MessageError):
        ADAPTER.parse('{"stream":"\ud800"}')  # a lone surrogate cannot be UTF-8


def test_symbol_upper_cased():
    raw = frames_of("aggTrade")[0].replace(b'"s":"YFIUSDT"', b'"s":"yfiusdt"')
    assert ADAPTER.parse(raw).symbol == "YFIUSDT"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"result":null,"id":1}',
        b'{ "result" : null , "id" : 7 }',
        b'{"result":["btcusdt@aggTrade"],"id":3}',
        b'{"id":4,"result":null}',
    ],
)
def test_subscription_ack_is_none(raw):
    assert ADAPTER.parse(raw) is None


def test_error_reply_is_a_message_error():
    with pytest.raises(MessageError) as err:
        ADAPTER.parse(b'{"error":{"code":2,"msg":"Invalid request: unknown variant"},"id":1}')
    assert err.value.field == "error" and "Invalid request" in err.value.reason


# --- malformed: MessageError naming the field ----------------------------------------------

AGG = frames_of("aggTrade")[0]
KLINE = frames_of("kline")[0]
DEPTH = frames(WS / "cryptofeed_2021-07-22" / "depthUpdate.jsonl")[0]
MARK = frames_of("markPriceUpdate")[0]


def _edit(raw: bytes, path: str, value: object = ..., *, raw_value: bytes | None = None) -> bytes:
    """The real message with one field replaced (``...`` deletes it)."""
    msg = orjson.loads(raw)
    *parents, leaf = path.split(".")
    node = msg
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if raw_value is not None:
        node[leaf] = "__RAW__"
    elif isinstance(node, list):
        node[int(leaf)] = value
    elif value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    out = orjson.dumps(msg)
    return out.replace(b'"__RAW__"', raw_value) if raw_value is not None else out


MALFORMED = [
    # bad JSON / not an object
    (b'{"stream":"yfiusdt@aggTrade","data":{"e":"aggTr', "<message>"),
    (AGG[:-1], "<message>"),
    (b"", "<message>"),
    (b"\xff\xfe", "<message>"),
    (b"[1,2]", "<message>"),
    (b"null", "<message>"),
    (AGG + b" trailing", "<message>"),
    # wrong types
    (_edit(AGG, "data.a", "52599685"), "data.a"),
    (_edit(AGG, "data.m", "false"), "data.m"),
    (_edit(AGG, "data.p", True), "data.p"),
    (_edit(AGG, "data.T", 1.5), "data.T"),
    (_edit(AGG, "data", None), "data"),
    (_edit(AGG, "data.s", 5), "data.s"),
    (_edit(DEPTH, "data.b", {}), "data.b"),
    (_edit(DEPTH, "data.a.0", ["0.01737"]), "data.a[0]"),
    (_edit(DEPTH, "data.a.0", ["0.01737", "1", "2"]), "data.a[0]"),
    (_edit(KLINE, "data.k.x", "true"), "data.k.x"),
    (_edit(KLINE, "data.k", []), "data.k"),
    # missing fields
    (_edit(AGG, "data.p"), "data.p"),
    (_edit(AGG, "data.e"), "data.e"),
    (_edit(AGG, "data"), "data"),
    (_edit(KLINE, "data.k.x"), "data.k.x"),
    (_edit(DEPTH, "data.u"), "data.u"),
    (_edit(MARK, "data.p"), "data.p"),
    # NaN / infinity / not a decimal
    (_edit(AGG, "data.p", "NaN"), "data.p"),
    (_edit(AGG, "data.p", "sNaN"), "data.p"),
    (_edit(AGG, "data.q", "inf"), "data.q"),
    (_edit(AGG, "data.p", "-Infinity"), "data.p"),
    (_edit(AGG, "data.p", "abc"), "data.p"),
    (_edit(AGG, "data.p", ""), "data.p"),
    (_edit(DEPTH, "data.a.0", ["0.01737", "1x"]), "data.a[0][1]"),
    (_edit(KLINE, "data.k.c", "nan"), "data.k.c"),
    (_edit(MARK, "data.r", "abc"), "data.r"),
    (_edit(MARK, "data.r", "NaN"), "data.r"),
    (_edit(MARK, "data.i", "Infinity"), "data.i"),
    # impossible values
    (_edit(AGG, "data.p", "0"), "data.p"),
    (_edit(AGG, "data.p", "-49966.7"), "data.p"),
    (_edit(AGG, "data.q", "0.000"), "data.q"),
    (_edit(AGG, "data.p", "1e400"), "data.p"),
    (_edit(DEPTH, "data.a.0", ["0", "437848"]), "data.a[0][0]"),
    (_edit(DEPTH, "data.a.0", ["0.01737", "-1"]), "data.a[0][1]"),
    (_edit(KLINE, "data.k.o", "0"), "data.k.o"),
    (_edit(KLINE, "data.k.v", "-0.842"), "data.k.v"),
    (_edit(MARK, "data.p", "-1"), "data.p"),
    (_edit(MARK, "data.r", "1.5"), "data.r"),
    (_edit(AGG, "data.f", 64902164), "data.l"),  # first trade after last trade
    (_edit(DEPTH, "data.U", 600859600918), "data.u"),  # first id after final id
    (_edit(KLINE, "data.k.T", 1618677419999), "data.k.T"),
    (_edit(AGG, "data.s", ""), "data.s"),
    (_edit(AGG, "data.s", "BTC/USDT"), "data.s"),
    # integers beyond int64, negative ids
    (_edit(AGG, "data.a", raw_value=b"9223372036854775808"), "data.a"),
    (_edit(DEPTH, "data.u", raw_value=b"99999999999999999999999999"), "data.u"),
    (_edit(DEPTH, "data.pu", raw_value=b"1e30"), "data.pu"),
    (_edit(AGG, "data.a", -1), "data.a"),
    (_edit(AGG, "data.E", raw_value=b"-9223372036854775809"), "data.E"),
    # envelope
    (b'{"stream":"yfiusdt@aggTrade"}', "data"),
    (b'{"stream":"x","data":[]}', "data"),
]


@pytest.mark.parametrize(
    ("raw", "field"), MALFORMED, ids=[f"{i}:{f}" for i, (_, f) in enumerate(MALFORMED)]
)
def test_malformed_names_the_field(raw, field):
    with pytest.raises(MessageError) as err:
        ADAPTER.parse(raw)
    assert type(err.value) is MessageError, err.value
    assert err.value.field == field, err.value
    assert err.value.raw == raw


def _raw_ws_cases() -> list[tuple[bytes, str]]:
    """The malformed combined frames whose data is still an event, as raw /ws payloads."""
    out = []
    for raw, field in MALFORMED:
        if not field.startswith("data.") or field == "data.e" or b'"data":{"e":' not in raw:
            continue
        start = raw.index(b'"data":') + len(b'"data":')
        out.append((raw[start:-1], field.removeprefix("data.")))
    return out


@pytest.mark.parametrize(("raw", "field"), _raw_ws_cases())
def test_malformed_raw_ws_payload_names_the_field(raw, field):
    with pytest.raises(MessageError) as err:
        ADAPTER.parse(raw)
    assert type(err.value) is MessageError
    assert err.value.field == field


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (FORCE_ORDER, "data.e"),
        (b'{"e":"forceOrder","E":1}', "e"),
        (b'{"foo":1}', "<message>"),
        (b"{}", "<message>"),
    ],
)
def test_unknown_messages(raw, field):
    with pytest.raises(UnknownMessageError) as err:
        ADAPTER.parse(raw)
    assert err.value.field == field


# --- fuzz ------------------------------------------------------------------------------------


def _check_only_message_errors(raw: bytes | str) -> None:
    try:
        ADAPTER.parse(raw)
    except MessageError:
        pass


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_only_message_error(raw):
    _check_only_message_errors(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=200))  # surrogates too
def test_fuzz_arbitrary_text_only_message_error(raw):
    _check_only_message_errors(raw)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["NaN", "inf", "-1", "0", "1e999", "0.0", "", "1_0", " 1"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([AGG, KLINE, DEPTH, MARK]), st.data(), JSON_VALUES)
def test_fuzz_real_message_with_one_field_replaced(raw, data, value):
    msg = orjson.loads(raw)
    target = msg["data"]
    if data.draw(st.booleans()) and "k" in target:
        target = target["k"]
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = value
    encoded = msgspec.json.encode(msg)  # orjson refuses integers beyond 64 bits
    _check_only_message_errors(encoded)
    _check_only_message_errors(encoded[: data.draw(st.integers(0, len(encoded)))])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([AGG, KLINE, DEPTH, MARK]),
    st.integers(0, 400),
    st.binary(min_size=1, max_size=3),
)
def test_fuzz_byte_flips_in_real_messages(raw, pos, junk):
    pos %= len(raw)
    _check_only_message_errors(raw[:pos] + junk + raw[pos + len(junk) :])


# --- batch, streams, subscriptions, clients --------------------------------------------------


def test_parse_many_collects_errors_and_skips_acks():
    batch = [AGG, b'{"result":null,"id":1}', b"garbage", (KLINE, 99), FORCE_ORDER]
    records, errors = ADAPTER.parse_many(batch)
    assert [type(r) for r in records] == [TradeRecord, CandleRecord]
    assert records[1].received_at == 99
    assert [type(e) for e in errors] == [MessageError, UnknownMessageError]


def test_stream_names_and_url():
    names = ADAPTER.stream_names(["BTCUSDT", "ethusdt"], ["trades", "candles", "depth", "funding"])
    assert names == [
        "btcusdt@aggTrade",
        "btcusdt@kline_1m",
        "btcusdt@depth@100ms",
        "btcusdt@markPrice@1s",
        "ethusdt@aggTrade",
        "ethusdt@kline_1m",
        "ethusdt@depth@100ms",
        "ethusdt@markPrice@1s",
    ]
    assert ADAPTER.stream_names(["BTCUSDT"], ["candles"], interval="5m") == ["btcusdt@kline_5m"]
    url = ADAPTER.combined_stream_url(
        "wss://fstream.binance.com/", ["BTCUSDT@aggTrade", "ethusdt@kline_1m"]
    )
    assert url == "wss://fstream.binance.com/stream?streams=btcusdt@aggTrade/ethusdt@kline_1m"
    with pytest.raises(ValueError):
        ADAPTER.stream_names(["BTCUSDT"], ["liquidations"])
    with pytest.raises(ValueError):
        ADAPTER.combined_stream_url("wss://x", [f"s{i}@aggTrade" for i in range(1025)])
    with pytest.raises(ValueError):
        ADAPTER.combined_stream_url("wss://x", [])


def test_subscribe_messages():
    sub = ADAPTER.subscribe_message(["BTCUSDT@aggTrade", "btcusdt@depth@100ms"], 7)
    assert orjson.loads(sub) == {
        "method": "SUBSCRIBE",
        "params": ["btcusdt@aggTrade", "btcusdt@depth@100ms"],
        "id": 7,
    }
    assert isinstance(sub, bytes)
    unsub = orjson.loads(ADAPTER.unsubscribe_message(["btcusdt@aggTrade"], 8))
    assert unsub == {"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 8}
    for bad_id in (-1, "1", True):
        with pytest.raises(ValueError):
            ADAPTER.subscribe_message(["btcusdt@aggTrade"], bad_id)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ADAPTER.subscribe_message(["btcusdt"], 1)


def test_rest_and_archive_clients_are_built_from_settings(monkeypatch):
    calls: dict[str, tuple] = {}

    def module(name: str, cls: str) -> types.ModuleType:
        mod = types.ModuleType(name)

        class Client:
            def __init__(self, *args):
                calls[cls] = args

        setattr(mod, cls, Client)
        return mod

    monkeypatch.setitem(
        sys.modules,
        "petrosa_pipelines.exchanges.binance.rest",
        module("petrosa_pipelines.exchanges.binance.rest", "BinanceRestClient"),
    )
    monkeypatch.setitem(
        sys.modules,
        "petrosa_pipelines.exchanges.binance.vision",
        module("petrosa_pipelines.exchanges.binance.vision", "VisionArchiveClient"),
    )
    s = Settings(
        endpoints=ExchangeEndpoints(vision_base_url="http://127.0.0.1:9/v"),
        rest=RestSettings(max_retries=1),
    )
    ADAPTER.rest_client(s)
    ADAPTER.archive_client(s)
    assert calls["BinanceRestClient"] == (s.endpoints, s.rest)
    assert calls["VisionArchiveClient"] == ("http://127.0.0.1:9/v", s.rest)


# --- the benchmark ---------------------------------------------------------------------------


@pytest.mark.slow
def test_parse_bench_quick_runs():
    """The benchmark runs and prints every figure and verdict (tests assert behaviour; the
    speed itself is the benchmark's to measure: on a busy shared machine even the aggTrade
    path's 100k msg/s target failed at load 27, with the orjson ratio at 0.54)."""
    out = subprocess.run(
        # its smallest size: this checks that it runs and what it prints (10 s of CPU at
        # --quick, 1.4 s here)
        [sys.executable, str(REPO / "benchmarks" / "parse_bench.py"), "--n", "5000", "--reps", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode in (0, 1), out.stderr
    assert out.stdout.count("msg/s (median") == 6, out.stdout
    assert out.stdout.count("target >= 100,000 msg/s: ") == 2, out.stdout
    # the ratio itself is speed: at this size it was 1.21 once on a loaded machine
    assert out.stdout.count("parse / orjson ratio (median of per-rep ratios): ") == 2, out.stdout
    assert "OVERALL: " in out.stdout, out.stdout
    print(out.stdout)


def test_groups_by_symbol_sane():
    per_symbol: defaultdict[str, int] = defaultdict(int)
    for raw in frames_of("aggTrade"):
        per_symbol[ADAPTER.parse(raw).symbol] += 1
    assert set(per_symbol) == {
        "DENTUSDT",
        "KSMUSDT",
        "XMRUSDT",
        "YFIUSDT",
        "SUSHIUSDT",
        "AKROUSDT",
        "KEEPUSDT",
        "CTKUSDT",
    }
