"""Every registered adapter replays its recorded websocket frames (cryptofeed playback style).

An adapter is only registered with recordings: ``fixtures/<exchange>/ws/**/*.jsonl`` (the
exchange is the venue id's first part: ``bybit`` for ``bybit-linear``), one
frame per line as received. Each frame must give a record, None (control frame) or an
``UnknownMessageError`` (a stream we do not consume); a plain ``MessageError`` on real data is a
parser bug. Between them the recordings must cover every dataset in the adapter's channel map.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from petrosa_pipelines.exchanges import EXCHANGES
from petrosa_pipelines.exchanges.base import (
    CandleRecord,
    DepthUpdateRecord,
    FundingRecord,
    MarkPriceRecord,
    MessageError,
    TradeRecord,
    UnknownMessageError,
)

pytestmark = pytest.mark.playback

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: which record types prove a dataset's stream was parsed
DATASET_RECORDS: dict[str, tuple[type, ...]] = {
    "trades": (TradeRecord,),
    "candles": (CandleRecord,),
    "depth": (DepthUpdateRecord,),
    "funding": (MarkPriceRecord, FundingRecord),
}


@pytest.mark.parametrize("name", sorted(EXCHANGES))
def test_adapter_replays_its_recordings(name):
    adapter = EXCHANGES[name]()
    assert adapter.venue == name
    family = name.split("-")[0]
    files = sorted((FIXTURES / family / "ws").rglob("*.jsonl"))
    assert files, f"adapter {name!r} has no recorded frames under fixtures/{family}/ws"
    kinds: Counter[str] = Counter()
    for path in files:
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            try:
                records = adapter.parse_frame(line, received_at=n)
            except UnknownMessageError:
                kinds["unknown"] += 1
                continue
            except MessageError as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(f"{path.relative_to(FIXTURES)}:{n}: real frame rejected: {exc}")
            if not records:
                kinds["control"] += 1
                continue
            for record in records:
                assert record.exchange == adapter.name
                assert record.received_at == n
                kinds[type(record).__name__] += 1
    for dataset in adapter.channels:
        wanted = DATASET_RECORDS[dataset]
        assert any(kinds[t.__name__] for t in wanted), f"{name}: no {dataset} records in {kinds}"


@pytest.mark.parametrize("name", sorted(EXCHANGES))
def test_adapter_stream_names_cover_its_channels(name):
    adapter = EXCHANGES[name]()
    names = adapter.stream_names(["BTCUSDT"], list(adapter.channels))
    assert len(names) == len(adapter.channels)
    url = adapter.combined_stream_url("wss://example.invalid", names)
    assert url.startswith("wss://example.invalid")
    assert isinstance(adapter.subscribe_message(names, 1), bytes)


@pytest.mark.parametrize("name", sorted(EXCHANGES))
def test_frame_stream_reads_each_recorded_frame_as_its_parser_does(name):
    """What the landing reader learns from a frame's bytes (``frame_stream``) agrees with
    the parser on every recorded frame: the symbol of each of its records, and a replay may
    start anywhere except on frames of a declared ``stateful_replay`` dataset."""
    adapter = EXCHANGES[name]()
    family = name.split("-")[0]
    stateful = adapter.capabilities.stateful_replay
    stateful_types = {t for d in stateful for t in DATASET_RECORDS[d]}
    read = not_starts = 0
    for path in sorted((FIXTURES / family / "ws").rglob("*.jsonl")):
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            info = adapter.frame_stream(line)
            try:
                records = adapter.parse_frame(line, received_at=n)
            except UnknownMessageError:
                continue
            if info is None:
                # a frame the reader must parse: only control frames, never data
                assert not records, f"{path.relative_to(FIXTURES)}:{n}: data frame not read"
                continue
            read += 1
            symbol, stream, starts = info
            assert stream and symbol
            where = f"{path.relative_to(FIXTURES)}:{n}"
            assert {r.symbol for r in records} <= {symbol}, where
            if not starts:
                not_starts += 1
                assert stateful, f"{where}: not a start frame, but no stateful_replay declared"
                assert {type(r) for r in records} <= stateful_types, where
    assert read
    # a declared stateful dataset shows up in the recordings as frames that cannot start
    assert bool(not_starts) == bool(stateful), (name, not_starts, stateful)
