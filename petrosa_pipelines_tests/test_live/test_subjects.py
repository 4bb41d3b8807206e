"""Subject names, JSON schemas derived from the catalog, records as messages, live settings."""

from __future__ import annotations

from decimal import Decimal

import jsonschema
import orjson
import pytest

from petrosa_pipelines.catalog.schemas import CANDLES, FUNDING, RAW_TRADES, TRADES
from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    DepthUpdateRecord,
    MarkPriceRecord,
    RawTradeRecord,
)
from petrosa_pipelines.landing.book import BookSample
from petrosa_pipelines.live.messages import FundingTracker, record_messages
from petrosa_pipelines.live.subjects import (
    SubjectError,
    data_subject,
    quality_subject,
    schema_for_subject,
    stream_subjects,
    subject_schemas,
)
from petrosa_pipelines.settings import LiveSettings, SettingError, live_settings_from_env
from petrosa_pipelines_tests.test_live.conftest import trade

T0 = 1_767_000_000_000


def validate(subject: str, payload: bytes) -> dict:
    doc = orjson.loads(payload)
    schema = schema_for_subject(subject)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)
    return doc


def test_subject_names_carry_venue_dataset_and_symbol():
    subject = data_subject("binance-usdm", "trades", "BTCUSDT")
    assert subject == "petrosa.binance-usdm.trades.BTCUSDT"
    assert data_subject("bybit-linear", "depth", "ETHUSDT", "org.petrosa") == (
        "org.petrosa.bybit-linear.depth.ETHUSDT"
    )
    assert quality_subject("binance-usdm", "trades", "BTCUSDT") == (
        "petrosa.quality.binance-usdm.trades.BTCUSDT"
    )
    assert stream_subjects("petrosa") == ["petrosa.>"]


@pytest.mark.parametrize("symbol", ["BTC.USDT", "BTC*", ">", "BTC USDT", "", "ÄBC"])
def test_symbols_that_would_split_or_widen_a_subject_are_refused(symbol):
    with pytest.raises(SubjectError, match="cannot be a NATS subject token"):
        data_subject("binance-usdm", "trades", symbol)
    with pytest.raises(SubjectError):
        quality_subject("binance-usdm", "trades", symbol)


def test_unknown_dataset_is_refused():
    with pytest.raises(SubjectError, match="not published"):
        data_subject("binance-usdm", "orders", "BTCUSDT")


@pytest.mark.parametrize("schema", [TRADES, CANDLES, FUNDING, RAW_TRADES])
def test_row_schemas_are_the_catalog_columns_plus_venue(schema):
    subject = data_subject("binance-usdm", schema.name, "BTCUSDT")
    js = schema_for_subject(subject)
    assert list(js["properties"]) == ["venue", *schema.column_names]
    assert js["required"] == ["venue", *schema.column_names]
    for col in schema.columns:
        prop = js["properties"][col.name]
        assert prop["description"].startswith(col.description)
        assert ("null" in prop["type"]) == col.nullable
    assert js["additionalProperties"] is False


def test_the_book_sample_message_keeps_its_own_version_and_fields():
    """Depth v2 changed the stored rows, not the published message: one sampled book with
    ``[price, quantity]`` pairs, its schema still version 1 of the message."""
    js = schema_for_subject(data_subject("binance-usdm", "depth", "BTCUSDT"))
    assert js["title"] == "depth v1 (one sampled book)"
    assert list(js["properties"]) == [
        "venue", "exchange", "symbol", "snapshot_time", "last_update_id", "bids", "asks",
        "source", "received_at",
    ]  # fmt: skip
    pair = js["properties"]["bids"]["items"]["prefixItems"]
    assert [p["description"] for p in pair] == ["Level price.", "Resting quantity at that price."]


def test_every_subject_pattern_has_a_valid_schema():
    schemas = subject_schemas()
    assert len(schemas) == 7
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_records_become_schema_valid_messages_keyed_by_their_natural_key():
    (m,) = record_messages("binance-usdm", trade(5))
    assert m.subject == "petrosa.binance-usdm.trades.BTCUSDT"
    assert m.msg_id == "binance-usdm:BTCUSDT:trades:5"
    doc = validate(m.subject, m.payload)
    assert doc["price"] == 87005.1 and doc["trade_id"] == "5" and doc["trade_time"] == T0 + 5

    raw = RawTradeRecord("binance", "ETHUSDT", 77, Decimal("3000.5"), Decimal("1.25"), T0, True,
                         "ADL", T0 + 1, received_at=T0 + 2)  # fmt: skip
    (m,) = record_messages("binance-usdm", raw)
    assert validate(m.subject, m.payload)["trade_type"] == "ADL"

    candle = CandleRecord("binance", "BTCUSDT", "1m", T0, T0 + 59_999, *[Decimal("1")] * 4,
                          Decimal("2"), Decimal("3"), 4, Decimal("1"), Decimal("1.5"),
                          is_closed=True, event_time=T0 + 60_000)  # fmt: skip
    (m,) = record_messages("binance-usdm", candle)
    assert m.subject.endswith(".candles.BTCUSDT") and m.msg_id.endswith(f":1m:{T0}")
    validate(m.subject, m.payload)
    open_candle = CandleRecord(**{**{f: getattr(candle, f) for f in candle.__struct_fields__},
                                  "is_closed": False})  # fmt: skip
    assert record_messages("binance-usdm", open_candle) == []

    sample = BookSample("BTCUSDT", T0, 123, [(100.5, 2.0), (100.4, 1.0)], [(100.6, 0.5)], T0 + 3)
    (m,) = record_messages("binance-usdm", sample, exchange="binance")
    doc = validate(m.subject, m.payload)
    assert doc["bids"] == [[100.5, 2.0], [100.4, 1.0]] and doc["asks"] == [[100.6, 0.5]]

    diff = DepthUpdateRecord("binance", "BTCUSDT", T0, T0, 1, 2, 0, (), ())
    assert record_messages("binance-usdm", diff) == []  # the samples are published, not diffs


