"""Chaos: the exchange is SIGKILLed mid-stream and comes back; 20 forced disconnects; refill.

Runs ``scripts/chaos_ingest.py`` in short form (about 20 s) and checks that its checkers do
catch a corrupt segment and a duplicated trade, so a passing run means something.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from petrosa_pipelines.landing.writer import LandingWriter
from petrosa_pipelines_tests.test_landing import binance_frames as bf

pytestmark = pytest.mark.slow  # real exchange processes cut and restarted

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "chaos_ingest.py"


@pytest.fixture(scope="module")
def chaos():
    spec = importlib.util.spec_from_file_location("chaos_ingest", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos_ingest"] = module
    spec.loader.exec_module(module)
    return module


def test_exchange_killed_and_restarted_on_the_same_port(chaos, tmp_path):
    report = chaos.run_kill(tmp_path, kills=1, outage_s=1.0, stream_s=1.5)
    assert report.ok, "\n".join(report.lines())
    assert "0 duplicated" in report.facts["BTCUSDT trades"]
    assert "0 missing after refill" in report.facts["ETHUSDT trades"]


def test_twenty_forced_disconnects_then_refill_misses_nothing(chaos, tmp_path):
    report = chaos.run_disconnects(tmp_path, disconnects=20, every_s=0.2)
    assert report.ok, "\n".join(report.lines())
    assert report.facts["engine"].startswith("21 connections, 20 reconnects")
    for sym in chaos.SYMBOLS:
        assert ", 0 duplicated, " in report.facts[f"{sym} trades"]
        assert "0 missing after refill" in report.facts[f"{sym} trades"]


def test_checkers_catch_a_corrupt_segment_and_a_duplicate(chaos, tmp_path):
    t0 = 1_704_240_000_000
    with LandingWriter(tmp_path, "binance", "g") as w:
        for i, frame in enumerate([bf.agg_trade("BTCUSDT", 5, t0), bf.agg_trade("BTCUSDT", 5, t0)]):
            assert w.put(t0 + i, frame)
        assert w.put(t0 + 9, b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade"}}')
    report = chaos.ChaosReport("control")
    chaos.check_segments(tmp_path, report)
    assert any("unparsable line" in f for f in report.failures)
    trades = chaos.landed_trades(tmp_path, "BTCUSDT")
    assert [t.agg_trade_id for t in trades] == [5, 5]  # the checker would count 1 duplicate
