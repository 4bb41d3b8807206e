"""A stand-in for the Petrosa socket-client: Binance websocket frames republished on NATS.

The socket-client (PetroSa2/petrosa-socket-client) opens Binance's combined stream and publishes
every frame on ``binance.futures.websocket.data`` in its envelope (``socket_client/models/
message.py``; built here by ``local_exchange.venues.binance.wire.socket_client_envelope``),
over core NATS. :class:`SocketClientFeed` does the same against any Binance-speaking websocket
(the local exchange for the demo and tests), optionally into a JetStream stream, so the NATS
ingest source (``ingest/nats_source.py``) can be shown end to end without the real service.
:func:`live_demo` runs the whole loop: local exchange -> feed -> NATS -> ingest -> landing,
clean records on ``petrosa.<venue>.*`` and the latest state in Redis (docs/live.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the socket-client's subject (``socket_client/constants.py``, ``NATS_TOPIC``)
SOCKET_CLIENT_SUBJECT = "binance.futures.websocket.data"
#: the socket-client's default streams per symbol (``BINANCE_STREAMS``)
SOCKET_CLIENT_STREAMS = ("trade", "ticker", "depth20@100ms")
DEFAULT_NATS = "nats://127.0.0.1:4222"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
#: the venue id of the demo's instruments (Binance USD-M, what the socket-client reads)
DEMO_VENUE = "binance-usdm"


def stream_names(symbols: Sequence[str], kinds: Sequence[str] = SOCKET_CLIENT_STREAMS) -> list[str]:
    """``btcusdt@trade``-style names, as the combined-stream URL takes them."""
    if not symbols or not kinds:
        raise ValueError("symbols and streams must both be non-empty")
    return [f"{s.lower()}@{k}" for s in symbols for k in kinds]


def combined_stream_url(ws_base_url: str, streams: Sequence[str]) -> str:
    """Binance's combined-stream endpoint (``/stream?streams=a/b``: every frame is
    ``{"stream": ..., "data": ...}``, what the socket-client wraps)."""
    return f"{ws_base_url.rstrip('/')}/stream?streams={'/'.join(streams)}"


@dataclass
class FeedStats:
    frames: int = 0
    published: int = 0
    reconnects: int = 0
    by_stream: dict[str, int] = field(default_factory=dict)


class SocketClientFeed:
    """Read a combined stream, publish each frame in the socket-client envelope on NATS.

    Core NATS by default (as the socket-client); with ``jetstream_stream`` each frame is a
    JetStream publish (acknowledged by the server) into that stream, created to capture
    ``subject`` if it is missing. ``clock_ms`` stamps the envelope's ``timestamp`` (the
    socket-client's receipt time). ``on_frame(raw, envelope)`` sees every frame (tests record).
    """

    def __init__(
        self,
        ws_url: str,
        nats_url: str,
        subject: str = SOCKET_CLIENT_SUBJECT,
        *,
        jetstream_stream: str | None = None,
        clock_ms: Callable[[], int] | None = None,
        on_frame: Callable[[bytes, bytes], None] | None = None,
    ):
        self.ws_url = ws_url
        self.nats_url = nats_url
        self.subject = subject
        self.jetstream_stream = jetstream_stream
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.on_frame = on_frame
        self.stats = FeedStats()
        self.connected = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Publish until :meth:`stop`; a dropped websocket is reopened after 0.5 s."""
        import nats
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        from petrosa_pipelines.local_exchange.venues.binance.wire import socket_client_envelope

        nc = await nats.connect(self.nats_url)
        js = nc.jetstream() if self.jetstream_stream else None
        if js is not None:
            await self._ensure_stream(js)
        try:
            while not self._stop.is_set():
                try:
                    async with connect(self.ws_url, max_size=None) as ws:
                        self.connected.set()
                        while not self._stop.is_set():
                            try:
                                raw = await asyncio.wait_for(ws.recv(decode=False), 0.2)
                            except TimeoutError:
                                continue
                            await self._publish(nc, js, raw, socket_client_envelope)
                except (ConnectionClosed, OSError):
                    self.stats.reconnects += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), 0.5)
        finally:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=10)
            await nc.close()

    async def _ensure_stream(self, js: Any) -> None:
        """The JetStream stream exists and captures ``subject`` (created if missing); a publish
        into another stream that happens to capture the subject would land elsewhere."""
        from nats.js.errors import NotFoundError

        name = self.jetstream_stream
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(name=name, subjects=[self.subject])  # overlap: a clear error
            return
        if self.subject not in (info.config.subjects or []):
            raise ValueError(
                f"jetstream_stream={name!r} exists but does not capture {self.subject!r} "
                f"(its subjects: {info.config.subjects})"
            )

    async def _publish(self, nc: Any, js: Any, raw: bytes, wrap: Callable[..., bytes]) -> None:
        self.stats.frames += 1
        try:
            env = wrap(raw, self.clock_ms())
        except ValueError:  # not a combined-stream frame (a subscription answer): not data
            return
        if self.on_frame is not None:
            self.on_frame(raw, env)
        if js is not None:
            await js.publish(self.subject, env, stream=self.jetstream_stream)
        else:
            await nc.publish(self.subject, env)
        self.stats.published += 1
        from petrosa_pipelines.ingest.nats_source import envelope_stream

        name = envelope_stream(env) or "?"
        self.stats.by_stream[name] = self.stats.by_stream.get(name, 0) + 1


