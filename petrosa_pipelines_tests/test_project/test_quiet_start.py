"""What a newcomer sees on the console: no warning noise on load, a clean Ctrl-C of the ingest."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from petrosa_pipelines_tests.ingest_process import ingest_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
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


def test_ctrl_c_stops_the_ingest_cleanly_as_a_success(tmp_path, local_exchange):
    op_config = "group: manual\nsymbols: [BTCUSDT]\nheartbeat_interval_s: 1.0"
    with ingest_process(tmp_path, local_exchange, op_config) as ing:
        heartbeat = ing.landing / "binance" / "_heartbeat" / "manual.json"
        ing.wait_for(lambda: heartbeat.exists() or ing.proc.poll() is not None, 240, "heartbeat")
        assert ing.proc.poll() is None, ing.tail()
        ing.proc.send_signal(signal.SIGINT)
        rc = ing.proc.wait(timeout=240)
    text = ing.log.read_text()
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "interrupted (Ctrl-C or terminate), stopped" in text
    with dg.DagsterInstance.from_config(str(ing.home)) as instance:
        runs = instance.get_runs()
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
