"""Quality events on NATS (check results, alerts, health) and health in Redis; never raising."""

from __future__ import annotations

import asyncio
import time

import dagster as dg
import jsonschema
import orjson
import pytest

from petrosa_pipelines.api import latest
from petrosa_pipelines.live import (
    QUALITY_STATS,
    alert_event,
    check_events,
    health_events,
    publish_quality,
    schema_for_subject,
)
from petrosa_pipelines_tests.test_live.conftest import (
    blackhole,
    closed_port_url,
    settings,
    stream_messages,
)
from sensors.alert_sensor import Alert

PARTITION = "2026-11-30|binance-usdm:BTCUSDT"


def results() -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            asset_key=dg.AssetKey(["market_data", "trades"]),
            check_name="no_duplicate_keys",
            passed=True,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"offending": 0, "checked": 1234},
            description="no duplicates among 1234 rows",
        ),
        dg.AssetCheckResult(
            asset_key=dg.AssetKey(["market_data", "trades"]),
            check_name="health_score",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"score": 0.62, "status": "degraded", "failed_checks": ["ids"]},
            description="score 0.62",
        ),
    ]


def test_check_results_alerts_and_health_reach_their_subjects(
    nats_url, redis_url, live_names, monkeypatch
):
    s = settings(live_names, nats_url=nats_url, redis_url=redis_url)
    events = check_events(PARTITION, "trades", results(), run_id="r1")
    events += health_events(PARTITION, [
        {"dataset": "trades", "score": 0.62, "status": "degraded", "reason": "ids missing"},
        {"dataset": "depth", "score": float("nan"), "status": "not_applicable", "reason": "n/a"},
    ])  # fmt: skip
    events.append(alert_event(Alert("check|x|y", "check_failed", "check failed", "ERROR",
                                    "market_data/trades:health_score", PARTITION, "r1",
                                    {"score": 0.62})))  # fmt: skip
    events.append(alert_event(Alert("ingest_down|binance/majors", "ingest_down",
                                    "ingest binance/majors is down", "ERROR",
                                    "binance/majors")))  # fmt: skip
    assert publish_quality(events, s) == 6
    msgs = asyncio.run(stream_messages(nats_url, s.stream))
    p = f"{live_names['prefix']}.quality.binance-usdm"
    assert [m[0] for m in msgs] == [
        f"{p}.trades.BTCUSDT", f"{p}.trades.BTCUSDT", f"{p}.trades.BTCUSDT",
        f"{p}.depth.BTCUSDT", f"{p}.trades.BTCUSDT", f"{p}.ingest.majors",
    ]  # fmt: skip
    docs = []
    for subject, payload, _ in msgs:
        doc = orjson.loads(payload)
        jsonschema.Draft202012Validator(schema_for_subject(subject, live_names["prefix"])).validate(
            doc
        )
        docs.append(doc)
    assert docs[0]["kind"] == "check" and docs[0]["passed"] is True
    assert docs[0]["metadata"] == {"offending": 0, "checked": 1234}
    assert docs[1]["score"] == 0.62 and docs[1]["severity"] == "WARN"
    assert docs[2]["kind"] == "health" and docs[3]["score"] is None
    assert docs[4]["kind"] == "alert" and docs[4]["dataset"] == "trades"
    assert docs[5]["name"] == "ingest_down" and docs[5]["partition"] is None
    # health also lands in Redis: the lowest score and each dataset's
    monkeypatch.setenv("PETROSA_LIVE_REDIS_PREFIX", live_names["redis"])
    health = latest("binance-usdm:BTCUSDT", ["health"], redis_url=redis_url)["health"]
    assert health["score"] == 0.62 and orjson.loads(health["scores"]) == {"trades": 0.62}
    assert health["partition"] == PARTITION and "trades:degraded" in health["status"]


@pytest.mark.parametrize("where", ["closed", "stuck"])
def test_nats_down_costs_the_op_a_bounded_wait_and_no_exception(live_names, where):
    before = QUALITY_STATS["failed"]
    events = check_events(PARTITION, "trades", results())
    with blackhole() as stuck:
        url = closed_port_url() if where == "closed" else stuck
        started = time.monotonic()
        assert publish_quality(events, settings(live_names, nats_url=url), timeout=0.5) == 0
        waited = time.monotonic() - started
        not_tried = QUALITY_STATS["not_tried"]  # moments later: fails without trying again
        assert publish_quality(events, settings(live_names, nats_url=url), timeout=0.5) == 0
    assert waited < 10, waited  # timeout + a thread's grace, not the connect's own retries
    assert QUALITY_STATS["failed"] - before == 4
    assert QUALITY_STATS["not_tried"] - not_tried == 2


def test_without_settings_nothing_is_published(live_names):
    before = QUALITY_STATS["skipped"]
    assert publish_quality(check_events(PARTITION, "trades", results()), settings(live_names)) == 0
    assert QUALITY_STATS["skipped"] - before == 2


def test_call_site_helpers_read_the_environment_and_never_raise(nats_url, live_names, monkeypatch):
    from petrosa_pipelines.live import publish_alerts, publish_check_results, publish_health

    monkeypatch.setenv("PETROSA_NATS_URL", nats_url)
    monkeypatch.setenv("PETROSA_LIVE_SUBJECT_PREFIX", live_names["prefix"])
    monkeypatch.setenv("PETROSA_LIVE_STREAM", live_names["stream"])
    monkeypatch.delenv("PETROSA_REDIS_URL", raising=False)
    assert publish_check_results(PARTITION, "trades", results(), "run-1") == 2
    assert publish_health("2026-11-30|BTCUSDT", [{"dataset": "trades", "score": 1.0,
                                                  "status": "ok"}]) == 1  # fmt: skip
    assert publish_alerts([]) == 0
    before = QUALITY_STATS["failed"]
    assert publish_check_results("not a partition key", "trades", results()) == 0
    assert publish_health(PARTITION, [{"dataset": "trades", "score": "high"}]) == 0
    assert QUALITY_STATS["failed"] - before == 2
    monkeypatch.setenv("PETROSA_NATS_URL", "http://not-nats")  # a bad setting: logged only
    assert publish_check_results(PARTITION, "trades", results()) == 0
    msgs = asyncio.run(stream_messages(nats_url, live_names["stream"]))
    assert len(msgs) == 3 and msgs[2][0].endswith(".quality.binance-usdm.trades.BTCUSDT")
