"""The ingest's stream health is visible on the landing assets (observations), not only in logs.

The run is a real ``dagster job execute`` of the code location, stopped with Ctrl-C once data
flows (waiting on conditions, never on how fast the machine is).
"""

from __future__ import annotations

import signal

import dagster as dg
import pytest

from petrosa_pipelines.ingest.heartbeat import read_heartbeat
from petrosa_pipelines.landing.assets import landing_key
from petrosa_pipelines_tests.ingest_process import ingest_process

pytestmark = pytest.mark.slow  # a real `dagster job execute` subprocess


def _observed(instance: dg.DagsterInstance, dataset: str) -> list[dict]:
    records = instance.fetch_observations(landing_key(dataset), limit=1000).records
    return [
        {k: v.value for k, v in r.asset_observation.metadata.items()} | {"run": r.run_id}
        for r in reversed(records)
    ]


def test_ingest_reports_stream_health_on_the_landing_assets(tmp_path, local_exchange):
    op_config = """
group: obs
symbols: [BTCUSDT, ETHUSDT]
datasets: [trades, depth]
heartbeat_interval_s: 0.3
observe_every_s: 0.3
"""
    with ingest_process(tmp_path, local_exchange, op_config) as ing:
        with dg.DagsterInstance.from_config(str(ing.home)) as instance:

            def flowing() -> bool:
                assert ing.proc.poll() is None, ing.tail()
                hb = read_heartbeat(ing.landing, "binance", "obs")
                return bool(hb and hb["writer"]["lines_durable"] > 20)

            ing.wait_for(flowing, 240, "landed data")
            # while it runs: an observation of a live stream, with what it processed so far
            ing.wait_for(
                lambda: any(
                    o["liveness"] == "alive" and o["messages_processed"] > 0
                    for o in _observed(instance, "trades")
                ),
                240,
                "a periodic observation",
            )
            ing.proc.send_signal(signal.SIGINT)
            assert ing.proc.wait(timeout=240) == 0, ing.tail()
    with dg.DagsterInstance.from_config(str(ing.home)) as instance:
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
