"""Fault injection switches of the local exchange, read at request/message time.

Tests flip these while a client is connected (``ex.faults.drop_probability = 0.1``) to prove the
project survives what venues do in production: disconnects, duplicates, gaps, garbage,
429 bursts, slow answers, re-published archives and book-service restarts. Every switch applies
to every venue the server speaks (each in its own wire format). Random choices come from one
seeded RNG so a failing chaos run can be replayed exactly.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

import orjson


@dataclass
class Faults:
    """Mutable fault switches; all default to "no fault"."""

    seed: int = 0
    #: close each websocket connection after this many data messages (0 = never)
    disconnect_every_n_messages: int = 0
    #: probability that a data message is sent twice
    duplicate_probability: float = 0.0
    #: probability that a data message is silently skipped (id gaps, pu breaks)
    drop_probability: float = 0.0
    #: probability that a data message is replaced by bad JSON or wrong field types
    malformed_probability: float = 0.0
    #: the next N REST requests answer 429 with ``Retry-After`` (decremented per request)
    rate_limit_burst: int = 0
    #: ``Retry-After`` seconds sent with injected 429s
    retry_after_seconds: int = 1
    #: every REST/archive answer is delayed by this many seconds
    slow_response_seconds: float = 0.0
    #: archive ``.CHECKSUM`` files carry a wrong digest (a re-published archive)
    bad_checksum: bool = False
    #: probability that a connection is cut between two aggTrades of one stream that share a
    #: millisecond (the client has the first, not the second: the hardest cut for a repair by
    #: time, since the millisecond of the last trade it has is not complete)
    cut_same_ms_probability: float = 0.0
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False)
    #: bumped by ``disconnect_now``; connections opened before the bump close themselves
    disconnect_generation: int = field(init=False, default=0, compare=False)
    #: bumped by ``restart_book_service``; venues with a book reset in their protocol send it
    book_restart_generation: int = field(init=False, default=0, compare=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def reseed(self, seed: int) -> None:
        """Restart the fault RNG (to replay a chaos run exactly)."""
        with self._lock:
            self.seed = seed
            self._rng = random.Random(seed)

    def chance(self, probability: float) -> bool:
        """One seeded Bernoulli draw; no draw at all when the switch is off."""
        if probability <= 0:
            return False
        with self._lock:
            return self._rng.random() < probability

    def choice(self, n: int) -> int:
        with self._lock:
            return self._rng.randrange(n)

    def take_rate_limit(self) -> bool:
        """Consume one injected 429 if a burst is pending."""
        with self._lock:
            if self.rate_limit_burst > 0:
                self.rate_limit_burst -= 1
                return True
            return False

    def cut_before(self, last_trade_ms: dict[str, int], payload: bytes) -> bool:
        """Whether to close the connection instead of sending ``payload`` (see
        ``cut_same_ms_probability``); ``last_trade_ms`` is the connection's stream -> trade
        time of the last aggTrade sent, updated here."""
        if self.cut_same_ms_probability <= 0 or b'"aggTrade"' not in payload:
            return False
        try:
            frame = orjson.loads(payload)
            data = frame.get("data", frame)
            stream, trade_ms = str(frame.get("stream", data["s"])), int(data["T"])
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            return False
        return self.cut_between(last_trade_ms, stream, trade_ms)

    def cut_between(self, last_trade_ms: dict[str, int], stream: str, trade_ms: int) -> bool:
        """Whether to close the connection before a trade message of ``stream`` at ``trade_ms``
        (a draw only when the previous one sent on ``stream`` shares its millisecond)."""
        if last_trade_ms.get(stream) == trade_ms and self.chance(self.cut_same_ms_probability):
            return True
        last_trade_ms[stream] = trade_ms
        return False

    def disconnect_now(self) -> None:
        """Close every websocket connection open right now (clients must reconnect)."""
        with self._lock:
            self.disconnect_generation += 1

    def restart_book_service(self) -> None:
        """The venue's order-book service restarts: where the protocol has it (Bybit), every
        book topic gets a new snapshot whose update id starts again at 1."""
        with self._lock:
            self.book_restart_generation += 1

    def clear(self) -> None:
        """Switch every fault off (the generation counters keep counting)."""
        with self._lock:
            self.disconnect_every_n_messages = 0
            self.duplicate_probability = 0.0
            self.drop_probability = 0.0
            self.malformed_probability = 0.0
            self.rate_limit_burst = 0
            self.slow_response_seconds = 0.0
            self.bad_checksum = False
            self.cut_same_ms_probability = 0.0


#: Binance-shaped garbage (each venue's wire module has its own)
MALFORMED_SAMPLES: tuple[bytes, ...] = (
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,',  # truncated JSON
    b"not json at all",
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":"soon","a":"x","s":"BTCUSDT",'
    b'"p":12.5,"q":null,"f":1,"l":0,"T":-1,"m":"maybe"}}',  # wrong types
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":1,"s":"BTCUSDT",'
    b'"p":"NaN","q":"1e999","f":1,"l":1,"T":1,"m":false}}',  # NaN / huge numbers
    b'{"stream":"nosuchusdt@aggTrade","data":{"e":"aggTrade","E":1,"a":1,"s":"NOSUCHUSDT",'
    b'"p":"1.0","q":"1","f":1,"l":1,"T":1,"m":false}}',  # unknown symbol
    b"\xff\xfe\x00garbage",  # not UTF-8
)
