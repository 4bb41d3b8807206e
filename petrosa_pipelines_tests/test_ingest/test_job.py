"""The Dagster ``ingest`` job: stats in run metadata, heartbeat file, clean stop on termination."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from petrosa_pipelines.ingest.heartbeat import read_heartbeat
from petrosa_pipelines.ingest.job import GROUP_TAG, ingest_job, run_config_for, venue_symbols
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines.local_exchange import LocalExchange, MarketConfig

REPO = Path(__file__).resolve().parents[2]
MARKET = MarketConfig(symbols=("BTCUSDT", "ETHUSDT"), trades_per_day=2_000_000)


def test_job_runs_and_reports_stats_as_metadata(tmp_path, dagster_instance):
    with LocalExchange(market=MARKET) as ex:
        rc = run_config_for(
            "g1", ["BTCUSDT"], ["trades", "depth"], landing_path=str(tmp_path),
            ws_base_url=ex.ws_base_url, rest_base_url=ex.rest_base_url, max_runtime_s=120.0,
            max_messages=20, heartbeat_interval_s=0.3,
        )  # fmt: skip
        result = ingest_job.execute_in_process(
            run_config=rc, instance=dagster_instance, tags={GROUP_TAG: "g1"}
        )
    assert result.success
    (out,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    md = out.event_specific_data.metadata
    assert md["liveness"].value == "stopped"
    assert md["messages_processed"].value > 0
    assert "btcusdt@aggTrade" in md["streams"].value
    hb = read_heartbeat(tmp_path, "binance", "g1")
    assert hb["run_id"] == result.run_id
    assert not list(tmp_path.rglob(".seg-*.tmp"))


@pytest.mark.slow
def test_terminated_run_flushes_and_closes_cleanly(tmp_path):
    (tmp_path / "defs.py").write_text(
        "import dagster as dg\nfrom petrosa_pipelines.ingest.job import ingest_job\n"
        "defs = dg.Definitions(jobs=[ingest_job])\n"
    )
    landing = tmp_path / "landing"
    home = tmp_path / "home"
    home.mkdir()
    with LocalExchange(market=MARKET) as ex:
        rc = run_config_for(
            "g1", ["BTCUSDT", "ETHUSDT"], ["trades", "candles", "depth", "funding"],
            landing_path=str(landing), ws_base_url=ex.ws_base_url,
            rest_base_url=ex.rest_base_url, heartbeat_interval_s=0.3, segment_max_age_s=3600.0,
        )  # fmt: skip
        (tmp_path / "run.json").write_bytes(orjson.dumps(rc))
        env = {**os.environ, "DAGSTER_HOME": str(home)}
        log_path = tmp_path / "run.log"
        log_file = log_path.open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "job",
                "execute",
                "-f",
                str(tmp_path / "defs.py"),
                "-j",
                "ingest",
                "-c",
                str(tmp_path / "run.json"),
            ],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip  (a file, not a pipe: an undrained pipe would block the run's logging)
        deadline = time.monotonic() + 240  # a loaded 2-core machine starts a run slowly
        while time.monotonic() < deadline:
            hb = read_heartbeat(landing, "binance", "g1")
            if hb and hb["liveness"] == "alive" and hb["writer"]["lines_durable"] > 20:
                break
            time.sleep(0.2)
        else:
            proc.kill()
            proc.wait()
            raise AssertionError(log_path.read_text()[-3000:])
        # segments are still open (an hour of age allowed): the termination must publish them
        assert list(landing.rglob(".seg-*.tmp"))
        proc.send_signal(signal.SIGTERM)  # what terminating a run does to its process
        proc.wait(timeout=60)
        log_file.close()
        out = log_path.read_text()
    assert "stopped cleanly" in out, out[-3000:]
    assert not list(landing.rglob(".seg-*.tmp")), "open segments left behind"
    hb = read_heartbeat(landing, "binance", "g1")
    assert hb["liveness"] == "stopped"
    landed = sum(1 for _ in LandingStore(landing).iter_lines("binance", 0, 4_102_444_800_000))
    assert landed >= hb["writer"]["lines_durable"] > 0


REGISTERED = [
    "BTCUSDT",  # a legacy bare value: Binance USD-M
    "binance-usdm:ETHUSDT",
    "bybit-linear:BTCUSDT",
    "bybit-linear:SOLUSDT",
    "no-such-venue:XRPUSDT",  # ignored, never an error
]


@pytest.mark.parametrize(
    ("venue", "wanted", "expected"),
    [
        ("binance-usdm", set(), ["BTCUSDT", "ETHUSDT"]),
        ("binance-usdm", {"ETHUSDT", "SOLUSDT"}, ["ETHUSDT"]),
        ("bybit-linear", set(), ["BTCUSDT", "SOLUSDT"]),
        ("bybit-linear", {"BTCUSDT", "ETHUSDT"}, ["BTCUSDT"]),
    ],
)
def test_venue_symbols_keep_the_venues_registered_ids_within_the_wanted(venue, wanted, expected):
    assert venue_symbols(REGISTERED, venue, wanted) == expected


def test_a_run_following_partitions_streams_its_venues_symbols(tmp_path, dagster_instance):
    """The ``symbols`` partitions hold ids of both venues: a Binance run takes Binance's."""
    dagster_instance.add_dynamic_partitions("symbols", REGISTERED)
    with LocalExchange(market=MARKET) as ex:
        rc = run_config_for(
            "g1", [], ["trades"], exchange="binance-usdm", landing_path=str(tmp_path),
            ws_base_url=ex.ws_base_url, rest_base_url=ex.rest_base_url, max_runtime_s=1.0,
            heartbeat_interval_s=0.3, follow_dynamic_symbols=True,
        )  # fmt: skip
        result = ingest_job.execute_in_process(
            run_config=rc, instance=dagster_instance, tags={GROUP_TAG: "g1"}
        )
    assert result.success
    assert read_heartbeat(tmp_path, "binance", "g1")["symbols"] == ["BTCUSDT", "ETHUSDT"]
