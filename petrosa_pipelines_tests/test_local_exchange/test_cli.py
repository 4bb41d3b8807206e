"""The ``serve`` command: prints the three base URLs, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import requests

from petrosa_pipelines.local_exchange.server import build_parser

pytestmark = pytest.mark.integration


def test_serve_prints_urls_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "petrosa_pipelines.local_exchange", "serve", "--port", "0",
            "--symbols", "BTCUSDT", "--now", "2024-01-03T00:00:00", "--fault-drop", "0.1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        urls = dict(proc.stdout.readline().split() for _ in range(3))
        assert urls["ws"].startswith("ws://127.0.0.1:")
        assert urls["vision"] == urls["rest"] + "/vision"
        r = requests.get(urls["rest"] + "/fapi/v1/time", timeout=5)
        assert 0 <= r.json()["serverTime"] - 1704240000000 < 15_000  # --now, then real pace
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()


def test_parser_knows_every_fault_switch() -> None:
    args = build_parser().parse_args(
        ["serve", "--fault-disconnect-every", "100", "--fault-bad-checksum", "--speed", "10"]
    )
    assert args.fault_disconnect_every == 100 and args.fault_bad_checksum and args.speed == 10
