"""A NATS-sourced stream group's settings: checked with errors naming the key, credentials only
from the environment and never shown; the supervisor's run request says source and subject;
the landing writer's durable-position watermark (what JetStream acknowledgements wait on)."""

from __future__ import annotations

import json

import pytest

from petrosa_pipelines.ingest.config import IngestConfig, parse_ingest_groups
from petrosa_pipelines.ingest.job import IngestRunConfig, engine_config
from petrosa_pipelines.ingest.nats_source import StreamFilter, envelope_stream
from petrosa_pipelines.landing.writer import LandingWriter
from petrosa_pipelines.settings import SettingError, nats_hosts, nats_url_from_env
from petrosa_pipelines_tests.test_ingest.nats_frames import agg_trade

TOKEN = "s3cr3t-t0ken-value"
GROUPS = "PETROSA_INGEST_GROUPS"


def _groups(**group) -> str:
    return json.dumps([{"name": "feed", "symbols": ["BTCUSDT"], **group}])


def test_a_nats_group_is_parsed_with_defaults():
    (g,) = parse_ingest_groups(_groups(source="nats"))
    assert g["source"] == "nats"
    assert g["nats_subject"] == "binance.futures.websocket.data"
    assert g["nats_stream"] is None and g["nats_durable"] == "petrosa-feed"
    assert g["nats_url_env"] == "PETROSA_NATS_URL" and "nats_url" not in g
    (ws,) = parse_ingest_groups(_groups())
    assert ws["source"] == "websocket" and "nats_subject" not in ws


@pytest.mark.parametrize(
    ("group", "key"),
    [
        ({"source": "kafka"}, "source"),
        ({"nats_subject": "a.b"}, "nats_subject"),  # NATS keys need "source": "nats"
        ({"source": "nats", "nats_subject": "a b"}, "nats_subject"),
        ({"source": "nats", "nats_subject": "a.>.b"}, "nats_subject"),
        ({"source": "nats", "nats_stream": "A.B"}, "nats_stream"),
        ({"source": "nats", "nats_durable": "x y"}, "nats_durable"),
        ({"source": "nats", "nats_deliver_policy": "sometimes"}, "nats_deliver_policy"),
        ({"source": "nats", "nats_url_env": "1BAD"}, "nats_url_env"),
        ({"source": "nats", "nats_url": "http://h:4222"}, "nats_url"),
    ],
)
def test_bad_nats_settings_name_the_key(group, key):
    with pytest.raises(SettingError, match=rf"{GROUPS}\[0\]\.{key}="):
        parse_ingest_groups(_groups(**group))


def test_a_url_with_credentials_in_group_config_is_refused_and_not_shown():
    for url in (f"nats://{TOKEN}@nats:4222", f"nats://user:{TOKEN}@nats:4222"):
        with pytest.raises(SettingError, match=r"nats_url.*without credentials") as exc:
            parse_ingest_groups(_groups(source="nats", nats_url=url))
        assert TOKEN not in str(exc.value)
    (g,) = parse_ingest_groups(_groups(source="nats", nats_url="nats://a:4222,nats://b:4223"))
    assert g["nats_url"] == "nats://a:4222,nats://b:4223"


def test_the_url_comes_from_the_environment_and_is_never_shown(monkeypatch):
    monkeypatch.setenv("PETROSA_NATS_URL", f"nats://{TOKEN}@feed.example:4333")
    cfg = IngestConfig(group="g", symbols=("BTCUSDT",), source="nats")
    assert cfg.nats_url == f"nats://{TOKEN}@feed.example:4333"
    assert TOKEN not in repr(cfg)
    assert nats_hosts(cfg.nats_url) == "feed.example:4333"
    monkeypatch.setenv("MY_NATS", "nats://other:4222")
    assert IngestConfig(group="g", symbols=(), source="nats", nats_url_env="MY_NATS").nats_url == (
        "nats://other:4222"
    )
    monkeypatch.setenv("PETROSA_NATS_URL", f"http://{TOKEN}@x")
    with pytest.raises(SettingError, match="PETROSA_NATS_URL") as exc:
        IngestConfig(group="g", symbols=("BTCUSDT",), source="nats")
    assert TOKEN not in str(exc.value)
    monkeypatch.delenv("PETROSA_NATS_URL")
    assert nats_url_from_env() == "nats://127.0.0.1:4222"


