"""Metric labels name the venue and the instrument, so two venues' BTCUSDT never share a series."""

from __future__ import annotations

import pytest

from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.ingest.stats import prometheus_text


@pytest.mark.parametrize(
    ("exchange", "storage", "venue", "stream"),
    [
        ("binance", "binance", "binance-usdm", "btcusdt@aggTrade"),
        ("binance-usdm", "binance", "binance-usdm", "btcusdt@aggTrade"),
        ("bybit-linear", "bybit-linear", "bybit-linear", "publicTrade.BTCUSDT"),
    ],
)
def test_series_carry_storage_name_venue_and_instrument(tmp_path, exchange, storage, venue, stream):
    cfg = IngestConfig(group="g", symbols=("BTCUSDT",), landing_path=str(tmp_path),
                       exchange=exchange, datasets=("trades",),
                       rest_base_url="http://127.0.0.1:9")  # fmt: skip
    engine = IngestEngine(cfg)
    engine.stats.streams[stream].processed = 7
    lines = prometheus_text(engine.snapshot()).splitlines()
    g = f'exchange="{storage}",venue="{venue}",group="g"'
    assert (
        f'petrosa_ingest_messages_processed_total{{{g},stream="{stream}",'
        f'instrument="{venue}:BTCUSDT"}} 7'
    ) in lines
    assert f"petrosa_ingest_connected{{{g}}} 0" in lines
    # every series has the venue; exactly the per-stream ones have an instrument
    series = [ln for ln in lines if not ln.startswith("#")]
    assert all(f"{g}" in ln for ln in series)
    per_stream = [ln for ln in series if "stream=" in ln]
    assert per_stream and all(f'instrument="{venue}:BTCUSDT"' in ln for ln in per_stream)
    assert not any("instrument=" in ln for ln in series if "stream=" not in ln)


def test_a_snapshot_without_a_venue_reads_it_from_the_storage_name(tmp_path):
    """A heartbeat written before snapshots named their venue is still served right."""
    engine = IngestEngine(IngestConfig(group="g", symbols=("BTCUSDT",), landing_path=str(tmp_path)))
    snap = engine.snapshot()
    del snap["venue"]
    text = prometheus_text(snap)
    assert 'petrosa_ingest_connected{exchange="binance",venue="binance-usdm",group="g"} 0' in text
