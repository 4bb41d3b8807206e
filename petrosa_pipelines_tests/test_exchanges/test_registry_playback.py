"""Every registered adapter replays its recorded websocket frames (cryptofeed playback style).

An adapter is only registered with recordings: ``fixtures/<adapter.name>/ws/**/*.jsonl``, one
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
    assert adapter.name == name
    files = sorted((FIXTURES / name / "ws").rglob("*.jsonl"))
    assert files, f"adapter {name!r} has no recorded frames under fixtures/{name}/ws"
    kinds: Counter[str] = Counter()
    for path in files:
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            try:
                record = adapter.parse(line, received_at=n)
            except UnknownMessageError:
                kinds["unknown"] += 1
                continue
            except MessageError as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(f"{path.relative_to(FIXTURES)}:{n}: real frame rejected: {exc}")
            if record is None:
                kinds["control"] += 1
                continue
            assert record.exchange == name
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