def _print_latest(lat: Any, log: Callable[..., None]) -> None:
    at = dt.datetime.fromtimestamp(lat.read_at / 1000, dt.UTC)
    log(f"latest({lat.instrument!r}) read at {at:%H:%M:%S} UTC:")
    for name, values in lat.values.items():
        age = lat.age_s.get(name)
        shown = "absent" if values is None else values
        log(f"  {name:8s} age {'-' if age is None else f'{age:.2f}s':>7s}  {shown}")


#: how long the live demo waits for its feed's first frame, and for the ingest and the
#: subscriber to catch up at the end (generous: a loaded 2-core machine)
FIRST_FRAME_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 30.0


async def _until(cond: Callable[[], bool], seconds: float, failure: str | None) -> None:
    """Wait for ``cond``; after ``seconds`` raise ``failure`` (or, without one, go on)."""
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            if failure is None:
                return
            raise RuntimeError(f"live demo: {failure} within {seconds:.0f} s")
        await asyncio.sleep(0.05)


#: the live demo's market: ~12 aggregate trades a second per symbol (the local exchange's
#: default, 20,000 a day, left a 4-second demo without a single raw trade)
LIVE_DEMO_TRADES_PER_DAY = 1_000_000


def live_demo(
    seconds: float = 20.0,
    symbols: Sequence[str] = ("BTCUSDT",),
    *,
    workdir: str | Path | None = None,
    subject: str = SOCKET_CLIENT_SUBJECT,
    materialize: bool = True,
    market: Any = None,
    log: Callable[..., None] = print,
) -> dict[str, Any]:
    """Local exchange -> socket-client feed -> NATS -> ingest (socket-client profile) -> landing,
    live outputs on; after ``seconds`` (and once the book has been published, up to
    ``FIRST_FRAME_TIMEOUT_S`` more) print what was published, landed and ledgered, how many
    clean messages ``<prefix>.binance-usdm.*.<first symbol>`` carried (``<prefix>``: the live
    settings' ``PETROSA_LIVE_SUBJECT_PREFIX``, ``petrosa`` by default), and ``latest(...)``.

    NATS and Redis come from ``PETROSA_NATS_URL`` / ``PETROSA_REDIS_URL`` (default: the local
    servers), the subject prefix, stream and Redis key prefix from ``PETROSA_LIVE_*``. With
    ``materialize``, today's (open) ``market_data/depth`` partition of the first symbol is then
    materialised from that landing with its checks (the demo's ``_run_partitions``, an
    ephemeral instance, lake under ``workdir``). ``market``: the local exchange's
    ``MarketConfig`` (default: ``symbols`` at ``LIVE_DEMO_TRADES_PER_DAY``, a few raw trades a
    second, so even a short demo shows trades; the exchange's own default trades ~0.35/s).
    Returns the figures it printed (and ``watch``, the subject pattern
    counted).
    """
    import nats

    from petrosa_pipelines.exchanges.binance.adapter import SOCKET_CLIENT_PROFILE
    from petrosa_pipelines.ingest import IngestConfig, IngestEngine
    from petrosa_pipelines.local_exchange import LocalExchange
    from petrosa_pipelines.settings import live_settings_from_env

    if not symbols:
        raise ValueError("symbols: give at least one symbol")
    if seconds <= 0:
        raise ValueError(f"seconds={seconds!r} must be > 0")
    os.environ.setdefault("PETROSA_NATS_URL", DEFAULT_NATS)
    os.environ.setdefault("PETROSA_REDIS_URL", DEFAULT_REDIS)
    nats_url = os.environ["PETROSA_NATS_URL"]
    base = Path(workdir or tempfile.mkdtemp(prefix="petrosa-live-demo-"))
    landing = base / "landing"
    symbols = [s.upper() for s in symbols]
    # what the engine's live outputs publish on (``LiveOutputs.from_env``: the same settings)
    prefix = live_settings_from_env().subject_prefix
    watch = f"{prefix}.{DEMO_VENUE}.*.{symbols[0]}"
    kind_at = prefix.count(".") + 2  # <prefix tokens>.<venue>.<dataset>.<SYMBOL>
    seen: dict[str, int] = {}

    if market is None:
        from petrosa_pipelines.local_exchange import MarketConfig

        market = MarketConfig(symbols=tuple(symbols), trades_per_day=LIVE_DEMO_TRADES_PER_DAY)
    with LocalExchange(market=market) as ex:
        feed = SocketClientFeed(
            combined_stream_url(ex.ws_base_url, stream_names(symbols)), nats_url, subject
        )
        config = IngestConfig(
            group="live-demo",
            symbols=tuple(symbols),
            datasets=("trades", "depth"),
            landing_path=str(landing),
            source="nats",
            nats_url=nats_url,
            nats_subject=subject,
            stream_profile=SOCKET_CLIENT_PROFILE,
            rest_base_url=ex.rest_base_url,
            ws_base_url=ex.ws_base_url,
        )
        engine = IngestEngine(config)

        async def run() -> None:
            nc = await nats.connect(nats_url)

            async def count(msg: Any) -> None:
                kind = msg.subject.split(".")[kind_at]
                seen[kind] = seen.get(kind, 0) + 1

            await nc.subscribe(watch, cb=count)
            ingest = asyncio.create_task(engine.run())
            deadline = time.monotonic() + 30
            while not (engine._nats.ready.is_set() or ingest.done()):
                if time.monotonic() > deadline:
                    raise RuntimeError("live demo: the NATS source did not subscribe in 30 s")
                await asyncio.sleep(0.05)
            publisher = asyncio.create_task(feed.run())
            try:
                # ``seconds`` of feed, counted from its first frame: on a loaded machine the
                # feed's own connection can take longer than a short demo (CI saw 0 in 4 s)
                await _until(
                    lambda: feed.stats.published > 0 or publisher.done(),
                    FIRST_FRAME_TIMEOUT_S,
                    "the feed published no frame",
                )
                await asyncio.sleep(seconds)
                # and until the book has synced and been published: its REST snapshot comes
                # after the first diffs, and a loaded machine (CI at load ~8) saw no depth in 4 s
                await _until(
                    lambda: "depth" in seen or publisher.done(), FIRST_FRAME_TIMEOUT_S, None
                )
            finally:
                feed.stop()
                await publisher
                # core NATS: what the ingest has not read by then it ledgers as missed
                await _until(
                    lambda: engine.source_info().get("messages", 0) >= feed.stats.published,
                    DRAIN_TIMEOUT_S,
                    None,
                )
                engine.stop()
                await ingest
                # the live outputs' last batch reaches the counter
                await _until(lambda: bool(seen), DRAIN_TIMEOUT_S, None)
                await asyncio.sleep(0.5)
                await nc.drain()

        log(f"live demo: {len(symbols)} symbol(s), {seconds:.0f}s, feed on {subject!r}, "
            f"landing {landing}", flush=True)  # fmt: skip
        asyncio.run(run())
        report = _report(engine, feed, watch, seen, symbols[0], log)
        if materialize:
            done, rows = _materialize_today(ex, base, symbols[0], log)
            report["materialized"], report["materialized_depth_rows"] = done, rows
    report["landing"] = str(landing)
    report["watch"] = watch
    return report


