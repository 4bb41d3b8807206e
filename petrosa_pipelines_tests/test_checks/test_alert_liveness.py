"""Ingest liveness is judged only for the stream groups configured to run (no false alarm)."""

from __future__ import annotations

import os
import time

import dagster as dg

from sensors.alert_sensor import AlertSettings, build_alert_sensor


def _beat(landing, group: str, age_s: float, now: float) -> None:
    path = landing / "binance" / "_heartbeat" / f"{group}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    os.utime(path, (now - age_s, now - age_s))


def _alerts(landing, now: float, capfd) -> list[str]:
    """The down alerts the sensor logged (the log sink writes through Dagster's logger)."""
    sensor = build_alert_sensor(
        settings=lambda: AlertSettings(sinks=("log",), ingest_down_after_s=300),
        landing_root=lambda: str(landing),
        clock=lambda: now,
    )
    with dg.DagsterInstance.ephemeral() as instance:
        ctx = dg.build_sensor_context(
            instance=instance, definitions=dg.Definitions(sensors=[sensor])
        )
        capfd.readouterr()
        sensor(ctx)
    out, err = capfd.readouterr()
    return [line for line in (out + err).splitlines() if "is down" in line]


def test_a_demo_or_retired_groups_old_heartbeat_raises_no_alarm(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("PETROSA_INGEST_GROUPS", raising=False)  # one configured group: default
    now = time.time()
    _beat(tmp_path, "demo", 3600, now)  # the demo's 15-second ingest, an hour ago
    _beat(tmp_path, "retired", 86_400, now)
    _beat(tmp_path, "default", 5, now)
    assert _alerts(tmp_path, now, capfd) == []


def test_a_configured_group_that_stopped_beating_is_down(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(
        "PETROSA_INGEST_GROUPS",
        '[{"name": "majors", "symbols": ["BTCUSDT"]}, {"name": "alts", "symbols": ["ETHUSDT"]}]',
    )
    now = time.time()
    _beat(tmp_path, "majors", 900, now)
    _beat(tmp_path, "alts", 5, now)
    _beat(tmp_path, "default", 900, now)  # not configured here
    alerts = _alerts(tmp_path, now, capfd)
    assert len(alerts) == 1 and "binance/majors" in alerts[0]


def test_the_tick_says_what_it_did_in_words(tmp_path, monkeypatch):
    """Dagster lists every tick without a run as skipped: its reason must say what happened."""
    monkeypatch.delenv("PETROSA_INGEST_GROUPS", raising=False)
    now = time.time()
    sensor = build_alert_sensor(
        settings=lambda: AlertSettings(sinks=("log",), ingest_down_after_s=300),
        landing_root=lambda: str(tmp_path),
        clock=lambda: now,
    )
    with dg.DagsterInstance.ephemeral() as instance:
        defs = dg.Definitions(sensors=[sensor])
        _beat(tmp_path, "default", 5, now)
        quiet = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert quiet.skip_message == "no new check failures; ingest groups healthy (1 cleared)"
        _beat(tmp_path, "default", 900, now)
        down = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert down.skip_message == "sent 1: ingest binance/default is down"