def mark(e: int, rate: str, next_t: int) -> MarkPriceRecord:
    return MarkPriceRecord("binance", "BTCUSDT", e, Decimal("87000"), Decimal("86990"), None,
                           Decimal(rate), next_t, received_at=e + 3)  # fmt: skip


def test_mark_prices_publish_and_settle_funding_once():
    tracker = FundingTracker()
    settle = T0 + 10_000
    assert tracker.on_mark_price(mark(T0, "0.0001", settle)) == []
    assert tracker.on_mark_price(mark(T0 + 9_000, "0.0002", settle)) == []
    # the first message past T may still carry the old T: it settles the rate in force before
    (f,) = tracker.on_mark_price(mark(settle + 500, "0.0003", settle))
    assert (f.funding_time, f.funding_rate) == (settle, Decimal("0.0002"))
    assert tracker.on_mark_price(mark(settle + 1500, "0.0003", settle + 28_800_000)) == []
    (m,) = record_messages("binance-usdm", f)
    doc = validate(m.subject, m.payload)
    assert m.subject.endswith(".funding.BTCUSDT") and doc["funding_rate"] == 0.0002
    (m,) = record_messages("binance-usdm", mark(T0, "0.0001", settle))
    assert validate(m.subject, m.payload)["estimated_settle_price"] is None


def test_live_settings_from_env_and_clear_errors():
    assert live_settings_from_env({}) == LiveSettings()
    assert not LiveSettings().publishing and not LiveSettings().keeping_latest
    s = live_settings_from_env({
        "PETROSA_NATS_URL": "nats://u:pw@host:4222", "PETROSA_REDIS_URL": "redis://h:6379/1",
        "PETROSA_LIVE_STREAM_MAX_AGE_S": "3600", "PETROSA_LIVE_PUBLISH": "off",
    })  # fmt: skip
    assert s.max_age_s == 3600 and not s.publishing and s.keeping_latest
    with pytest.raises(SettingError, match="PETROSA_LIVE_BUFFER_MESSAGES"):
        live_settings_from_env({"PETROSA_LIVE_BUFFER_MESSAGES": "0"})
    with pytest.raises(SettingError, match="PETROSA_LIVE_SUBJECT_PREFIX"):
        live_settings_from_env({"PETROSA_LIVE_SUBJECT_PREFIX": "a.*"})
    with pytest.raises(SettingError, match="PETROSA_LIVE_PUBLISH"):
        live_settings_from_env({"PETROSA_LIVE_PUBLISH": "maybe"})
    with pytest.raises(SettingError, match="PETROSA_NATS_URL") as err:
        live_settings_from_env({"PETROSA_NATS_URL": "http://user:s3cretpass@host:4222"})
    assert "s3cretpass" not in str(err.value)


def test_docs_name_every_subject_and_setting():
    from pathlib import Path

    from petrosa_pipelines.live.latest import FIELDS
    from petrosa_pipelines.settings import LIVE_ENV

    doc = (Path(__file__).parents[2] / "docs" / "live.md").read_text()
    for pattern in subject_schemas():
        assert f"`{pattern}`" in doc, pattern
    for var in LIVE_ENV:
        assert f"`{var}`" in doc, var
    for field in FIELDS:
        assert f"| `{field}` |" in doc, field


def test_nats_tokens_and_passwords_never_reach_a_message():
    from petrosa_pipelines.settings import redact_live

    s = live_settings_from_env({
        "PETROSA_NATS_URL": "nats://t0kenOnly42@a:4222,nats://usr:pa55word@b:4222",
        "PETROSA_REDIS_URL": "redis://:redisPa55@r:6379/0",
    })  # fmt: skip
    text = (f"failed on {s.nats_url}; token t0kenOnly42, pass pa55word; redis {s.redis_url} "
            "with redisPa55")  # fmt: skip
    out = redact_live(text, s)
    for secret in ("t0kenOnly42", "pa55word", "redisPa55"):
        assert secret not in out, out
    assert "a:4222" in out and "b:4222" in out
    with pytest.raises(SettingError) as err:
        live_settings_from_env({"PETROSA_NATS_URL": "nats://t0kenOnly42@a:99999"})
    assert "t0kenOnly42" not in str(err.value)