def _report(
    engine: Any, feed: SocketClientFeed, watch: str, seen: dict[str, int], symbol: str, log: Any
) -> dict[str, Any]:

    snap = engine.snapshot()
    streams = snap["streams"]
    landed = sum(s["received"] for s in streams.values())
    gaps = snap["group_stats"]["gaps_recorded"]
    log(f"feed: {feed.stats.published} frames published ({feed.stats.by_stream})")
    log(f"ingest: {landed} landed, {snap['group_stats']['dead_letters']} dead letters, "
        f"{gaps} gaps recorded, source {snap['source']}")  # fmt: skip
    log(f"clean messages on {watch}: {sum(seen.values())} {dict(sorted(seen.items()))}")
    lat = _settled_latest(f"{DEMO_VENUE}:{symbol}", _last_market_trade(engine, symbol))
    _print_latest(lat, log)
    return {
        "published": feed.stats.published,
        "landed": landed,
        "gaps": gaps,
        "seen": seen,
        "latest": lat,
    }


def _last_market_trade(engine: Any, symbol: str) -> str | None:
    """The id of the last market trade the ingest landed for ``symbol`` (None: none)."""
    from petrosa_pipelines.exchanges.base import RawTradeRecord
    from petrosa_pipelines.landing import LandingStore

    now = time.time_ns() // 1_000_000
    store = LandingStore(engine.config.landing_path)
    recs = store.read_records("binance", now - 86_400_000, now + 3_600_000, [symbol])
    ids = [r.trade_id for r in recs if type(r) is RawTradeRecord and r.is_market]
    return str(max(ids)) if ids else None


