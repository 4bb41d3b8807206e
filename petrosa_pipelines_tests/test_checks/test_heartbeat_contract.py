"""The alert sensor reads the heartbeat files the ingest writes (one contract, two modules)."""

import time

from petrosa_pipelines.ingest.heartbeat import write_heartbeat
from sensors.alert_sensor import heartbeat_ages, ingest_alerts


def test_alert_sensor_sees_the_ingest_heartbeat(tmp_path):
    write_heartbeat(tmp_path, "binance", "majors", {"liveness": "alive", "streams": {}})
    ages = heartbeat_ages(tmp_path, time.time() + 10)
    assert list(ages) == ["binance/majors"]
    assert 9 <= ages["binance/majors"] < 60
    alerts, healthy = ingest_alerts(ages, down_after_s=5)
    assert len(alerts) == 1 and not healthy
    alerts, healthy = ingest_alerts(ages, down_after_s=300)
    assert not alerts and healthy
