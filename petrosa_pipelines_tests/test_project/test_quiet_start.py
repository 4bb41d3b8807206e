"""What a newcomer sees on the console: no warning noise on load, a clean Ctrl-C of the ingest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_loading_the_code_location_prints_no_known_dagster_warning():
    out = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import petrosa_pipelines.definitions"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=True,
    )
    noise = [
        line
        for line in out.stderr.splitlines()
        if "BetaWarning" in line or "PreviewWarning" in line
    ]
    assert noise == []


def _wait(cond, deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_ctrl_c_stops_the_ingest_cleanly_as_a_success(tmp_path, local_exchange):
    home = tmp_path / "home"
    home.mkdir()
    landing = tmp_path / "landing"
    config = tmp_path / "ingest.yaml"
    config.write_text(
        "ops:\n  ingest_stream_group:\n    config:\n"
        "      group: manual\n      symbols: [BTCUSDT]\n      heartbeat_interval_s: 1.0\n"
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
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "dagster"), "job", "execute", "-m", "petrosa_pipelines.definitions"]
            + ["-j", "ingest", "-c", str(config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            heartbeat = landing / "binance" / "_heartbeat" / "manual.json"
            _wait(lambda: heartbeat.exists() or proc.poll() is not None, 240, "the heartbeat")
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "interrupted (Ctrl-C or terminate), stopped" in text
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