def _settled_latest(instrument: str, last_trade: str | None) -> Any:
    """``latest(instrument)`` once the live state holds ``last_trade`` (its Redis writer runs
    on an interval, behind the NATS messages the demo already counted), or after
    ``DRAIN_TIMEOUT_S``: what it holds then."""
    import petrosa_pipelines

    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        lat = petrosa_pipelines.latest(instrument)
        trade = lat["trade"]
        done = last_trade is None or (trade is not None and trade["trade_id"] == last_trade)
        if done or time.monotonic() > deadline:
            return lat
        time.sleep(0.05)


def _materialize_today(exchange: Any, base: Path, symbol: str, log: Any) -> tuple[bool, int]:
    """Today's (open) depth partition from the landing the demo filled, with its checks: the
    settings point at the local exchange and ``base`` as ``petrosa demo`` does, and the run
    goes through the demo's ``_run_partitions`` (quiet Dagster logs, one summary line).
    Returns whether it succeeded and the depth rows it wrote."""
    import dagster as dg

    from petrosa_pipelines import instruments
    from petrosa_pipelines.market_data.partitions import SYMBOLS_PARTITIONS_NAME
    from petrosa_pipelines.tooling.demo import MARKET_JOB, _point_settings_at, _run_partitions

    _point_settings_at(exchange, base)
    inst = f"{DEMO_VENUE}:{symbol}"
    key = instruments.partition_key_str(dt.datetime.now(tz=dt.UTC).date(), inst)
    depth = dg.AssetKey(instruments.market_data_path("depth"))
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, [inst])
        results = _run_partitions(MARKET_JOB, [key], instance, "materialise", log, [depth])
    ok = bool(results) and all(done for _, done, _ in results)
    return ok, sum(rows.get("depth", 0) for _, _, rows in results)
