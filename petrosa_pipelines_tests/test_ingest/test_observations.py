"""The ingest's stream health is visible on the landing assets (observations), not only in logs.

The run is a real ``dagster job execute`` of the code location, stopped with Ctrl-C once data
flows (waiting on conditions, never on how fast the machine is).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from petrosa_pipelines.ingest.heartbeat import read_heartbeat
from petrosa_pipelines.landing.assets import landing_key

pytestmark = pytest.mark.slow  # a real `dagster job execute` subprocess

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _observed(instance: dg.DagsterInstance, dataset: str) -> list[dict]:
    records = instance.fetch_observations(landing_key(dataset), limit=1000).records
    return [
        {k: v.value for k, v in r.asset_observation.metadata.items()} | {"run": r.run_id}
        for r in reversed(records)
    ]


def _wait(cond, deadline_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + deadline_s
    while not cond():
        assert time.monotonic() < deadline, (
            f"timed out waiting for {what}: {log.read_text()[-3000:]}"
        )
        time.sleep(0.3)


def test_ingest_reports_stream_health_on_the_landing_assets(tmp_path, local_exchange):
    home = tmp_path / "home"
    home.mkdir()
    landing = tmp_path / "landing"
    config = tmp_path / "ingest.yaml"
    config.write_text(
        "ops:\n  ingest_stream_group:\n    config:\n"
        "      group: obs\n      symbols: [BTCUSDT, ETHUSDT]\n      datasets: [trades, depth]\n"
        "      heartbeat_interval_s: 0.3\n      observe_every_s: 0.3\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PETROSA_LANDING_PATH": str(landing),
        "PETROSA_REST_BASE_URL": local_exchange.rest_base_url,
        "PETROSA_WS_BASE_URL": local_exchange.ws_base_url,
        "PETROSA_VISION_BASE_URL": local_exchange.vision_base_url,
    }
    log = tmp_path / "ingest.log"
    with log.open("w") as out, dg.DagsterInstance.from_config(str(home)) as instance:
        proc = subprocess.Popen(
            [str(BIN / "dagster"), "job", "execute", "-m", "petrosa_pipelines.definitions"]
            + ["-j", "ingest", "-c", str(config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:

            def flowing() -> bool:
                assert proc.poll() is None, log.read_text()[-3000:]
                hb = read_heartbeat(landing, "binance", "obs")
                return bool(hb and hb["writer"]["lines_durable"] > 20)

            _wait(flowing, 240, "landed data", log)
            # while it runs: an observation of a live stream, with what it processed so far
            _wait(
                lambda: any(
                    o["liveness"] == "alive" and o["messages_processed"] > 0
                    for o in _observed(instance, "trades")
                ),
                240,
                "a periodic observation",
                log,
            )
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
        trades = _observed(instance, "trades")
        (run,) = instance.get_runs()
        assert {o["run"] for o in trades} == {run.run_id}
        final = trades[-1]  # the stop reports one last time
        assert final["liveness"] == "stopped" and final["group"] == "obs"
        assert final["symbols"] == 2
        assert final["messages_processed"] > 0 and final["messages_failed"] == 0
        # exchange event time -> receipt (may be below 0 by clock skew, so only its presence)
        assert all(
            isinstance(final[k], int | float) for k in ("lag_ms", "lag_ms_avg", "lag_ms_max")
        )
        assert final["durable_latency_p99_ms"] >= 0
        assert final["last_data_time"].startswith("20")
        counts = [o["messages_processed"] for o in trades]
        assert counts == sorted(counts)  # cumulative over the run
        depth = _observed(instance, "depth")
        assert depth and depth[-1]["messages_processed"] > 0
        # funding (markPrice) always streams, for liveness; candles were not asked for
        assert _observed(instance, "funding")
        assert _observed(instance, "candles") == []
