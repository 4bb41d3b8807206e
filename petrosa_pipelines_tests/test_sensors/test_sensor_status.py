"""What a sensor tick shows on the Automation page and on the assets, not only in its logs.

Dagster 1.13 records every tick that requests no run as SKIPPED, whatever the sensor returns
(Dagster's ``dagster/_daemon/sensor.py``, ``_evaluate_sensor``), so the skip reason must say
what the tick saw or did, and actions that are not runs (a cancelled ingest run) are reported
as asset observations.
"""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRun

from petrosa_pipelines.ingest.heartbeat import write_heartbeat
from petrosa_pipelines.ingest.job import GROUP_TAG
from petrosa_pipelines.landing.assets import landing_key
from petrosa_pipelines.settings import Settings
from sensors.ingest_supervisor import StreamGroup, build_ingest_supervisor
from sensors.symbols_sensor import build_symbols_sensor

GROUP = StreamGroup("majors", ("BTCUSDT", "ETHUSDT"), datasets=("trades", "depth"))


def _started(instance: dg.DagsterInstance, group: str) -> DagsterRun:
    run = DagsterRun(
        job_name="ingest",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags={GROUP_TAG: group},
    )
    return instance.add_run(run)


def _report(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the sensor daemon does with a tick's asset events."""
    for event in result.asset_events:
        instance.report_runless_asset_event(event)


def _observations(instance: dg.DagsterInstance, dataset: str) -> list[dict]:
    records = instance.fetch_observations(landing_key(dataset), limit=10).records
    return [
        {k: v.value for k, v in r.asset_observation.metadata.items()} for r in reversed(records)
    ]


def test_supervisor_says_what_it_saw_and_reports_what_it_did(instance, tmp_path):
    now = [time.time()]
    landing = tmp_path / "landing"
    sensor = build_ingest_supervisor(lambda: [GROUP], lambda: str(landing), clock=lambda: now[0])

    def tick() -> dg.SensorResult:
        result = sensor(dg.build_sensor_context(instance=instance))
        _report(instance, result)
        return result

    # nothing runs: a run is requested, and the request shows on the group's landing assets
    launch = tick()
    assert [r.tags[GROUP_TAG] for r in launch.run_requests] == ["majors"]
    (seen,) = _observations(instance, "trades")
    assert seen["ingest_group"] == "majors"
    assert seen["supervisor_action"] == "requested run generation 0 (no active run)"
    assert _observations(instance, "candles") == []  # not a dataset of this group

    # a live run with a fresh heartbeat: nothing to do, and the reason says how it looks
    run = _started(instance, "majors")
    beat = {"run_id": run.run_id, "written_at": int((now[0] - 4) * 1000), "liveness": "alive"}
    write_heartbeat(landing, "binance", "majors", beat)
    quiet = tick()
    assert not quiet.run_requests and not quiet.asset_events
    assert quiet.skip_reason.skip_message == (
        f"nothing to do: majors: {run.run_id[:8]} STARTED, heartbeat 4s old, alive"
    )

    # the heartbeat went stale: the run is cancelled, and that is an observation, not a log line
    now[0] += 600
    stale = tick()
    assert not stale.run_requests
    assert stale.skip_reason.skip_message.startswith(f"majors: cancelled {run.run_id[:8]} ")
    assert "heartbeat stale for 604s" in stale.skip_reason.skip_message
    for dataset in ("trades", "depth"):
        last = _observations(instance, dataset)[-1]
        assert last["ingest_run"] == run.run_id
        assert last["supervisor_action"].startswith(f"cancelled {run.run_id[:8]} heartbeat stale")
        assert last["supervisor_action"].endswith("relaunch on the next tick")


def test_supervisor_reports_stopping_a_disabled_group(instance, tmp_path):
    run = _started(instance, "alts")
    groups = [StreamGroup("alts", ("SOLUSDT",), datasets=("funding",), enabled=False)]
    sensor = build_ingest_supervisor(lambda: groups, lambda: str(tmp_path))
    result = sensor(dg.build_sensor_context(instance=instance))
    assert not result.run_requests
    assert "alts: cancelled" in result.skip_reason.skip_message
    assert "group 'alts' is not enabled" in result.skip_reason.skip_message
    (obs,) = result.asset_events
    assert obs.asset_key == landing_key("funding")
    assert obs.metadata["ingest_run"].value == run.run_id


class _Client:
    def __init__(self, symbols: list[str]):
        self.symbols = symbols

    def exchange_info(self) -> SimpleNamespace:
        return SimpleNamespace(perpetual_symbols=lambda: list(self.symbols))


def test_symbols_sensor_says_what_it_changed(instance):
    sensor = build_symbols_sensor(
        lambda: Settings(symbols=("BTCUSDT", "ETHUSDT")),
        lambda _settings, _venue: _Client(["BTCUSDT", "ETHUSDT", "SOLUSDT"]),
    )
    instance.add_dynamic_partitions("symbols", ["ETHUSDT", "JUNK"])
    result = sensor(dg.build_sensor_context(instance=instance))
    assert len(result.dynamic_partitions_requests) == 2
    # ETHUSDT is the legacy form of binance-usdm:ETHUSDT: kept, not duplicated
    assert result.skip_reason.skip_message == (
        "added ['binance-usdm:BTCUSDT'], removed ['JUNK']: 2 instruments"
    )


def test_symbols_sensor_adds_each_venue_s_instruments(instance):
    listed = {"binance-usdm": ["BTCUSDT", "ETHUSDT"], "bybit-linear": ["BTCUSDT", "SOLUSDT"]}
    asked: list[str] = []

    def client(_settings, venue):
        asked.append(venue)
        return _Client(listed[venue])

    sensor = build_symbols_sensor(
        lambda: Settings(symbols=("BTCUSDT", "bybit-linear:*", "bybit-linear:XRPUSDT")), client
    )
    result = sensor(dg.build_sensor_context(instance=instance))
    (add,) = result.dynamic_partitions_requests
    # Binance's and Bybit's BTCUSDT are two instruments; XRP is not listed by Bybit
    assert sorted(add.partition_keys) == [
        "binance-usdm:BTCUSDT",
        "bybit-linear:BTCUSDT",
        "bybit-linear:SOLUSDT",
    ]
    assert asked == ["binance-usdm", "bybit-linear"]


def test_default_stream_groups_are_one_per_venue(monkeypatch):
    from sensors.ingest_supervisor import groups_from_env

    monkeypatch.delenv("PETROSA_INGEST_GROUPS", raising=False)
    monkeypatch.setenv("PETROSA_SYMBOLS", "BTCUSDT,bybit-linear:ETHUSDT,bybit-linear:SOLUSDT")
    groups = {g.name: (g.exchange, g.symbols) for g in groups_from_env()}
    # the exchange is the landing directory: Binance USD-M keeps "binance"
    assert groups == {
        "default": ("binance", ("BTCUSDT",)),
        "default_bybit_linear": ("bybit-linear", ("ETHUSDT", "SOLUSDT")),
    }
