"""The landing reader knows no venue's framing: a venue with its own is read through its adapter.

``Acme`` frames name their channel as ``{"ch":"trade:ACME-BTC",...}`` (no Binance ``stream``,
no Bybit ``topic``), and its ``mark`` channel sends a ``full`` frame then ``diff`` frames that
only make sense merged into it, like Bybit's ``tickers`` (``capabilities.stateful_replay``).
The store must filter by symbol, list a day's symbols and find the replay start point only by
asking the adapter (``frame_stream``), parsing no frame it was told belongs elsewhere.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, ClassVar

import pytest

from petrosa_pipelines.exchanges.base import (
    Capabilities,
    Dataset,
    ExchangeAdapter,
    MarkPriceRecord,
    Record,
    TradeRecord,
)
from petrosa_pipelines.landing import LandingStore, LandingWriter
from petrosa_pipelines.lib.timeutil import DAY_MS, HOUR_MS, day_start_ms

EX = "acme"
DAY = dt.date(2024, 1, 2)
T0 = day_start_ms(DAY) + 6 * HOUR_MS
NEXT_FUNDING = T0 + 2 * HOUR_MS


class Acme(ExchangeAdapter):
    """A venue whose frames the store has never seen: ``{"ch": "<channel>:<symbol>", ...}``."""

    venue: ClassVar[str] = "acme-perp"
    name: ClassVar[str] = EX
    capabilities: ClassVar[Capabilities] = Capabilities(
        datasets=frozenset({Dataset.TRADES, Dataset.FUNDING}),
        rest_reach_ms={},
        stateful_replay=frozenset({Dataset.FUNDING}),
    )
    channels: ClassVar[dict[str, str]] = {"trades": "trade:{symbol}", "funding": "mark:{symbol}"}
    #: (symbol, channel, receipt) of every frame parsed, by any instance (the store makes
    #: fresh ones)
    parsed: ClassVar[list[tuple[str, str, int | None]]] = []

    def __init__(self) -> None:
        self.marks: dict[str, dict[str, Any]] = {}

    def frame_stream(self, payload: bytes) -> tuple[str, str, bool] | None:
        if not payload.startswith(b'{"ch":"'):
            return None
        ch = payload[7 : payload.index(b'"', 7)].decode()
        kind, _, symbol = ch.partition(":")
        return symbol, ch, kind != "mark" or b'"full"' in payload

    def parse(self, raw: bytes | str, received_at: int | None = None) -> Record | None:
        msg = json.loads(raw)
        kind, _, symbol = msg["ch"].partition(":")
        Acme.parsed.append((symbol, kind, received_at))
        d = msg["d"]
        if kind == "trade":
            return TradeRecord(
                exchange=EX, symbol=symbol, agg_trade_id=d["id"], price=Decimal(d["px"]),
                quantity=Decimal("1"), first_trade_id=d["id"], last_trade_id=d["id"],
                trade_time=d["t"], is_buyer_maker=False, received_at=received_at,
            )  # fmt: skip
        state = self.marks.setdefault(symbol, {}) if msg["k"] == "diff" else {}
        if msg["k"] == "diff" and not state and self.capabilities.stateful_replay:
            raise AssertionError("a diff parsed without its full frame: wrong replay start")
        state.update(d)
        self.marks[symbol] = state
        return MarkPriceRecord(
            exchange=EX, symbol=symbol, event_time=d["t"],
            mark_price=Decimal(state.get("mark", "0")), index_price=None,
            estimated_settle_price=None, funding_rate=Decimal(state.get("rate", "0")),
            next_funding_time=NEXT_FUNDING, received_at=received_at,
        )  # fmt: skip

    def stream_names(self, symbols: Sequence[str], datasets: Iterable[str]) -> list[str]:
        return [self.channels[d].format(symbol=s) for s in symbols for d in datasets]

    def combined_stream_url(self, ws_base_url: str, streams: Sequence[str]) -> str:
        return ws_base_url

    def subscribe_message(self, streams: Sequence[str], request_id: int) -> bytes:
        return b"{}"

    def unsubscribe_message(self, streams: Sequence[str], request_id: int) -> bytes:
        return b"{}"

    def rest_client(self, settings: Any) -> Any:
        return None

    def archive_client(self, settings: Any) -> Any:
        return None


def _trade(symbol: str, trade_id: int, t: int) -> bytes:
    return json.dumps({"ch": f"trade:{symbol}", "d": {"id": trade_id, "px": "2.5", "t": t}},
                      separators=(",", ":")).encode()  # fmt: skip


def _mark(symbol: str, kind: str, t: int, **fields: str) -> bytes:
    return json.dumps({"ch": f"mark:{symbol}", "k": kind, "d": {"t": t, **fields}},
                      separators=(",", ":")).encode()  # fmt: skip


@pytest.fixture
def store(tmp_path) -> LandingStore:
    frames = [
        # a diff landed before any full frame: a replay can never start here
        (T0 - 3 * HOUR_MS, _mark("ACME-BTC", "diff", T0 - 3 * HOUR_MS, mark="1")),
        # the full frame, two hours before the window read below
        (T0 - 2 * HOUR_MS, _mark("ACME-BTC", "full", T0 - 2 * HOUR_MS, mark="100", rate="0.01")),
        (T0 + 1, _trade("ACME-BTC", 1, T0)),
        (T0 + 2, _trade("ACME-ETH", 7, T0 + 1)),
        (T0 + 3, _mark("ACME-BTC", "diff", T0 + 2, mark="101")),
        (T0 + 4, _trade("ACME-BTC", 2, T0 + 3)),
        (T0 + 5, _mark("ACME-ETH", "full", T0 + 4, mark="5", rate="0.02")),
        (T0 + 6, _mark("ACME-BTC", "diff", T0 + 5, rate="0.03")),
    ]
    with LandingWriter(tmp_path, EX, "g1") as w:
        for recv, frame in frames:
            assert w.put(recv, frame)
    Acme.parsed.clear()
    return LandingStore(tmp_path, {EX: Acme()})


def test_the_reader_filters_a_foreign_framing_by_symbol_without_parsing_the_rest(store):
    frame = store.read_frame(EX, "trades", "ACME-BTC", T0, T0 + HOUR_MS)
    assert frame["agg_trade_id"].tolist() == [1, 2]
    assert set(frame["symbol"]) == {"ACME-BTC"}
    # ACME-ETH's frames were skipped from their bytes, never parsed
    assert {s for s, _, _ in Acme.parsed} == {"ACME-BTC"}


def test_a_day_s_symbols_come_from_the_venue_s_reading_of_its_frames(store):
    assert store.symbols_with_data(EX, DAY) == {"ACME-BTC", "ACME-ETH"}
    assert Acme.parsed == []  # every frame was read by frame_stream, none parsed
    assert store.symbols_with_data(EX, DAY + dt.timedelta(days=1)) == set()


def test_a_stateful_dataset_replays_from_its_start_frame_before_the_window(store):
    marks = store.mark_prices(EX, "ACME-BTC", T0, T0 + HOUR_MS)
    # the diffs merged into the full frame landed two hours earlier (stateful_replay looks
    # back state_lookback_ms for it), exactly as the live adapter made them
    assert [(m.event_time, m.mark_price, m.funding_rate) for m in marks] == [
        (T0 + 2, Decimal("101"), Decimal("0.01")),
        (T0 + 5, Decimal("101"), Decimal("0.03")),
    ]
    # the diff before the first full frame was never parsed (Acme.parse would have raised)
    assert ("ACME-BTC", "mark", T0 - 2 * HOUR_MS) in Acme.parsed


def test_without_its_start_frame_in_reach_a_stateful_stream_gives_nothing(store):
    # no look-back: the read reaches receipts one hour (``iter_lines`` slack) before the window
    short = LandingStore(store.root, {EX: Acme()}, state_lookback_ms=0)
    assert short.mark_prices(EX, "ACME-BTC", T0, T0 + HOUR_MS) == []
    # another symbol whose full frame is inside the window starts there
    eth = short.mark_prices(EX, "ACME-ETH", T0, T0 + DAY_MS)
    assert [(m.event_time, m.mark_price) for m in eth] == [(T0 + 4, Decimal("5"))]


class AcmeStateless(Acme):
    """The same framing, but its diffs stand alone: nothing declared, every frame starts."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        datasets=frozenset({Dataset.TRADES, Dataset.FUNDING}), rest_reach_ms={}
    )

    def frame_stream(self, payload: bytes) -> tuple[str, str, bool] | None:
        info = super().frame_stream(payload)
        return None if info is None else (info[0], info[1], True)


def test_a_venue_that_declares_no_stateful_replay_is_not_read_back(store):
    """Having ``frame_stream`` is not what makes a replay look back: the capability is."""
    plain = LandingStore(store.root, {EX: AcmeStateless()})
    marks = plain.mark_prices(EX, "ACME-BTC", T0, T0 + HOUR_MS)
    assert [m.event_time for m in marks] == [T0 + 2, T0 + 5]
    # only the receipt slack (one hour) before the window was read, not a day
    assert min(recv for _, _, recv in Acme.parsed) >= T0 - HOUR_MS