def test_ingest_config_checks_its_nats_fields():
    base = dict(group="g.x", symbols=("BTCUSDT",), source="nats", nats_url="nats://h:1")
    assert IngestConfig(**base).nats_durable == "petrosa-g_x"
    for bad in (
        {"source": "carrier-pigeon"},
        {"nats_subject": ""},
        {"nats_stream": "a b"},
        {"nats_max_ack_pending": 0},
        {"nats_ack_wait_s": 0},
        {"nats_deliver_policy": "x"},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            IngestConfig(**{**base, **bad})


def test_the_supervisor_requests_a_nats_run_tagged_with_source_and_subject(monkeypatch):
    from sensors.ingest_supervisor import _run_config, groups_from_env

    monkeypatch.setenv(GROUPS, _groups(source="nats", nats_stream="FEED", datasets=["trades"]))
    monkeypatch.setenv("PETROSA_NATS_URL", f"nats://{TOKEN}@feed.example:4333")
    (group,) = groups_from_env()
    assert group.tags == {
        "petrosa/ingest_group": "feed",
        "petrosa/exchange": "binance",
        "petrosa/ingest_source": "nats",
        "petrosa/nats_subject": "binance.futures.websocket.data",
        "petrosa/nats_stream": "FEED",
    }
    run_config = _run_config(group)
    assert TOKEN not in json.dumps(run_config) and TOKEN not in json.dumps(group.tags)
    op = run_config["ops"]["ingest_stream_group"]["config"]
    assert op["source"] == "nats" and op["nats_stream"] == "FEED"
    cfg = engine_config(IngestRunConfig(**op))  # inside the run: the URL from the environment
    assert (cfg.source, cfg.nats_stream, cfg.nats_durable) == ("nats", "FEED", "petrosa-feed")
    assert cfg.nats_url == f"nats://{TOKEN}@feed.example:4333"
    # a websocket group is tagged as one and its run config has no NATS keys
    monkeypatch.setenv(GROUPS, _groups())
    (ws,) = groups_from_env()
    assert ws.tags["petrosa/ingest_source"] == "websocket" and "petrosa/nats_subject" not in ws.tags
    assert "source" not in _run_config(ws)["ops"]["ingest_stream_group"]["config"]


def test_run_config_refuses_a_url_with_credentials():
    op = dict(group="g", symbols=["BTCUSDT"], source="nats", nats_url=f"nats://{TOKEN}@h:4222")
    with pytest.raises(SettingError, match="nats_url") as exc:
        engine_config(IngestRunConfig(**op))
    assert TOKEN not in str(exc.value)


def test_the_filter_keeps_the_groups_symbols_and_datasets():
    from petrosa_pipelines.exchanges.binance.adapter import BinanceUsdmAdapter

    f = StreamFilter(BinanceUsdmAdapter(), ["BTCUSDT", "ETHUSDT"], ("trades",))
    assert envelope_stream(agg_trade("BTCUSDT", 1, 1)) == "btcusdt@aggTrade"
    assert envelope_stream(b'{"data": {}, "x": 1}') is None
    assert f.verdict("btcusdt@aggTrade") is None
    assert f.verdict("ethusdt@markPrice@1s") is None  # the mark price is always carried
    assert f.verdict("solusdt@aggTrade") == "symbol"
    assert f.verdict("btcusdt@depth@100ms") == "dataset"
    assert f.verdict("btcusdt@kline_1m") == "dataset"
    assert f.verdict(None) is None  # the parser decides (lands or dead-letters it)


def test_the_writer_durable_mark_follows_what_was_synced(tmp_path):
    from petrosa_pipelines.landing.records import GapRecord
    from petrosa_pipelines.landing.writer import LineBatch

    seen: list[int] = []
    with LandingWriter(tmp_path, "binance", "g") as w:
        w.add_mark_listener(seen.append)
        assert (w.queued_mark, w.durable_mark) == (0, 0)
        batch = LineBatch()
        for i in range(5):
            batch.add(1_700_000_000_000 + i, b'{"x": %d}' % i)
        assert w.put_batch(batch) == []
        assert w.put(1_700_000_000_010, b'{"y": 1}')
        assert w.put_dead_letter(1_700_000_000_011, b"bad", "why", "f")
        gap = GapRecord("trades", "BTCUSDT", 1, 2, "id_gap", 1_700_000_000_012, "g")
        assert w.record_gap(gap)
        mark = w.queued_mark
        assert mark == 8
        assert w.wait_durable(mark, timeout=30) == 8
        assert w.stats.lines_durable == 6 and w.stats.dead_letters == 1
        assert w.stats.gaps_durable == 1
    assert seen and seen[-1] == 8 and seen == sorted(seen)


def test_the_filter_follows_the_symbols_the_group_is_given(tmp_path):
    import asyncio

    from petrosa_pipelines.ingest import IngestEngine
    from petrosa_pipelines_tests.test_ingest.nats_frames import now_ms

    cfg = IngestConfig(
        group="g",
        symbols=("BTCUSDT",),
        datasets=("trades",),
        landing_path=str(tmp_path),
        source="nats",
        nats_url="nats://127.0.0.1:1",
    )
    engine = IngestEngine(cfg)
    src = engine._nats
    src._handle(agg_trade("ETHUSDT", 1, now_ms()))
    assert src.stats.filtered_symbol == 1
    asyncio.run(engine.set_symbols(["BTCUSDT", "ETHUSDT"]))  # what the symbols provider does
    src._handle(agg_trade("SOLUSDT", 1, now_ms()))  # the next message sees the new set
    assert src.stats.filtered_symbol == 2
    assert src.filter.verdict("ethusdt@aggTrade") is None
    assert src.filter.verdict("solusdt@aggTrade") == "symbol"
